"""Platform behaviour: routing, retries, dead letters, history, progress, cancel, fork safety."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.conftest import wait_until


def job_run(engine, task_id):
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM job_runs WHERE task_id = :t"), {"t": task_id}).mappings().first()
    return dict(row) if row else None


def finished_run(engine, task_id, timeout=30):
    from netjobs.history import TERMINAL_STATES

    def done():
        row = job_run(engine, task_id)
        return row if row and row["state"] in TERMINAL_STATES else None

    return wait_until(done, timeout, message=f"job_runs row of {task_id} to finish")


@pytest.mark.parametrize(
    "task_name, queue",
    [
        ("netjobs.network.sweep", "network"),
        ("netjobs.backup.device", "backup"),
        ("netjobs.backup.all", "backup"),
        ("netjobs.inventory.import_file", "heavy"),
        ("netjobs.compliance.check", "heavy"),
        ("netjobs.maintenance.purge_history", "default"),
        ("netjobs.diag.ping", "default"),
        ("something.else", "default"),
    ],
)
def test_tasks_are_routed_to_their_queue(task_name, queue):
    from netjobs.queues import queue_for_task

    assert queue_for_task(task_name) == queue


def test_ping_runs_on_real_worker_and_history_survives_result_expiry(worker, db, celery_app, redis_client):
    from netjobs.history import recorder

    result = celery_app.send_task("netjobs.diag.ping")
    assert result.get(timeout=30) == "pong"
    recorder.flush()
    row = finished_run(db, result.id)
    assert row["state"] == "SUCCESS"
    assert row["task_name"] == "netjobs.diag.ping"
    assert row["queue"] == "default"
    assert row["worker"] == worker.hostname
    assert row["published_at"] is not None and row["started_at"] is not None
    assert row["duration_ms"] is not None and row["duration_ms"] >= 0
    assert row["result_summary"] == "pong"
    # The Redis result expires; the history row does not depend on it.
    redis_client.delete(f"celery-task-meta-{result.id}")
    assert job_run(db, result.id)["state"] == "SUCCESS"


def test_transient_errors_retry_then_succeed(worker, db, celery_app):
    token = uuid.uuid4().hex
    result = celery_app.send_task("netjobs.diag.flaky", args=[token, 2])
    assert result.get(timeout=60) == {"attempts": 3}
    row = finished_run(db, result.id)
    assert row["state"] == "SUCCESS"
    assert row["retries"] == 2
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar() == 0


def test_retries_exhausted_go_to_dead_letters_and_can_be_requeued(worker, db, celery_app, redis_client):
    from netjobs.services.deadletters import list_dead_letters, requeue_dead_letter

    token = uuid.uuid4().hex
    result = celery_app.send_task("netjobs.diag.flaky", args=[token, 6])  # max_retries=5: 6 attempts fail
    with pytest.raises(Exception, match="simulated transient failure 6 of 6"):
        result.get(timeout=60)
    row = finished_run(db, result.id)
    assert row["state"] == "FAILURE" and row["retries"] == 5
    letters = wait_until(list_dead_letters, 10, message="dead letter")
    assert [(d.task_id, d.task_name, d.args, d.retries) for d in letters] == [
        (result.id, "netjobs.diag.flaky", [token, 6], 5)
    ]
    assert "TransientError" in letters[0].error and "Traceback" in (letters[0].traceback or "")
    # The 7th attempt succeeds: requeue sends it with the same arguments.
    new_id = requeue_dead_letter(letters[0].id, celery_app.send_task)
    assert celery_app.AsyncResult(new_id).get(timeout=30) == {"attempts": 7}
    assert list_dead_letters() == []
    with pytest.raises(Exception, match="already requeued"):
        requeue_dead_letter(letters[0].id, celery_app.send_task)


def test_permanent_errors_fail_at_once(worker, db, celery_app):
    result = celery_app.send_task("netjobs.diag.fail", args=["device xyz is unknown"])
    with pytest.raises(Exception, match="device xyz is unknown"):
        result.get(timeout=30)
    row = finished_run(db, result.id)
    assert row["state"] == "FAILURE" and row["retries"] == 0
    assert "ValidationError: device xyz is unknown" in row["error"]


def test_progress_is_reported_and_running_task_can_be_cancelled(worker, db, celery_app):
    result = celery_app.send_task("netjobs.diag.sleep", args=[30])
    meta = wait_until(lambda: result.state == "PROGRESS" and result.info, 30, message="PROGRESS state")
    assert meta["total"] == 30 and 1 <= meta["current"] < 30
    result.revoke(terminate=True, signal="SIGTERM")
    row = finished_run(db, result.id)
    assert row["state"] == "REVOKED"
    assert "terminated" in row["error"]


def test_bad_task_arguments_are_refused_before_sending(celery_app):
    from netjobs.tasks.diag import sleep

    with pytest.raises(TypeError):
        sleep.delay(1, 2, 3)


def test_worker_keeps_consuming_after_redis_restart(pg_srv, netjobs_env):
    """kombu >= 5.4: a worker reconnects and goes on consuming when Redis restarts (AOF keeps the queue)."""
    from celery import Celery

    from tests.support.servers import celery_worker, redis_server

    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}
        with celery_worker(env, queues="default", concurrency=1, hostname="restart@localhost") as w:
            client = Celery("client", broker=own_redis.url, backend=own_redis.url)
            client.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="default")
            assert client.send_task("netjobs.diag.ping").get(timeout=30) == "pong"
            own_redis.restart()
            # Published while the worker is still reconnecting: kept in Redis, consumed once it is back.
            result = client.send_task("netjobs.diag.ping")
            assert result.get(timeout=90) == "pong"
            assert w.proc.poll() is None, "the worker must survive the broker restart"
