"""SSH host keys netjobs trusts, one per device, kept in PostgreSQL (``device_host_keys``).

A backup connects only to a device that presents the stored key (:func:`pinned_host_key` writes a
one-entry known_hosts file for Netmiko, which rejects any other key). What happens on first contact
- no stored key - is ``NETJOBS_SSH_HOST_KEY_POLICY``: ``strict`` (the default) refuses and names
the key the device presents, so an operator can check it and run ``netjobs devices trust DEVICE``;
``trust-on-first-use`` stores the presented key and proceeds. A changed key always fails for good:
only ``netjobs devices trust DEVICE --replace`` accepts a new one (after a hardware swap).

Plain Python, no Celery.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, Protocol

import paramiko
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from netjobs.actor import login_user
from netjobs.config import Settings, get_settings
from netjobs.db.engine import session_scope
from netjobs.db.models import Device, DeviceHostKey
from netjobs.errors import NotFoundError, PermanentError, TransientError
from netjobs.services.audit import log_change

STRICT = "strict"
TRUST_ON_FIRST_USE = "trust-on-first-use"
SSH_PORT = 22


class UnknownHostKeyError(PermanentError):
    """No key is trusted for the device yet and the policy is strict."""


class HostKeyChangedError(PermanentError):
    """The device presents another key than the trusted one."""

    def __init__(self, message: str, trusted: HostKey | None = None, presented: HostKey | None = None):
        super().__init__(message)
        self.trusted = trusted
        self.presented = presented


# --- keys ------------------------------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64, unpadded>`` of the public key blob, as ``ssh-keygen -l`` shows it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class HostKey:
    """A public host key; two are equal when the key material is (who trusted it when is not compared)."""

    key_type: str  # e.g. ecdsa-sha2-nistp256, ssh-ed25519, ssh-rsa
    public_key: str  # base64, as in known_hosts
    fingerprint: str
    trusted_at: datetime | None = field(default=None, compare=False)
    trusted_by: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.get_base64(), fingerprint(key))

    def pkey(self) -> paramiko.PKey:
        return paramiko.PKey.from_type_string(self.key_type, base64.b64decode(self.public_key))

    def describe(self) -> str:
        return f"{self.fingerprint} ({self.key_type})"

    def as_dict(self) -> dict:
        return {"key_type": self.key_type, "public_key": self.public_key, "fingerprint": self.fingerprint,
                "trusted_at": self.trusted_at, "trusted_by": self.trusted_by}


def _from_row(row: DeviceHostKey) -> HostKey:
    return HostKey(row.key_type, row.public_key, row.fingerprint, row.trusted_at, row.trusted_by)


def stored_key(device_id: int) -> HostKey | None:
    """The key trusted for the device, or None before first contact."""
    with session_scope() as session:
        row = session.get(DeviceHostKey, device_id)
        return _from_row(row) if row is not None else None


def _store(device_id: int, device: str, key: HostKey, by: str, replace: bool = False) -> HostKey:
    """Store ``key`` for the device and return what is stored afterwards.

    Without ``replace`` an existing key stays (insert ... on conflict do nothing): of two concurrent
    first contacts only one key is stored, and the caller compares it with what it saw.
    """
    values = dict(device_id=device_id, key_type=key.key_type, public_key=key.public_key,
                  fingerprint=key.fingerprint, trusted_by=by[:255])
    statement = insert(DeviceHostKey).values(**values)
    if replace:
        statement = statement.on_conflict_do_update(
            index_elements=[DeviceHostKey.device_id],
            set_={**{k: v for k, v in values.items() if k != "device_id"}, "trusted_at": func.now()},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=[DeviceHostKey.device_id])
    with session_scope() as session:
        written = session.execute(statement).rowcount
        if written:
            log_change("device.trust", device,
                       {"fingerprint": key.fingerprint, "key_type": key.key_type, "replace": replace, "by": by},
                       session=session)
    stored = stored_key(device_id)
    if stored is None:  # the device was removed meanwhile
        raise NotFoundError(f"device id {device_id} no longer exists")
    return stored


# --- asking a device for its key -------------------------------------------------------------


def known_hosts_name(host: str, port: int) -> str:
    """The name paramiko (and OpenSSH) look a host up by: ``host``, or ``[host]:port`` off port 22."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


def _prefer_key_type(transport: paramiko.Transport, key_type: str) -> None:
    # What paramiko's SSHClient does for a host it knows: ask for the known key's type first, so a
    # device with several host keys presents the same one every time.
    options = transport.get_security_options()
    wanted = key_type
    if key_type == "ssh-rsa":
        wanted = next((t for t in ("rsa-sha2-512", "rsa-sha2-256") if t in options.key_types), key_type)
    if wanted in options.key_types:
        options.key_types = [wanted] + [t for t in options.key_types if t != wanted]


def fetch_host_key(host: str, port: int = SSH_PORT, timeout: float = 10.0, prefer: str | None = None) -> HostKey:
    """The host key ``host:port`` presents: SSH key exchange only, no authentication.

    ``prefer`` asks for a key type first (the stored one). Raises TransientError when the device
    cannot be reached or the exchange fails.
    """
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransientError(f"{where}: cannot connect: {exc.strerror or exc or type(exc).__name__}") from None
    transport = None
    try:
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        if prefer:
            _prefer_key_type(transport, prefer)
        transport.start_client(timeout=timeout)
        return HostKey.of(transport.get_remote_server_key())
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise TransientError(f"{where}: SSH key exchange failed: {exc or type(exc).__name__}") from None
    finally:
        if transport is not None:
            transport.close()
        sock.close()


# --- trusting --------------------------------------------------------------------------------


class _Target(Protocol):
    id: int
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class _Device:
    id: int
    name: str
    host: str
    port: int


def _where(target: _Target) -> str:
    return f"{target.name} ({target.host}:{target.port})"


def changed_error(target: _Target, trusted: HostKey, presented: HostKey) -> HostKeyChangedError:
    return HostKeyChangedError(
        f"{_where(target)}: the SSH host key changed: trusted {trusted.describe()}, the device now presents "
        f"{presented.describe()}. Someone may be intercepting the connection; if the device was replaced or "
        f"re-keyed, check the new fingerprint on its console and accept it with "
        f"`netjobs devices trust {target.name} --replace`",
        trusted, presented,
    )


@dataclass(frozen=True)
class TrustOutcome:
    device: str
    action: str  # "stored" | "replaced" | "already trusted"
    key: HostKey
    previous: HostKey | None = None

    def as_dict(self) -> dict:
        return {"device": self.device, "action": self.action, **self.key.as_dict(),
                "previous_fingerprint": self.previous.fingerprint if self.previous else None}


def _device(name: str) -> _Device:
    with session_scope() as session:
        row = session.execute(select(Device.id, Device.name, Device.mgmt_address, Device.port)
                              .where(Device.name == name)).first()
    if row is None:
        raise NotFoundError(f"unknown device {name!r} (see `netjobs devices list`)")
    return _Device(row.id, row.name, row.mgmt_address, row.port)


def trust(device: str, replace: bool = False, by: str | None = None, settings: Settings | None = None) -> TrustOutcome:
    """Ask ``device`` for its host key and trust it.

    A different key already trusted is a HostKeyChangedError unless ``replace``. Raises
    NotFoundError for an unknown device and TransientError when it cannot be reached.
    """
    settings = settings or get_settings()
    target = _device(device)
    by = by or login_user()
    previous = stored_key(target.id)
    presented = fetch_host_key(target.host, target.port, settings.device_conn_timeout,
                               prefer=previous.key_type if previous else None)
    if previous is not None and previous == presented:
        return TrustOutcome(target.name, "already trusted", previous)
    if previous is not None and not replace:
        raise changed_error(target, previous, presented)
    stored = _store(target.id, target.name, presented, by, replace=replace)
    if stored != presented:  # someone else stored another key meanwhile
        raise changed_error(target, stored, presented)
    return TrustOutcome(target.name, "replaced" if previous is not None else "stored", stored, previous)


def list_host_keys() -> list[dict]:
    """Every device with its trusted key (None fields before first contact), by name."""
    query = (select(Device.name, Device.mgmt_address, Device.port, DeviceHostKey)
             .outerjoin(DeviceHostKey, DeviceHostKey.device_id == Device.id).order_by(Device.name))
    rows = []
    with session_scope() as session:
        for name, address, port, key in session.execute(query):
            entry = {"device": name, "address": address, "port": port}
            entry |= (_from_row(key).as_dict() if key is not None
                      else dict.fromkeys(("key_type", "public_key", "fingerprint", "trusted_at", "trusted_by")))
            rows.append(entry)
    return rows


# --- verification during a backup ------------------------------------------------------------


def first_contact(target: _Target, policy: str, timeout: float) -> HostKey:
    """The key to pin for a device without a stored one, by ``policy``; PermanentError if refused."""
    presented = fetch_host_key(target.host, target.port, timeout)
    if policy != TRUST_ON_FIRST_USE:
        raise UnknownHostKeyError(
            f"{_where(target)}: no trusted SSH host key yet; the device presents {presented.describe()}. "
            f"Check that fingerprint on the device's console, then run `netjobs devices trust {target.name}` "
            f"(NETJOBS_SSH_HOST_KEY_POLICY is {policy})"
        )
    stored = _store(target.id, target.name, presented, TRUST_ON_FIRST_USE)
    if stored != presented:  # a concurrent first contact stored another key: one of them is not the device
        raise changed_error(target, stored, presented)
    return stored


def _bad_host_key(exc: BaseException | None) -> paramiko.BadHostKeyException | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, paramiko.BadHostKeyException):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class PinnedHostKey:
    """The one key a connection to ``target`` may accept, in a known_hosts file for Netmiko."""

    target: _Target
    key: HostKey
    known_hosts: str

    def netmiko_params(self) -> dict:
        # ssh_strict: paramiko's RejectPolicy for a host missing from the known hosts; a host in them
        # with another key fails with BadHostKeyException either way. Only this file is loaded.
        return dict(ssh_strict=True, system_host_keys=False, alt_host_keys=True, alt_key_file=self.known_hosts)

    def check(self, exc: BaseException) -> None:
        """Raise HostKeyChangedError if ``exc`` (e.g. Netmiko's wrapper) came from a key mismatch."""
        bad = _bad_host_key(exc)
        if bad is not None:
            raise changed_error(self.target, self.key, HostKey.of(bad.key)) from None


@contextmanager
def pinned_host_key(target: _Target, settings: Settings | None = None) -> Iterator[PinnedHostKey]:
    """The device's trusted key (after first contact by the policy) in a temporary known_hosts file."""
    settings = settings or get_settings()
    key = stored_key(target.id)
    if key is None:
        key = first_contact(target, settings.ssh_host_key_policy, settings.device_conn_timeout)
    with tempfile.TemporaryDirectory(prefix="netjobs-known-hosts-") as tmp:
        path = Path(tmp) / "known_hosts"
        known = paramiko.HostKeys()
        known.add(known_hosts_name(target.host, target.port), key.key_type, key.pkey())
        known.save(str(path))
        yield PinnedHostKey(target, key, str(path))
