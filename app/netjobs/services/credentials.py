"""Device login credentials, from the settings or a YAML file - never from task arguments.

Task arguments are stored in history and dead letters, so a device names only a credentials
reference (``devices.credentials_ref``). The reference is looked up in
``NETJOBS_DEVICE_CREDENTIALS_FILE`` (``{ref: {username, password, key_file, secret}}``); the
reference ``default`` falls back to ``NETJOBS_DEVICE_USERNAME/PASSWORD/KEY_FILE``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netjobs.config import Settings, get_settings
from netjobs.errors import PermanentError

DEFAULT_REF = "default"
_FIELDS = ("username", "password", "key_file", "secret")


class CredentialsError(PermanentError):
    """No usable credentials for a device; an operator must fix the configuration."""


@dataclass(frozen=True)
class DeviceCredentials:
    ref: str
    username: str
    password: str = field(default="", repr=False)
    key_file: str = ""
    secret: str = field(default="", repr=False)  # enable secret; empty means the password

    @property
    def enable_secret(self) -> str:
        return self.secret or self.password


_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, int, dict]] = {}


def _load_file(path: str) -> dict:
    """The parsed credentials file, re-read only when it changes on disk."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise CredentialsError(f"NETJOBS_DEVICE_CREDENTIALS_FILE {path}: {exc.strerror}") from None
    with _cache_lock:
        cached = _cache.get(path)
        if cached and cached[:2] == (stat.st_mtime, stat.st_size):
            return cached[2]
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise CredentialsError(f"NETJOBS_DEVICE_CREDENTIALS_FILE {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CredentialsError(f"NETJOBS_DEVICE_CREDENTIALS_FILE {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"NETJOBS_DEVICE_CREDENTIALS_FILE {path} must map references to credentials")
    with _cache_lock:
        _cache[path] = (stat.st_mtime, stat.st_size, data)
    return data


def _from_entry(ref: str, entry: object, source: str) -> DeviceCredentials:
    if not isinstance(entry, dict):
        raise CredentialsError(f"credentials {ref!r} in {source} must be a mapping with username and password or key_file")
    unknown = sorted(set(map(str, entry)) - set(_FIELDS))
    if unknown:
        raise CredentialsError(f"credentials {ref!r} in {source} has unknown field(s): {', '.join(unknown)}")
    values = {k: entry.get(k) for k in _FIELDS}
    for name, value in values.items():
        if value is not None and not isinstance(value, (str, int)):
            raise CredentialsError(f"credentials {ref!r} in {source}: {name} must be a string")
    creds = DeviceCredentials(ref=ref, **{k: str(v) if v is not None else "" for k, v in values.items()})
    return _checked(creds, source)


def _checked(creds: DeviceCredentials, source: str) -> DeviceCredentials:
    if not creds.username:
        raise CredentialsError(f"credentials {creds.ref!r} from {source} have no username")
    if not creds.password and not creds.key_file:
        raise CredentialsError(f"credentials {creds.ref!r} from {source} need a password or a key_file")
    if creds.key_file and not os.access(creds.key_file, os.R_OK):
        raise CredentialsError(f"credentials {creds.ref!r} from {source}: key file {creds.key_file} is not readable")
    return creds


def credentials_for(ref: str | None, settings: Settings | None = None) -> DeviceCredentials:
    """The credentials a device with ``credentials_ref = ref`` logs in with.

    Raises :class:`CredentialsError` (permanent) with a message naming what to fix.
    """
    settings = settings or get_settings()
    ref = ref or DEFAULT_REF
    path = settings.device_credentials_file
    if path:
        entries = _load_file(path)
        if ref in entries:
            return _from_entry(ref, entries[ref], path)
    if ref == DEFAULT_REF:
        if not settings.device_username:
            raise CredentialsError(
                "no default device credentials: set NETJOBS_DEVICE_USERNAME and NETJOBS_DEVICE_PASSWORD "
                "(or NETJOBS_DEVICE_KEY_FILE), or a 'default' entry in NETJOBS_DEVICE_CREDENTIALS_FILE"
            )
        creds = DeviceCredentials(ref=ref, username=settings.device_username, password=settings.device_password,
                                  key_file=settings.device_key_file)
        return _checked(creds, "NETJOBS_DEVICE_* settings")
    if not path:
        raise CredentialsError(
            f"credentials reference {ref!r} needs NETJOBS_DEVICE_CREDENTIALS_FILE (only 'default' comes from "
            "NETJOBS_DEVICE_USERNAME/PASSWORD)"
        )
    known = ", ".join(sorted(map(str, entries))) or "none"
    raise CredentialsError(f"credentials reference {ref!r} is not in {path} (known: {known})")
