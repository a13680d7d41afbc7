"""Dead letters: tasks that failed for good, kept with their arguments until requeued or discarded.

Recording one never fails for want of PostgreSQL (see :mod:`netjobs.spool`): its values are made
storable first (NUL replaced, error cut to ERROR_LIMIT characters, traceback to TRACEBACK_LIMIT
keeping its end, args/kwargs coerced to what JSONB holds, each string in them cut to ARG_TEXT_LIMIT),
a row PostgreSQL still refuses is written in a minimal form, and while PostgreSQL is unavailable
the dead letter goes to the Redis spool, replayed by any netjobs process once PostgreSQL is back.
The upsert on task_id keeps the newest failure, so a replay or a redelivered failure adds no row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from netjobs import spool
from netjobs.db.engine import session_scope
from netjobs.db.models import DeadLetter
from netjobs.errors import NotFoundError
from netjobs.queues import DEFAULT_PRIORITY
from netjobs.services.audit import log_change

ERROR_LIMIT = 10_000
TRACEBACK_LIMIT = 100_000
ARG_TEXT_LIMIT = 1_000_000

COLUMNS = ("task_id", "task_name", "queue", "args", "kwargs", "error", "traceback", "retries", "failed_at")
UPSERT_SQL = f"""
INSERT INTO dead_letters ({", ".join(COLUMNS)}) VALUES %s
ON CONFLICT (task_id) DO UPDATE SET
    error = EXCLUDED.error, traceback = EXCLUDED.traceback, retries = EXCLUDED.retries, failed_at = EXCLUDED.failed_at
WHERE EXCLUDED.failed_at >= dead_letters.failed_at
"""
_TEMPLATE = "(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s)"


def record_dead_letter(*, task_id: str, task_name: str, queue: str | None, args: list, kwargs: dict,
                       error: str, traceback: str | None, retries: int) -> None:
    """Insert or refresh the dead letter of ``task_id`` (a redelivered failure adds no second row).

    If PostgreSQL is unavailable the dead letter is spooled to Redis (or, if Redis is down too,
    kept in memory) and written later; this returns either way.
    """
    from netjobs.history import recorder

    letter = storable_dead_letter(task_id=task_id, task_name=task_name, queue=queue, args=args, kwargs=kwargs,
                                  error=error, traceback=traceback, retries=retries,
                                  failed_at=datetime.now(timezone.utc))
    if not recorder.database_down:
        try:
            write_dead_letters([letter])
            return
        except Exception as exc:
            if not spool.database_unavailable(exc):
                raise
            recorder.database_unavailable(exc)
    recorder.defer_dead_letter(letter)


def storable_dead_letter(*, task_id, task_name, queue, args, kwargs, error, traceback, retries,
                         failed_at: datetime) -> dict:
    """The values of a dead_letters row, made storable (args and kwargs as JSON-safe values)."""
    args = spool.storable_json(list(args) if isinstance(args, (list, tuple)) else [args], ARG_TEXT_LIMIT)
    kwargs = spool.storable_json(kwargs if isinstance(kwargs, dict) else {"kwargs": kwargs}, ARG_TEXT_LIMIT)
    try:
        retries = max(0, min(2**31 - 1, int(retries or 0)))
    except (TypeError, ValueError, OverflowError):
        retries = 0
    return {
        "task_id": spool.storable_text(task_id, 64),
        "task_name": spool.storable_text(task_name, 255) or "?",
        "queue": spool.storable_text(queue, 64),
        "args": args,
        "kwargs": kwargs,
        "error": spool.storable_text(error, ERROR_LIMIT) or "",
        "traceback": spool.storable_text(traceback, TRACEBACK_LIMIT, keep_tail=True),
        "retries": retries,
        "failed_at": failed_at,
    }


def _row(letter: dict) -> tuple:
    return tuple(json.dumps(letter[c], ensure_ascii=False, allow_nan=False) if c in ("args", "kwargs") else letter[c]
                 for c in COLUMNS)


def _minimal_row(row: tuple) -> tuple:
    """What is left of a row PostgreSQL refused: no arguments (kept as text in the traceback)."""
    values = dict(zip(COLUMNS, row))
    note = (f"[dead letter refused by PostgreSQL, stored in part; original args: {values['args']} "
            f"kwargs: {values['kwargs']}]\n{values['traceback'] or ''}")
    return tuple({
        **values,
        "task_id": spool.ascii_text(values["task_id"], 64),
        "task_name": spool.ascii_text(values["task_name"], 255) or "?",
        "queue": spool.ascii_text(values["queue"], 64),
        "args": "[]",
        "kwargs": "{}",
        "error": spool.ascii_text(values["error"], ERROR_LIMIT) or "",
        "traceback": spool.ascii_text(note, TRACEBACK_LIMIT),
    }[c] for c in COLUMNS)


def write_dead_letters(letters: list[dict]) -> int:
    """Upsert storable dead letters; a row PostgreSQL refuses is written in a minimal form. Raises
    only when PostgreSQL is unavailable (spool.database_unavailable)."""
    return spool.write_rows(UPSERT_SQL, [_row(d) for d in letters], minimal=_minimal_row, what="dead letters",
                            template=_TEMPLATE)


def spool_entry(letters: list[dict]) -> str:
    """Dead letters as one spool entry: {"v", "letters"} with failed_at in ISO 8601."""
    return spool.entry({"v": 1, "letters": [{**d, "failed_at": spool.format_datetime(d["failed_at"])}
                                            for d in letters]})


def replay_entries(bodies: list[dict]) -> int:
    """Write dead-letter spool entries in one go; returns the dead letters written."""
    letters = [storable_dead_letter(**{**d, "failed_at": spool.parse_datetime(d["failed_at"])})
               for body in bodies for d in body["letters"]]
    return write_dead_letters(letters)


@dataclass(frozen=True)
class DeadLetterView:
    id: int
    task_id: str
    task_name: str
    queue: str | None
    args: list
    kwargs: dict
    error: str
    traceback: str | None
    retries: int
    failed_at: datetime
    requeued_at: datetime | None
    requeued_task_id: str | None

    @classmethod
    def of(cls, row: DeadLetter) -> DeadLetterView:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


def list_dead_letters(limit: int = 50, include_requeued: bool = False) -> list[DeadLetterView]:
    query = select(DeadLetter).order_by(DeadLetter.failed_at.desc()).limit(limit)
    if not include_requeued:
        query = query.where(DeadLetter.requeued_at.is_(None))
    with session_scope() as session:
        return [DeadLetterView.of(r) for r in session.scalars(query)]


def count_dead_letters() -> int:
    from sqlalchemy import func

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))) or 0


def get_dead_letter(dead_letter_id: int) -> DeadLetterView:
    with session_scope() as session:
        row = session.get(DeadLetter, dead_letter_id)
        if row is None:
            raise NotFoundError(f"no dead letter with id {dead_letter_id}")
        return DeadLetterView.of(row)


def requeue_dead_letter(dead_letter_id: int, send_task) -> str:
    """Send the task again with its original arguments; returns the new task id.

    ``send_task`` is ``app.send_task`` (passed in so this module needs no Celery app).
    The row is locked so two operators requeueing at once send it only once.
    """
    with session_scope() as session:
        row = session.get(DeadLetter, dead_letter_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no dead letter with id {dead_letter_id}")
        if row.requeued_at is not None:
            raise NotFoundError(f"dead letter {dead_letter_id} was already requeued as {row.requeued_task_id}")
        # Explicit: app.send_task applies task_default_priority only to tasks the app has loaded.
        options = {"priority": DEFAULT_PRIORITY, **({"queue": row.queue} if row.queue else {})}
        result = send_task(row.task_name, args=row.args, kwargs=row.kwargs, **options)
        row.requeued_at = datetime.now(timezone.utc)
        row.requeued_task_id = result.id
        log_change("dead_letter.requeue", str(dead_letter_id), {"task": row.task_name, "new_task_id": result.id},
                   session=session)
        return result.id


def discard_dead_letter(dead_letter_id: int) -> None:
    with session_scope() as session:
        deleted = session.execute(delete(DeadLetter).where(DeadLetter.id == dead_letter_id)).rowcount
        if not deleted:
            raise NotFoundError(f"no dead letter with id {dead_letter_id}")
        log_change("dead_letter.discard", str(dead_letter_id), session=session)


def purge_dead_letters(older_than_days: int) -> int:
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    with session_scope() as session:
        return session.execute(delete(DeadLetter).where(DeadLetter.failed_at < cutoff)).rowcount
