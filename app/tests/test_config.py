"""Settings: defaults, validation messages, and the relations between limits."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netjobs.config import ConfigError, Settings, load_settings

BASE = {"NETJOBS_BROKER_URL": "redis://u:p@127.0.0.1:6379/0",
        "NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1:5432/netjobs"}


def test_defaults_are_complete_and_consistent():
    s = load_settings(BASE)
    assert s.result_backend_url == s.broker_url == s.redbeat_url
    assert s.queues == ("default", "backup", "network", "heavy")
    assert s.timezone == "UTC"


def test_shipped_visibility_timeout_exceeds_every_hard_time_limit():
    """kombu#337: an unacked message is redelivered after visibility_timeout."""
    from netjobs.celery_settings import celery_settings

    s = load_settings(BASE)
    conf = celery_settings(s)
    longest = max(conf["task_time_limit"], s.heavy_time_limit)
    assert conf["broker_transport_options"]["visibility_timeout"] > longest
    assert conf["result_backend_transport_options"]["visibility_timeout"] == conf["broker_transport_options"]["visibility_timeout"]
    assert conf["redbeat_lock_timeout"] > conf["beat_max_loop_interval"]
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["redbeat_redis_url"] == "redis://127.0.0.1:6379/0"
    assert (conf["redbeat_redis_options"]["username"], conf["redbeat_redis_options"]["password"]) == ("u", "p")


def test_celery_shows_no_redis_or_database_password():
    """What `celery inspect conf` and Flower's worker page show: Celery's censored table."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings

    secret = "Sup3r-S3cret%2Fpw"
    s = load_settings({**BASE, "NETJOBS_BROKER_URL": f"redis://netjobs:{secret}@10.0.0.5:6379/0",
                       "NETJOBS_DEVICE_PASSWORD": "device-pw-123"})
    app = Celery("censor-test")
    app.conf.update(celery_settings(s))
    shown = repr(app.conf.table(with_defaults=True, censored=True))
    assert "Sup3r" not in shown and "device-pw-123" not in shown
    assert "10.0.0.5" in shown  # still says where Redis is


def test_heavy_tasks_get_heavy_time_limits():
    from netjobs.queues import QueueTimeLimits

    s = load_settings(BASE)

    class FakeTask:  # only the name matters to the annotation
        def __init__(self, name):
            self.name = name

    assert QueueTimeLimits(s).annotate(FakeTask("netjobs.inventory.import_text")) == {
        "time_limit": s.heavy_time_limit, "soft_time_limit": s.heavy_soft_time_limit}
    assert QueueTimeLimits(s).annotate(FakeTask("netjobs.network.sweep")) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"NETJOBS_BROKER_URL": None}, "NETJOBS_BROKER_URL is not set"),
        ({"NETJOBS_DATABASE_URL": ""}, "NETJOBS_DATABASE_URL is not set"),
        ({"NETJOBS_BROKER_URL": "amqp://x"}, "NETJOBS_BROKER_URL must be a redis://, rediss:// or sentinel:// URL"),
        ({"NETJOBS_BROKER_URL": "redis://h:notaport/0"}, "NETJOBS_BROKER_URL has an invalid port"),
        ({"NETJOBS_DATABASE_URL": "mysql://x/y"}, "NETJOBS_DATABASE_URL must be a postgresql+psycopg2:// URL"),
        ({"NETJOBS_DATABASE_URL": "postgresql://u@h/"}, "NETJOBS_DATABASE_URL has no database name"),
        ({"NETJOBS_TASK_TIME_LIMIT": "ten"}, "NETJOBS_TASK_TIME_LIMIT must be a whole number, got 'ten'"),
        ({"NETJOBS_TASK_TIME_LIMIT": "0"}, "NETJOBS_TASK_TIME_LIMIT must be between 1 and 86400, got 0"),
        ({"NETJOBS_TIMEZONE": "Mars/Olympus"}, "NETJOBS_TIMEZONE is not a known IANA time zone"),
        ({"NETJOBS_EXTRA_QUEUES": "ok,bad queue"}, "NETJOBS_EXTRA_QUEUES has an invalid queue name 'bad queue'"),
        ({"NETJOBS_ICMP_ENABLED": "maybe"}, "NETJOBS_ICMP_ENABLED must be true or false"),
        ({"NETJOBS_HEAVY_TIME_LIMIT": "7300"}, "NETJOBS_VISIBILITY_TIMEOUT (7200s) must exceed the longest task time limit (7300s)"),
        ({"NETJOBS_REDBEAT_LOCK_TIMEOUT": "30"}, "NETJOBS_REDBEAT_LOCK_TIMEOUT (30s) must exceed NETJOBS_BEAT_MAX_INTERVAL (60s)"),
        ({"NETJOBS_TASK_SOFT_TIME_LIMIT": "600"}, "NETJOBS_TASK_SOFT_TIME_LIMIT must be lower than NETJOBS_TASK_TIME_LIMIT"),
        # A retry waiting longer than the broker keeps an unacked message would run twice (kombu#337).
        ({"NETJOBS_RETRY_BACKOFF_MAX": "3600"}, "NETJOBS_RETRY_BACKOFF_MAX (3600s) must be lower than NETJOBS_VISIBILITY_TIMEOUT minus the longest task time limit (7200s - 3600s)"),
        ({"NETJOBS_VISIBILITY_TIMEOUT": "3700"}, "NETJOBS_RETRY_BACKOFF_MAX (300s) must be lower than"),
        ({"NETJOBS_WORKER_LEASE_SECONDS": "5"}, "NETJOBS_WORKER_LEASE_SECONDS must be between 10 and 3600, got 5"),
        ({"NETJOBS_MAX_REDELIVERIES": "-1"}, "NETJOBS_MAX_REDELIVERIES must be between 0 and 100, got -1"),
    ],
)
def test_bad_values_name_the_variable(overrides, message):
    env = {**BASE, **overrides}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert message in str(info.value)


@given(st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True), max_size=5))
def test_extra_queues_are_added_after_the_base_queues_once(names):
    s = load_settings({**BASE, "NETJOBS_EXTRA_QUEUES": ",".join(names + names)})
    assert s.queues[:4] == ("default", "backup", "network", "heavy")
    assert set(s.queues) == set(s.queues[:4]) | set(names)
    assert len(s.queues) == len(set(s.queues))


def test_password_is_not_in_repr():
    s = load_settings({**BASE, "NETJOBS_DEVICE_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(s)
    assert isinstance(s, Settings)


def test_celery_command_with_broken_env_prints_one_line():
    """`celery -A netjobs.celery_app worker` with a bad env file: a clear line, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "NETJOBS_BROKER_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "netjobs.celery_app:app", "inspect", "ping"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "NETJOBS_DATABASE_URL is not set" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_the_app_opens_no_connection():
    """No settings, no database, no broker at import time."""
    code = "import netjobs.celery_app, netjobs.db.models, netjobs.tasks.diag; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr
