"""Settings: read once from the environment (``NETJOBS_*``) and validated.

Every other module gets its configuration from :func:`get_settings`. A bad value raises
:class:`ConfigError` whose message names the variable; the CLI and the Celery app turn that into
one line on stderr instead of a traceback.

NETJOBS_DATABASE_URL is checked when loaded, if set, but required only when a process asks for it
(:attr:`Settings.database_url`): Flower loads the Celery app for the broker alone and gets none.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import parse_qsl, urlsplit

BASE_QUEUES: tuple[str, ...] = ("default", "backup", "network", "heavy")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the variable."""


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend_url: str
    redbeat_url: str
    # NETJOBS_DATABASE_URL, validated; empty when not set. Read it as database_url, which refuses
    # an empty one. Not in repr: it holds the password.
    database_url_or_empty: str = field(default="", repr=False)
    timezone: str = "UTC"
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""
    redis_sentinel_master: str = ""
    # kombu transport of the broker: "netjobs" (netjobs.redis_transport, one redis-py client per
    # channel) or "kombu" (kombu's own Redis transport, whose redis:// URI Flower's Broker page reads).
    broker_transport: str = "netjobs"
    backup_repo: Path = Path("/var/lib/netjobs/config-backups")
    extra_queues: tuple[str, ...] = ()
    task_soft_time_limit: int = 540
    task_time_limit: int = 600
    heavy_soft_time_limit: int = 3300
    heavy_time_limit: int = 3600
    visibility_timeout: int = 7200
    result_expires: int = 86400
    history_retention_days: int = 90
    history_enabled: bool = True
    device_username: str = ""
    device_password: str = field(default="", repr=False)
    device_key_file: str = ""
    device_credentials_file: str = ""
    ssh_host_key_policy: str = "strict"
    redact_secrets: bool = True
    device_conn_timeout: float = 10.0
    device_read_timeout: float = 60.0
    # A backup whose change marker is unchanged skips the full read while the last full read is
    # younger than this; 0: every backup reads in full.
    backup_full_read_hours: int = 168
    sweep_max_addresses: int = 65536
    sweep_concurrency: int = 1024
    icmp_enabled: bool = False
    compliance_rules: Path = Path("/etc/netjobs/compliance.yml")
    beat_max_interval: int = 60
    redbeat_lock_timeout: int = 90
    redbeat_key_prefix: str = "netjobs:redbeat:"
    backlog_threshold: int = 1000
    worker_lease_seconds: int = 60
    max_redeliveries: int = 3
    max_retries: int = 5
    retry_backoff: float = 2.0
    retry_backoff_max: float = 300.0
    log_level: str = "INFO"
    exporter_listen: tuple[str, int] = ("127.0.0.1", 9808)
    exporter_basic_auth_file: str = ""
    exporter_cache_seconds: float = 10.0
    syslog_listen: tuple[str, int] = ("127.0.0.1", 5514)
    syslog_debounce_seconds: float = 120.0
    syslog_device_refresh_seconds: float = 60.0
    syslog_max_line_bytes: int = 8192
    syslog_linux_pattern: str = ""
    api_listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 8470),)
    api_tls_cert_file: str = ""
    api_tls_key_file: str = ""
    api_root_path: str = ""
    api_auth_failures: int = 10
    api_auth_window_seconds: int = 300
    api_forwarded_allow_ips: tuple[str, ...] = ()

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL. Raises ConfigError when NETJOBS_DATABASE_URL is not set: only the
        processes that use the database need it (Flower, which reads the broker only, has none)."""
        if not self.database_url_or_empty:
            raise ConfigError("NETJOBS_DATABASE_URL is not set (see /etc/netjobs/netjobs.env), but this process "
                              "uses the database")
        return self.database_url_or_empty

    @property
    def queues(self) -> tuple[str, ...]:
        return BASE_QUEUES + tuple(q for q in self.extra_queues if q not in BASE_QUEUES)

    @property
    def redis_urls(self) -> dict[str, str]:
        """Each Redis URL by the variable that sets it."""
        return {"NETJOBS_BROKER_URL": self.broker_url, "NETJOBS_RESULT_BACKEND_URL": self.result_backend_url,
                "NETJOBS_REDBEAT_URL": self.redbeat_url}

    @property
    def longest_time_limit(self) -> int:
        return max(self.task_time_limit, self.heavy_time_limit)

    @property
    def longest_delay(self) -> int:
        """The longest countdown or ETA a task may get. A delayed message stays unacked in the worker
        that holds it until it has waited and run, so waiting plus running must fit within the
        visibility timeout (kombu#337) or Redis hands it out a second time."""
        return self.visibility_timeout - self.longest_time_limit


# --- parsers: each takes the raw string and raises ValueError with a short reason --------------


def _redis_url(raw: str) -> str:
    if raw.startswith("sentinel://"):
        return _sentinel_url(raw)
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "redis+socket"):
        raise ValueError("must be a redis://, rediss:// or sentinel:// URL")
    if parts.scheme != "redis+socket" and not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return raw


def _sentinel_url(raw: str) -> str:
    """kombu's form: ``sentinel://[USER:PASS@]HOST:PORT[/DB]`` per Sentinel, joined with ``;``."""
    for node in raw.split(";"):
        parts = urlsplit(node.strip())
        if parts.scheme != "sentinel":
            raise ValueError(f"mixes sentinel:// with {parts.scheme or 'no'} scheme ({node.strip()!r})")
        if not parts.hostname:
            raise ValueError(f"has a Sentinel without a host ({node.strip()!r})")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"has a Sentinel with an invalid port ({node.strip()!r})") from None
    return raw


def _database_url(raw: str) -> str:
    parts = urlsplit(raw)
    if not parts.scheme.startswith("postgresql"):
        raise ValueError("must be a postgresql+psycopg2:// URL")
    if parts.scheme == "postgresql":
        raw = "postgresql+psycopg2" + raw[len("postgresql"):]
    elif parts.scheme != "postgresql+psycopg2":
        raise ValueError("must use the psycopg2 driver (postgresql+psycopg2://)")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("has no host")
    if not parts.path.strip("/"):
        raise ValueError("has no database name")
    query = dict(parse_qsl(parts.query))
    mode = query.get("sslmode")
    if mode is not None and mode not in _LIBPQ_SSLMODES:
        raise ValueError(f"has sslmode={mode!r}; libpq knows {', '.join(_LIBPQ_SSLMODES)}")
    # verify-ca/verify-full check the server against this CA: a missing file fails every connection.
    root = query.get("sslrootcert")
    if root and root != "system" and not os.access(root, os.R_OK):
        raise ValueError(f"has sslrootcert={root!r}, which is not a readable file")
    return raw


_LIBPQ_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _number_between(convert: Callable[[str], T], kind: str, low, high) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = convert(raw.strip())
        except ValueError:
            raise ValueError(f"must be {kind}, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    return _number_between(int, "a whole number", low, high)


def _float_between(low: float, high: float) -> Callable[[str], float]:
    return _number_between(float, "a number", low, high)


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _timezone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"is not a known IANA time zone: {raw!r}") from None
    return raw


def _queue_list(raw: str) -> tuple[str, ...]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"has an invalid queue name {name!r} (letters, digits, _ . -)")
    return tuple(dict.fromkeys(names))


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def _key_prefix(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw):
        raise ValueError("must be a non-empty string without spaces")
    return raw


def _text(raw: str) -> str:
    return raw


def _optional(parse: Callable[[str], str]) -> Callable[[str], str]:
    """``parse``, except that an empty or blank value means not set (an empty string)."""
    def parse_or_empty(raw: str) -> str:
        return parse(raw) if raw.strip() else ""

    return parse_or_empty


def _readable_file(raw: str) -> str:
    path = raw.strip()
    if path and not os.access(path, os.R_OK):
        raise ValueError(f"names {path!r}, which is not a readable file")
    return path


def _listen_address(raw: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT``; HOST an IP address (the exporter binds it, no name lookups)."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be HOST:PORT (e.g. 127.0.0.1:9808), got {raw!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"must name an IP address to listen on, got {host!r}") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"has an invalid port {port!r} (1-65535)")
    return host, int(port)


def _listen_addresses(raw: str) -> tuple[tuple[str, int], ...]:
    """One or more ``HOST:PORT`` separated by commas (loopback and a management address)."""
    addresses = tuple(_listen_address(part) for part in raw.split(",") if part.strip())
    if not addresses:
        raise ValueError("must name at least one HOST:PORT")
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"names an address twice: {raw!r}")
    return addresses


def _user_pattern(raw: str) -> str:
    """A Python regular expression with a named group ``user`` (empty: disabled)."""
    if not raw.strip():
        return ""
    try:
        pattern = re.compile(raw)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc})") from None
    if "user" not in pattern.groupindex:
        raise ValueError("must have a named group (?P<user>...) for the user who made the change")
    return raw


def _root_path(raw: str) -> str:
    """A URL path prefix a reverse proxy adds (``/netjobs``), or empty."""
    path = raw.strip()
    if not path:
        return ""
    if not path.startswith("/") or path.endswith("/") or "//" in path or any(c in path for c in "?#% \t"):
        raise ValueError(f"must be a path like /netjobs (leading /, no trailing /, no ? # %), got {raw!r}")
    return path


def _address_list(raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses (or networks)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"must list IP addresses or networks separated by commas, got {item!r}") from None
    return tuple(items)


# --- loading ---------------------------------------------------------------------------------


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``env`` (default: ``os.environ``). Raises ConfigError."""
    env = os.environ if env is None else env

    def read(name: str, parse: Callable[[str], T], default: T | None = None, required: bool = False) -> T:
        var = f"NETJOBS_{name}"
        raw = env.get(var)
        if raw is None or (raw.strip() == "" and required):
            if required:
                raise ConfigError(f"{var} is not set (see /etc/netjobs/netjobs.env)")
            return default  # type: ignore[return-value]
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{var} {exc}") from None

    broker = read("BROKER_URL", _redis_url, required=True)
    values = dict(
        broker_url=broker,
        result_backend_url=read("RESULT_BACKEND_URL", _redis_url, broker),
        redbeat_url=read("REDBEAT_URL", _redis_url, broker),
        # Optional here; Settings.database_url refuses it missing where it is used.
        database_url_or_empty=read("DATABASE_URL", _optional(_database_url), ""),
        timezone=read("TIMEZONE", _timezone, "UTC"),
        redis_tls_ca_file=read("REDIS_TLS_CA_FILE", _readable_file, ""),
        redis_tls_cert_file=read("REDIS_TLS_CERT_FILE", _readable_file, ""),
        redis_tls_key_file=read("REDIS_TLS_KEY_FILE", _readable_file, ""),
        redis_sentinel_master=read("REDIS_SENTINEL_MASTER", _text, "").strip(),
        broker_transport=read("BROKER_TRANSPORT", _choice("netjobs", "kombu"), "netjobs"),
        backup_repo=read("BACKUP_REPO", Path, Settings.backup_repo),
        extra_queues=read("EXTRA_QUEUES", _queue_list, ()),
        task_soft_time_limit=read("TASK_SOFT_TIME_LIMIT", _int_between(1, 86400), 540),
        task_time_limit=read("TASK_TIME_LIMIT", _int_between(1, 86400), 600),
        heavy_soft_time_limit=read("HEAVY_SOFT_TIME_LIMIT", _int_between(1, 86400), 3300),
        heavy_time_limit=read("HEAVY_TIME_LIMIT", _int_between(1, 86400), 3600),
        visibility_timeout=read("VISIBILITY_TIMEOUT", _int_between(60, 7 * 86400), 7200),
        result_expires=read("RESULT_EXPIRES", _int_between(60, 30 * 86400), 86400),
        history_retention_days=read("HISTORY_RETENTION_DAYS", _int_between(1, 3650), 90),
        history_enabled=read("HISTORY_ENABLED", _bool, True),
        device_username=read("DEVICE_USERNAME", _text, ""),
        device_password=read("DEVICE_PASSWORD", _text, ""),
        device_key_file=read("DEVICE_KEY_FILE", _text, ""),
        device_credentials_file=read("DEVICE_CREDENTIALS_FILE", _text, ""),
        ssh_host_key_policy=read("SSH_HOST_KEY_POLICY", _choice("strict", "trust-on-first-use"), "strict"),
        redact_secrets=read("REDACT_SECRETS", _bool, True),
        device_conn_timeout=read("DEVICE_CONN_TIMEOUT", _float_between(0.5, 300), 10.0),
        device_read_timeout=read("DEVICE_READ_TIMEOUT", _float_between(0.5, 3600), 60.0),
        backup_full_read_hours=read("BACKUP_FULL_READ_HOURS", _int_between(0, 24 * 366), 168),
        sweep_max_addresses=read("SWEEP_MAX_ADDRESSES", _int_between(1, 1 << 24), 65536),
        sweep_concurrency=read("SWEEP_CONCURRENCY", _int_between(1, 20000), 1024),
        icmp_enabled=read("ICMP_ENABLED", _bool, False),
        compliance_rules=read("COMPLIANCE_RULES", Path, Settings.compliance_rules),
        beat_max_interval=read("BEAT_MAX_INTERVAL", _int_between(1, 3600), 60),
        redbeat_lock_timeout=read("REDBEAT_LOCK_TIMEOUT", _int_between(2, 86400), 90),
        redbeat_key_prefix=read("REDBEAT_KEY_PREFIX", _key_prefix, "netjobs:redbeat:"),
        backlog_threshold=read("BACKLOG_THRESHOLD", _int_between(1, 10**9), 1000),
        worker_lease_seconds=read("WORKER_LEASE_SECONDS", _int_between(10, 3600), 60),
        max_redeliveries=read("MAX_REDELIVERIES", _int_between(0, 100), 3),
        max_retries=read("MAX_RETRIES", _int_between(0, 100), 5),
        retry_backoff=read("RETRY_BACKOFF", _float_between(0.01, 3600), 2.0),
        retry_backoff_max=read("RETRY_BACKOFF_MAX", _float_between(0.01, 86400), 300.0),
        log_level=read("LOG_LEVEL", _log_level, "INFO"),
        exporter_listen=read("EXPORTER_LISTEN", _listen_address, ("127.0.0.1", 9808)),
        exporter_basic_auth_file=read("EXPORTER_BASIC_AUTH_FILE", _readable_file, ""),
        exporter_cache_seconds=read("EXPORTER_CACHE_SECONDS", _float_between(0, 3600), 10.0),
        syslog_listen=read("SYSLOG_LISTEN", _listen_address, ("127.0.0.1", 5514)),
        syslog_debounce_seconds=read("SYSLOG_DEBOUNCE_SECONDS", _float_between(0.1, 86400), 120.0),
        syslog_device_refresh_seconds=read("SYSLOG_DEVICE_REFRESH_SECONDS", _float_between(1, 86400), 60.0),
        syslog_max_line_bytes=read("SYSLOG_MAX_LINE_BYTES", _int_between(480, 1 << 20), 8192),
        syslog_linux_pattern=read("SYSLOG_LINUX_PATTERN", _user_pattern, ""),
        api_listen=read("API_LISTEN", _listen_addresses, (("127.0.0.1", 8470),)),
        api_tls_cert_file=read("API_TLS_CERT_FILE", _readable_file, ""),
        api_tls_key_file=read("API_TLS_KEY_FILE", _readable_file, ""),
        api_root_path=read("API_ROOT_PATH", _root_path, ""),
        api_auth_failures=read("API_AUTH_FAILURES", _int_between(1, 100000), 10),
        api_auth_window_seconds=read("API_AUTH_WINDOW_SECONDS", _int_between(1, 86400), 300),
        api_forwarded_allow_ips=read("API_FORWARDED_ALLOW_IPS", _address_list, ()),
    )
    settings = Settings(**values)
    _check_relations(settings)
    return settings


def _check_relations(s: Settings) -> None:
    tls_urls = [var for var, url in s.redis_urls.items() if url.startswith("rediss://")]
    # Verified TLS only: a rediss:// URL without the CA that signed the server's certificate would
    # either fail every connection or, worse, be set to skip verification.
    if tls_urls and not s.redis_tls_ca_file:
        raise ConfigError(f"NETJOBS_REDIS_TLS_CA_FILE is not set, but {' and '.join(tls_urls)} use rediss:// "
                          "(TLS): name the CA certificate that signed the Redis server's certificate")
    sentinel_urls = [var for var, url in s.redis_urls.items() if url.startswith("sentinel://")]
    if s.redis_tls_ca_file and not tls_urls and not sentinel_urls:
        raise ConfigError("NETJOBS_REDIS_TLS_CA_FILE is set, but no Redis URL uses rediss:// or sentinel://: "
                          "use rediss:// in NETJOBS_BROKER_URL (and the others) or unset it")
    if sentinel_urls and not s.redis_sentinel_master:
        raise ConfigError(f"NETJOBS_REDIS_SENTINEL_MASTER is not set, but {' and '.join(sentinel_urls)} use "
                          "sentinel://: name the master the Sentinels monitor (`sentinel monitor NAME ...`)")
    if s.redis_sentinel_master and not sentinel_urls:
        raise ConfigError("NETJOBS_REDIS_SENTINEL_MASTER is set, but no Redis URL uses sentinel://")
    if sentinel_urls and tls_urls:
        raise ConfigError(f"{' and '.join(sentinel_urls)} use sentinel:// while {' and '.join(tls_urls)} use "
                          "rediss://: use sentinel:// for all of them; with NETJOBS_REDIS_TLS_CA_FILE set, "
                          "the Sentinels and the Redis servers they name are reached over TLS")
    if bool(s.api_tls_cert_file) != bool(s.api_tls_key_file):
        raise ConfigError("NETJOBS_API_TLS_CERT_FILE and NETJOBS_API_TLS_KEY_FILE go together (the API's HTTPS "
                          "certificate and its key): set both or neither")
    if bool(s.redis_tls_cert_file) != bool(s.redis_tls_key_file):
        raise ConfigError("NETJOBS_REDIS_TLS_CERT_FILE and NETJOBS_REDIS_TLS_KEY_FILE go together "
                          "(a client certificate and its key): set both or neither")
    if s.task_soft_time_limit >= s.task_time_limit:
        raise ConfigError("NETJOBS_TASK_SOFT_TIME_LIMIT must be lower than NETJOBS_TASK_TIME_LIMIT")
    if s.heavy_soft_time_limit >= s.heavy_time_limit:
        raise ConfigError("NETJOBS_HEAVY_SOFT_TIME_LIMIT must be lower than NETJOBS_HEAVY_TIME_LIMIT")
    # kombu#337: a message still unacked after visibility_timeout is redelivered to another worker.
    if s.visibility_timeout <= s.longest_time_limit:
        raise ConfigError(
            f"NETJOBS_VISIBILITY_TIMEOUT ({s.visibility_timeout}s) must exceed the longest task time "
            f"limit ({s.longest_time_limit}s), or running tasks are delivered twice"
        )
    # A retry waits up to the backoff cap in the worker that holds it, then runs: the same rule.
    if s.retry_backoff_max >= s.longest_delay:
        raise ConfigError(
            f"NETJOBS_RETRY_BACKOFF_MAX ({s.retry_backoff_max:g}s) must be lower than NETJOBS_VISIBILITY_TIMEOUT "
            f"minus the longest task time limit ({s.visibility_timeout}s - {s.longest_time_limit}s), or a task "
            "waiting to be retried is delivered twice"
        )
    # The metrics name devices, sites and tasks: beyond this host only with a password.
    if not ipaddress.ip_address(s.exporter_listen[0]).is_loopback and not s.exporter_basic_auth_file:
        raise ConfigError(f"NETJOBS_EXPORTER_LISTEN ({s.exporter_listen[0]}) is not a loopback address, but "
                          "NETJOBS_EXPORTER_BASIC_AUTH_FILE is not set: set it (user:bcrypt-hash lines) or listen "
                          "on 127.0.0.1")
    # Only one beat may run: its lock must outlive the longest pause between two ticks.
    if s.redbeat_lock_timeout <= s.beat_max_interval:
        raise ConfigError(
            f"NETJOBS_REDBEAT_LOCK_TIMEOUT ({s.redbeat_lock_timeout}s) must exceed "
            f"NETJOBS_BEAT_MAX_INTERVAL ({s.beat_max_interval}s)"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    return load_settings()


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
