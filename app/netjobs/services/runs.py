"""Queries over job history (``job_runs``) for `netjobs runs`, `status` and `wait`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select

from netjobs.db.engine import session_scope
from netjobs.db.models import JobRun
from netjobs.errors import ValidationError
from netjobs.services.audit import actor_filter

KNOWN_STATES = ("PUBLISHED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
MAX_LIMIT = 10_000
_AGO = re.compile(r"^(\d+)\s*(s|sec|m|min|h|d|w)$", re.IGNORECASE)
_AGO_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO date/time (UTC unless it has an offset)."""
    now = now or datetime.now(timezone.utc)
    raw = text.strip()
    match = _AGO.match(raw)
    if match:
        amount = int(match.group(1)) * _AGO_SECONDS[match.group(2).lower()]
        if amount > 100 * 365 * 86400:
            raise ValidationError(f"--since {text!r} reaches back more than 100 years")
        return now - timedelta(seconds=amount)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"invalid --since {text!r}: use a duration like 30m, 1h, 2d, 1w or an ISO time like 2024-05-01T08:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def normalize_state(text: str) -> str:
    state = text.strip().upper()
    if state not in KNOWN_STATES:
        raise ValidationError(f"unknown state {text!r}; one of {', '.join(KNOWN_STATES)}")
    return state


@dataclass(frozen=True)
class RunView:
    task_id: str
    task_name: str | None
    state: str
    queue: str | None
    worker: str | None
    retries: int
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    args_summary: str | None
    result_summary: str | None
    error: str | None
    parent_id: str | None
    group_id: str | None
    state_at: datetime
    submitted_by: str | None

    @classmethod
    def of(cls, row: JobRun) -> RunView:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()}


def list_runs(task: str | None = None, state: str | None = None, since: datetime | None = None,
              limit: int = 50, by: str | None = None) -> list[RunView]:
    """Newest first. ``task`` is a full task name, a short one (``ping`` finds ``netjobs.diag.ping``)
    or a pattern with ``*``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    query = select(JobRun).order_by(JobRun.state_at.desc(), JobRun.id.desc()).limit(limit)
    if task:
        if "*" in task:
            pattern = task.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
            query = query.where(JobRun.task_name.like(pattern, escape="\\"))
        else:
            query = query.where(or_(JobRun.task_name == task, JobRun.task_name.endswith("." + task, autoescape=True)))
    if state:
        query = query.where(JobRun.state == normalize_state(state))
    if since:
        query = query.where(JobRun.state_at >= since)
    if by is not None:
        query = query.where(actor_filter(JobRun.submitted_by, by))
    with session_scope() as session:
        return [RunView.of(row) for row in session.scalars(query)]


def get_run(task_id: str) -> RunView | None:
    with session_scope() as session:
        row = session.scalars(select(JobRun).where(JobRun.task_id == task_id)).first()
        return RunView.of(row) if row else None
