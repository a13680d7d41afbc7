"""Which device sent a message: a cached map of the inventory, reloaded every few seconds.

A sender is matched by its source address against ``devices.mgmt_address``; when no device has that
address, or several have it (devices behind one NAT address, or several on one host), the message's
HOSTNAME field picks the device by name (also its first label: "core-sw1.example.net" is
"core-sw1") or by a ``mgmt_address`` that is a host name. Lookups never query the database.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KnownDevice:
    name: str
    enabled: bool


def _address_key(text: str) -> str | None:
    """An IP address in one spelling (IPv4-mapped IPv6 as IPv4), or None for a host name."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclass
class DeviceDirectory:
    by_address: dict[str, list[KnownDevice]] = field(default_factory=dict)
    by_name: dict[str, KnownDevice] = field(default_factory=dict)
    loaded: bool = False

    @classmethod
    def from_rows(cls, rows) -> DeviceDirectory:
        """From (name, mgmt_address, enabled) rows."""
        directory = cls(loaded=True)
        for name, mgmt_address, enabled in rows:
            device = KnownDevice(name, bool(enabled))
            key = _address_key(mgmt_address or "")
            if key is not None:
                directory.by_address.setdefault(key, []).append(device)
            elif mgmt_address:
                directory.by_name.setdefault(mgmt_address.strip().lower().rstrip("."), device)
            directory.by_name[name.lower()] = device  # a device's own name wins over an address
        return directory

    def __len__(self) -> int:
        return len({d.name for devices in self.by_address.values() for d in devices} |
                   {d.name for d in self.by_name.values()})

    def lookup(self, source_address: str, hostname: str | None) -> tuple[KnownDevice | None, str]:
        """The device, and how it was found or why not: "address", "hostname", "ambiguous", "unknown"."""
        candidates = self.by_address.get(_address_key(source_address) or "", [])
        if len(candidates) == 1:
            return candidates[0], "address"
        # Also a name outside the candidates: a device behind NAT sends from another address.
        named = self._by_hostname(hostname)
        if named is not None:
            return named, "hostname"
        return None, "ambiguous" if candidates else "unknown"

    def _by_hostname(self, hostname: str | None) -> KnownDevice | None:
        if not hostname:
            return None
        key = hostname.strip().lower().rstrip(".")
        address = _address_key(key)
        if address is not None:
            devices = self.by_address.get(address, [])
            return devices[0] if len(devices) == 1 else None
        return self.by_name.get(key) or self.by_name.get(key.split(".", 1)[0])


def load_directory() -> DeviceDirectory:
    """Read the inventory (blocking: run it in a thread)."""
    from sqlalchemy import select

    from netjobs.db.engine import session_scope
    from netjobs.db.models import Device

    with session_scope() as session:
        rows = session.execute(select(Device.name, Device.mgmt_address, Device.enabled)).all()
    return DeviceDirectory.from_rows(rows)
