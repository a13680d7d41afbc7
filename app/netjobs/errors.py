"""Error classes that decide what happens to a failed task.

Transient errors (the network, Redis or PostgreSQL had a hiccup) are retried with backoff.
Permanent errors (bad input, unknown device) fail at once with a message meant for an operator.
"""

from __future__ import annotations

import errno
import socket


class NetjobsError(Exception):
    """Base of netjobs' own errors."""


class PermanentError(NetjobsError):
    """Retrying cannot help."""


class ValidationError(PermanentError):
    """Bad arguments or input data. The message says which and why."""


class NotFoundError(PermanentError):
    """A named object (device, dead letter, schedule) does not exist."""


class PoisonTaskError(PermanentError):
    """The task's worker died under it on every delivery (see NETJOBS_MAX_REDELIVERIES)."""


class TransientError(NetjobsError):
    """Worth retrying: the failure is expected to go away."""


_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN,
}  # fmt: skip


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError, socket.timeout]
    try:
        import redis.exceptions as r

        types += [r.ConnectionError, r.TimeoutError, r.BusyLoadingError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc as sa

        types += [sa.OperationalError, sa.InterfaceError, sa.DisconnectionError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import psycopg2

        types += [psycopg2.OperationalError, psycopg2.InterfaceError]
    except ImportError:  # pragma: no cover
        pass
    try:
        from netmiko.exceptions import NetmikoTimeoutException

        types.append(NetmikoTimeoutException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_TRANSIENT: tuple[type[BaseException], ...] | None = None


def is_transient(exc: BaseException) -> bool:
    global _TRANSIENT
    if isinstance(exc, PermanentError):
        return False
    if _TRANSIENT is None:
        _TRANSIENT = _transient_types()
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS
