"""Device platforms netjobs knows, and how Netmiko calls each one."""

from __future__ import annotations

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
# The command that prints the running configuration on each platform.
RUNNING_CONFIG_COMMANDS: dict[str, str] = {
    "cisco_ios": "show running-config",
    "cisco_nxos": "show running-config",
    "arista_eos": "show running-config",
    "juniper_junos": "show configuration | display set",
    "linux": "cat /etc/network/interfaces",
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
