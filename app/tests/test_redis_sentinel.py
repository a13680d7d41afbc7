"""Redis Sentinel: jobs, results, beat and doctor follow the master when Sentinel fails it over.

A real master, a real replica and three real Sentinels (redis-server --sentinel) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from netjobs.config import ConfigError, load_settings
from tests.conftest import wait_until
from tests.support.beat import beat_process
from tests.support.cli import run_netjobs
from tests.support.pki import make_pki
from tests.support.servers import REDIS_SERVER, _stop, celery_worker, free_port, wait_for_port

MASTER = "netjobs"


@contextmanager
def redis_process(workdir: Path, name: str, argv: list[str], port: int):
    proc = subprocess.Popen([REDIS_SERVER, *argv], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield proc
    finally:
        _stop(proc)


def tls_directives(pki: Path | None) -> list[str]:
    """Serve TLS only (port 0), replicate and talk between Sentinels over TLS, as the redis role does."""
    if pki is None:
        return []
    return ["tls-cert-file", str(pki / "server.pem"), "tls-key-file", str(pki / "server.key"),
            "tls-ca-cert-file", str(pki / "site-ca.pem"), "tls-auth-clients", "no", "tls-replication", "yes"]


def listen(port: int, pki: Path | None) -> list[str]:
    return ["port", "0", "tls-port", str(port)] if pki else ["port", str(port)]


@contextmanager
def sentinel_cluster(pki: Path | None = None, password: str | None = None):
    """A master, a replica and three Sentinels (with ``pki``: TLS only, certificates for 127.0.0.1;
    with ``password``: the servers and Sentinels require it); yields (URL, master process, master
    port, replica port)."""
    workdir = Path(tempfile.mkdtemp(prefix="netjobs-sentinel-"))
    master_port, replica_port = free_port(), free_port()
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
              "--loglevel", "warning", *as_options(tls_directives(pki)), *auth]
    try:
        with ExitStack() as stack:
            master = stack.enter_context(redis_process(
                workdir, "master", [*as_options(listen(master_port, pki)), "--dir", str(workdir), *common],
                master_port))
            replica_dir = workdir / "replica"
            replica_dir.mkdir()
            stack.enter_context(redis_process(
                workdir, "replica", [*as_options(listen(replica_port, pki)), "--dir", str(replica_dir), *common,
                                     "--replicaof", "127.0.0.1", str(master_port)], replica_port))
            sentinel_ports = [free_port() for _ in range(3)]
            for port in sentinel_ports:
                conf = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
                directives = [*listen(port, pki), *tls_directives(pki)]
                conf.write_text(
                    "".join(f"{key} {value}\n" for key, value in zip(directives[::2], directives[1::2]))
                    + f"bind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\n"
                    f"sentinel failover-timeout {MASTER} 10000\n"
                    + (f"requirepass {password}\nsentinel auth-pass {MASTER} {password}\n"
                       f"sentinel sentinel-pass {password}\n" if password else ""))
                stack.enter_context(redis_process(workdir, f"sentinel-{port}", [str(conf), "--sentinel"], port))
            credentials = f":{password}@" if password else ""
            url = ";".join(f"sentinel://{credentials}127.0.0.1:{port}/0" for port in sentinel_ports)
            yield url, master, master_port, replica_port
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def as_options(directives: list[str]) -> list[str]:
    return [f"--{word}" if i % 2 == 0 else word for i, word in enumerate(directives)]


def master_port_now(url: str, pki: Path | None = None) -> int | None:
    import redis

    port = int(url.split(";")[0].rsplit(":", 1)[1].split("/")[0])
    tls = {"ssl": True, "ssl_ca_certs": str(pki / "site-ca.pem")} if pki else {}
    try:
        address = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                              **tls).sentinel_get_master_addr_by_name(MASTER)
    except redis.RedisError:
        return None
    return int(address[1]) if address else None


def test_sentinel_settings_that_cannot_work_are_refused_naming_the_variable():
    base = {"NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1/netjobs"}
    cases = [
        ({"NETJOBS_BROKER_URL": "sentinel://10.0.0.5:26379/0"}, "NETJOBS_REDIS_SENTINEL_MASTER is not set"),
        ({"NETJOBS_BROKER_URL": "redis://10.0.0.5:6379/0", "NETJOBS_REDIS_SENTINEL_MASTER": "netjobs"},
         "NETJOBS_REDIS_SENTINEL_MASTER is set, but no Redis URL uses sentinel://"),
        ({"NETJOBS_BROKER_URL": "sentinel://10.0.0.5:26379/0;redis://10.0.0.6:6379/0",
          "NETJOBS_REDIS_SENTINEL_MASTER": "netjobs"}, "NETJOBS_BROKER_URL mixes sentinel:// with redis scheme"),
        ({"NETJOBS_BROKER_URL": "sentinel://10.0.0.5:26379/0;sentinel://:26379/0",
          "NETJOBS_REDIS_SENTINEL_MASTER": "netjobs"}, "NETJOBS_BROKER_URL has a Sentinel without a host"),
        ({"NETJOBS_BROKER_URL": "sentinel://10.0.0.5:26379/0", "NETJOBS_RESULT_BACKEND_URL": "rediss://10.0.0.5/1",
          "NETJOBS_REDIS_SENTINEL_MASTER": "netjobs", "NETJOBS_REDIS_TLS_CA_FILE": "/etc/hostname"},
         "NETJOBS_BROKER_URL and NETJOBS_REDBEAT_URL use sentinel:// while NETJOBS_RESULT_BACKEND_URL use rediss://"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError) as error:
            load_settings({**base, **overrides})
        assert message in str(error.value), (overrides, str(error.value))


def test_celery_does_not_show_the_password_of_any_sentinel_node():
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.services.doctor import redact_url

    url = "sentinel://netjobs:Sup3r-pw@10.0.0.5:26379/0;sentinel://netjobs:Sup3r-pw@10.0.0.6:26379/0"
    settings = celery_settings(load_settings({
        "NETJOBS_BROKER_URL": url, "NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1/netjobs",
        "NETJOBS_REDIS_SENTINEL_MASTER": MASTER}))
    app = Celery("sentinel-censor")
    app.conf.update(settings)
    assert "Sup3r" not in repr(app.conf.table(with_defaults=True, censored=True))
    assert "Sup3r" not in redact_url(url) and redact_url(url).count(":***@") == 2
    assert settings["broker_transport_options"]["master_name"] == MASTER
    assert settings["redbeat_redis_options"]["sentinels"] == [("10.0.0.5", 26379), ("10.0.0.6", 26379)]


def test_workers_report_their_sentinel_connection_without_the_password(netjobs_env):
    """`celery inspect stats` (and Flower's /api/workers, which asks the same) from a real worker
    whose broker is three password-protected Sentinels."""
    password = "Sentinel-S3cret-pw"
    with sentinel_cluster(password=password) as (url, _master, _master_port, _replica_port):
        env = {**netjobs_env, "NETJOBS_BROKER_URL": url, "NETJOBS_RESULT_BACKEND_URL": url,
               "NETJOBS_REDBEAT_URL": url, "NETJOBS_REDIS_SENTINEL_MASTER": MASTER}
        with celery_worker(env, queues="default", pool="threads", concurrency=1,
                           hostname=f"sentinel-stats-{os.getpid()}@localhost") as worker:
            shown = {}
            for command in ("stats", "conf"):
                proc = subprocess.run([sys.executable, "-m", "celery", "-A", "netjobs.celery_app:app", "inspect",
                                       command, "--json", "--timeout", "10"], env=env, capture_output=True,
                                      text=True, timeout=60)
                assert proc.returncode == 0, (proc.stderr, worker.log()[-3000:])
                shown[command] = proc.stdout
    broker = next(iter(json.loads(shown["stats"]).values()))["broker"]
    assert password not in shown["stats"] and password not in shown["conf"]
    assert broker["transport_options"]["sentinel_kwargs"]["password"] == "********"
    assert len(broker["alternates"]) == 3 and all(":***@127.0.0.1:" in u for u in broker["alternates"])


@pytest.mark.slow
def test_tasks_running_through_a_failover_finish(netjobs_env):
    """Found by molecule/ha: the tasks reporting progress when the primary died failed, and Celery
    dropped them for good (a retry it cannot publish is rejected without requeue: no result, no
    dead letter). Progress is now best effort: a task sleeping through the failover with progress
    every second finishes. (The worker itself does not survive this here: kombu 5.7's channel close
    after a lost connection raises AttributeError, "Unrecoverable error"; systemd restarts it.)"""
    with sentinel_cluster() as (url, master, _master_port, replica_port):
        env = {**netjobs_env, "NETJOBS_BROKER_URL": url, "NETJOBS_RESULT_BACKEND_URL": url,
               "NETJOBS_REDBEAT_URL": url, "NETJOBS_REDIS_SENTINEL_MASTER": MASTER}
        with celery_worker(env, queues="default", pool="threads", concurrency=2,
                           hostname=f"sentinel-outage-{os.getpid()}@localhost") as worker:
            def submit(*args: str) -> str:
                result = run_netjobs("submit", *args, env=env)
                assert result.exit_code == 0, result.stderr
                return result.stdout.splitlines()[0].strip()

            def state(task_id: str) -> str:
                result = run_netjobs("status", task_id, "--json", env=env)
                return json.loads(result.stdout).get("state", "") if result.exit_code == 0 else ""

            sleeper = submit("netjobs.diag.sleep", "--arg", "seconds=12")
            wait_until(lambda: state(sleeper) == "PROGRESS", 30, message="the sleeping task to report progress")
            os.kill(master.pid, signal.SIGKILL)
            wait_until(lambda: master_port_now(url) == replica_port, 60, message="Sentinel to promote the replica")
            wait_until(lambda: state(sleeper) in ("SUCCESS", "FAILURE"), 60, message="the sleeping task to finish")
            assert state(sleeper) == "SUCCESS", worker.log()[-4000:]


@pytest.fixture(scope="module")
def pki():
    directory = make_pki(Path(tempfile.mkdtemp(prefix="netjobs-pki-")))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_jobs_results_beat_and_doctor_follow_a_sentinel_failover(db, netjobs_env, pki, tls):
    pki = pki if tls else None
    with sentinel_cluster(pki) as (url, master, master_port, replica_port):
        env = {**netjobs_env, "NETJOBS_BROKER_URL": url, "NETJOBS_RESULT_BACKEND_URL": url,
               "NETJOBS_REDBEAT_URL": url, "NETJOBS_REDIS_SENTINEL_MASTER": MASTER,
               **({"NETJOBS_REDIS_TLS_CA_FILE": str(pki / "site-ca.pem")} if tls else {})}
        with celery_worker(env, queues="default", pool="threads", concurrency=2,
                           hostname=f"sentinel-{os.getpid()}@localhost") as worker:
            before = run_netjobs("submit", "netjobs.diag.ping", "--wait", "--timeout", "60", env=env)
            assert before.exit_code == 0 and "pong" in before.stdout, (before.stderr, worker.log()[-3000:])

            os.kill(master.pid, signal.SIGKILL)  # the master's host is gone
            started = time.monotonic()
            wait_until(lambda: master_port_now(url, pki) == replica_port, 60,
                       message="Sentinel to promote the replica")
            promoted_after = time.monotonic() - started

            after = run_netjobs("submit", "netjobs.diag.ping", "--wait", "--timeout", "90", env=env, timeout=120)
            assert after.exit_code == 0 and "pong" in after.stdout, (after.stderr, worker.log()[-3000:])
            with beat_process(env) as beat:
                wait_until(lambda: beat.has_lock, 30, message="beat to take the RedBeat lock on the new master")
            doctor = run_netjobs("doctor", "--json", "--timeout", "2", env=env)
            assert "Traceback" not in worker.log()
    checks = {c["name"]: c for c in doctor.json()["checks"]}
    assert checks["broker reachable"]["ok"] and checks["queue default consumed"]["ok"], doctor.stdout
    assert promoted_after < 30, promoted_after
