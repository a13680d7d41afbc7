"""Dead letters: tasks that failed for good, kept with their arguments until requeued or discarded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from netjobs.db.engine import session_scope
from netjobs.db.models import DeadLetter
from netjobs.errors import NotFoundError


def record_dead_letter(*, task_id: str, task_name: str, queue: str | None, args: list, kwargs: dict,
                       error: str, traceback: str | None, retries: int) -> None:
    """Insert or refresh the dead letter of ``task_id`` (a redelivered failure adds no second row)."""
    values = dict(task_id=task_id, task_name=task_name, queue=queue, args=args, kwargs=kwargs,
                  error=error, traceback=traceback, retries=retries)
    statement = insert(DeadLetter).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[DeadLetter.task_id],
        set_={k: statement.excluded[k] for k in ("error", "traceback", "retries")} | {"failed_at": datetime.now(timezone.utc)},
    )
    with session_scope() as session:
        session.execute(statement)


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
        options = {"queue": row.queue} if row.queue else {}
        result = send_task(row.task_name, args=row.args, kwargs=row.kwargs, **options)
        row.requeued_at = datetime.now(timezone.utc)
        row.requeued_task_id = result.id
        return result.id


def discard_dead_letter(dead_letter_id: int) -> None:
    with session_scope() as session:
        deleted = session.execute(delete(DeadLetter).where(DeadLetter.id == dead_letter_id)).rowcount
        if not deleted:
            raise NotFoundError(f"no dead letter with id {dead_letter_id}")


def purge_dead_letters(older_than_days: int) -> int:
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    with session_scope() as session:
        return session.execute(delete(DeadLetter).where(DeadLetter.failed_at < cutoff)).rowcount
