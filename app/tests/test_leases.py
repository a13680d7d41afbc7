"""Nothing stuck behind a lost worker: leases, the reaper, poison tasks and delays (real Redis and workers).

Each test runs its workers against a Redis server of its own, so the session worker takes none of
their tasks, and against the session's PostgreSQL.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import wait_until
from tests.support.cli import run_netjobs
from tests.support.servers import celery_worker, producer_app, redis_server

LEASE = 10  # seconds: short, so a lost worker's tasks return within the test


@pytest.fixture
def lease_env(netjobs_env):
    with redis_server() as own_redis:
        yield {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_WORKER_LEASE_SECONDS": str(LEASE)}


@pytest.fixture
def client_app(lease_env):
    with producer_app(lease_env, "lease-test-client") as app:
        yield app


def received(worker_or_log, task_id: str) -> int:
    log = worker_or_log if isinstance(worker_or_log, str) else worker_or_log.log()
    return len(re.findall(rf"Task \S+\[{task_id}\] received", log))


def kill_worker(worker) -> None:
    """SIGKILL the main process and its pool at once, as a power-off or the OOM killer would."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


def lost_workers_check(env) -> dict:
    result = run_netjobs("doctor", "--json", "--timeout", "1", env=env)
    return next(c for c in result.json()["checks"] if c["name"] == "tasks held by lost workers")


@pytest.mark.slow
def test_tasks_of_a_killed_worker_run_again_within_a_lease_and_doctor_sees_them(lease_env, client_app, db):
    with celery_worker(lease_env, queues="default", concurrency=2, hostname="lost@localhost") as lost:
        results = [client_app.send_task("netjobs.diag.sleep", kwargs={"seconds": 6}) for _ in range(4)]
        wait_until(lambda: sum(received(lost, r.id) for r in results) >= 2, 30, message="the worker to take tasks")
        time.sleep(1)
        kill_worker(lost)
        killed = time.monotonic()
        lost_log = lost.log()
    held_by_lost = [r.id for r in results if received(lost_log, r.id)]
    assert len(held_by_lost) >= 2

    # Nobody returns them yet (no worker is alive): doctor names them once they are older than a lease.
    check = wait_until(lambda: (c := lost_workers_check(lease_env)) and not c["ok"] and c, LEASE + 15,
                       message="doctor to see the tasks held by the lost worker")
    assert f"{len(held_by_lost)} unacknowledged" in check["detail"]
    assert "netjobs.diag.sleep[" in check["detail"]

    with celery_worker(lease_env, queues="default", concurrency=2, hostname="rescuer@localhost") as rescuer:
        for result in results:
            assert result.get(timeout=4 * LEASE + 30)["slept"] >= 6
        recovered = time.monotonic() - killed
        for task_id in held_by_lost:
            assert received(rescuer, task_id) == 1, rescuer.log()[-3000:]
            assert f"[{task_id}] on default" in rescuer.log()  # the reaper's line names what it returned
        assert lost_workers_check(lease_env)["ok"]
    # Lease expiry plus the reaper's start-up wait and one period, plus the sleeps themselves.
    assert recovered < 2 * LEASE + 2 * 6 + 15, recovered


@pytest.mark.slow
def test_a_task_running_or_waiting_longer_than_a_lease_is_never_handed_to_another_worker(lease_env, client_app):
    with celery_worker(lease_env, queues="default", concurrency=1, hostname="first@localhost") as first:
        running = client_app.send_task("netjobs.diag.sleep", kwargs={"seconds": 2.5 * LEASE})
        wait_until(lambda: received(first, running.id), 20, message="the first worker to take the task")
        # Held by the first worker until its countdown ends, longer than a lease.
        delayed = client_app.send_task("netjobs.diag.ping", countdown=2 * LEASE)
        with celery_worker(lease_env, queues="default", concurrency=1, hostname="second@localhost") as second:
            assert running.get(timeout=4 * LEASE)["slept"] >= 2.5 * LEASE
            assert delayed.get(timeout=3 * LEASE) == "pong"
            for task_id in (running.id, delayed.id):
                assert received(first, task_id) + received(second, task_id) == 1
            assert "its worker is gone" not in first.log() + second.log()


@pytest.mark.slow
def test_a_task_that_kills_its_worker_is_dead_lettered_after_max_redeliveries(lease_env, client_app, db):
    from sqlalchemy import text

    env = {**lease_env, "NETJOBS_MAX_REDELIVERIES": "2"}
    with celery_worker(env, queues="default", concurrency=1, hostname="poison@localhost") as w:
        result = client_app.send_task("netjobs.diag.crash")
        with pytest.raises(Exception) as failure:
            result.get(timeout=90, propagate=True)
        assert type(failure.value).__name__ == "PoisonTaskError"
        assert "delivered 4 times" in str(failure.value)
        assert received(w, result.id) == 4  # the first delivery and two redeliveries crashed, the fourth refused

        def recorded():
            with db.connect() as conn:
                error = conn.execute(text("SELECT error FROM dead_letters WHERE task_id = :id"),
                                     {"id": result.id}).scalar()
                state = conn.execute(text("SELECT state FROM job_runs WHERE task_id = :id"), {"id": result.id}).scalar()
            return (error, state) if error and state != "PUBLISHED" else None

        error, state = wait_until(recorded, 15, message="the dead letter and the job_runs row")
        assert error.startswith("PoisonTaskError: delivered 4 times") and "NETJOBS_MAX_REDELIVERIES is 2" in error
        assert state == "FAILURE"


def test_a_delay_longer_than_a_worker_may_hold_a_task_is_refused(celery_app, netjobs_env):
    from netjobs.config import get_settings
    from netjobs.errors import ValidationError
    from netjobs.tasks.diag import ping

    limit = get_settings().longest_delay
    assert limit == 7200 - 3600
    with pytest.raises(ValidationError, match=f"longer than the {limit}s a worker can hold a task"):
        ping.apply_async(countdown=limit + 1)
    with pytest.raises(ValidationError, match="longer than"):
        ping.apply_async(eta=datetime.now(timezone.utc) + timedelta(seconds=limit + 100))
    result = run_netjobs("submit", "netjobs.diag.ping", "--countdown", str(limit + 60), env=netjobs_env)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "longer than" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_reaper_returns_tasks_a_worker_dropped_when_redis_restarted(netjobs_env):
    """A worker that loses its Redis connection forgets the tasks it had prefetched but not started
    (Celery clears them), while Redis keeps them as unacked: they come back through the reaper."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings

    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_WORKER_LEASE_SECONDS": str(LEASE)}
        app = Celery("restart-client")
        app.conf.update(celery_settings(load_settings(env)))
        with celery_worker(env, queues="default", concurrency=1, hostname="restarted@localhost",
                           extra_args=("--prefetch-multiplier", "4")) as w:
            tag = uuid.uuid4().hex[:6]
            results = [app.send_task("netjobs.diag.sleep", kwargs={"seconds": 3}, task_id=f"{tag}-{i}")
                       for i in range(4)]
            wait_until(lambda: sum(received(w, r.id) for r in results) >= 3, 20, message="prefetched tasks")
            own_redis.restart()
            for result in results:
                assert result.get(timeout=4 * LEASE + 60)["slept"] >= 3
        app.close()
