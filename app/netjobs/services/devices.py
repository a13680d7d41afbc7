"""The device inventory: validation of device fields, and add/list/get/remove/select.

Every way into the ``devices`` table (CLI, CSV/YAML import) validates through :func:`build_spec`,
so the rules for a name, an address or a tag live in one place.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from netjobs.db.engine import session_scope
from netjobs.db.models import Device
from netjobs.errors import NotFoundError, ValidationError
from netjobs.platforms import SUPPORTED_PLATFORMS
from netjobs.services.audit import log_change

FIELDS: tuple[str, ...] = ("name", "address", "platform", "port", "site", "tags", "enabled", "credentials_ref")
REQUIRED_FIELDS: tuple[str, ...] = ("name", "address", "platform")

# A device name is also its file name in the config-backup repository: no slashes, no leading dot.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_CREDENTIALS_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
TAG_SEPARATORS = re.compile(r"[;|]")
_TRUE = frozenset({"true", "yes", "on", "1", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "n"})


@dataclass(frozen=True)
class DeviceSpec:
    """A validated device, as stored in ``devices``. Tags are sorted and unique."""

    name: str
    address: str
    platform: str
    port: int = 22
    site: str | None = None
    tags: tuple[str, ...] = field(default=())
    enabled: bool = True
    credentials_ref: str = "default"

    def as_dict(self) -> dict:
        return {
            "name": self.name, "address": self.address, "port": self.port, "platform": self.platform,
            "site": self.site, "tags": list(self.tags), "enabled": self.enabled,
            "credentials_ref": self.credentials_ref,
        }  # fmt: skip

    def row(self) -> dict:
        """Column values for the ``devices`` table."""
        values = self.as_dict()
        values["mgmt_address"] = values.pop("address")
        return values


# --- field parsers: raw value (str from CSV, anything from YAML) -> value, or ValueError(reason) ---


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    return str(value).strip()


def parse_name(value: object) -> str:
    name = _text(value, "name")
    if not name:
        raise ValueError("name is empty")
    if not _NAME.match(name):
        raise ValueError(f"name {name!r} is invalid (letters, digits, '.', '_', '-'; starts with a letter or "
                         "digit; at most 255 characters)")
    return name


def is_hostname(text: str) -> bool:
    host = text[:-1] if text.endswith(".") else text
    if not host or len(host) > 253:
        return False
    labels = host.split(".")
    # An all-numeric last label is a mistyped IPv4 address (10.0.0.256), not a DNS name.
    return all(_HOST_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def parse_address(value: object) -> str:
    address = _text(value, "address")
    if not address:
        raise ValueError("address is empty")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if is_hostname(address):
        return address.lower()
    raise ValueError(f"address {address!r} is neither an IP address nor a DNS hostname")


def parse_platform(value: object) -> str:
    platform = _text(value, "platform").lower()
    if not platform:
        raise ValueError("platform is empty")
    if platform not in SUPPORTED_PLATFORMS:
        raise ValueError(f"platform {platform!r} is not supported (supported: {', '.join(SUPPORTED_PLATFORMS)})")
    return platform


def parse_port(value: object) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 22
    if isinstance(value, bool):
        raise ValueError(f"port must be a number from 1 to 65535, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"port must be a number from 1 to 65535, got {text!r}")
        value = int(text)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {value!r}")
    return value


def parse_site(value: object) -> str | None:
    if value is None:
        return None
    site = _text(value, "site")
    if len(site) > 255:
        raise ValueError("site is longer than 255 characters")
    if any(not c.isprintable() for c in site):
        raise ValueError(f"site {site!r} contains control characters")
    return site or None


def parse_tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[object] = TAG_SEPARATORS.split(value)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ValueError(f"tags must be a list or text separated by ';' or '|', got {type(value).__name__}")
    tags = set()
    for item in items:
        tag = _text(item, "a tag")
        if not tag:
            continue
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} is invalid (letters, digits, '.', '_', ':', '/', '-'; at most 64)")
        tags.add(tag)
    return tuple(sorted(tags))


def parse_enabled(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return True
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"enabled must be true or false, got {value!r}")


def parse_credentials_ref(value: object) -> str:
    if value is None:
        return "default"
    ref = _text(value, "credentials_ref")
    if not ref:
        return "default"
    if not _CREDENTIALS_REF.match(ref):
        raise ValueError(f"credentials_ref {ref!r} is invalid (letters, digits, '.', '_', '-'; at most 64)")
    return ref


_PARSERS = {
    "name": parse_name, "address": parse_address, "platform": parse_platform, "port": parse_port,
    "site": parse_site, "tags": parse_tags, "enabled": parse_enabled, "credentials_ref": parse_credentials_ref,
}  # fmt: skip


def build_spec(raw: Mapping[str, object]) -> DeviceSpec:
    """Validate raw field values. Raises ValidationError listing every problem, joined by '; '."""
    problems = [f"unknown field {key!r}" for key in raw if key not in _PARSERS]
    values = {}
    for name, parse in _PARSERS.items():
        if name in REQUIRED_FIELDS and raw.get(name) is None:
            problems.append(f"{name} is missing")
            continue
        try:
            values[name] = parse(raw.get(name))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValidationError("; ".join(problems))
    return DeviceSpec(**values)


# --- the devices table ---------------------------------------------------------------------------


def device_dict(row: Device) -> dict:
    return DeviceSpec(row.name, row.mgmt_address, row.platform, row.port, row.site, tuple(row.tags or ()),
                      row.enabled, row.credentials_ref).as_dict()


def add_device(name, address, platform, port=22, site=None, tags=(), credentials_ref="default",
               enabled=True) -> dict:
    """Add one device. A name already in the inventory is a ValidationError."""
    spec = build_spec(dict(name=name, address=address, platform=platform, port=port, site=site, tags=tags,
                           credentials_ref=credentials_ref, enabled=enabled))
    statement = insert(Device).values(**spec.row()).on_conflict_do_nothing(index_elements=[Device.name])
    with session_scope() as session:
        inserted = session.execute(statement.returning(Device.id)).first()
        if inserted is not None:
            log_change("device.add", spec.name, spec.as_dict(), session=session)
    if inserted is None:
        raise ValidationError(f"device {spec.name!r} already exists (remove it first, or import a file to update it)")
    return spec.as_dict()


def _filtered(query, site: str | None, tag: str | None, enabled: bool | None):
    if site is not None:
        query = query.where(Device.site == site)
    if tag is not None:
        query = query.where(Device.tags.contains([tag]))
    if enabled is not None:
        query = query.where(Device.enabled.is_(enabled))
    return query


def list_devices(site=None, tag=None, enabled=None) -> list[dict]:
    """Devices ordered by name; each filter applies when not None."""
    query = _filtered(select(Device), site, tag, enabled).order_by(Device.name)
    with session_scope() as session:
        return [device_dict(row) for row in session.scalars(query)]


def get_device(name) -> dict:
    with session_scope() as session:
        row = session.scalars(select(Device).where(Device.name == name)).first()
        if row is None:
            raise NotFoundError(f"no device named {name!r}")
        return device_dict(row)


def remove_device(name) -> None:
    """Remove a device; its snapshots and compliance results go with it."""
    with session_scope() as session:
        if not session.execute(delete(Device).where(Device.name == name)).rowcount:
            raise NotFoundError(f"no device named {name!r}")
        log_change("device.remove", name, session=session)


def _name_list(names) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValidationError(f"device names must be a list of strings, got {names!r}")
    return list(dict.fromkeys(n.strip() for n in names))


def select_devices(names=None, site=None, tag=None, enabled_only=True) -> list[dict]:
    """The devices a job should run on, ordered by name.

    With ``names``, every name must exist (NotFoundError names the unknown ones); the other filters
    then narrow the list further, so a named but disabled device is left out when ``enabled_only``.
    """
    query = select(Device)
    wanted = None
    if names is not None:
        wanted = _name_list(names)
        query = query.where(Device.name.in_(wanted))
    with session_scope() as session:
        if wanted is not None:
            known = set(session.scalars(select(Device.name).where(Device.name.in_(wanted))))
            unknown = [n for n in wanted if n not in known]
            if unknown:
                raise NotFoundError(f"unknown device{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        query = _filtered(query, site, tag, True if enabled_only else None).order_by(Device.name)
        return [device_dict(row) for row in session.scalars(query)]
