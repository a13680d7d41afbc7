"""Job history: Celery signals record every task's life in ``job_runs``.

Tasks do nothing for this. Each process (producer, worker parent, prefork child) keeps a small
buffer of state events; a background thread folds them per task and writes them with one
multi-row upsert every ``FLUSH_INTERVAL`` seconds, so history costs a short task almost nothing.
Events can arrive out of order from different processes (a worker may start a task before the
producer's buffer is flushed), so the upsert keeps the state with the newest timestamp.

What is buffered when a process is killed with SIGKILL is lost; a normal stop flushes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from celery import signals

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
FLUSH_BATCH = 1000
MAX_BUFFERED = 200_000
SUMMARY_LIMIT = 500

COLUMNS = (
    "task_id", "task_name", "parent_id", "root_id", "group_id", "queue", "worker", "state",
    "state_at", "retries", "published_at", "started_at", "finished_at", "duration_ms",
    "args_summary", "result_summary", "error",
)  # fmt: skip

# The newer event sets the state, but PUBLISHED ranks below every state a worker reports, whatever
# the timestamps: the producer takes its timestamp after the message is out, and a fast worker may
# already have started and finished the task by then (seen in bench/bench_fanout.py).
_TAKES_STATE = """(CASE
    WHEN EXCLUDED.state = 'PUBLISHED' THEN job_runs.state = 'PUBLISHED' AND EXCLUDED.state_at >= job_runs.state_at
    WHEN job_runs.state = 'PUBLISHED' THEN TRUE
    ELSE EXCLUDED.state_at >= job_runs.state_at END)"""

UPSERT_SQL = f"""
INSERT INTO job_runs ({", ".join(COLUMNS)}) VALUES %s
ON CONFLICT (task_id) DO UPDATE SET
    task_name = COALESCE(job_runs.task_name, EXCLUDED.task_name),
    parent_id = COALESCE(job_runs.parent_id, EXCLUDED.parent_id),
    root_id = COALESCE(job_runs.root_id, EXCLUDED.root_id),
    group_id = COALESCE(job_runs.group_id, EXCLUDED.group_id),
    queue = COALESCE(EXCLUDED.queue, job_runs.queue),
    worker = COALESCE(EXCLUDED.worker, job_runs.worker),
    state = CASE WHEN {_TAKES_STATE} THEN EXCLUDED.state ELSE job_runs.state END,
    error = CASE WHEN {_TAKES_STATE} THEN EXCLUDED.error ELSE job_runs.error END,
    state_at = CASE WHEN {_TAKES_STATE} THEN EXCLUDED.state_at ELSE job_runs.state_at END,
    retries = GREATEST(job_runs.retries, EXCLUDED.retries),
    published_at = LEAST(job_runs.published_at, EXCLUDED.published_at),
    started_at = GREATEST(job_runs.started_at, EXCLUDED.started_at),
    finished_at = GREATEST(job_runs.finished_at, EXCLUDED.finished_at),
    duration_ms = COALESCE(EXCLUDED.duration_ms, job_runs.duration_ms),
    args_summary = COALESCE(job_runs.args_summary, EXCLUDED.args_summary),
    result_summary = COALESCE(EXCLUDED.result_summary, job_runs.result_summary)
"""

# States written to job_runs.state
PUBLISHED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED = (
    "PUBLISHED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
)  # fmt: skip
TERMINAL_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


def summarize(value: object, limit: int = SUMMARY_LIMIT) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunEvent:
    """A partial job_runs row: None means 'not known by this event'."""

    task_id: str
    state: str
    state_at: datetime = field(default_factory=_now)
    task_name: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    queue: str | None = None
    worker: str | None = None
    retries: int = 0
    published_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    args_summary: str | None = None
    result_summary: str | None = None
    error: str | None = None

    def merge(self, newer: RunEvent) -> RunEvent:
        """Fold a later event for the same task into this one (same rules as the SQL upsert)."""
        take_new = _takes_state(self, newer)
        for name in ("task_name", "parent_id", "root_id", "group_id", "args_summary"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(newer, name))
        for name in ("queue", "worker", "duration_ms", "result_summary"):
            if getattr(newer, name) is not None:
                setattr(self, name, getattr(newer, name))
        if take_new:
            self.state, self.error, self.state_at = newer.state, newer.error, newer.state_at
        self.retries = max(self.retries, newer.retries)
        self.published_at = _least(self.published_at, newer.published_at)
        self.started_at = _greatest(self.started_at, newer.started_at)
        self.finished_at = _greatest(self.finished_at, newer.finished_at)
        return self

    def row(self) -> tuple:
        return tuple(getattr(self, c) for c in COLUMNS)


def _takes_state(current: RunEvent, newer: RunEvent) -> bool:
    """The same rule as _TAKES_STATE in the upsert."""
    if newer.state == PUBLISHED:
        return current.state == PUBLISHED and newer.state_at >= current.state_at
    return current.state == PUBLISHED or newer.state_at >= current.state_at


def _least(a, b):
    return b if a is None else a if b is None else min(a, b)


def _greatest(a, b):
    return b if a is None else a if b is None else max(a, b)


def fold(events: list[RunEvent]) -> list[RunEvent]:
    """One event per task id, in first-seen order."""
    folded: dict[str, RunEvent] = {}
    for event in events:
        current = folded.get(event.task_id)
        folded[event.task_id] = event if current is None else current.merge(event)
    return list(folded.values())


class HistoryRecorder:
    """Buffers RunEvents and writes them in batches from a background thread."""

    def __init__(self, flush_interval: float = FLUSH_INTERVAL):
        self.flush_interval = flush_interval
        self.enabled: bool | None = None  # decided from settings on first event
        self._reset()

    def _reset(self) -> None:
        """Fresh buffer, locks and no flusher thread (at start, and in a forked child: threads and
        locks do not survive fork, and the parent's buffer is the parent's to write)."""
        self._buffer: list[RunEvent] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, event: RunEvent) -> None:
        if self.enabled is None:
            from netjobs.config import get_settings

            self.enabled = get_settings().history_enabled
        if not self.enabled:
            return
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                # The database has been unreachable for a long time: keep memory bounded.
                del self._buffer[: FLUSH_BATCH]
                log.warning("job history buffer full; dropped %d oldest events", FLUSH_BATCH)
            self._buffer.append(event)
            size = len(self._buffer)
        self._ensure_thread()
        if size >= FLUSH_BATCH:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered now. Returns the number of rows written."""
        with self._flush_lock:
            with self._lock:
                pending, self._buffer = self._buffer, []
            if not pending:
                return 0
            rows = fold(pending)
            try:
                _write(rows)
            except Exception as exc:  # noqa: BLE001 - history must never break a task
                log.warning("job history write failed (%s); will retry %d events", exc, len(pending))
                with self._lock:
                    self._buffer[:0] = pending
                return 0
            return len(rows)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="netjobs-history", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()


def _write(rows: list[RunEvent]) -> None:
    from psycopg2.extras import execute_values

    from netjobs.db.engine import get_engine

    raw = get_engine().raw_connection()
    try:
        with raw.cursor() as cursor:
            execute_values(cursor, UPSERT_SQL, [r.row() for r in rows], page_size=FLUSH_BATCH)
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


recorder = HistoryRecorder()
os.register_at_fork(after_in_child=recorder._reset)
atexit.register(recorder.flush)

# Start times per task id in this process, for duration.
_started: dict[str, float] = {}


# --- signal handlers -------------------------------------------------------------------------


@signals.after_task_publish.connect
def _on_published(sender=None, headers=None, body=None, routing_key=None, **_):
    headers = headers or {}
    task_id = headers.get("id")
    if not task_id:
        return
    now = _now()
    recorder.record(
        RunEvent(
            task_id=task_id,
            state=PUBLISHED,
            state_at=now,
            task_name=headers.get("task") or sender,
            parent_id=headers.get("parent_id"),
            root_id=headers.get("root_id"),
            group_id=headers.get("group"),
            queue=routing_key,
            retries=headers.get("retries") or 0,
            published_at=now,
            args_summary=_args_summary(headers.get("argsrepr"), headers.get("kwargsrepr")),
        )
    )


def _args_summary(argsrepr, kwargsrepr) -> str | None:
    parts = [p for p in (argsrepr, kwargsrepr) if p and p not in ("()", "{}", "[]")]
    return summarize(" ".join(parts)) if parts else None


def _request_fields(request) -> dict:
    delivery = getattr(request, "delivery_info", None) or {}
    name = getattr(request, "task", None)
    if not isinstance(name, str):  # a worker Request holds the task object, a Context its name
        name = getattr(request, "task_name", None) or getattr(name, "name", None)
    return {
        "task_name": name,
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "group_id": getattr(request, "group", None),
        "queue": delivery.get("routing_key"),
        "worker": getattr(request, "hostname", None),
        "retries": getattr(request, "retries", 0) or 0,
    }


@signals.task_prerun.connect
def _on_started(task_id=None, task=None, **_):
    _started[task_id] = time.monotonic()
    now = _now()
    recorder.record(RunEvent(task_id=task_id, state=STARTED, state_at=now, started_at=now, **_request_fields(task.request)))


def _finished(task_id: str, state: str, request, **extra) -> None:
    start = _started.pop(task_id, None)
    duration = int((time.monotonic() - start) * 1000) if start is not None else None
    now = _now()
    recorder.record(
        RunEvent(task_id=task_id, state=state, state_at=now, finished_at=now, duration_ms=duration,
                 **_request_fields(request), **extra)
    )


@signals.task_success.connect
def _on_success(sender=None, result=None, **_):
    _finished(sender.request.id, SUCCESS, sender.request, result_summary=summarize(result))


@signals.task_failure.connect
def _on_failure(sender=None, task_id=None, exception=None, **_):
    request = sender.request if sender is not None else None
    _finished(task_id, FAILURE, request, error=summarize(f"{type(exception).__name__}: {exception}"))


@signals.task_retry.connect
def _on_retry(request=None, reason=None, **_):
    if request is None:
        return
    _started.pop(request.id, None)
    fields = _request_fields(request)
    fields["retries"] = fields["retries"] + 1
    recorder.record(RunEvent(task_id=request.id, state=RETRY, error=summarize(str(reason)), **fields))


@signals.task_revoked.connect
def _on_revoked(request=None, terminated=None, signum=None, expired=None, **_):
    if request is None:
        return
    why = "expired" if expired else f"terminated (signal {signum})" if terminated else "revoked"
    _finished(request.id, REVOKED, request, error=why)


def record_revoked(task_id: str, reason: str = "revoked by operator") -> None:
    """For `netjobs cancel`: mark a task revoked even if no worker has seen it yet."""
    recorder.record(RunEvent(task_id=task_id, state=REVOKED, finished_at=_now(), error=reason))


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_on_shutdown(**_):
    recorder.flush()
