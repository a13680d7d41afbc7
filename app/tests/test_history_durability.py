"""Job history and dead letters never stall and never vanish (issue 7, item 4).

* A row PostgreSQL would reject (NUL bytes, oversized text, arguments that are not valid JSONB) is
  written sanitized, with the rest of its batch, and the recorder goes on recording; a row refused
  anyway is isolated, logged once and written in a minimal form.
* A RETRY event stamped after the next attempt finished does not hide that attempt's outcome.
* A PostgreSQL outage loses no job_runs row and no dead letter: they are spooled to Redis and
  replayed by whichever netjobs process finds PostgreSQL back, even if the spooling process was
  killed; the outage is logged once, not every flush.
* A prefork child recycled by --max-tasks-per-child writes (or spools) what it buffered.

The outage tests run their own redis-server and PostgreSQL cluster (the `stack` fixture), so they
can stop PostgreSQL without disturbing the session's services and their spool is nobody else's.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from netjobs import history
from netjobs.leases import UNACKED_KEY
from tests.conftest import wait_until
from tests.support.servers import (
    PG_BIN,
    PostgresServer,
    RedisServer,
    _as_postgres,
    _stop,
    celery_worker,
    postgres_server,
    redis_server,
    service_env,
    start_redis,
)

# How long the outage test keeps PostgreSQL down; nothing depends on the value
# (NETJOBS_TEST_OUTAGE_SECONDS=300 for the 5-minute outage of issue 7).
OUTAGE_SECONDS = float(os.environ.get("NETJOBS_TEST_OUTAGE_SECONDS", "20"))
NUL = "\x00"


# --- a stack of our own: redis-server + a PostgreSQL cluster we may stop ------------------------


@dataclass
class Stack:
    redis: RedisServer
    pg: PostgresServer
    env: dict[str, str]
    tmp: Path

    def engine(self):
        return create_engine(self.pg.url, poolclass=NullPool)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def stop_pg(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg.datadir), "-m", "fast", "-w", "stop"])

    def start_pg(self) -> None:
        base = self.pg.datadir.parent
        options = (f"-p {self.pg.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg.datadir), "-o", options, "-l", str(base / "log"),
                      "-w", "-t", "60", "start"])

    def stop_redis(self) -> None:
        _stop(self.redis.proc)

    def start_redis(self) -> None:
        self.redis.proc = start_redis(self.redis.port, self.redis.workdir)

    def pg_running(self) -> bool:
        return (self.pg.datadir / "postmaster.pid").exists()

    @contextmanager
    def pg_down(self):
        """PostgreSQL stopped for the block; always running again afterwards."""
        self.stop_pg()
        try:
            yield
        finally:
            if not self.pg_running():
                self.start_pg()

    def python(self, code: str, *args: str, timeout: float = 300, extra_env: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
        """Run ``code`` in a fresh netjobs process configured for this stack."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    def spool_lengths(self) -> tuple[int, int]:
        with self.client() as client:
            return client.llen("netjobs:spool:job_runs"), client.llen("netjobs:spool:dead_letters")

    def rows(self, sql: str, **params) -> list:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def stack_services(tmp_path_factory):
    with redis_server() as own_redis, postgres_server() as own_pg:
        tmp = tmp_path_factory.mktemp("durability")
        env = service_env(own_redis, own_pg, NETJOBS_COMPLIANCE_RULES=str(tmp / "compliance.yml"))
        stack = Stack(own_redis, own_pg, env, tmp)
        stack.python("from netjobs.db.migrate import upgrade; upgrade()")
        yield stack


@pytest.fixture
def stack(stack_services):
    """The module's own services, with PostgreSQL running, empty tables and an empty spool."""
    if stack_services.redis.proc.poll() is not None:
        stack_services.start_redis()
    if not stack_services.pg_running():
        stack_services.start_pg()
    engine = stack_services.engine()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_runs, dead_letters RESTART IDENTITY"))
    engine.dispose()
    with stack_services.client() as client:
        for key in client.scan_iter("netjobs:spool:*"):
            client.delete(key)
    yield stack_services


def long_flush_interval_path(tmp: Path) -> str:
    """A PYTHONPATH entry whose sitecustomize makes every netjobs process flush history only once an
    hour: what such a process writes before then, it writes at shutdown."""
    directory = tmp / "long-flush"
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        "import netjobs.history as h\nh.FLUSH_INTERVAL = 3600\nh.recorder.flush_interval = 3600\n"
    )
    return str(directory)


# --- 1. rows PostgreSQL rejects ---------------------------------------------------------------------


def test_rows_with_nul_bytes_and_huge_text_are_written_sanitized_with_the_rest_of_the_batch(db):
    from netjobs import history

    at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    good = [history.RunEvent(f"good-{i}", history.SUCCESS, at, task_name="netjobs.diag.ping", finished_at=at)
            for i in range(40)]
    bad = [
        history.RunEvent("nul-result", history.SUCCESS, at, task_name="t\x00name", result_summary=f"a{NUL}b",
                         args_summary=f"('{NUL}',)", worker=f"w{NUL}@host"),
        history.RunEvent("nul-error", history.FAILURE, at, error=f"ValueError: bad {NUL} byte", queue=f"q{NUL}"),
        history.RunEvent("huge", history.FAILURE, at, error="E" * 1_000_000, task_name="n" * 5000,
                         worker="w" * 5000, queue="q" * 500, result_summary="R" * 100_000),
        history.RunEvent("surrogate", history.REVOKED, at, error="lone \udc80 surrogate"),
    ]
    for event in good[:20] + bad + good[20:]:
        history.recorder.record(event)
    history.recorder.flush()

    ours = [e.task_id for e in good + bad]
    with db.connect() as conn:  # only ours: other tests' late history may land in job_runs too
        rows = {r.task_id: r for r in conn.execute(text("SELECT * FROM job_runs WHERE task_id = ANY(:ids)"),
                                                   {"ids": ours})}
    assert set(rows) == set(ours), "every row of the batch is written"
    assert all(rows[e.task_id].state == "SUCCESS" and rows[e.task_id].state_at == at for e in good)
    assert NUL not in rows["nul-result"].result_summary and rows["nul-result"].result_summary.startswith("a")
    assert NUL not in rows["nul-result"].task_name and NUL not in rows["nul-result"].worker
    assert rows["nul-error"].state == "FAILURE" and "bad" in rows["nul-error"].error
    assert NUL not in rows["nul-error"].error
    huge = rows["huge"]
    assert huge.state == "FAILURE" and huge.error.startswith("EEEE") and len(huge.error) <= 10_000
    assert len(huge.task_name) <= 255 and len(huge.worker) <= 255 and len(huge.queue) <= 64
    assert rows["surrogate"].state == "REVOKED" and rows["surrogate"].error.startswith("lone ")

    # ...and the recorder goes on recording.
    history.recorder.record(history.RunEvent("after-bad-batch", history.SUCCESS, at))
    history.recorder.flush()
    with db.connect() as conn:
        assert conn.execute(text("SELECT state FROM job_runs WHERE task_id = 'after-bad-batch'")).scalar() == "SUCCESS"


def test_dead_letter_with_nul_bytes_and_values_jsonb_rejects_is_written_sanitized(db):
    from netjobs.services.deadletters import list_dead_letters, record_dead_letter

    record_dead_letter(
        task_id="dl-nul", task_name="netjobs.diag.fail", queue="default",
        args=[f"a{NUL}b", {"k": [1.5, math.nan, math.inf]}, b"raw\x00bytes", ("tuple", 1)],
        kwargs={f"key{NUL}": f"value{NUL}", "when": datetime(2031, 1, 1, tzinfo=timezone.utc), 7: {1, 2}},
        error=f"ValidationError: bad{NUL}input " + "x" * 200_000, traceback="Traceback\n" + "  line\n" * 50_000,
        retries=0,
    )
    [letter] = [d for d in list_dead_letters() if d.task_id == "dl-nul"]
    assert letter.task_name == "netjobs.diag.fail"
    assert NUL not in json.dumps(letter.args) and NUL not in json.dumps(letter.kwargs)
    assert letter.args[0].startswith("a") and letter.args[0].endswith("b")
    assert letter.args[1]["k"][0] == 1.5 and len(letter.args) == 4
    assert set(letter.kwargs) == {"key\ufffd", "when", "7"}
    assert NUL not in letter.error and letter.error.startswith("ValidationError: bad") and len(letter.error) <= 10_000
    assert len(letter.traceback) <= 100_000 and letter.traceback.startswith("Traceback")


def test_rows_postgres_refuses_anyway_are_isolated_logged_once_and_written_in_a_minimal_form(db, caplog):
    """The safety net behind the sanitizing: rows that reach PostgreSQL unsanitized (here on purpose)."""
    from netjobs import history
    from netjobs.services import deadletters

    at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    rows = [history.RunEvent(f"iso-{i}", history.SUCCESS, at).row() for i in range(30)]
    refused_client_side = history.RunEvent("iso-nul", history.FAILURE, at, error=f"bad{NUL}byte").row()
    refused_server_side = history.RunEvent("iso-long", history.FAILURE, at, queue="q" * 100).row()
    batch = rows[:10] + [refused_client_side] + rows[10:20] + [refused_server_side] + rows[20:]
    assert history._write_rows(batch) == len(batch)
    with db.connect() as conn:
        stored = dict(conn.execute(text("SELECT task_id, error FROM job_runs WHERE task_id LIKE 'iso-%'")).all())
    assert set(stored) == {row[0] for row in batch}
    assert "bad\\x00byte" in stored["iso-nul"] and "refused by PostgreSQL" in stored["iso-long"]

    letter = deadletters.storable_dead_letter(task_id="iso-dl", task_name="t", queue=None, args=["ok"], kwargs={},
                                              error="e", traceback=None, retries=0, failed_at=at)
    bad_json = {**letter, "task_id": "iso-dl-nul", "args": [f"a{NUL}b"]}  # JSONB refuses \u0000 (server side)
    assert deadletters.write_dead_letters([letter, bad_json]) == 2
    with db.connect() as conn:
        letters = dict(conn.execute(text("SELECT task_id, args FROM dead_letters WHERE task_id LIKE 'iso-%'")).all())
    assert letters == {"iso-dl": ["ok"], "iso-dl-nul": []}

    refusals = [r.getMessage() for r in caplog.records if "PostgreSQL refused the row" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in refusals) == ["iso-dl-nul", "iso-long", "iso-nul"]


def test_a_failing_task_with_nul_bytes_gets_its_row_and_dead_letter_and_the_worker_keeps_recording(
        worker, db, celery_app):
    from netjobs.history import recorder
    from netjobs.services.deadletters import list_dead_letters

    message = f"bad{NUL}input " + "y" * 300_000
    pings = [celery_app.send_task("netjobs.diag.ping") for _ in range(10)]
    failed = celery_app.send_task("netjobs.diag.fail", args=[message])
    pings += [celery_app.send_task("netjobs.diag.ping") for _ in range(10)]
    with pytest.raises(Exception):
        failed.get(timeout=30)
    assert [p.get(timeout=30) for p in pings] == ["pong"] * 20
    recorder.flush()

    expected = {p.id: "SUCCESS" for p in pings} | {failed.id: "FAILURE"}

    def states(ids=tuple(expected)):  # only ours: other tests' late history may land in job_runs too
        with db.connect() as conn:
            return dict(conn.execute(text("SELECT task_id, state FROM job_runs WHERE task_id = ANY(:ids)"),
                                     {"ids": list(ids)}).all())

    try:
        wait_until(lambda: states() == expected, 30, message="the rows of the failed task and of its batch")
    except BaseException:
        print("expected", expected, "\nfound", states())
        raise
    with db.connect() as conn:
        error = conn.execute(text("SELECT error FROM job_runs WHERE task_id = :t"), {"t": failed.id}).scalar()
    assert error.startswith("ValidationError: bad") and NUL not in error

    letters = wait_until(lambda: [d for d in list_dead_letters() if d.task_id == failed.id], 30,
                         message="the dead letter")
    assert letters[0].args[0].startswith("bad") and NUL not in letters[0].args[0]

    # The worker's history is not stuck behind the bad row.
    after = celery_app.send_task("netjobs.diag.ping")
    assert after.get(timeout=30) == "pong"
    wait_until(lambda: states([after.id]).get(after.id) == "SUCCESS", 30, message="history after the bad row")


def test_a_late_retry_event_does_not_hide_the_outcome_of_the_next_attempt(db):
    """The process that retries stamps RETRY after publishing the retry; with a short countdown another
    process may run (and finish) the next attempt first. Every arrival order must end the same."""
    from itertools import permutations

    from netjobs import history

    def event(state, seconds, retries):
        return state, datetime(2031, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds), retries

    scenarios = {
        "race": ([event("STARTED", 1, 0), event("RETRY", 5, 1), event("PUBLISHED", 2, 1), event("STARTED", 3, 1),
                  event("FAILURE", 4, 1)], "FAILURE"),
        "retried-twice": ([event("STARTED", 1, 0), event("RETRY", 2, 1), event("STARTED", 3, 1),
                           event("RETRY", 4, 2)], "RETRY"),
        "retry-then-success": ([event("PUBLISHED", 0, 0), event("STARTED", 1, 0), event("RETRY", 2, 1),
                                event("PUBLISHED", 2.5, 1), event("STARTED", 3, 1), event("SUCCESS", 4, 1)],
                               "SUCCESS"),
    }
    expected = {}
    one_flush = []  # every order of every scenario in one flush: written in rounds, one per arrival position
    for name, (events, final) in scenarios.items():
        for n, order in enumerate(permutations(events)):
            task_id = f"order-{name}-{n}"
            expected[task_id] = final
            one_flush += [history.RunEvent(task_id, state, at, retries=retries) for state, at, retries in order]
    assert max(len(r) for r in history.in_rounds(one_flush)) == len(expected)
    history._write(one_flush)
    with db.connect() as conn:
        stored = dict(conn.execute(text("SELECT task_id, state FROM job_runs WHERE task_id LIKE 'order-%'")).all())
    assert stored == expected


# --- 2. PostgreSQL outage ------------------------------------------------------------------------------

PRODUCER = r"""
import json, sys, uuid
from netjobs.celery_app import app
n_ok, n_fail, n_flaky = map(int, sys.argv[1:4])
ok = [app.send_task("netjobs.diag.ping") for _ in range(n_ok)]
failed = [app.send_task("netjobs.diag.fail", args=[f"outage failure {i}"]) for i in range(n_fail)]
failed += [app.send_task("netjobs.diag.flaky", args=[uuid.uuid4().hex, 6]) for _ in range(n_flaky)]
for r in ok:
    assert r.get(timeout=180) == "pong"
for r in failed:
    r.get(timeout=180, propagate=False)
    assert r.state == "FAILURE", r.state
print(json.dumps({"ok": [r.id for r in ok], "failed": [r.id for r in failed]}))
"""

OUTAGE_START = "job history: PostgreSQL unreachable"
OUTAGE_END = "job history: PostgreSQL reachable again"


def outage_lines(log: str, marker: str) -> dict[str, int]:
    """Lines containing ``marker`` per process name (Celery's log format names the process)."""
    per_process: dict[str, int] = {}
    for line in log.splitlines():
        if marker in line:
            found = re.search(r"/([\w\-]+)\]", line)
            name = found.group(1) if found else "?"
            per_process[name] = per_process.get(name, 0) + 1
    return per_process


@pytest.mark.slow
def test_postgres_outage_loses_no_history_and_no_dead_letter(stack):
    n_ok, n_fail, n_flaky = 300, 12, 3
    with celery_worker(stack.env, queues="default", concurrency=2, hostname="outage@localhost") as w:
        try:
            with stack.pg_down():
                started = time.monotonic()
                producer = stack.python(PRODUCER, str(n_ok), str(n_fail), str(n_flaky))
                ids = json.loads(producer.stdout.strip().splitlines()[-1])
                # Everything the worker and the (exited) producer knew is in Redis, not in memory.
                wait_until(lambda: stack.spool_lengths()[1] == n_fail + n_flaky, 60,
                           message="every dead letter spooled to Redis")
                assert stack.spool_lengths()[0] > 0
                time.sleep(max(0.0, started + OUTAGE_SECONDS - time.monotonic()))
                assert stack.spool_lengths()[1] == n_fail + n_flaky
            # PostgreSQL is back: the worker's flushers replay the spool.
            check_everything_after_the_outage(stack, ids, n_fail)
            # A process that noticed the outage says it is over at its next probe, which may come
            # after another process has replayed everything.
            wait_until(lambda: set(outage_lines(w.log(), OUTAGE_END)) >= set(outage_lines(w.log(), OUTAGE_START)),
                       3 * history.PROBE_INTERVAL + 10, message="the end of the outage logged by every process")
        except BaseException:
            print("spool lengths", stack.spool_lengths(), "\nworker log (history lines):\n"
                  + "\n".join(line for line in w.log().splitlines() if "history" in line or "spool" in line))
            raise
        log = w.log()
    # One line when the outage starts and one when it ends, per process that noticed it; not one per flush.
    starts, ends = outage_lines(log, OUTAGE_START), outage_lines(log, OUTAGE_END)
    assert starts and all(count == 1 for count in starts.values()), starts
    assert set(ends) == set(starts) and all(count == 1 for count in ends.values()), ends
    assert "job history write failed" not in log
    assert "could not record dead letter" not in log
    assert producer.stderr.count(OUTAGE_START) == 1, producer.stderr[-3000:]
    assert len(producer.stderr.splitlines()) <= 5, producer.stderr[-3000:]


def check_everything_after_the_outage(stack: Stack, ids: dict, n_fail: int) -> None:
    def history():
        return {r.task_id: r for r in stack.rows("SELECT * FROM job_runs")}

    expected = {i: "SUCCESS" for i in ids["ok"]} | {i: "FAILURE" for i in ids["failed"]}
    try:
        wait_until(lambda: {k: r.state for k, r in history().items()} == expected, 120,
                   message="every job_runs row after the outage")
    except BaseException:
        found = {k: r.state for k, r in history().items()}
        print("missing", len(set(expected) - set(found)), "wrong",
              {k: (found[k], v) for k, v in expected.items() if k in found and found[k] != v})
        raise
    rows = history()
    assert len(rows) == len(expected)
    # published_at comes from the producer, which had exited long before PostgreSQL came back.
    assert all(r.published_at is not None and r.started_at is not None and r.finished_at is not None
               for r in rows.values())
    assert all(rows[i].retries == 5 for i in ids["failed"][n_fail:])

    def dead_letters():
        return {r.task_id: r for r in stack.rows("SELECT * FROM dead_letters")}

    wait_until(lambda: set(dead_letters()) == set(ids["failed"]), 60, message="every dead letter")
    letters = dead_letters()
    assert sorted(letters[i].args[0] for i in ids["failed"][:n_fail]) == sorted(
        f"outage failure {i}" for i in range(n_fail))
    assert all(letters[i].retries == 5 and letters[i].task_name == "netjobs.diag.flaky"
               for i in ids["failed"][n_fail:])
    wait_until(lambda: stack.spool_lengths() == (0, 0), 60, message="an empty spool")


# --- 3. the spooling process is killed ----------------------------------------------------------------

SPOOLER = r"""
import sys, time
from datetime import datetime, timedelta, timezone
from netjobs import history, spool
from netjobs.services.deadletters import record_dead_letter
n, prefix = int(sys.argv[1]), sys.argv[2]
at = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=timezone.utc)
for i in range(n):
    history.recorder.record(history.RunEvent(f"{prefix}-{i}", history.SUCCESS, at, task_name="kill.test",
                                             started_at=at, finished_at=at, duration_ms=i))
record_dead_letter(task_id=f"{prefix}-dl", task_name="kill.test", queue="default", args=[1, "two"],
                   kwargs={"three": 3}, error="boom", traceback=None, retries=2)
history.recorder.flush()
client = spool.client()
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not (client.llen(spool.HISTORY_KEY) and client.llen(spool.DEAD_LETTERS_KEY)):
    time.sleep(0.1)
print("SPOOLED" if client.llen(spool.HISTORY_KEY) and client.llen(spool.DEAD_LETTERS_KEY) else "NOT-SPOOLED",
      flush=True)
time.sleep(3600)
"""

REPLAYER = r"""
import sys, time, uuid
from netjobs import history, spool
# Any netjobs process that records history runs a flusher, and the flusher replays the spool.
history.recorder.record(history.RunEvent(f"kick-{uuid.uuid4().hex}", history.SUCCESS))
client = spool.client()
deadline = time.monotonic() + 90
while time.monotonic() < deadline and (client.llen(spool.HISTORY_KEY) or client.llen(spool.DEAD_LETTERS_KEY)):
    time.sleep(0.2)
history.recorder.flush()
print(client.llen(spool.HISTORY_KEY), client.llen(spool.DEAD_LETTERS_KEY))
"""


@pytest.mark.slow
def test_spooled_events_survive_sigkill_of_the_process_that_spooled_them(stack):
    n, prefix = 250, f"killed-{uuid.uuid4().hex[:8]}"
    with stack.pg_down():
        spooler = subprocess.Popen([sys.executable, "-c", SPOOLER, str(n), prefix], env={**os.environ, **stack.env},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = spooler.stdout.readline().strip()
            assert line == "SPOOLED", (line, spooler.stderr.read() if spooler.poll() is not None else "")
        finally:
            spooler.kill()  # SIGKILL: no atexit, no flush
            spooler.wait(10)
        assert stack.spool_lengths()[0] > 0 and stack.spool_lengths()[1] == 1
    assert stack.rows("SELECT count(*) FROM job_runs")[0][0] == 0

    replayer = stack.python(REPLAYER, timeout=180)
    assert replayer.stdout.split() == ["0", "0"], replayer.stderr[-3000:]
    rows = stack.rows("SELECT task_id, state, task_name, state_at, started_at, finished_at, duration_ms "
                      "FROM job_runs WHERE task_id LIKE :p", p=f"{prefix}-%")
    assert len(rows) == n
    at = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=timezone.utc)
    assert all(r.state == "SUCCESS" and r.task_name == "kill.test" and r.state_at == r.started_at == r.finished_at == at
               for r in rows)
    assert sorted(r.duration_ms for r in rows) == list(range(n))
    [letter] = stack.rows("SELECT task_id, args, kwargs, error, retries FROM dead_letters")
    assert tuple(letter) == (f"{prefix}-dl", [1, "two"], {"three": 3}, "boom", 2)


BOTH_DOWN = r"""
import sys, time
from datetime import datetime, timedelta, timezone
from netjobs import history
from netjobs.services.deadletters import record_dead_letter
n = int(sys.argv[1])
at = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)
for i in range(n):
    history.recorder.record(history.RunEvent(f"both-{i}", history.FAILURE, at, error=f"e{i}", finished_at=at))
record_dead_letter(task_id="both-dl", task_name="both.test", queue=None, args=[], kwargs={"k": "v"}, error="boom",
                   traceback="tb", retries=1)
history.recorder.flush()
print("IN-MEMORY", len(history.recorder._buffer), len(history.recorder._letters), flush=True)
time.sleep(3600)
"""


@pytest.mark.slow
def test_with_redis_down_too_events_wait_in_memory_then_go_to_the_spool_then_to_postgres(stack):
    n = 300
    with stack.pg_down():
        stack.stop_redis()
        proc = subprocess.Popen([sys.executable, "-c", BOTH_DOWN, str(n)], env={**os.environ, **stack.env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().split() == ["IN-MEMORY", str(n), "1"]
            stack.start_redis()
            wait_until(lambda: stack.spool_lengths()[0] > 0 and stack.spool_lengths()[1] == 1, 30,
                       message="the events kept in memory spooled once Redis is back")
        except BaseException:
            proc.kill()
            raise
    try:
        wait_until(lambda: stack.rows("SELECT count(*) FROM job_runs")[0][0] == n
                   and stack.rows("SELECT count(*) FROM dead_letters")[0][0] == 1
                   and stack.spool_lengths() == (0, 0), 60, message="everything in PostgreSQL")
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
    rows = stack.rows("SELECT task_id, state, error, state_at FROM job_runs")
    at = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)
    assert sorted((r.task_id, r.state, r.error, r.state_at) for r in rows) == sorted(
        (f"both-{i}", "FAILURE", f"e{i}", at) for i in range(n))
    assert tuple(stack.rows("SELECT task_id, kwargs, error, traceback, retries FROM dead_letters")[0]) == (
        "both-dl", {"k": "v"}, "boom", "tb", 1)
    assert [stderr.count(line) for line in (OUTAGE_START, "cannot spool to Redis", "spooling to Redis again",
                                            OUTAGE_END)] == [1, 1, 1, 1], stderr


# --- 4. the spool is bounded --------------------------------------------------------------------------

CAPPED = r"""
from netjobs import history, spool
spool.MAX_ENTRIES = 3
for i in range(10):
    history.recorder.record(history.RunEvent(f"cap-{i}", history.SUCCESS))
    history.recorder.flush()
print(spool.client().llen(spool.HISTORY_KEY))
"""


def test_spool_is_bounded_and_says_so_once(stack):
    with stack.pg_down():
        proc = stack.python(CAPPED)
    assert proc.stdout.strip() == "3"
    assert proc.stderr.count("spool full") == 1, proc.stderr
    assert proc.stderr.count(OUTAGE_START) == 1, proc.stderr


# --- 5. prefork children recycled by --max-tasks-per-child --------------------------------------------

PINGS = r"""
import json, sys
from netjobs.celery_app import app
done = []
for _ in range(int(sys.argv[1])):
    r = app.send_task(sys.argv[2])
    done.append((r.id, r.get(timeout=60)))
print(json.dumps(done))
"""

REPLAY_NOW = r"""
import json, time
from netjobs.history import replay_spool
# A process that died while replaying leaves the replay lock behind until it expires.
deadline = time.monotonic() + 90
while not (result := replay_spool())["drained"] and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps(result))
"""


def finished_rows(stack: Stack, ids: list[str]) -> list:
    return stack.rows("SELECT task_id FROM job_runs WHERE task_id = ANY(:ids) AND state = 'SUCCESS' "
                      "AND published_at IS NOT NULL AND started_at IS NOT NULL", ids=ids)


@pytest.mark.slow
def test_recycled_prefork_child_writes_or_spools_its_buffer(stack):
    long_flush = {"PYTHONPATH": os.pathsep.join(filter(None, [long_flush_interval_path(stack.tmp),
                                                             os.environ.get("PYTHONPATH")]))}
    with celery_worker({**stack.env, **long_flush}, queues="default", concurrency=1, hostname="recycle@localhost",
                       extra_args=("--max-tasks-per-child", "1")) as w:
        # PostgreSQL up: each child runs one task and is recycled; its flusher would wait an hour, so
        # its STARTED and SUCCESS events reach job_runs only if it flushes on the way out.
        done = json.loads(stack.python(PINGS, "3", "netjobs.diag.db_roundtrip", extra_env=long_flush).stdout)
        assert len({result["pid"] for _, result in done}) == 3, "one child per task"
        ids = [task_id for task_id, _ in done]
        wait_until(lambda: len(finished_rows(stack, ids)) == 3, 30, message="the rows of the recycled children")

        # PostgreSQL down: the recycled children spool what they buffered.
        with stack.pg_down():
            done = json.loads(stack.python(PINGS, "3", "netjobs.diag.ping", extra_env=long_flush).stdout)
            wait_until(lambda: stack.spool_lengths()[0] >= 3, 30, message="the children's events in the spool")
        assert w.proc.poll() is None
    ids = [task_id for task_id, _ in done]
    assert json.loads(stack.python(REPLAY_NOW).stdout)["drained"]
    assert len(finished_rows(stack, ids)) == 3
    assert stack.spool_lengths() == (0, 0)


@pytest.mark.slow
def test_a_task_s_outcome_is_recorded_before_its_message_is_acknowledged(stack):
    # The child flushes only once an hour in the background; a SIGKILL right after the ack (an OOM
    # kill, `kill -9` in drill 1) must not take the outcome of a finished task with it.
    long_flush = {"PYTHONPATH": os.pathsep.join(filter(None, [long_flush_interval_path(stack.tmp),
                                                             os.environ.get("PYTHONPATH")]))}
    with celery_worker({**stack.env, **long_flush}, queues="default", concurrency=1,
                       hostname="ackorder@localhost") as w:
        done = json.loads(stack.python(PINGS, "3", "netjobs.diag.db_roundtrip", extra_env=long_flush).stdout)
        children = {result["pid"] for _, result in done}
        assert len(children) == 1, "one child ran the three tasks"
        with stack.client() as client:
            wait_until(lambda: client.hlen(UNACKED_KEY) == 0, 10, message="the three messages acknowledged")
        os.kill(children.pop(), signal.SIGKILL)
        ids = [task_id for task_id, _ in done]
        # They were handed over to the Redis spool before each ack; the worker's main process replays
        # what the killed child left there (history.SPOOL_CHECK_INTERVAL).
        wait_until(lambda: len(finished_rows(stack, ids)) == 3, 3 * history.SPOOL_CHECK_INTERVAL + 15, interval=0.5,
                   message="SUCCESS rows of the tasks a SIGKILLed child had finished")
        assert w.proc.poll() is None
