"""Configuration backup: fetch a device's running configuration over SSH, normalize and redact it,
and record it in the config archive (netjobs.services.archive).

Plain Python, no Celery: :func:`backup_device` is what ``netjobs.backup.device`` calls.
Errors are classified for the task's retry logic: the network failing is a TransientError,
wrong credentials or an unknown device a PermanentError with a message for the operator.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import select

from netjobs.config import Settings, get_settings
from netjobs.db.engine import session_scope
from netjobs.db.models import Device
from netjobs.errors import NotFoundError, PermanentError, TransientError
from netjobs.platforms import (
    CHANGE_MARKERS,
    CONFIG_END_LINES,
    NEEDS_ENABLE,
    NETMIKO_DEVICE_TYPES,
    RUNNING_CONFIG_COMMANDS,
    VOLATILE_LINE_PATTERNS,
    find_change_marker,
)
from netjobs.services.credentials import DeviceCredentials, credentials_for

if TYPE_CHECKING:
    from netjobs.services.hostkeys import PinnedHostKey

log = logging.getLogger(__name__)


# --- normalization ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _volatile_regex(platform: str) -> re.Pattern[str] | None:
    patterns = VOLATILE_LINE_PATTERNS.get(platform, ())
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def normalize_config(platform: str, text: str) -> str:
    """The configuration without what changes on every show (timestamps, uptime, byte counts).

    Line endings become ``\\n``, trailing blanks go, leading/trailing empty lines go, and the
    result ends with exactly one newline (or is empty). Normalizing twice changes nothing.
    """
    volatile = _volatile_regex(platform)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    if volatile is not None:
        lines = [line for line in lines if not volatile.fullmatch(line.strip())]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupTarget:
    id: int
    name: str
    host: str
    port: int
    platform: str
    credentials_ref: str


def load_target(name: str) -> BackupTarget:
    """The device called ``name``, checked for a supported platform. Permanent errors otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise NotFoundError(f"device name must be a non-empty string, got {name!r}")
    with session_scope() as session:
        device = session.scalar(select(Device).where(Device.name == name))
        if device is None:
            raise NotFoundError(f"unknown device {name!r} (see `netjobs devices list`)")
        if not device.enabled:
            raise PermanentError(f"device {name!r} is disabled; enable it to back it up")
        if device.platform not in RUNNING_CONFIG_COMMANDS:
            known = ", ".join(sorted(RUNNING_CONFIG_COMMANDS))
            raise PermanentError(f"device {name!r} has platform {device.platform!r}, which backup does not support ({known})")
        return BackupTarget(device.id, device.name, device.mgmt_address, device.port, device.platform,
                            device.credentials_ref)


def select_devices(site: str | None = None, tag: str | None = None) -> list[str]:
    """Names of the enabled devices of ``site`` and/or with ``tag``, in name order."""
    query = select(Device.name).where(Device.enabled.is_(True)).order_by(Device.name)
    if site is not None:
        query = query.where(Device.site == site)
    if tag is not None:
        query = query.where(Device.tags.any(tag))
    with session_scope() as session:
        return list(session.scalars(query))


# --- fetching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float  # TCP connect, SSH banner and authentication, each
    read: float  # one command's output

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(connect=settings.device_conn_timeout, read=settings.device_read_timeout)


@dataclass(frozen=True)
class FetchedConfig:
    change_marker: str | None  # the platform's change marker, read first; None: none (or not asked)
    raw: str | None  # the running configuration; None: not read, ``skip_full_read`` said unchanged


def fetch_running_config(target: BackupTarget, creds: DeviceCredentials, timeouts: Timeouts,
                         host_key: PinnedHostKey, read_marker: bool = False,
                         skip_full_read: Callable[[str], bool] | None = None) -> FetchedConfig:
    """The raw running configuration of ``target``, read with Netmiko.

    With ``read_marker`` and a platform that has one, the change marker is read first in the same
    session; ``skip_full_read(marker)`` (called with the session still open) may then spare the
    full read by returning True.

    Only a device presenting ``host_key`` is logged in to. Raises TransientError when the device
    cannot be reached or stops answering, PermanentError when it refuses the credentials or the
    enable secret, HostKeyChangedError (permanent) when it presents another host key.
    """
    from netmiko import ConnectHandler
    from netmiko.exceptions import NetmikoAuthenticationException, NetmikoTimeoutException, ReadTimeout
    from paramiko.ssh_exception import SSHException

    where = f"{target.name} ({target.host}:{target.port})"
    params = dict(
        device_type=NETMIKO_DEVICE_TYPES[target.platform], host=target.host, port=target.port,
        username=creds.username, password=creds.password or None, secret=creds.enable_secret,
        use_keys=bool(creds.key_file), key_file=creds.key_file or None, allow_agent=False,
        conn_timeout=timeouts.connect, auth_timeout=timeouts.connect, banner_timeout=timeouts.connect,
        fast_cli=True, keepalive=0, **host_key.netmiko_params(),
    )
    marker_command = CHANGE_MARKERS[target.platform].command if read_marker and target.platform in CHANGE_MARKERS \
        else None
    command = RUNNING_CONFIG_COMMANDS[target.platform]
    marker = output = None
    try:
        conn = ConnectHandler(**params)
        try:
            if target.platform in NEEDS_ENABLE and not conn.check_enable_mode():
                try:
                    conn.enable()
                except (ValueError, ReadTimeout):  # IOS asks again for a wrong secret: no prompt
                    raise PermanentError(f"{where}: enable failed; check the enable secret of credentials "
                                         f"{creds.ref!r}") from None
            if marker_command is not None:
                command = marker_command
                marker = find_change_marker(target.platform, conn.send_command(command, read_timeout=timeouts.read))
                command = RUNNING_CONFIG_COMMANDS[target.platform]
            if marker is None or skip_full_read is None or not skip_full_read(marker):
                output = conn.send_command(command, read_timeout=timeouts.read)
        except ReadTimeout:
            alive = _session_alive(conn)
            conn.paramiko_cleanup()
            if not alive:
                raise TransientError(f"{where}: connection lost while reading {command!r}") from None
            raise
        except BaseException:
            # A stuck session would also stall a polite logout: drop the connection instead.
            conn.paramiko_cleanup()
            raise
        conn.disconnect()
    except (PermanentError, TransientError):
        raise
    except NetmikoAuthenticationException:
        raise PermanentError(f"{where}: authentication failed for user {creds.username!r} "
                             f"(credentials {creds.ref!r})") from None
    except ReadTimeout:
        raise TransientError(f"{where}: no answer to {command!r} within {timeouts.read:g}s") from None
    except NetmikoTimeoutException as exc:
        host_key.check(exc)  # Netmiko wraps paramiko's BadHostKeyException
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "timed out"
        raise TransientError(f"{where}: cannot connect: {reason}") from None
    except (SSHException, EOFError, OSError, socket.timeout) as exc:
        host_key.check(exc)
        raise TransientError(f"{where}: connection lost: {exc or type(exc).__name__}") from None
    except ValueError as exc:
        # Netmiko raises ValueError when it cannot find the prompt: a half-open session.
        raise TransientError(f"{where}: unexpected session: {exc}") from None
    return FetchedConfig(marker, output)


def _session_alive(conn) -> bool:
    channel = getattr(conn, "remote_conn", None)
    transport = channel.get_transport() if channel is not None and hasattr(channel, "get_transport") else None
    return bool(transport is not None and transport.is_active() and not channel.closed)


def check_complete(target: BackupTarget, text: str) -> None:
    """Refuse output that is empty or cut short, rather than commit half a configuration."""
    if not text.strip():
        raise TransientError(f"{target.name}: the device returned an empty configuration")
    marker = re.search(r"^% (Invalid input|Incomplete command|Ambiguous command).*$", text, re.M)
    if marker:
        raise PermanentError(f"{target.name}: the device refused {RUNNING_CONFIG_COMMANDS[target.platform]!r}: "
                             f"{marker.group(0)}")
    end = CONFIG_END_LINES.get(target.platform)
    if end is not None and text.rstrip().rsplit("\n", 1)[-1].strip() != end:
        raise TransientError(f"{target.name}: configuration output is incomplete (no final {end!r} line)")


# --- the whole backup ------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    device: str
    status: str  # "changed" | "unchanged"
    snapshot_id: int
    content_hash: str
    lines_added: int | None
    lines_removed: int | None
    full_read: bool = True  # False: the change marker showed no change, the configuration was not read

    def as_dict(self) -> dict:
        return asdict(self)


def prepare_config(platform: str, raw: str, settings: Settings) -> str:
    """What the archive stores: the normalized configuration, with secrets redacted unless disabled."""
    text = normalize_config(platform, raw)
    if settings.redact_secrets:
        from netjobs.redact import redact

        text = redact(platform, text)
    return text


def backup_device(name: str, task_id: str | None = None, settings: Settings | None = None,
                  changed_by: str | None = None, full: bool = False) -> BackupResult:
    """Back up one device into the archive. Safe to repeat: the same task id adds no second snapshot.

    ``changed_by``: who changed the configuration (from the device's syslog message), kept with the snapshot.

    On a platform with a change marker (netjobs.platforms.CHANGE_MARKERS) the marker is read first;
    when it equals the one stored with the device's newest snapshot and the last full read is younger
    than NETJOBS_BACKUP_FULL_READ_HOURS, an unchanged snapshot is recorded without reading the
    configuration. ``full``, ``changed_by`` (the device said it changed) or no earlier snapshot:
    always a full read."""
    from netjobs.services.archive import store_snapshot, store_unchanged_by_marker
    from netjobs.services.hostkeys import pinned_host_key

    settings = settings or get_settings()
    target = load_target(name)
    creds = credentials_for(target.credentials_ref, settings)
    full_read_max_age = timedelta(hours=settings.backup_full_read_hours)
    may_skip = not full and changed_by is None and settings.backup_full_read_hours > 0
    unchanged = None

    def record_if_unchanged(marker: str) -> bool:
        nonlocal unchanged
        unchanged = store_unchanged_by_marker(target.id, marker, task_id, full_read_max_age)
        return unchanged is not None

    with pinned_host_key(target, settings) as host_key:
        fetched = fetch_running_config(target, creds, Timeouts.from_settings(settings), host_key,
                                       read_marker=settings.backup_full_read_hours > 0,
                                       skip_full_read=record_if_unchanged if may_skip else None)
    if fetched.raw is None:  # the marker matched: `unchanged` holds the snapshot recorded for it
        stored, digest = unchanged
    else:
        check_complete(target, fetched.raw)
        text = prepare_config(target.platform, fetched.raw, settings)
        digest = content_hash(text)
        stored = store_snapshot(target.id, text, digest, task_id, changed_by=changed_by,
                                change_marker=fetched.change_marker)
    status = "changed" if stored.changed else "unchanged"
    log.info("backup %s: %s (snapshot %d, +%s -%s, %s)", target.name, status, stored.snapshot_id,
             stored.lines_added, stored.lines_removed, "full read" if fetched.raw is not None else "marker unchanged")
    return BackupResult(target.name, status, stored.snapshot_id, digest, stored.lines_added, stored.lines_removed,
                        stored.full_read)


def summarize_results(results: list[dict]) -> dict:
    """The summary of a fan-out run from the per-device results (changed/unchanged/failed)."""
    summary = {"devices": len(results), "backed_up": 0, "unchanged": 0, "failed": 0, "failures": []}
    for item in results:
        status = item.get("status") if isinstance(item, dict) else None
        if status == "changed":
            summary["backed_up"] += 1
        elif status == "unchanged":
            summary["unchanged"] += 1
        else:
            summary["failed"] += 1
            device = item.get("device") if isinstance(item, dict) else None
            error = item.get("error") if isinstance(item, dict) else f"unexpected result {item!r}"
            summary["failures"].append({"device": device, "error": error})
    summary["failures"].sort(key=lambda f: str(f["device"]))
    return summary
