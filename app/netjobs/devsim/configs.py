"""Configuration text a simulated device shows: a deterministic body plus volatile decoration.

The body is derived from the hostname (or read from a file, re-read on every show so labs and
tests can change it). The decoration - timestamps, byte counts, NTP clock period - changes on
every show, as on real devices, so the backup's normalization has something to remove; the
last-change stamps (IOS, Junos) move only when the body does (see ``DeviceSpec.configuration``).

Like real configurations, the bodies hold secrets (enable secrets, password hashes, TACACS and
NTP keys, SNMP communities, pre-shared keys, a WPA key), derived from the hostname so they differ
per device but not per show; :func:`simulated_secrets` lists them, so tests can check that the
backup's redaction removes every one.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path


def _octets(hostname: str) -> tuple[int, int]:
    digest = hashlib.sha256(hostname.encode()).digest()
    return 1 + digest[0] % 250, 1 + digest[1] % 250


_CRYPT = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_JUNOS9 = "QzF3n6/9CAtpu0OB1IREhcSyrleKvMW8LXx7N-dVbwsY2g4oaJZGUDjiHkq.mPf5T"


def _chars(hostname: str, label: str, alphabet: str, length: int) -> str:
    raw = hashlib.shake_256(f"{hostname}/{label}".encode()).digest(length)
    return "".join(alphabet[b % len(alphabet)] for b in raw)


def _type7(hostname: str, label: str) -> str:
    """A Cisco type-7 string: two decimal digits, then hex pairs."""
    digest = hashlib.sha256(f"{hostname}/{label}".encode()).digest()
    return f"{digest[0] % 16:02d}{digest[1:9].hex().upper()}"


def _secrets(hostname: str) -> dict[str, str]:
    """The secret values of ``hostname``'s simulated configuration, by role."""
    return {
        "type9": f"$9${_chars(hostname, 's9', _CRYPT, 14)}${_chars(hostname, 'h9', _CRYPT, 43)}",
        "sha512": f"$6${_chars(hostname, 's6', _CRYPT, 16)}${_chars(hostname, 'h6', _CRYPT, 86)}",
        "root_sha512": f"$6${_chars(hostname, 'rs6', _CRYPT, 16)}${_chars(hostname, 'rh6', _CRYPT, 86)}",
        "user_type7": _type7(hostname, "user"),
        "tacacs_type7": _type7(hostname, "tacacs"),
        "keychain_type7": _type7(hostname, "keychain"),
        "ospf_type7": _type7(hostname, "ospf"),
        "bgp_type7": _type7(hostname, "bgp"),
        "ntp_type7": _type7(hostname, "ntp"),
        "line_type7": _type7(hostname, "line"),
        "isakmp_psk": f"psk-{_chars(hostname, 'psk', _CRYPT[2:], 12)}",
        "cvauth_key": f"cv-{_chars(hostname, 'cv', _CRYPT[2:], 16)}",
        "junos_tacacs": f"$9${_chars(hostname, 'jt', _JUNOS9, 22)}",
        "junos_ntp": f"$9${_chars(hostname, 'jn', _JUNOS9, 22)}",
        "junos_ospf": f"$9${_chars(hostname, 'jo', _JUNOS9, 22)}",
        "junos_bgp": f"$9${_chars(hostname, 'jb', _JUNOS9, 22)}",
        "wpa_psk": hashlib.shake_256(f"{hostname}/wpa".encode()).hexdigest(32),
        "community": "netops-ro",
    }


_SECRETS_BY_PLATFORM: dict[str, tuple[str, ...]] = {
    "cisco_ios": ("type9", "user_type7", "tacacs_type7", "keychain_type7", "ospf_type7", "bgp_type7",
                  "ntp_type7", "line_type7", "isakmp_psk", "community"),
    "arista_eos": ("sha512", "root_sha512", "user_type7", "tacacs_type7", "keychain_type7", "ospf_type7",
                   "bgp_type7", "ntp_type7", "cvauth_key", "community"),
    "juniper_junos": ("sha512", "root_sha512", "junos_tacacs", "junos_ntp", "junos_ospf", "junos_bgp",
                      "community"),
    "linux": ("wpa_psk",),
}


def simulated_secrets(platform: str, hostname: str) -> list[str]:
    """Every secret value in :func:`generated_body` for ``platform`` and ``hostname``."""
    values = _secrets(hostname)
    found = [values[role] for role in _SECRETS_BY_PLATFORM[platform]]
    if platform in ("cisco_ios", "arista_eos"):
        found.append("$9$simulated$hash")
    return found


def generated_body(platform: str, hostname: str) -> str:
    """A plausible configuration body for ``platform``, the same for the same hostname."""
    a, b = _octets(hostname)
    k = _secrets(hostname)
    if platform in ("cisco_ios", "arista_eos"):
        ios = platform == "cisco_ios"
        lines = [f"hostname {hostname}", "!", "service timestamps log datetime msec",
                 "no ip domain lookup", "ip domain name lab.example.net", "!"]
        if ios:
            lines += ["service password-encryption", f"enable secret 9 {k['type9']}", "!"]
        else:
            lines += [f"enable password sha512 {k['sha512']}", f"aaa root secret sha512 {k['root_sha512']}", "!"]
        lines += ["username netops privilege 15 secret 9 $9$simulated$hash",
                  f"username backup privilege 1 password 7 {k['user_type7']}", "!"]
        if ios:
            lines += ["aaa new-model", "aaa authentication login default group tacacs+ local", "!",
                      "tacacs server ISE", " address ipv4 10.213.1.5", f" key 7 {k['tacacs_type7']}", "!"]
        else:
            lines += ["aaa authentication login default group tacacs+ local",
                      f"tacacs-server host 10.213.1.5 key 7 {k['tacacs_type7']}", "!"]
        lines += ["key chain OSPF-KEYS", " key 1", f"  key-string 7 {k['keychain_type7']}", "!"]
        for port in range(1, 5):
            lines += [f"interface GigabitEthernet0/{port}" if platform == "cisco_ios" else f"interface Ethernet{port}",
                      f" description uplink-{port} to core-{(a + port) % 4 + 1}",
                      f" ip address 10.{a}.{b}.{port * 4 + 1} 255.255.255.252", " no shutdown"]
            if port == 1:
                lines += [" ip ospf message-digest-key 1 md5 7 " + k["ospf_type7"]]
            lines += ["!"]
        lines += ["interface Loopback0", f" ip address 10.255.{a}.{b} 255.255.255.255", "!",
                  "router ospf 1", f" router-id 10.255.{a}.{b}", " network 10.0.0.0 0.255.255.255 area 0", "!",
                  "router bgp 65000", " neighbor 10.255.0.1 remote-as 65000",
                  f" neighbor 10.255.0.1 password 7 {k['bgp_type7']}", "!",
                  "ip access-list standard MGMT", " permit 10.213.0.0 0.0.255.255", " deny any log", "!",
                  "snmp-server community netops-ro RO MGMT", "snmp-server host 10.213.1.20 version 2c netops-ro",
                  "logging host 10.213.1.10",
                  "ntp authenticate", "ntp trusted-key 1",
                  f"ntp authentication-key 1 md5 {k['ntp_type7']} 7" if ios
                  else f"ntp authentication-key 1 md5 7 {k['ntp_type7']}",
                  "ntp server 10.213.1.1", "!"]
        if ios:
            lines += [f"crypto isakmp key {k['isakmp_psk']} address 192.0.2.1", "!",
                      "line con 0", f" password 7 {k['line_type7']}", " login", "!"]
        else:
            lines += ["daemon TerminAttr", f"   exec /usr/bin/TerminAttr -cvaddr=10.213.1.30:9910 "
                      f"-cvauth=key,{k['cvauth_key']} -cvvrf=MGMT", "   no shutdown", "!"]
        lines += ["line vty 0 4", " access-class MGMT in", " transport input ssh", "!"]
        return "\n".join(lines) + "\n"
    if platform == "juniper_junos":
        lines = ["set version 21.4R3.15", f"set system host-name {hostname}",
                 f'set system root-authentication encrypted-password "{k["root_sha512"]}"',
                 "set system login user netops uid 2001", "set system login user netops class super-user",
                 f'set system login user netops authentication encrypted-password "{k["sha512"]}"',
                 f'set system tacplus-server 10.213.1.5 secret "{k["junos_tacacs"]}"',
                 "set system services ssh protocol-version v2", "set system syslog host 10.213.1.10 any notice",
                 f'set system ntp authentication-key 1 type md5 value "{k["junos_ntp"]}"',
                 "set system ntp trusted-key 1",
                 "set system ntp server 10.213.1.1"]
        for port in range(4):
            lines += [f"set interfaces ge-0/0/{port} description uplink-{port}",
                      f"set interfaces ge-0/0/{port} unit 0 family inet address 10.{a}.{b}.{port * 4 + 1}/30"]
        lines += [f"set interfaces lo0 unit 0 family inet address 10.255.{a}.{b}/32",
                  "set snmp community netops-ro authorization read-only",
                  "set snmp community netops-ro clients 10.213.0.0/16",
                  f"set routing-options router-id 10.255.{a}.{b}",
                  "set protocols ospf area 0.0.0.0 interface ge-0/0/0.0",
                  f'set protocols ospf area 0.0.0.0 interface ge-0/0/0.0 authentication md5 1 key "{k["junos_ospf"]}"',
                  "set protocols ospf area 0.0.0.0 interface lo0.0 passive",
                  "set protocols bgp group IBGP type internal",
                  f'set protocols bgp group IBGP authentication-key "{k["junos_bgp"]}"',
                  "set protocols bgp group IBGP neighbor 10.255.0.1"]
        return "\n".join(lines) + "\n"
    if platform == "linux":
        lines = [f"# {hostname}: interfaces(5) file used by ifup(8) and ifdown(8)", "auto lo", "iface lo inet loopback", ""]
        for port in range(2):
            lines += [f"auto eth{port}", f"iface eth{port} inet static",
                      f"    address 10.{a}.{b}.{port * 4 + 1}/30", ""]
        lines += ["allow-hotplug wlan0", "iface wlan0 inet dhcp", "    wpa-ssid netops-lab",
                  "    wpa-key-mgmt WPA-PSK", f"    wpa-psk {k['wpa_psk']}", ""]
        return "\n".join(lines)
    raise ValueError(f"no configuration template for platform {platform!r}")


def _filler(platform: str, hostname: str, count: int) -> list[str]:
    """``count`` more lines of plausible access-layer configuration, fixed by the hostname."""
    a, b = _octets(hostname)
    lines: list[str] = []
    index = 0
    while len(lines) < count:
        index += 1
        vlan = 100 + (a * 7 + index) % 3900
        if platform in ("cisco_ios", "arista_eos"):
            name = (f"GigabitEthernet{1 + index // 48}/0/{1 + index % 48}" if platform == "cisco_ios"
                    else f"Ethernet{index + 10}")
            lines += [f"interface {name}", f" description access-{b}-{index} room {(a + index) % 40 + 1}",
                      f" switchport access vlan {vlan}", " switchport mode access", " spanning-tree portfast",
                      " no shutdown", "!", f"vlan {vlan}", f" name users-{vlan}", "!",
                      f"ip access-list extended EDGE-{index % 9}",
                      f" permit tcp 10.{a}.{index % 256}.0 0.0.0.255 any eq {443 + index % 3}", "!"]
        elif platform == "juniper_junos":
            port = f"ge-{index // 48}/0/{index % 48}"
            lines += [f"set interfaces {port} description access-{b}-{index}",
                      f"set interfaces {port} unit 0 family ethernet-switching vlan members v{vlan}",
                      f"set vlans v{vlan} vlan-id {vlan}",
                      f"set firewall family inet filter EDGE-{index % 9} term t{index} from source-address "
                      f"10.{a}.{index % 256}.0/24",
                      f"set firewall family inet filter EDGE-{index % 9} term t{index} then accept"]
        else:
            lines += [f"auto eth0.{vlan}", f"iface eth0.{vlan} inet static",
                      f"    address 10.{a}.{index % 256}.{b}/24", f"    vlan-raw-device eth0", ""]
    return lines[:count]


def _revision_line(platform: str, revision: int) -> str:
    if platform in ("cisco_ios", "arista_eos"):
        return f"snmp-server contact noc@lab.example.net rev {revision}"
    if platform == "juniper_junos":
        return f'set snmp contact "noc@lab.example.net rev {revision}"'
    return f"# revision {revision}"


def sized_body(platform: str, hostname: str, total_lines: int, revision: int = 0) -> str:
    """:func:`generated_body` grown so that the shown configuration has about ``total_lines`` lines.

    ``revision`` goes into one line (an SNMP contact, a comment), so a device can change its
    configuration without changing its size."""
    base = generated_body(platform, hostname).splitlines()
    overhead = running_config(platform, hostname, "", now=0).count("\n")
    missing = max(0, total_lines - overhead - len(base) - 1)
    lines = [*base, _revision_line(platform, revision), *_filler(platform, hostname, missing)]
    return "\n".join(lines) + "\n"


def load_body(platform: str, hostname: str, config_file: Path | None) -> str:
    if config_file is not None and config_file.is_file():
        text = config_file.read_text()
        return text if text.endswith("\n") else text + "\n"
    return generated_body(platform, hostname)


def _cisco_time(now: float) -> str:
    return time.strftime("%H:%M:%S UTC %a %b %-d %Y", time.gmtime(now))


def running_config(platform: str, hostname: str, body: str, now: float | None = None,
                   changed_at: float | None = None) -> str:
    """What ``show running-config`` (or the platform's equivalent) prints, with volatile lines.

    ``changed_at``: when the configuration last changed (default: now, so the stamp differs on
    every show, as it does on a device whose configuration keeps changing)."""
    now = time.time() if now is None else now
    changed_at = now if changed_at is None else changed_at
    if platform == "cisco_ios":
        inner = (f"!\n! Last configuration change at {_cisco_time(changed_at)} by netops\n"
                 f"! NVRAM config last updated at {_cisco_time(changed_at - 60)} by netops\n!\n"
                 f"version 15.9\n{body}ntp clock-period {random.randint(17_000_000, 37_000_000)}\n!\nend\n")
        return f"Building configuration...\n\nCurrent configuration : {len(inner)} bytes\n{inner}"
    if platform == "arista_eos":
        stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(now))
        return (f"! Command: show running-config\n! device: {hostname} (vEOS-lab, EOS-4.31.2F)\n"
                f"! Time: {stamp}\n!\n! boot system flash:/vEOS-lab.swi\n!\n{body}end\n")
    if platform == "juniper_junos":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(changed_at))
        return f"## Last commit: {stamp} by netops\n{body}"
    if platform == "linux":
        return body
    raise ValueError(f"no running configuration for platform {platform!r}")
