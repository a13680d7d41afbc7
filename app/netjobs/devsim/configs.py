"""Configuration text a simulated device shows: a deterministic body plus volatile decoration.

The body is derived from the hostname (or read from a file, re-read on every show so labs and
tests can change it). The decoration - timestamps, byte counts, NTP clock period - changes on
every show, as on real devices, so the backup's normalization has something to remove.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path


def _octets(hostname: str) -> tuple[int, int]:
    digest = hashlib.sha256(hostname.encode()).digest()
    return 1 + digest[0] % 250, 1 + digest[1] % 250


def generated_body(platform: str, hostname: str) -> str:
    """A plausible configuration body for ``platform``, the same for the same hostname."""
    a, b = _octets(hostname)
    if platform in ("cisco_ios", "arista_eos"):
        lines = [f"hostname {hostname}", "!", "service timestamps log datetime msec",
                 "no ip domain lookup", "ip domain name lab.example.net", "!",
                 "username netops privilege 15 secret 9 $9$simulated$hash", "!"]
        for port in range(1, 5):
            lines += [f"interface GigabitEthernet0/{port}" if platform == "cisco_ios" else f"interface Ethernet{port}",
                      f" description uplink-{port} to core-{(a + port) % 4 + 1}",
                      f" ip address 10.{a}.{b}.{port * 4 + 1} 255.255.255.252", " no shutdown", "!"]
        lines += ["interface Loopback0", f" ip address 10.255.{a}.{b} 255.255.255.255", "!",
                  "router ospf 1", f" router-id 10.255.{a}.{b}", " network 10.0.0.0 0.255.255.255 area 0", "!",
                  "ip access-list standard MGMT", " permit 10.213.0.0 0.0.255.255", " deny any log", "!",
                  "snmp-server community netops-ro RO MGMT", "logging host 10.213.1.10",
                  "ntp server 10.213.1.1", "!", "line vty 0 4", " access-class MGMT in",
                  " transport input ssh", "!"]
        return "\n".join(lines) + "\n"
    if platform == "juniper_junos":
        lines = ["set version 21.4R3.15", f"set system host-name {hostname}",
                 "set system services ssh protocol-version v2", "set system syslog host 10.213.1.10 any notice",
                 "set system ntp server 10.213.1.1"]
        for port in range(4):
            lines += [f"set interfaces ge-0/0/{port} description uplink-{port}",
                      f"set interfaces ge-0/0/{port} unit 0 family inet address 10.{a}.{b}.{port * 4 + 1}/30"]
        lines += [f"set interfaces lo0 unit 0 family inet address 10.255.{a}.{b}/32",
                  f"set routing-options router-id 10.255.{a}.{b}",
                  "set protocols ospf area 0.0.0.0 interface ge-0/0/0.0",
                  "set protocols ospf area 0.0.0.0 interface lo0.0 passive"]
        return "\n".join(lines) + "\n"
    if platform == "linux":
        lines = [f"# {hostname}: interfaces(5) file used by ifup(8) and ifdown(8)", "auto lo", "iface lo inet loopback", ""]
        for port in range(2):
            lines += [f"auto eth{port}", f"iface eth{port} inet static",
                      f"    address 10.{a}.{b}.{port * 4 + 1}/30", ""]
        return "\n".join(lines)
    raise ValueError(f"no configuration template for platform {platform!r}")


def load_body(platform: str, hostname: str, config_file: Path | None) -> str:
    if config_file is not None and config_file.is_file():
        text = config_file.read_text()
        return text if text.endswith("\n") else text + "\n"
    return generated_body(platform, hostname)


def _cisco_time(now: float) -> str:
    return time.strftime("%H:%M:%S UTC %a %b %-d %Y", time.gmtime(now))


def running_config(platform: str, hostname: str, body: str, now: float | None = None) -> str:
    """What ``show running-config`` (or the platform's equivalent) prints, with volatile lines."""
    now = time.time() if now is None else now
    if platform == "cisco_ios":
        inner = (f"!\n! Last configuration change at {_cisco_time(now)} by netops\n"
                 f"! NVRAM config last updated at {_cisco_time(now - 60)} by netops\n!\n"
                 f"version 15.9\n{body}ntp clock-period {random.randint(17_000_000, 37_000_000)}\n!\nend\n")
        return f"Building configuration...\n\nCurrent configuration : {len(inner)} bytes\n{inner}"
    if platform == "arista_eos":
        stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(now))
        return (f"! Command: show running-config\n! device: {hostname} (vEOS-lab, EOS-4.31.2F)\n"
                f"! Time: {stamp}\n!\n! boot system flash:/vEOS-lab.swi\n!\n{body}end\n")
    if platform == "juniper_junos":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
        return f"## Last commit: {stamp} by netops\n{body}"
    if platform == "linux":
        return body
    raise ValueError(f"no running configuration for platform {platform!r}")
