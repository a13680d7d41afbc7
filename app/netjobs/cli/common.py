"""Shared pieces of the CLI: consoles, error reporting, JSON output, task lookup."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from datetime import datetime
from urllib.parse import urlsplit

import click
from rich.console import Console

from netjobs.errors import NotFoundError, PermanentError, ValidationError
from netjobs.services.doctor import redact_url  # noqa: F401 - re-exported for the commands
# The checks before a job is sent live in netjobs.services.jobs, shared with the HTTP API.
from netjobs.services.jobs import (  # noqa: F401 - re-exported for the commands
    Unreachable, check_queue, check_task_kwargs, netjobs_task_names, require_broker_and_backend, require_redis,
    resolve_task,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PIPE_WIDTH = 200


def out() -> Console:
    # Built per call: click's test runner swaps sys.stdout between invocations. Piped output
    # (grep, less) gets wide tables instead of rich's 80-column default.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=sys.stdout, soft_wrap=False, highlight=False, width=width)


def err() -> Console:
    # soft_wrap: an error stays one line however narrow the terminal is.
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """One red line on stderr, then exit."""
    err().print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


def warn(message: str) -> None:
    err().print(f"[yellow]warning:[/yellow] {escape(message)}")


def note(message: str) -> None:
    err().print(escape(message))


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


def debug_enabled() -> bool:
    return os.environ.get("NETJOBS_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


# --- settings and the Celery app -----------------------------------------------------------


def settings():
    from netjobs.config import get_settings

    return get_settings()


def celery_app():
    """The app, after the settings were checked (a bad env must give one line, not SystemExit text)."""
    settings()
    from netjobs.celery_app import app

    return app


# --- output ----------------------------------------------------------------------------------


def plain(value):
    """Dataclasses, datetimes, sets and objects with as_dict() -> JSON-ready values."""
    if hasattr(value, "as_dict"):
        return plain(value.as_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def print_json(value) -> None:
    click.echo(json.dumps(plain(value), indent=2, sort_keys=False))


def new_table(title: str, columns: tuple[str, ...], no_wrap: tuple[str, ...] = ()):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column in no_wrap)
    return table


def short_time(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --- errors ----------------------------------------------------------------------------------


def _redis_roles(text: str) -> str:
    """Which configured Redis URL(s) an error is about, matched by host:port in its message."""
    try:
        s = settings()
    except Exception:  # noqa: BLE001 - only used to decorate a message
        return "Redis"
    roles = {"broker": s.broker_url, "result backend": s.result_backend_url, "RedBeat": s.redbeat_url}
    endpoints = set(re.findall(r"([\w.\-]+|\[[0-9a-fA-F:]+\]):(\d+)", text))
    matched = []
    for role, url in roles.items():
        parts = urlsplit(url)
        if (parts.hostname, str(parts.port or 6379)) in {(h.strip("[]"), p) for h, p in endpoints}:
            matched.append((role, url))
    if not matched:
        matched = list(roles.items())
    by_url: dict[str, list[str]] = {}
    for role, url in matched:
        by_url.setdefault(redact_url(url), []).append(role)
    return "; ".join(f"Redis ({'/'.join(r)}) at {u}" for u, r in by_url.items())


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for errors an operator can act on; None for bugs."""
    from netjobs.config import ConfigError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"configuration error: {exc}"
    if isinstance(exc, (ValidationError, NotFoundError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, PermanentError):
        return EXIT_FAILED, str(exc)
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            orig = getattr(exc, "orig", None)
            detail = (str(orig).strip().splitlines() or [first_line])[0] if orig else first_line
            return EXIT_FAILED, f"database unreachable at {redact_url(settings().database_url)}: {detail}"
        if isinstance(exc, sa_exc.ProgrammingError) and "does not exist" in str(exc):
            return EXIT_FAILED, "database schema is missing or old: run `netjobs db upgrade`"
    except ImportError:  # pragma: no cover
        pass
    import kombu.exceptions
    import redis.exceptions

    if isinstance(exc, redis.exceptions.AuthenticationError):
        return EXIT_FAILED, f"{_redis_roles(first_line)} refused the credentials: {first_line}"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        kombu.exceptions.OperationalError, ConnectionError, TimeoutError)):
        return EXIT_FAILED, f"cannot reach {_redis_roles(first_line)}: {first_line}"
    if isinstance(exc, RuntimeError) and "result store" in str(exc):
        # Celery's Redis result backend gives up reconnecting with a RuntimeError.
        url = redact_url(settings().result_backend_url)
        return EXIT_FAILED, f"cannot reach Redis (result backend) at {url}: {' '.join(str(exc).split())}"
    if isinstance(exc, redis.exceptions.ResponseError) and "NOPERM" in str(exc):
        return EXIT_FAILED, f"Redis denied a command (ACL): {first_line}"
    return None
