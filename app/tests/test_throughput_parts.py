"""The parts changed for task throughput (bench/bench_fanout.py): job history ordering under a fast
worker, the atomic result store, and the shared Redis client of the broker transport."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from netjobs import history

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stored_state(engine, task_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT state FROM job_runs WHERE task_id = :t"), {"t": task_id}).scalar_one()


@pytest.mark.parametrize("producer_first", [True, False])
def test_late_published_event_does_not_hide_a_finished_task(db, producer_first):
    # The producer stamps PUBLISHED after the message is out; the worker may finish before that.
    published = history.RunEvent("fast-1", history.PUBLISHED, at(3), published_at=at(3))
    worker = [history.RunEvent("fast-1", history.STARTED, at(1), started_at=at(1)),
              history.RunEvent("fast-1", history.SUCCESS, at(2), finished_at=at(2))]
    for batch in ([published], worker) if producer_first else (worker, [published]):
        history._write(batch)
    assert stored_state(db, "fast-1") == "SUCCESS"


def test_one_flush_holding_a_task_s_events_in_any_order_ends_as_the_upsert_rule_says(db):
    # A flush writes in rounds (history.in_rounds): the rule is applied by PostgreSQL only.
    history._write([history.RunEvent("a", history.SUCCESS, at(2)), history.RunEvent("a", history.PUBLISHED, at(3))])
    history._write([history.RunEvent("b", history.PUBLISHED, at(3)), history.RunEvent("b", history.STARTED, at(1))])
    assert [stored_state(db, "a"), stored_state(db, "b")] == ["SUCCESS", "STARTED"]


def test_retry_publish_keeps_retry_and_older_events_lose(db):
    history._write([history.RunEvent("r-1", history.RETRY, at(1))])
    history._write([history.RunEvent("r-1", history.PUBLISHED, at(2))])  # the retry's own publish
    assert stored_state(db, "r-1") == "RETRY"
    history._write([history.RunEvent("r-1", history.STARTED, at(4))])
    history._write([history.RunEvent("r-1", history.SUCCESS, at(5))])
    history._write([history.RunEvent("r-1", history.STARTED, at(4.5))])  # stale, from a slow buffer
    assert stored_state(db, "r-1") == "SUCCESS"


def test_result_store_never_overwrites_success(celery_app, worker, redis_client):
    from netjobs.tasks.diag import ping

    result = ping.delay()
    assert result.get(timeout=30) == "pong"
    key = f"celery-task-meta-{result.id}"
    celery_app.backend.store_result(result.id, None, "STARTED")  # a redelivered copy starting again
    assert json.loads(redis_client.get(key))["status"] == "SUCCESS"
    assert 0 < redis_client.ttl(key) <= 86400
    celery_app.backend.store_result("never-ran", None, "STARTED")
    assert json.loads(redis_client.get("celery-task-meta-never-ran"))["status"] == "STARTED"


def test_failure_result_is_stored_and_raised(celery_app, worker, db):
    from netjobs.tasks.diag import fail

    result = fail.delay("bad input for the test")
    with pytest.raises(Exception, match="bad input for the test"):
        result.get(timeout=30)
    assert result.state == "FAILURE"


def test_broker_channel_reuses_one_redis_client(celery_app):
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        channel._disconnect_pools()  # after a connection error kombu makes a new pool: follow it
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool


def test_result_backend_is_ours_and_its_url_stays_maskable(celery_app):
    from celery.app.utils import filter_hidden_settings

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings
    from netjobs.redis_backend import RedisBackend

    assert isinstance(celery_app.backend, RedisBackend)
    conf = celery_settings(load_settings({"NETJOBS_BROKER_URL": "redis://netjobs:s3cret@redis.example:6379/0",
                                          "NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@db.example/netjobs"}))
    shown = filter_hidden_settings(conf)  # what `celery report` and Flower's config view show
    assert shown["result_backend"] == "redis://netjobs:********@redis.example:6379/0"
