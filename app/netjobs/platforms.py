"""Device platforms netjobs knows, and how Netmiko calls each one."""

from __future__ import annotations

import re
from dataclasses import dataclass

# netjobs platform name -> Netmiko device_type
NETMIKO_DEVICE_TYPES: dict[str, str] = {
    "cisco_ios": "cisco_ios",
    "cisco_nxos": "cisco_nxos",
    "arista_eos": "arista_eos",
    "juniper_junos": "juniper_junos",
    "linux": "linux",
}
SUPPORTED_PLATFORMS: tuple[str, ...] = tuple(NETMIKO_DEVICE_TYPES)


# --- configuration backup ---------------------------------------------------------------------
# What a linux device's configuration is: the file a backup reads.
LINUX_CONFIG_PATH = "/etc/network/interfaces"

# The command that prints the running configuration on each platform.
RUNNING_CONFIG_COMMANDS: dict[str, str] = {
    "cisco_ios": "show running-config",
    "cisco_nxos": "show running-config",
    "arista_eos": "show running-config",
    "juniper_junos": "show configuration | display set",
    "linux": f"cat {LINUX_CONFIG_PATH}",
}

# Platforms whose configuration is only visible in privileged (enable) mode.
NEEDS_ENABLE: frozenset[str] = frozenset({"cisco_ios", "arista_eos"})

# A complete configuration ends with this line; without it the output was cut short.
CONFIG_END_LINES: dict[str, str] = {"cisco_ios": "end", "arista_eos": "end"}

# Lines that change on every show without any configuration change (regexes, whole line).
VOLATILE_LINE_PATTERNS: dict[str, tuple[str, ...]] = {
    "cisco_ios": (
        r"Building configuration\.\.\.",
        r"Current configuration\s*:\s*\d+ bytes",
        r"! Last configuration change at .*",
        r"! NVRAM config last updated at .*",
        r"! No configuration change since last restart",
        r"ntp clock-period \d+",
        r"\S+ uptime is .*",
        r"Load for five secs: .*",
        r"Time source is .*",
    ),
    "cisco_nxos": (
        r"!Command: show running-config.*",
        r"!Running configuration last done at: .*",
        r"!Time: .*",
        r"\S+ uptime is .*",
    ),
    "arista_eos": (
        r"! Command: show running-config.*",
        r"! Time: .*",
        r"Uptime: .*",
    ),
    "juniper_junos": (
        r"## Last commit: .*",
        r"## Last changed: .*",
        r"\{(master|backup|primary|secondary|line)[^}]*\}",
    ),
    "linux": (),
}


# --- change markers ------------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeMarker:
    """A short command whose answer changes whenever the running configuration changes.

    ``line`` is a regex the trustworthy marker line fully matches; anything else the device says
    (no change since boot, an error, nothing) means "no marker", so the backup reads in full."""

    command: str
    line: str


# Platforms not listed have no marker a backup may trust: arista_eos prints only the current
# time in its running-config header.
CHANGE_MARKERS: dict[str, ChangeMarker] = {
    # IOS/IOS-XE stamp every change made through the parser (CLI, copy to running, configure
    # replace); after a reload it says "! No configuration change since last restart" instead.
    "cisco_ios": ChangeMarker("show running-config | include ^! Last configuration change",
                              r"! Last configuration change at \S.*"),
    "cisco_nxos": ChangeMarker('show running-config | include "Running configuration last done at"',
                               r"!Running configuration last done at: \S.*"),
    # Every commit (rollback included) renews it; uncommitted candidate changes are not running.
    "juniper_junos": ChangeMarker('show configuration | match "## Last commit"', r"## Last commit: \S.*"),
    # The file's digest: it changes with any byte of what `cat` would print, and only then.
    "linux": ChangeMarker(f"sha256sum {LINUX_CONFIG_PATH}", rf"[0-9a-f]{{64}}  {re.escape(LINUX_CONFIG_PATH)}"),
}


def find_change_marker(platform: str, output: str) -> str | None:
    """The marker line in ``output`` of the platform's marker command, or None when it has none."""
    marker = CHANGE_MARKERS.get(platform)
    if marker is None:
        return None
    pattern = re.compile(marker.line)
    for line in output.replace("\r", "\n").split("\n"):
        if pattern.fullmatch(line.strip()):
            return line.strip()
    return None
