"""Settings: defaults, validation messages, and the relations between limits."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netjobs.config import ConfigError, Settings, load_settings
from tests.support.servers import VENV_BIN, free_port, wait_for_port

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


def test_broker_transport_is_netjobs_unless_kombu_is_asked_for():
    from netjobs.celery_settings import celery_settings

    assert celery_settings(load_settings(BASE))["broker_transport"] == "netjobs.redis_transport:Transport"
    assert "broker_transport" not in celery_settings(load_settings({**BASE, "NETJOBS_BROKER_TRANSPORT": "kombu"}))
    with pytest.raises(ConfigError, match="NETJOBS_BROKER_TRANSPORT must be one of netjobs, kombu"):
        load_settings({**BASE, "NETJOBS_BROKER_TRANSPORT": "amqp"})


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
    env = {"PATH": "/usr/bin:/bin", "NETJOBS_BROKER_URL": "redis://127.0.0.1:1/0", "NETJOBS_TASK_TIME_LIMIT": "ten"}
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "netjobs.celery_app:app", "inspect", "ping"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "netjobs: configuration error: NETJOBS_TASK_TIME_LIMIT must be a whole number" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the database URL: required where it is read, not by every process --------------------------


@pytest.mark.parametrize("value", [None, "", "  "])
def test_database_url_is_refused_missing_only_when_asked_for(value):
    env = {"NETJOBS_BROKER_URL": BASE["NETJOBS_BROKER_URL"]}
    if value is not None:
        env["NETJOBS_DATABASE_URL"] = value
    s = load_settings(env)  # what Flower loads: the broker, no database
    assert s.broker_url == BASE["NETJOBS_BROKER_URL"]
    with pytest.raises(ConfigError) as info:
        s.database_url
    assert str(info.value) == ("NETJOBS_DATABASE_URL is not set (see /etc/netjobs/netjobs.env), but this process "
                               "uses the database")


def test_database_url_is_still_checked_when_set():
    s = load_settings({**BASE, "NETJOBS_DATABASE_URL": "postgresql://u:dbpw@10.0.0.5/netjobs"})
    assert s.database_url == "postgresql+psycopg2://u:dbpw@10.0.0.5/netjobs"
    assert "dbpw" not in repr(s)
    # A malformed one fails at load, in every process that has it, before anything starts.
    with pytest.raises(ConfigError, match="NETJOBS_DATABASE_URL must use the psycopg2 driver"):
        load_settings({**BASE, "NETJOBS_DATABASE_URL": "postgresql+asyncpg://u:p@h/netjobs"})


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)


def test_celery_app_configures_with_the_broker_settings_alone():
    """Flower's env file has the Redis settings only: the Celery app loads, and whatever would use
    the database says which variable is missing (the CLI turns it into one line)."""
    code = (
        "from netjobs.celery_app import app\n"
        "print(app.conf.broker_url, app.conf.task_default_queue, len(app.conf.task_queues))\n"
        "from netjobs.config import ConfigError, get_settings\n"
        "try:\n"
        "    get_settings().database_url\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
    )
    proc = _run_python(code, {"NETJOBS_BROKER_URL": "redis://127.0.0.1:1/3"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "redis://127.0.0.1:1/3 default 4",
        "refused: NETJOBS_DATABASE_URL is not set (see /etc/netjobs/netjobs.env), but this process uses the database"]


def test_database_commands_without_a_database_url_say_so_in_one_line():
    proc = subprocess.run([str(VENV_BIN / "netjobs"), "runs"], env={
        "PATH": "/usr/bin:/bin", "NETJOBS_BROKER_URL": "redis://127.0.0.1:1/0"}, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: configuration error: NETJOBS_DATABASE_URL is not set (see /etc/netjobs/netjobs.env), but this "
        "process uses the database"]


def test_flower_runs_with_the_broker_settings_alone(redis_srv, tmp_path):
    """The real Flower against the real broker with what the role puts in flower.env: no database URL."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NETJOBS_BROKER_URL": redis_srv.url,
           "NETJOBS_BROKER_TRANSPORT": "kombu",
           "FLOWER_ADDRESS": "127.0.0.1", "FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": "admin:flower-pw",
           "FLOWER_PERSISTENT": "true", "FLOWER_DB": str(tmp_path / "flower.db")}
    log = tmp_path / "flower.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "celery"), "-A", "netjobs.celery_app:app", "flower"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, timeout=30)
        auth = "Basic " + base64.b64encode(b"admin:flower-pw").decode()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{port}/api/workers", headers={"Authorization": auth}), timeout=10) as r:
                    assert r.status == 200
                    break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=10) as r:
            assert r.read() == b"OK"
        # The Broker page lists every queue with its length (kombu's transport: a redis:// URI).
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/broker", headers={"Authorization": auth}), timeout=10) as r:
            page = r.read().decode()
        for queue in ("default", "backup", "network", "heavy"):
            assert re.search(rf"<td>{queue}</td>\s*<td[^>]*>\d+</td>", page), page
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "NETJOBS_DATABASE_URL" not in text and "Traceback" not in text, text


def test_importing_the_app_opens_no_connection():
    """No settings, no database, no broker at import time."""
    code = "import netjobs.celery_app, netjobs.db.models, netjobs.tasks.diag; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr
