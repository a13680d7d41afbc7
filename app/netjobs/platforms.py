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
