"""Queries over job history (``job_runs``) for `netjobs runs`, `status` and `wait`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import String, column, or_, select, text, union_all

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


def task_name_matches(name_column, task: str):
    """The one rule for ``--task``: a pattern with ``*`` (a glob over the whole name), else the full
    name or a dotted suffix of it (``ping`` and ``diag.ping`` find ``netjobs.diag.ping``)."""
    if "*" in task:
        pattern = task.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        return name_column.like(pattern, escape="\\")
    return or_(name_column == task, name_column.endswith("." + task, autoescape=True))


# The distinct task names in job_runs, read as a loose index scan of ix_job_runs_task_name_state_at:
# one probe per name (a few dozen), newest entry of each name first, so the probes land on live rows
# rather than on the oldest ones a purge has just deleted. A plain DISTINCT would read every row.
_TASK_NAMES = text("""
    WITH RECURSIVE names(name) AS (
        (SELECT task_name FROM job_runs WHERE task_name IS NOT NULL ORDER BY task_name DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT j.task_name FROM job_runs j WHERE j.task_name < names.name
                ORDER BY j.task_name DESC LIMIT 1)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL
""").columns(column("name", String))


def matching_task_names(session, task: str) -> tuple[list[str], bool]:
    """The stored task names ``task`` matches (sorted), and whether that is every stored name."""
    names = _TASK_NAMES.subquery("task_names")
    rows = session.execute(select(names.c.name, task_name_matches(names.c.name, task)).order_by(names.c.name)).all()
    matched = [name for name, hit in rows if hit]
    return matched, len(matched) == len(rows)


def list_runs(task: str | None = None, state: str | None = None, since: datetime | None = None,
              limit: int = 50, by: str | None = None) -> list[RunView]:
    """Newest first. ``task`` is a full task name, a short one (``ping`` finds ``netjobs.diag.ping``)
    or a pattern with ``*``.

    ``task`` is first resolved to the task names it matches among those stored (a cheap loose index
    scan), then the runs are filtered with ``task_name = name``: an index can serve that, and
    ``(task_name, state, state_at)`` (unsuccessful runs) then reads only the rows asked for, newest
    first. Matching ``task_name`` against ``LIKE '%.ping'`` in the query itself let no index help.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    filters = []
    if state:
        filters.append(JobRun.state == normalize_state(state))
    if since:
        filters.append(JobRun.state_at >= since)
    if by is not None:
        filters.append(actor_filter(JobRun.submitted_by, by))
    newest_first = (JobRun.state_at.desc(), JobRun.id.desc())
    with session_scope() as session:
        if not task:
            query = select(JobRun).where(*filters).order_by(*newest_first).limit(limit)
        else:
            names, every = matching_task_names(session, task)
            if not names:
                return []
            if every:  # `*`, `netjobs.*`: only the rows without a name are left out
                query = select(JobRun).where(JobRun.task_name.is_not(None), *filters)
            elif len(names) == 1:
                # `=`, not `= ANY(...)`: with an array PostgreSQL cannot take the order from the index
                query = select(JobRun).where(JobRun.task_name == names[0], *filters)
            else:
                # one newest-first read per name, each at most `limit` rows, merged below
                branches = [select(JobRun.id).where(JobRun.task_name == name, *filters)
                            .order_by(*newest_first).limit(limit) for name in names]
                ids = union_all(*branches).subquery("matched")
                query = select(JobRun).where(JobRun.id.in_(select(ids.c.id)))
            query = query.order_by(*newest_first).limit(limit)
        return [RunView.of(row) for row in session.scalars(query)]


def get_run(task_id: str) -> RunView | None:
    with session_scope() as session:
        row = session.scalars(select(JobRun).where(JobRun.task_id == task_id)).first()
        return RunView.of(row) if row else None
