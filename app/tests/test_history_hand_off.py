"""A finished task's history goes to the Redis spool before its ack and reaches PostgreSQL in batches.

The spool tests run against a Redis of their own, so the session's worker replays nothing of theirs;
the replay lock is held where a test needs the spool to stay as it is.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import redis
from sqlalchemy import text

from netjobs import history, spool
from tests.conftest import wait_until
from tests.support.cli import run_netjobs


@pytest.fixture
def own_spool(own_broker_env, db, monkeypatch):
    """This process's spool is a Redis of the test's own (PostgreSQL is the session's, emptied)."""
    from netjobs.config import reset_settings

    history.recorder.flush()
    for name in ("NETJOBS_BROKER_URL", "NETJOBS_RESULT_BACKEND_URL"):
        monkeypatch.setenv(name, own_broker_env[name])
    reset_settings()
    client = redis.Redis.from_url(own_broker_env["NETJOBS_BROKER_URL"])
    yield client
    history.recorder.flush()
    client.close()
    monkeypatch.undo()
    reset_settings()


def finished(db, ids) -> dict[str, tuple]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT task_id, state, started_at, finished_at FROM job_runs "
                                 "WHERE task_id = ANY(:ids)"), {"ids": list(ids)})
        return {row.task_id: (row.state, row.started_at, row.finished_at) for row in rows}


def hand_off_tasks(n: int) -> list[str]:
    """What n finished tasks' postrun hands off (history.recorder.flush(hand_off=True)): their STARTED and
    SUCCESS events as spool entries (pushed here directly: this process's flusher must not write them
    to PostgreSQL between the two)."""
    ids = []
    for _ in range(n):
        task_id = uuid.uuid4().hex
        now = history._now()
        events = [history.RunEvent(task_id, history.STARTED, now, started_at=now, task_name="netjobs.diag.ping",
                                   queue="default"),
                  history.RunEvent(task_id, history.SUCCESS, history._now(), finished_at=history._now(),
                                   result_summary="'pong'")]
        assert spool.push(spool.HISTORY_KEY, history._spool_entries(events))
        ids.append(task_id)
    return ids


def test_handed_off_events_wait_in_the_spool_and_are_written_in_a_few_batched_statements(own_spool, db,
                                                                                           monkeypatch):
    writes = []
    real_write_rows = history._write_rows
    monkeypatch.setattr(history, "_write_rows", lambda rows: writes.append(len(rows)) or real_write_rows(rows))
    own_spool.set(spool.LOCK_KEY, "test holds the replay", px=60_000)  # nobody replays yet
    try:
        ids = hand_off_tasks(300)
        # Each hand-off is one entry per round (STARTED, then SUCCESS); nothing reached PostgreSQL.
        assert own_spool.llen(spool.HISTORY_KEY) == 600
        assert finished(db, ids) == {}
        assert writes == []
    finally:
        own_spool.delete(spool.LOCK_KEY)
    result = history.replay_spool()
    wait_until(lambda: len(finished(db, ids)) == 300, 30, message="every handed-off task in job_runs")
    rows = finished(db, ids)
    assert all(state == "SUCCESS" and started and ended for state, started, ended in rows.values())
    assert own_spool.llen(spool.HISTORY_KEY) == 0
    assert not own_spool.exists(spool.HISTORY_KEY + ":bytes")
    # 600 entries in at most two batches (REPLAY_BATCH_ENTRIES), two rounds each: not 600 statements.
    assert sum(writes) == 600 and len(writes) <= 4, writes
    assert result["job_runs"] in (0, 600)  # 0 if this process's flusher replayed it first


def test_an_unreadable_entry_in_a_batch_is_set_aside_and_the_rest_is_written(own_spool, db, caplog):
    own_spool.set(spool.LOCK_KEY, "test holds the replay", px=60_000)
    try:
        first = hand_off_tasks(5)
        spool.push(spool.HISTORY_KEY, ['{"id":"broken","at":1,"v":1,"columns":["task_id"],"rows":[[1, 2'])
        second = hand_off_tasks(5)
    finally:
        own_spool.delete(spool.LOCK_KEY)
    wait_until(lambda: history.replay_spool()["drained"] and len(finished(db, first + second)) == 10, 30,
               message="the readable entries written")
    assert own_spool.llen(spool.HISTORY_KEY) == 0
    assert [raw.startswith(b'{"id":"broken"') for raw in own_spool.lrange(spool.UNREADABLE_KEY, 0, -1)] == [True]
    assert "cannot be written" in caplog.text


def test_a_replayer_that_lost_the_race_removes_nothing_it_did_not_write(own_spool):
    spool.push(spool.HISTORY_KEY, [spool.entry({"n": i}) for i in range(3)])
    spool.client()
    stale = spool._scripts["head"](keys=[spool.HISTORY_KEY], args=[10, 2**20])
    # Another replayer writes and removes those three, and a worker hands off two more.
    own_spool.ltrim(spool.HISTORY_KEY, 3, -1)
    spool.push(spool.HISTORY_KEY, [spool.entry({"n": i}) for i in (3, 4)])
    removed = spool._scripts["drop"](keys=[spool.HISTORY_KEY, spool.HISTORY_KEY + ":bytes"],
                                     args=[spool._id_prefix(stale[0]), len(stale), sum(map(len, stale))])
    assert removed == 0
    assert [json.loads(raw)["n"] for raw in own_spool.lrange(spool.HISTORY_KEY, 0, -1)] == [3, 4]


def test_entry_ages_come_from_their_push_time_and_an_older_release_s_entry_has_none(own_spool):
    assert spool.oldest_ages(own_spool, [spool.HISTORY_KEY, spool.DEAD_LETTERS_KEY]) == {
        spool.HISTORY_KEY: None, spool.DEAD_LETTERS_KEY: None}
    made = time.time()
    fresh = spool.entry({"v": 1})
    assert abs(spool.entry_time(fresh) - made) < 1
    own_spool.rpush(spool.HISTORY_KEY, fresh, spool.entry({"v": 2}))
    own_spool.rpush(spool.DEAD_LETTERS_KEY, '{"id":"from-an-older-release","v":1,"letters":[]}')
    ages = spool.oldest_ages(own_spool, [spool.HISTORY_KEY, spool.DEAD_LETTERS_KEY], now=made + 100)
    assert 99 <= ages[spool.HISTORY_KEY] <= 101
    assert ages[spool.DEAD_LETTERS_KEY] == float("inf")


def stale_entry(seconds: float) -> str:
    return json.dumps({"id": uuid.uuid4().hex, "at": round(time.time() - seconds, 3), "v": 1,
                       "columns": list(history.COLUMNS), "rows": []}, separators=(",", ":"))


def test_doctor_and_exporter_flag_history_that_waits_not_history_being_handed_over(own_broker_env):
    from tests.test_exporter import exporter_registry, sample

    client = redis.Redis.from_url(own_broker_env["NETJOBS_BROKER_URL"])
    client.set(spool.LOCK_KEY, "test holds the replay", px=120_000)  # no doctor or exporter replays, but be sure
    client.rpush(spool.HISTORY_KEY, spool.entry({"v": 1, "columns": list(history.COLUMNS), "rows": []}))

    def spool_check():
        result = run_netjobs("doctor", "--json", "--timeout", "1", env=own_broker_env)
        return {c["name"]: c for c in result.json()["checks"]}["history spool"]

    handing_over = spool_check()
    assert handing_over["ok"], handing_over
    assert "being handed over" in handing_over["detail"]
    registry = exporter_registry(own_broker_env)
    assert sample(registry, "netjobs_history_spool_entries", spool="job_runs") == 1
    assert 0 <= sample(registry, "netjobs_history_spool_oldest_seconds", spool="job_runs") < spool.STALE_SECONDS

    client.lpush(spool.HISTORY_KEY, stale_entry(600))  # left by a process killed during an outage
    waiting = spool_check()
    assert not waiting["ok"] and waiting["severity"] == "warning", waiting
    assert re.search(r"^2 job_runs batches and 0 dead-letter batches wait in Redis for PostgreSQL, the oldest "
                     r"for 6\d\ds ", waiting["detail"]), waiting["detail"]
    registry = exporter_registry(own_broker_env)
    assert 599 <= sample(registry, "netjobs_history_spool_oldest_seconds", spool="job_runs") <= 660
    assert sample(registry, "netjobs_history_spool_oldest_seconds", spool="dead_letters") == 0
    client.close()


SHUTDOWN = r"""
import json, sys, uuid
from netjobs import history
history.recorder.flush_interval = 3600
ids = []
for _ in range(20):
    task_id = uuid.uuid4().hex
    history.recorder.record(history.RunEvent(task_id, history.SUCCESS, finished_at=history._now()))
    history.recorder.flush(hand_off=True)
    ids.append(task_id)
print(json.dumps(ids))
history.recorder.shutdown()
"""


def test_a_process_that_handed_off_writes_its_hand_offs_before_it_exits(own_broker_env, db):
    # A prefork child recycled right after its last task: no other process may be running a flusher.
    env = {**os.environ, **own_broker_env}
    proc = subprocess.run([sys.executable, "-c", SHUTDOWN], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = json.loads(proc.stdout)
    rows = finished(db, ids)
    assert len(rows) == 20 and {state for state, _, _ in rows.values()} == {"SUCCESS"}
    client = redis.Redis.from_url(own_broker_env["NETJOBS_BROKER_URL"])
    assert client.llen(spool.HISTORY_KEY) == 0
    client.close()


def test_a_process_that_did_not_hand_off_replays_only_what_was_left_behind(own_spool, db, monkeypatch):
    # A worker's main process runs no task: its children's fresh hand-offs are theirs to write, and
    # replaying them would load the database stack into the main process for nothing.
    monkeypatch.setattr(history, "LEFT_BEHIND_SECONDS", 300)
    bystander = history.HistoryRecorder()
    bystander.enabled = True
    fresh = hand_off_tasks(3)
    bystander._replay()
    assert own_spool.llen(spool.HISTORY_KEY) == 6
    assert finished(db, fresh) == {}

    # A child killed right after its hand-off left this ten minutes ago.
    task_id = uuid.uuid4().hex
    [entry] = history._spool_entries([history.RunEvent(task_id, history.SUCCESS, history._now(),
                                                       finished_at=history._now())])
    made = spool.entry_time(entry)
    own_spool.lpush(spool.HISTORY_KEY, entry.replace(f'"at":{made:.3f}', f'"at":{made - 600:.3f}', 1))
    bystander._replay()
    assert {row[0] for row in finished(db, [task_id, *fresh]).values()} == {"SUCCESS"}
    assert len(finished(db, [task_id, *fresh])) == 4  # the whole spool, once something was left behind
    assert own_spool.llen(spool.HISTORY_KEY) == 0


def test_a_hand_off_and_its_task_counters_go_in_one_round_trip_even_after_a_script_flush(own_spool):
    from netjobs import metrics

    events = [history.RunEvent("t1", history.SUCCESS, history._now(), task_name="netjobs.diag.ping", queue="default",
                               duration_ms=5)]
    own_spool.script_load(spool._PUSH)  # as after any earlier push
    own_spool.config_resetstat()
    assert spool.push(spool.HISTORY_KEY, history._spool_entries(events), lambda pipe: metrics.add_counts(pipe, events))
    stats = own_spool.info("commandstats")
    assert "cmdstat_script|exists" not in stats  # a Script object in a pipeline would ask first
    assert stats["cmdstat_hincrby"]["calls"] == 2 and "cmdstat_script|load" not in stats

    # After a Redis restart the script is unknown: it is loaded, and the counters are not added twice.
    own_spool.script_flush()
    assert spool.push(spool.HISTORY_KEY, history._spool_entries(events), lambda pipe: metrics.add_counts(pipe, events))
    assert own_spool.llen(spool.HISTORY_KEY) == 2
    assert own_spool.hget(metrics.TASKS_KEY, metrics.field("netjobs.diag.ping", "default", "SUCCESS")) == b"2"
