"""Health: queue lengths, consumers, workers, beat lock and Redis persistence from the real services."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from kombu import Exchange, Queue


@pytest.fixture
def unconsumed_queue(celery_app, redis_client):
    """A queue no worker consumes; its keys are removed afterwards."""
    from netjobs.services.health import queue_keys

    name = f"health-test-{uuid.uuid4().hex[:8]}"
    yield Queue(name, Exchange(name, type="direct"), routing_key=name)
    redis_client.delete(*queue_keys(name))


def test_queue_lengths_count_waiting_messages_and_priority_sublists(celery_app, redis_client, unconsumed_queue):
    from netjobs.services.health import queue_lengths

    name = unconsumed_queue.name
    assert queue_lengths(redis_client, [name]) == {name: 0}
    for _ in range(3):
        celery_app.send_task("netjobs.diag.ping", queue=unconsumed_queue, priority=0)
    for _ in range(2):
        celery_app.send_task("netjobs.diag.ping", queue=unconsumed_queue, priority=6)  # normal: a sub-list
    assert redis_client.llen(name) == 3  # the plain list alone misses the prioritised messages
    assert queue_lengths(redis_client, [name, "default"]) == {name: 5, "default": 0}


def test_consumers_and_workers_of_the_session_worker(worker, celery_app):
    from netjobs.services.health import queue_consumers, workers_answering

    consumers = queue_consumers(celery_app, timeout=2.0)
    for queue in ("default", "backup", "network", "heavy"):
        assert worker.hostname in consumers[queue]
    assert consumers.get("health-test-none", []) == []

    workers = workers_answering(celery_app, timeout=2.0)
    mine = workers[worker.hostname]
    assert mine["ok"] is True and mine["name"] == worker.hostname
    assert (mine["pool"], mine["concurrency"], mine["processes"]) == ("prefork", 2, 2)
    assert mine["queues"] == ["backup", "default", "heavy", "network"]
    assert isinstance(mine["pid"], int) and mine["pid"] > 0 and mine["processed"] >= 0


def test_beat_lock_status_reads_the_lock_and_the_holders_heartbeat(netjobs_env, redis_client):
    import json
    import time

    from netjobs.beat import holder_key
    from netjobs.config import get_settings
    from netjobs.services.health import beat_lock_status

    settings = dataclasses.replace(get_settings(), redbeat_key_prefix=f"health-test-{uuid.uuid4().hex[:8]}:")
    key = f"{settings.redbeat_key_prefix}lock"
    holder = holder_key(key)
    try:
        assert beat_lock_status(redis_client, settings) == {
            "key": key, "held": False, "ttl_seconds": None, "lock_timeout": 90, "holder": None,
            "last_tick_age": None, "fresh": False}

        # As a live beat leaves them: the lock right after a tick, its heartbeat naming the holder.
        redis_client.set(key, "token", px=89_000)
        redis_client.set(holder, json.dumps({"host": "beat-host", "pid": 42, "ticked_at": time.time() - 3}), ex=15)
        status = beat_lock_status(redis_client, settings)
        assert status["held"] and status["fresh"] and 80 < status["ttl_seconds"] <= 89
        assert status["holder"] == {"host": "beat-host", "pid": 42} and 2 < status["last_tick_age"] < 10

        # Heartbeat still beating, but no tick for longer than beat_max_interval allows: a hung beat.
        redis_client.set(holder, json.dumps({"host": "beat-host", "pid": 42, "ticked_at": time.time() - 200}), ex=15)
        assert not beat_lock_status(redis_client, settings)["fresh"]

        redis_client.delete(holder)  # the holder died: its heartbeat expired, the lock not yet
        status = beat_lock_status(redis_client, settings)
        assert status["held"] and not status["fresh"] and status["holder"] is None

        redis_client.persist(key)  # a lock that never expires blocks every beat forever
        status = beat_lock_status(redis_client, settings)
        assert (status["held"], status["ttl_seconds"], status["fresh"]) == (True, -1.0, False)
    finally:
        redis_client.delete(key, holder)


def test_redis_persistence_from_the_running_server(redis_client):
    from netjobs.services.health import redis_persistence

    info = redis_persistence(redis_client)
    assert (info["maxmemory_policy"], info["aof_enabled"], info["loading"]) == ("noeviction", True, False)
    assert info["aof_last_write_status"] == "ok" and info["rdb"]["last_bgsave_status"] == "ok"
    redis_client.config_set("maxmemory-policy", "allkeys-lru")  # the test user may; the app's ACL user may not
    try:
        assert redis_persistence(redis_client)["maxmemory_policy"] == "allkeys-lru"
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")


def test_health_snapshot_task_on_the_real_worker(worker, db, celery_app):
    snapshot = celery_app.send_task("netjobs.maintenance.health_snapshot").get(timeout=60)
    assert worker.hostname in snapshot["workers"]
    assert set(snapshot["queues"]) == {"default", "backup", "network", "heavy"}
    assert all(worker.hostname in q["consumers"] for q in snapshot["queues"].values())
    assert snapshot["redis"]["maxmemory_policy"] == "noeviction"
    # Usually no beat runs during this test: the snapshot says so (and logs it); nothing else is wrong.
    lock = snapshot["beat_lock"]
    assert [p for p in snapshot["problems"] if not p.startswith("beat lock ")] == []
    if not lock["held"]:
        assert snapshot["problems"] == ["beat lock netjobs:redbeat:lock is not held: no beat is running"]
        assert "health: beat lock netjobs:redbeat:lock is not held" in worker.log()


def test_health_snapshot_reports_an_unreachable_broker(celery_app, netjobs_env):
    from netjobs.config import get_settings
    from netjobs.services.health import health_snapshot
    from tests.support.servers import free_port

    settings = dataclasses.replace(get_settings(), broker_url=f"redis://127.0.0.1:{free_port()}/0")
    snapshot = health_snapshot(celery_app, settings)
    assert len(snapshot["problems"]) == 1 and snapshot["problems"][0].startswith("broker unreachable: ConnectionError")
