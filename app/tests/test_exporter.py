"""netjobs-exporter against real Redis, PostgreSQL and Celery workers: values after known events.

Counters are compared before and after (the session's Redis keeps what earlier tests counted).
The lost-worker test runs its worker against a Redis server of its own, as test_leases.py does.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import wait_until
from tests.support.beat import beat_process
from tests.support.servers import celery_worker, free_port, producer_app, redis_server, wait_for_port

LEASE = 10  # seconds: a lost worker shows within a test


def exporter_registry(env: dict, cache_seconds: float = 0):
    from prometheus_client import CollectorRegistry

    from netjobs.config import load_settings
    from netjobs.exporter.collector import NetjobsCollector

    settings = dataclasses.replace(load_settings(env), exporter_cache_seconds=cache_seconds)
    registry = CollectorRegistry()
    registry.register(NetjobsCollector(settings))
    return registry


def sample(registry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels)


def count(registry, name: str, **labels) -> float:
    return sample(registry, name, **labels) or 0.0


# --- settings --------------------------------------------------------------------------------


def test_exporter_settings_default_to_loopback_and_refuse_an_open_address_without_auth(netjobs_env, tmp_path):
    from netjobs.config import ConfigError, load_settings

    settings = load_settings(netjobs_env)
    assert settings.exporter_listen == ("127.0.0.1", 9808)
    assert settings.exporter_cache_seconds == 10
    assert load_settings({**netjobs_env, "NETJOBS_EXPORTER_LISTEN": "[::1]:9900"}).exporter_listen == ("::1", 9900)
    with pytest.raises(ConfigError, match="NETJOBS_EXPORTER_LISTEN .*HOST:PORT"):
        load_settings({**netjobs_env, "NETJOBS_EXPORTER_LISTEN": "9808"})
    with pytest.raises(ConfigError, match="NETJOBS_EXPORTER_LISTEN has an invalid port"):
        load_settings({**netjobs_env, "NETJOBS_EXPORTER_LISTEN": "127.0.0.1:99999"})
    with pytest.raises(ConfigError, match="NETJOBS_EXPORTER_BASIC_AUTH_FILE is not set"):
        load_settings({**netjobs_env, "NETJOBS_EXPORTER_LISTEN": "0.0.0.0:9808"})
    with pytest.raises(ConfigError, match="NETJOBS_EXPORTER_BASIC_AUTH_FILE names .* not a readable file"):
        load_settings({**netjobs_env, "NETJOBS_EXPORTER_BASIC_AUTH_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="NETJOBS_EXPORTER_CACHE_SECONDS must be a number"):
        load_settings({**netjobs_env, "NETJOBS_EXPORTER_CACHE_SECONDS": "soon"})


def test_an_auth_file_with_a_plain_password_is_refused_with_its_line(tmp_path):
    from netjobs.config import ConfigError
    from netjobs.exporter.auth import load_users

    path = tmp_path / "users"
    path.write_text("# scrapers\nprometheus:secret\n")
    with pytest.raises(ConfigError, match=r"NETJOBS_EXPORTER_BASIC_AUTH_FILE .*users:2: .*plain password"):
        load_users(path)


# --- tasks -----------------------------------------------------------------------------------


def test_n_tasks_add_exactly_n_to_the_counters_and_histograms(netjobs_env, worker, celery_app, db):
    registry = exporter_registry(netjobs_env)
    ping = {"task": "netjobs.diag.ping", "queue": "default"}
    names = {"ok": ("netjobs_tasks_total", {**ping, "state": "SUCCESS"}),
             "published": ("netjobs_tasks_published_total", ping),
             "runtime": ("netjobs_task_runtime_seconds_count", ping),
             "wait": ("netjobs_task_queue_wait_seconds_count", ping),
             "wait_inf": ("netjobs_task_queue_wait_seconds_bucket", {**ping, "le": "+Inf"})}

    def values():
        return {key: count(registry, name, **labels) for key, (name, labels) in names.items()}

    before = values()
    n = 7
    results = [celery_app.send_task("netjobs.diag.ping") for _ in range(n)]
    assert [r.get(timeout=30) for r in results] == ["pong"] * n
    wait_until(lambda: all(values()[k] - before[k] >= n for k in names), 15, message="the counters to count the tasks")
    time.sleep(1.5)  # a second flush of the same events would show now
    after = values()
    assert {k: after[k] - before[k] for k in names} == {k: n for k in names}
    assert count(registry, "netjobs_task_runtime_seconds_sum", **ping) > 0


def test_a_failing_task_counts_a_failure_and_retries_and_opens_a_dead_letter(netjobs_env, worker, celery_app, db):
    registry = exporter_registry(netjobs_env)
    failure = {"task": "netjobs.diag.fail", "queue": "default", "state": "FAILURE"}
    flaky = {"task": "netjobs.diag.flaky", "queue": "default"}
    failed_before = count(registry, "netjobs_tasks_total", **failure)
    retries_before = count(registry, "netjobs_task_retries_total", **flaky)

    failed = celery_app.send_task("netjobs.diag.fail", args=["exporter test"])
    flaked = celery_app.send_task("netjobs.diag.flaky", args=[uuid.uuid4().hex, 2])
    with pytest.raises(Exception):
        failed.get(timeout=30)
    flaked.get(timeout=30)
    wait_until(lambda: sample(registry, "netjobs_dead_letters_open", task="netjobs.diag.fail", queue="default") == 1,
               15, message="the dead letter in the metrics")
    wait_until(lambda: count(registry, "netjobs_task_retries_total", **flaky) - retries_before == 2, 15,
               message="two retries counted")
    assert count(registry, "netjobs_tasks_total", **failure) - failed_before == 1


# --- domain ----------------------------------------------------------------------------------


def test_backup_freshness_failures_changes_compliance_and_reachability_per_device(netjobs_env, db):
    from sqlalchemy import text

    with db.begin() as conn:
        ids = dict(conn.execute(text(
            "INSERT INTO devices (name, mgmt_address, platform, site, created_at) VALUES "
            "('stale-sw1', '10.9.0.1', 'cisco_ios', 'north', now() - interval '30 days'), "
            "('fresh-sw2', '10.9.0.2', 'cisco_ios', 'north', now() - interval '30 days'), "
            "('new-sw3', '10.9.0.3', 'cisco_ios', 'south', now() - interval '3 days') RETURNING name, id")).all())
        conn.execute(text("INSERT INTO config_contents (content_hash, content, lines) VALUES ('h1', 'x', 1)"))
        conn.execute(text(
            "INSERT INTO config_snapshots (device_id, collected_at, content_hash, changed, task_id) VALUES "
            "(:stale, now() - interval '2 days', 'h1', true, 't1'), "
            "(:fresh, now() - interval '1 hour', 'h1', true, 't2')"), {"stale": ids["stale-sw1"],
                                                                        "fresh": ids["fresh-sw2"]})
        # stale-sw1's last backup failed for good after its snapshot: a dead letter of its backup.
        conn.execute(text(
            "INSERT INTO dead_letters (task_id, task_name, queue, args, kwargs, error, retries, failed_at) VALUES "
            "('dl1', 'netjobs.backup.device', 'backup', '[\"stale-sw1\"]', '{}', 'timeout', 0, "
            "now() - interval '1 day')"))
        conn.execute(text(
            "INSERT INTO compliance_results (run_id, device_id, rule, passed, checked_at) VALUES "
            "('old', :stale, 'ntp-servers', false, now() - interval '2 days'), "
            "('new', :stale, 'ntp-servers', true, now()), ('new', :stale, 'no-telnet', false, now()), "
            "('new', :fresh, 'no-telnet', false, now())"), {"stale": ids["stale-sw1"], "fresh": ids["fresh-sw2"]})
        conn.execute(text(
            "INSERT INTO reachability_results "
            "(sweep_id, address, port, method, reachable, state, device_id, checked_at) VALUES "
            "('s1', '10.9.0.1', 22, 'tcp', true, 'open', :stale, now() - interval '1 hour'), "
            "('s2', '10.9.0.1', 22, 'tcp', false, 'filtered', :stale, now()), "
            "('s2', '10.9.0.2', 22, 'tcp', true, 'open', :fresh, now())"),
            {"stale": ids["stale-sw1"], "fresh": ids["fresh-sw2"]})

    registry = exporter_registry(netjobs_env)
    stale = sample(registry, "netjobs_device_last_backup_age_seconds", device="stale-sw1", site="north")
    assert 172_800 - 5 <= stale <= 172_800 + 30
    assert 3_600 - 5 <= sample(registry, "netjobs_device_last_backup_age_seconds", device="fresh-sw2", site="north") \
        <= 3_600 + 30
    assert sample(registry, "netjobs_device_last_backup_age_seconds", device="new-sw3", site="south") is None
    assert 3 * 86_400 - 5 <= sample(registry, "netjobs_device_without_backup_seconds", device="new-sw3",
                                    site="south") <= 3 * 86_400 + 30
    assert sample(registry, "netjobs_device_backup_failing", device="stale-sw1", site="north") == 1
    assert sample(registry, "netjobs_device_backup_failing", device="fresh-sw2", site="north") == 0
    assert sample(registry, "netjobs_config_changes_last_24h", site="north") == 1
    assert sample(registry, "netjobs_config_changes_last_24h", site="south") == 0
    # Each device's newest compliance run: ntp-servers passed there, no-telnet fails on both.
    assert sample(registry, "netjobs_compliance_failures", rule="ntp-servers") == 0
    assert sample(registry, "netjobs_compliance_failures", rule="no-telnet") == 2
    assert sample(registry, "netjobs_dead_letters_open", task="netjobs.backup.device", queue="backup") == 1
    assert sample(registry, "netjobs_site_devices", site="north", reachability="unreachable") == 1
    assert sample(registry, "netjobs_site_devices", site="north", reachability="reachable") == 1
    assert sample(registry, "netjobs_site_devices", site="south", reachability="unknown") == 1


# --- beat ------------------------------------------------------------------------------------


def test_a_running_beat_shows_its_lock_holder_ticks_and_the_last_firing_of_a_schedule(netjobs_env, worker,
                                                                                       celery_app, db):
    from netjobs.services.schedules import add_schedule, parse_schedule_spec, remove_schedule

    registry = exporter_registry(netjobs_env)
    name = f"exporter-{uuid.uuid4().hex[:8]}"
    with beat_process(netjobs_env) as beat:
        wait_until(lambda: beat.has_lock, 15, message="beat to take the lock")
        add_schedule(celery_app, name, "netjobs.diag.ping", parse_schedule_spec(every="1s"), expires=30)
        try:
            wait_until(lambda: beat.sends(name) >= 2, 15, message="beat to fire the entry")
            labels = {"schedule": name, "task": "netjobs.diag.ping"}
            assert sample(registry, "netjobs_beat_lock_held") == 1
            assert sample(registry, "netjobs_beat_lock_holder_info", host=socket.gethostname()) == 1
            assert sample(registry, "netjobs_beat_last_tick_age_seconds") < 10
            assert sample(registry, "netjobs_schedule_enabled", **labels) == 1
            assert sample(registry, "netjobs_schedule_last_run_age_seconds", **labels) < 10
            assert sample(registry, "netjobs_schedule_overdue_seconds", **labels) < 5
            assert sample(registry, "netjobs_schedules_enabled") >= 1
        finally:
            remove_schedule(celery_app, name)


# --- workers and queues ----------------------------------------------------------------------


@pytest.fixture
def own_broker_env(netjobs_env):
    with redis_server() as own_redis:
        yield {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_WORKER_LEASE_SECONDS": str(LEASE)}


@pytest.fixture
def producer(own_broker_env):
    with producer_app(own_broker_env, "exporter-test-producer") as app:
        yield app


def test_a_killed_worker_shows_down_with_its_tasks_held_and_a_queue_without_consumer_ages(own_broker_env, producer,
                                                                                             db):
    registry = exporter_registry(own_broker_env)
    with celery_worker(own_broker_env, queues="default", concurrency=1, hostname="lost@localhost") as lost:
        wait_until(lambda: sample(registry, "netjobs_worker_up", group="lost", host="localhost") == 1, 15,
                   message="the worker's lease in the metrics")
        assert sample(registry, "netjobs_queue_consumers", queue="default") == 1
        assert sample(registry, "netjobs_queue_consumers", queue="backup") == 0
        for _ in range(2):
            producer.send_task("netjobs.diag.sleep", kwargs={"seconds": 60})
        wait_until(lambda: count(registry, "netjobs_queue_messages_unacked", queue="default") >= 1, 15,
                   message="the worker to take a task")
        os.killpg(lost.proc.pid, signal.SIGKILL)  # main process and pool at once, as a power-off would
        lost.proc.wait(10)

    # Nobody consumes "default" now: new messages wait and age.
    waiting_before = count(registry, "netjobs_queue_messages_waiting", queue="default")
    for _ in range(3):
        producer.send_task("netjobs.diag.ping")
    assert count(registry, "netjobs_queue_messages_waiting", queue="default") == waiting_before + 3
    time.sleep(2)
    age = sample(registry, "netjobs_queue_oldest_message_age_seconds", queue="default")
    assert 2 <= age < 30
    assert sample(registry, "netjobs_queue_oldest_message_age_seconds", queue="network") == 0

    wait_until(lambda: count(registry, "netjobs_tasks_held_by_lost_workers") >= 1, LEASE + 10,
               message="the tasks held by the killed worker")
    wait_until(lambda: sample(registry, "netjobs_worker_up", group="lost", host="localhost") == 0, LEASE + 10,
               message="the killed worker to show down")
    assert sample(registry, "netjobs_queue_consumers", queue="default") == 0

    # Within the cache period a second scrape reads nothing: one pass serves every scraper.
    cached = exporter_registry(own_broker_env, cache_seconds=60)
    first = count(cached, "netjobs_queue_messages_waiting", queue="default")
    producer.send_task("netjobs.diag.ping")
    assert count(cached, "netjobs_queue_messages_waiting", queue="default") == first
    assert count(registry, "netjobs_queue_messages_waiting", queue="default") == first + 1


# --- over HTTP -------------------------------------------------------------------------------


def _get(url: str, user: str | None = None, password: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_exporter_process_serves_metrics_only_with_the_password(netjobs_env, db, tmp_path):
    import bcrypt

    password = uuid.uuid4().hex
    users = tmp_path / "exporter-users"
    users.write_text(f"prometheus:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    port = free_port()
    env = {**os.environ, **netjobs_env, "NETJOBS_EXPORTER_LISTEN": f"127.0.0.1:{port}",
           "NETJOBS_EXPORTER_BASIC_AUTH_FILE": str(users)}
    proc = subprocess.Popen([sys.executable, "-m", "netjobs.exporter"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 20)
        url = f"http://127.0.0.1:{port}/metrics"
        assert _get(url)[0] == 401
        assert _get(url, "prometheus", "wrong")[0] == 401
        status, body = _get(url, "prometheus", password)
        assert status == 200
        assert 'netjobs_queue_messages_waiting{queue="default"}' in body
        assert 'netjobs_exporter_source_up{source="database"} 1.0' in body
        assert 'netjobs_exporter_source_up{source="redis"} 1.0' in body
        assert "# TYPE netjobs_tasks_total counter" in body
    finally:
        proc.terminate()
        proc.wait(10)
