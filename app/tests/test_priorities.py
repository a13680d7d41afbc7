"""Priorities: an urgent job overtakes a backlog of normal ones; a low one waits for them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import wait_until
from tests.support.cli import invoke, run_netjobs
from tests.support.devices import add_device_row
from tests.support.servers import celery_worker, redis_server

SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step


def start_order(engine, names: tuple[str, ...]) -> list[tuple[str, str]]:
    from netjobs.history import recorder

    recorder.flush()
    with engine.connect() as conn:
        return [(r.task_name, r.args_summary) for r in conn.execute(text(
            "SELECT task_name, args_summary FROM job_runs WHERE task_name = ANY(:n) AND started_at IS NOT NULL "
            "ORDER BY started_at"), {"n": list(names)})]


@pytest.mark.slow
def test_an_urgent_job_overtakes_the_backlog_and_a_low_one_waits(db, netjobs_env):
    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}
        # Queued before any worker runs: the order they start in is the queue's doing alone.
        assert run_netjobs("submit", "netjobs.diag.sleep", "--arg", "seconds=0.01", "--priority", "low",
                           env=env).exit_code == 0
        for _ in range(6):
            assert run_netjobs("submit", "netjobs.diag.sleep", "--arg", "seconds=0.3", env=env).exit_code == 0
        urgent = run_netjobs("submit", "netjobs.diag.ping", "--priority", "urgent", env=env)
        assert urgent.exit_code == 0, urgent.stderr
        with celery_worker(env, queues="default", pool="threads", concurrency=1,
                           extra_args=("--prefetch-multiplier", "1")):
            wait_until(lambda: len(start_order(db, ("netjobs.diag.sleep", "netjobs.diag.ping"))) == 8, 60,
                       message="all eight jobs to start")
    order = start_order(db, ("netjobs.diag.sleep", "netjobs.diag.ping"))
    assert order[0][0] == "netjobs.diag.ping", order  # submitted last, started first
    assert order[-1] == ("netjobs.diag.sleep", "{'seconds': 0.01}"), order  # submitted first, started last


def test_priorities_land_in_kombus_priority_lists(db, netjobs_env):
    add_device_row(db, name="edge-p", platform="cisco_ios")
    with redis_server() as own_redis:
        import redis

        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}
        assert run_netjobs("backup", "edge-p", "--now", env=env).exit_code == 0
        assert run_netjobs("backup", "edge-p", env=env).exit_code == 0
        assert run_netjobs("submit", "netjobs.diag.ping", "--priority", "3", env=env).exit_code == 0
        client = redis.Redis.from_url(own_redis.url)
        lengths = {key: client.llen(key) for key in ("backup", f"backup{SEP}6", "default", f"default{SEP}3")}
    assert lengths == {"backup": 1, f"backup{SEP}6": 1, "default": 0, f"default{SEP}3": 1}, lengths


@pytest.mark.parametrize("args, message", [
    (("submit", "netjobs.diag.ping", "--priority", "10"), "invalid priority '10'"),
    (("submit", "netjobs.diag.ping", "--priority", "asap"), "one of urgent, high, normal, low or 0-9"),
    (("backup", "--all", "--now"), "--now goes with a DEVICE"),
])
def test_bad_priorities_are_refused_before_anything_is_sent(netjobs_env, args, message):
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
