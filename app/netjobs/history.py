"""Job history: Celery signals record every task's life in ``job_runs``.

Tasks do nothing for this. Each process (producer, worker parent, prefork child) keeps a small
buffer of state events; a background thread writes them with multi-row upserts every
``FLUSH_INTERVAL`` seconds, so history costs a short task almost nothing. Events can arrive out of
order from different processes (a worker may start a task before the producer's buffer is
flushed), so the upsert decides which state a row keeps (_TAKES_STATE, the one place of that rule).

History never stalls and never vanishes (the mechanics are in :mod:`netjobs.spool`):

* Rows are made storable before writing: NUL becomes U+FFFD, code points UTF-8 cannot encode are
  replaced, varchar columns are cut to their width and the text columns (args_summary,
  result_summary, error) to TEXT_LIMIT characters. A row PostgreSQL still refuses is isolated from
  its batch, logged once and written in a minimal form (or dropped); the rest of the batch is written.
* When PostgreSQL cannot take writes (unreachable, or refusing all writes), this process logs one
  line ("job history: PostgreSQL unreachable (...): spooling to Redis") and from then on pushes each
  batch to the Redis spool instead of retrying it; every PROBE_INTERVAL seconds it checks whether
  PostgreSQL answers again, then replays the spool and logs one line with what it replayed. Any
  process's flusher also looks for a spool left by others (at start and every
  SPOOL_CHECK_INTERVAL seconds), e.g. by a process killed during an outage; one that has not handed
  off itself replays only entries older than LEFT_BEHIND_SECONDS.
* If Redis is unreachable too (or the spool is full), events stay in memory, at most MAX_BUFFERED
  (the oldest are dropped beyond that, said once).
* The buffer is written, or spooled, at worker shutdown (``worker_shutdown``), when a prefork child
  exits, including when it is recycled by ``--max-tasks-per-child`` (billiard runs
  ``worker_process_shutdown`` in the child before it exits), and at interpreter exit.

* A task's own events are handed over when it finishes (``task_postrun``), before its message is
  acknowledged: pushed to the Redis spool, with their task counters, in one round trip (the ack
  that follows goes to the same Redis, so its AOF never holds the ack without them), or written to
  PostgreSQL if Redis refuses them. A process killed after that loses nothing of it. The flusher
  then writes the spool to PostgreSQL in batches within HAND_OFF_DELAY seconds, so a task costs one
  Redis round trip instead of a PostgreSQL transaction.

What a process still holds in memory when it is killed with SIGKILL is lost: the events of the
task it was running (that task is delivered again, and records again) and a producer's last
FLUSH_INTERVAL seconds of PUBLISHED events; what it has spooled is not.
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

from netjobs import actor, metrics, spool
from netjobs.forks import no_fork_during

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
FLUSH_BATCH = 1000  # rows per upsert statement and per spool entry
MAX_BUFFERED = 200_000  # events kept in memory while neither PostgreSQL nor Redis takes them
MAX_DEAD_LETTERS_BUFFERED = 10_000  # dead letters kept in memory likewise
SUMMARY_LIMIT = 500  # what the signal handlers keep of args, results and errors
TEXT_LIMIT = 4000  # cap of any job_runs text column when written
PROBE_INTERVAL = 2.0  # seconds between checks whether PostgreSQL is back, during an outage
PROBE_CONNECT_TIMEOUT = 3  # seconds a check may wait for a connection
SPOOL_CHECK_INTERVAL = 5.0  # seconds between looks for a spool left by other processes
REPLAY_SLICE = 2.0  # seconds of replaying per flusher pass, so the process's own events go on too
HAND_OFF_DELAY = FLUSH_INTERVAL  # seconds between a hand-off to the spool and its batched write
# A process that has not handed off replays only entries older than this: younger ones are other
# processes' hand-offs, which they write themselves (so a worker's main process, which runs no task,
# does not load the database stack and hold a connection only to race its children).
LEFT_BEHIND_SECONDS = 2 * SPOOL_CHECK_INTERVAL

COLUMNS = (
    "task_id", "task_name", "parent_id", "root_id", "group_id", "queue", "worker", "state",
    "state_at", "retries", "published_at", "started_at", "finished_at", "duration_ms",
    "args_summary", "result_summary", "error", "submitted_by",
)  # fmt: skip

# The newer event sets the state, but PUBLISHED ranks below every state a worker reports, whatever
# the timestamps: the producer takes its timestamp after the message is out, and a fast worker may
# already have started and finished the task by then (seen in bench/bench_fanout.py).
# Likewise RETRY (recorded with the retries of the next attempt) ranks below what a worker reports for
# that next attempt or a later one: the process that retries stamps RETRY after it has published the
# retry, and with a short countdown another process may already have run the next attempt by then
# (seen in app/tests/test_history_durability.py).
_TAKES_STATE = """(CASE
    WHEN EXCLUDED.state = 'PUBLISHED' THEN job_runs.state = 'PUBLISHED' AND EXCLUDED.state_at >= job_runs.state_at
    WHEN job_runs.state = 'PUBLISHED' THEN TRUE
    WHEN EXCLUDED.state = 'RETRY' AND job_runs.state <> 'RETRY' AND job_runs.retries >= EXCLUDED.retries THEN FALSE
    WHEN job_runs.state = 'RETRY' AND EXCLUDED.state <> 'RETRY' AND EXCLUDED.retries >= job_runs.retries THEN TRUE
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
    result_summary = COALESCE(EXCLUDED.result_summary, job_runs.result_summary),
    submitted_by = COALESCE(job_runs.submitted_by, EXCLUDED.submitted_by)
"""

# States written to job_runs.state
PUBLISHED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED = (
    "PUBLISHED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
)  # fmt: skip
TERMINAL_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
# The "status" of a fan-out member's result when it failed for good (see netjobs.tasks.backup).
FAILED_MEMBER_STATUS = "failed"


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
    submitted_by: str | None = None
    # Not columns: for the task metrics in Redis (netjobs.metrics), counted once per event.
    queue_wait: float | None = None
    counted: bool = False

    def row(self) -> tuple:
        return tuple(getattr(self, c) for c in COLUMNS)


def in_rounds(events: list, task_id=lambda event: event.task_id) -> list[list]:
    """``events`` (RunEvents, or rows with ``task_id``) as rounds holding at most one event per task,
    each task's events in recorded order (the n-th event of every task in round n): one upsert per
    round, as PostgreSQL refuses a task twice in one statement. The order of states is decided by the
    upsert alone (_TAKES_STATE)."""
    rounds: list[list] = []
    seen: dict[str, int] = {}
    for event in events:
        key = task_id(event)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(event)
    return rounds


class HistoryRecorder:
    """Buffers RunEvents and writes them in batches from a background thread.

    The same thread spools batches to Redis while PostgreSQL is unavailable, probes for its return,
    replays the spool, and retries dead letters that could be neither written nor spooled.
    """

    def __init__(self, flush_interval: float = FLUSH_INTERVAL):
        self.flush_interval = flush_interval
        self.enabled: bool | None = None  # decided from settings on first event
        self._reset()

    def _reset(self) -> None:
        """Fresh buffer, locks, state and no flusher thread (at start, and in a forked child: threads
        and locks do not survive fork, and the parent's buffer is the parent's to write)."""
        self._buffer: list[RunEvent] = []
        self._letters: list[dict] = []  # dead letters neither PostgreSQL nor Redis could take yet
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._replay_lock = threading.Lock()  # the flusher's replay and the one at shutdown, not the hand-offs
        self._state_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None  # PostgreSQL unavailable since (monotonic)
        self._recovering = False  # PostgreSQL is back; the end-of-outage line waits for the replay
        self._outage_seconds = 0.0
        self._next_probe = 0.0
        self._next_spool_check = 0.0  # the flusher looks for a spool as soon as it starts
        self._replayed = {"job_runs": 0, "dead_letters": 0}
        self._replayed_oldest = 0.0  # seconds the oldest entry replayed since the last report had waited
        self._handed_off = False  # this process has pushed events to the spool since its last replay
        self._spool_trouble: dict[str, str] = {}  # spool list -> why it takes nothing (said once)
        self._spool_retry_at: dict[str, float] = {}
        self._dropped = 0
        self._count_failing = False
        self._count_retry_at = 0.0

    @property
    def database_down(self) -> bool:
        return self._down_since is not None

    def _is_enabled(self) -> bool:
        if self.enabled is None:
            from netjobs.config import get_settings

            self.enabled = get_settings().history_enabled
        return self.enabled

    def record(self, event: RunEvent) -> None:
        if not self._is_enabled():
            return
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                # Neither PostgreSQL nor Redis takes events: keep memory bounded.
                del self._buffer[:FLUSH_BATCH]
                self._dropped += FLUSH_BATCH
                first_drop = self._dropped == FLUSH_BATCH
            else:
                first_drop = False
            self._buffer.append(event)
            size = len(self._buffer)
        if first_drop:
            log.error("job history: %d events waiting in memory; dropping the oldest until PostgreSQL or "
                      "the Redis spool takes them", MAX_BUFFERED)
        self._ensure_thread()
        if size >= FLUSH_BATCH:
            self._wake.set()

    def flush(self, hand_off: bool = False) -> int:
        """Write everything buffered now, or spool it if PostgreSQL is unavailable. Returns the
        number of rows written to PostgreSQL.

        With ``hand_off`` (a task has finished and is about to be acknowledged) the events go to the
        Redis spool first, in one round trip, and the flusher writes them to PostgreSQL in a batch
        within HAND_OFF_DELAY; PostgreSQL directly only if Redis refuses them."""
        with self._flush_lock:
            with self._lock:
                pending, self._buffer = self._buffer, []
                letters, self._letters = self._letters, []
            if letters:
                self._store_dead_letters(letters)
            if not pending:
                return 0
            if hand_off:
                fresh = _uncounted(pending)  # counted in the hand-off's round trip
                if self._push(spool.HISTORY_KEY, lambda: _spool_entries(pending),
                              also=lambda pipe: metrics.add_counts(pipe, fresh)):
                    self._handed_off = True
                    due = time.monotonic() + HAND_OFF_DELAY
                    if due < self._next_spool_check:  # the first hand-off since the last replay
                        self._next_spool_check = due
                        self._wake.set()
                    return 0
                if self._down_since is not None:  # neither takes them now: the flusher tries again
                    self._keep_in_memory(pending)
                    return 0
            else:
                self._count(pending)
            if self._down_since is None:
                try:
                    written = _write(pending)
                except Exception as exc:  # noqa: BLE001 - history must never break a task
                    self.database_unavailable(exc)
                else:
                    self._report_drops()
                    return written
            # Rounds written before a failure are written again from the spool: upserts of
            # events, which end the same in any order.
            if self._spool_rows(pending):
                self._report_drops()
            return 0

    def _count(self, events: list[RunEvent]) -> None:
        """Add the events to the task counters in Redis (one pipeline). Rows put back into the buffer
        after a failed spool are not counted again; counts Redis cannot take are lost, not retried."""
        fresh = _uncounted(events)
        # While Redis is unreachable, try only every PROBE_INTERVAL: a flush must not wait on it each time.
        if not fresh or (self._count_failing and time.monotonic() < self._count_retry_at):
            return
        try:
            metrics.count_events(spool.client(), fresh)
        except Exception as exc:  # noqa: BLE001 - metrics must never break history
            self._count_retry_at = time.monotonic() + PROBE_INTERVAL
            if not self._count_failing:
                log.warning("job history: cannot count task metrics in Redis (%s)", spool.describe(exc))
                self._count_failing = True
        else:
            self._count_failing = False

    def _report_drops(self) -> None:
        if self._dropped:
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            log.error("job history: %d events were dropped while neither PostgreSQL nor Redis took them", dropped)

    # --- dead letters (netjobs.services.deadletters.record_dead_letter) -----------------------

    def defer_dead_letter(self, letter: dict) -> None:
        """Keep a dead letter PostgreSQL cannot take now: in the spool, else in memory."""
        self._store_dead_letters([letter], write_first=False)
        self._ensure_thread()

    def _store_dead_letters(self, letters: list[dict], write_first: bool = True) -> None:
        from netjobs.services import deadletters

        if write_first and self._down_since is None:
            try:
                deadletters.write_dead_letters(letters)
                return
            except Exception as exc:  # noqa: BLE001
                self.database_unavailable(exc)
        if self._push(spool.DEAD_LETTERS_KEY, lambda: [deadletters.spool_entry(letters)]):
            return
        with self._lock:
            self._letters[:0] = letters
            overflow = len(self._letters) - MAX_DEAD_LETTERS_BUFFERED
            if overflow > 0:
                lost = [d["task_id"] for d in self._letters[:overflow]]
                del self._letters[:overflow]
        if overflow > 0:
            log.error("job history: more than %d dead letters waiting in memory; dropped those of %s",
                      MAX_DEAD_LETTERS_BUFFERED, ", ".join(lost[:20]))

    # --- outage handling ------------------------------------------------------------------------

    def database_unavailable(self, exc: BaseException) -> None:
        """PostgreSQL refused a write as a whole: spool from now on, and say so once."""
        with self._state_lock:
            if self._down_since is not None:
                return
            if self._recovering:  # down again before the replay finished: the same outage goes on
                self._recovering = False
                self._down_since = time.monotonic() - self._outage_seconds
                self._next_probe = time.monotonic() + PROBE_INTERVAL
                return
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + PROBE_INTERVAL
            self._replayed = {"job_runs": 0, "dead_letters": 0}
        log.warning("job history: PostgreSQL unreachable (%s): spooling to Redis", spool.describe(exc))

    def _spool_rows(self, rows: list[RunEvent]) -> bool:
        if self._push(spool.HISTORY_KEY, lambda: _spool_entries(rows)):
            return True
        self._keep_in_memory(rows)
        return False

    def _keep_in_memory(self, rows: list[RunEvent]) -> None:
        """Put ``rows`` back at the front of the buffer, within MAX_BUFFERED."""
        with self._lock:
            self._buffer[:0] = rows
            overflow = len(self._buffer) - MAX_BUFFERED
            if overflow > 0:
                del self._buffer[:overflow]
                self._dropped += overflow
        if overflow > 0 and self._dropped == overflow:
            log.error("job history: %d events waiting in memory; dropping the oldest until PostgreSQL or "
                      "the Redis spool takes them", MAX_BUFFERED)

    def _push(self, key: str, make_entries, also=None) -> bool:
        """Push ``make_entries()`` to the spool list ``key`` (with ``also``, see spool.push). After a
        failure the flusher tries again only every PROBE_INTERVAL seconds (no serializing of a large
        buffer every flush while Redis is down); other callers (shutdown, tests) always try."""
        now = time.monotonic()
        if (key in self._spool_trouble and now < self._spool_retry_at.get(key, 0.0)
                and threading.current_thread() is self._thread):
            return False
        self._spool_retry_at[key] = now + PROBE_INTERVAL
        try:
            pushed = spool.push(key, make_entries(), also)
            trouble = None if pushed else (f"spool full: {key} holds {spool.MAX_ENTRIES} entries or "
                                           f"{spool.MAX_BYTES // 2**20} MiB")
        except Exception as exc:  # noqa: BLE001 - Redis unreachable too
            pushed, trouble = False, f"Redis unreachable: {spool.describe(exc)}"
        if trouble is not None:
            if not self._spool_trouble:
                log.error("job history: cannot spool to Redis (%s): keeping what PostgreSQL cannot take in memory "
                          "(at most %d events and %d dead letters)", trouble, MAX_BUFFERED, MAX_DEAD_LETTERS_BUFFERED)
            self._spool_trouble[key] = trouble
        elif self._spool_trouble.pop(key, None) is not None and not self._spool_trouble:
            log.warning("job history: spooling to Redis again")
        return pushed

    def _maintain(self) -> None:
        """Between flushes: probe PostgreSQL during an outage, replay the spool when it is back."""
        now = time.monotonic()
        if self._down_since is not None:
            if now < self._next_probe:
                return
            self._next_probe = now + PROBE_INTERVAL
            try:
                _ping_database()
            except Exception:  # noqa: BLE001 - still down
                return
            with self._state_lock:
                if self._down_since is None:
                    return
                self._outage_seconds = now - self._down_since
                self._down_since = None
                self._recovering = True
        elif not self._recovering and now < self._next_spool_check:
            return
        self._next_spool_check = now + SPOOL_CHECK_INTERVAL
        with self._replay_lock:
            self._replay()

    def _maintenance_due(self) -> float:
        if self._down_since is not None:
            return self._next_probe
        return self._next_spool_check

    def _replay(self) -> None:
        handed_off, self._handed_off = self._handed_off, False
        try:
            if not self._recovering and not _spool_waits_for(handed_off):
                self._replay_done()  # the usual case: one round trip, nothing to do
                return
            result = replay_spool(budget=REPLAY_SLICE)
        except Exception as exc:  # noqa: BLE001
            if spool.database_unavailable(exc):
                self.database_unavailable(exc)
            elif self._recovering:
                self._replay_done(f"; the Redis spool cannot be replayed now ({spool.describe(exc)})")
            else:
                log.debug("job history: cannot look at the Redis spool: %s", exc)
            return
        for kind in ("job_runs", "dead_letters"):
            self._replayed[kind] += result[kind]
        self._replayed_oldest = max(self._replayed_oldest, result["oldest_age"])
        if result["drained"] or result["busy"]:
            self._replay_done(" (another process is replaying the rest)" if result["busy"] else "")
        else:
            self._next_spool_check = 0.0  # more to do: go on after the next flush

    def _replay_done(self, note: str = "") -> None:
        """One line: the end of this process's outage, or what it replayed that other processes had
        left for longer than a hand-off takes (hand-offs themselves are the normal path: no line)."""
        runs, letters = self._replayed["job_runs"], self._replayed["dead_letters"]
        if self._recovering:
            log.warning("job history: PostgreSQL reachable again after %.0fs: replayed %d job_runs rows and %d "
                        "dead letters from the Redis spool%s", self._outage_seconds, runs, letters, note)
            self._recovering = False
        elif (runs or letters) and self._replayed_oldest >= spool.STALE_SECONDS:
            log.warning("job history: replayed %d job_runs rows and %d dead letters left in the Redis spool "
                        "(the oldest for %.0fs)", runs, letters, self._replayed_oldest)
        self._replayed = {"job_runs": 0, "dead_letters": 0}
        self._replayed_oldest = 0.0

    def shutdown(self) -> None:
        """Before the process exits: write what it holds, and what it handed over to the spool, so
        a recycled child's last tasks do not wait for another process to replay them."""
        self.flush()
        if self._handed_off and self._down_since is None:
            with self._replay_lock:  # after the flusher's replay, if one is under way
                self._replay()

    def start(self) -> None:
        """Run the flusher from now on, before any event (a worker's main process: it replays what
        children killed right after a hand-off left in the spool)."""
        if self._is_enabled():
            self._ensure_thread()

    # --- the flusher thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="netjobs-history", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while True:
            try:
                with no_fork_during():  # a worker's parent records too (lost children, revokes)
                    if self._wake.is_set() or time.monotonic() >= next_flush:
                        self._wake.clear()
                        self.flush()
                        next_flush = time.monotonic() + self.flush_interval
                    self._maintain()
            except Exception:  # noqa: BLE001 - the flusher must outlive any bug
                log.exception("job history: flusher error")
                time.sleep(1)
            timeout = min(next_flush, self._maintenance_due()) - time.monotonic()
            if timeout > 0:
                self._wake.wait(timeout)


# Widths of the varchar columns, caps of the text columns (db/models.py JobRun).
_TEXT_LIMITS = {
    "task_id": 64, "task_name": 255, "parent_id": 64, "root_id": 64, "group_id": 64, "queue": 64,
    "worker": 255, "state": 16, "args_summary": TEXT_LIMIT, "result_summary": TEXT_LIMIT, "error": TEXT_LIMIT,
    "submitted_by": 255,
}  # fmt: skip
_TEXT_COLUMNS = tuple((COLUMNS.index(name), limit) for name, limit in _TEXT_LIMITS.items())
_DATETIME_COLUMNS = frozenset({"state_at", "published_at", "started_at", "finished_at"})
_INT_LIMITS = {COLUMNS.index("retries"): 2**31 - 1, COLUMNS.index("duration_ms"): 2**63 - 1}


def _uncounted(events: list[RunEvent]) -> list[RunEvent]:
    """The events not yet added to the task counters, marked as added: a count is tried once (rows
    put back into the buffer after a failed spool are not counted again)."""
    fresh = [event for event in events if not event.counted]
    for event in fresh:
        event.counted = True
    return fresh


def _storable(values: list) -> tuple:
    """A job_runs row (values in COLUMNS order) that PostgreSQL accepts."""
    for index, limit in _TEXT_COLUMNS:
        value = values[index]
        if value is not None and (type(value) is not str or len(value) > limit or "\x00" in value
                                  or not value.isascii()):
            values[index] = spool.storable_text(value, limit)
    for index, limit in _INT_LIMITS.items():
        value = values[index]
        if value is not None and not (isinstance(value, int) and -limit <= value <= limit):
            try:
                values[index] = max(-limit, min(limit, int(value)))
            except (TypeError, ValueError, OverflowError):
                values[index] = None
    return tuple(values)


def _minimal_row(row: tuple) -> tuple:
    """What is left of a row PostgreSQL refused: its id, name, state and times; ASCII only."""
    values = dict(zip(COLUMNS, row))
    minimal = {name: None for name in COLUMNS}
    minimal.update(
        task_id=spool.ascii_text(values["task_id"], 64),
        task_name=spool.ascii_text(values["task_name"], 255),
        state=values["state"] if values["state"] in (PUBLISHED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED) else FAILURE,
        state_at=values["state_at"] if isinstance(values["state_at"], datetime) else _now(),
        retries=values["retries"] if isinstance(values["retries"], int) and 0 <= values["retries"] < 2**31 else 0,
        error=spool.ascii_text(f"[history row refused by PostgreSQL, stored in part] {values['error'] or ''}",
                               TEXT_LIMIT),
    )
    for name in ("published_at", "started_at", "finished_at"):
        if isinstance(values[name], datetime):
            minimal[name] = values[name]
    return tuple(minimal[name] for name in COLUMNS)


def _write_rows(rows: list[tuple]) -> int:
    return spool.write_rows(UPSERT_SQL, rows, minimal=_minimal_row, what="job history")


def _write(events: list[RunEvent]) -> int:
    """Upsert ``events``, a round at a time (in_rounds). Returns how many rows were written; raises
    only when PostgreSQL is unavailable (spool.database_unavailable)."""
    return sum(_write_rows([_storable(list(e.row())) for e in round_]) for round_ in in_rounds(events))


def _spool_entries(events: list[RunEvent]) -> list[str]:
    """``events`` as spool entries of at most FLUSH_BATCH rows, {"v", "columns", "rows"}, in rounds
    (in_rounds): an entry is replayed with one upsert."""
    entries = []
    for round_ in in_rounds(events):
        entries.extend(_round_entries(round_))
    return entries


def _round_entries(rows: list[RunEvent]) -> list[str]:
    entries = []
    for start in range(0, len(rows), FLUSH_BATCH):
        chunk = []
        for event in rows[start:start + FLUSH_BATCH]:
            row = list(_storable(list(event.row())))
            for name in _DATETIME_COLUMNS:
                index = COLUMNS.index(name)
                row[index] = spool.format_datetime(row[index])
            chunk.append(row)
        entries.append(spool.entry({"v": 1, "columns": list(COLUMNS), "rows": chunk}))
    return entries


_COLUMN_SET = frozenset(COLUMNS)


def replay_entries(bodies: list[dict]) -> int:
    """Write job_runs spool entries in one go, a round at a time (in_rounds: hand-offs of the same
    task sit in different entries); returns the rows written."""
    rows = []
    for body in bodies:
        columns = body["columns"]
        for raw in body["rows"]:
            values = {name: value for name, value in zip(columns, raw) if name in _COLUMN_SET}
            for name in _DATETIME_COLUMNS:
                values[name] = spool.parse_datetime(values.get(name))
            rows.append(_storable([values.get(name) for name in COLUMNS]))
    return sum(_write_rows(round_) for round_ in in_rounds(rows, task_id=lambda row: row[0]))


def _spool_waits_for(handed_off: bool) -> bool:
    """Whether the spool holds what this process should replay now: anything, if it handed off since
    its last replay; else dead letters, or job_runs entries left behind (LEFT_BEHIND_SECONDS old)."""
    if handed_off:
        return any(spool.lengths().values())
    ages = spool.oldest_ages(spool.client(), [spool.DEAD_LETTERS_KEY, spool.HISTORY_KEY])
    runs_age = ages[spool.HISTORY_KEY]
    return ages[spool.DEAD_LETTERS_KEY] is not None or (runs_age is not None and runs_age >= LEFT_BEHIND_SECONDS)


def replay_spool(budget: float | None = None) -> dict:
    """Write what the Redis spool holds to PostgreSQL, dead letters first (any process may).

    Returns {"job_runs": rows, "dead_letters": letters, "drained": bool, "busy": bool, "oldest_age":
    seconds}; ``busy`` means another process is replaying. Raises if PostgreSQL or Redis is unreachable.
    """
    from netjobs.services import deadletters

    result = spool.replay({spool.DEAD_LETTERS_KEY: deadletters.replay_entries, spool.HISTORY_KEY: replay_entries},
                          budget)
    return {"job_runs": result.counts.get(spool.HISTORY_KEY, 0),
            "dead_letters": result.counts.get(spool.DEAD_LETTERS_KEY, 0),
            "drained": result.drained, "busy": result.busy, "oldest_age": result.oldest_age}


def _ping_database() -> None:
    """Raise unless PostgreSQL answers (a connection of its own with a short connect timeout, so a
    probe during an outage never holds the flusher for the pool's 10 s)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from netjobs.config import get_settings

    url = make_url(get_settings().database_url).set(drivername="postgresql")
    conn = psycopg2.connect(url.render_as_string(hide_password=False), connect_timeout=PROBE_CONNECT_TIMEOUT,
                            application_name=f"netjobs[{os.getpid()}] probe")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        conn.close()


recorder = HistoryRecorder()
os.register_at_fork(after_in_child=recorder._reset)
atexit.register(recorder.shutdown)

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
            submitted_by=headers.get(actor.HEADER),
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
    recorder.record(RunEvent(task_id=task_id, state=STARTED, state_at=now, started_at=now,
                             queue_wait=metrics.queue_wait(task.request), **_request_fields(task.request)))


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
    if isinstance(result, dict) and result.get("status") == FAILED_MEMBER_STATUS:
        # A fan-out member that failed for good returns its failure so that its chord goes on.
        _finished(sender.request.id, FAILURE, sender.request, result_summary=summarize(result),
                  error=summarize(str(result.get("error"))))
        return
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


@signals.task_postrun.connect
def _hand_off_after_task(**_):
    # With acks_late the message is acknowledged once this returns: the task's events must be in
    # the Redis spool (or PostgreSQL) by then, or a SIGKILL of this process right after the ack (an
    # OOM kill) would lose the outcome of a task that will never run again.
    with no_fork_during():
        recorder.flush(hand_off=True)


@signals.task_revoked.connect
def _on_revoked(request=None, terminated=None, signum=None, expired=None, **_):
    if request is None:
        return
    why = "expired" if expired else f"terminated (signal {signum})" if terminated else "revoked"
    _finished(request.id, REVOKED, request, error=why)


def record_revoked(task_id: str, reason: str = "revoked by operator") -> None:
    """For `netjobs cancel`: mark a task revoked even if no worker has seen it yet."""
    recorder.record(RunEvent(task_id=task_id, state=REVOKED, finished_at=_now(), error=reason))


@signals.worker_ready.connect
def _start_flusher(**_):
    recorder.start()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_on_shutdown(**_):
    recorder.shutdown()
