"""Redis over verified TLS: broker, results, RedBeat and netjobs' own clients, against a real
redis-server that listens on a TLS port only."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from netjobs.config import ConfigError, load_settings
from tests.conftest import wait_until
from tests.support.beat import beat_process
from tests.support.cli import run_netjobs
from tests.support.pki import make_pki
from tests.support.servers import REDIS_SERVER, _stop, celery_worker, free_port, wait_for_port


@pytest.fixture(scope="module")
def pki():
    directory = make_pki(Path(tempfile.mkdtemp(prefix="netjobs-pki-")))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def tls_redis(pki: Path, cert: str = "server", client_certs: bool = False):
    """redis-server with no plain port; yields its TLS port."""
    workdir = Path(tempfile.mkdtemp(prefix="netjobs-redis-tls-"))
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--tls-cert-file", str(pki / f"{cert}.pem"), "--tls-key-file", str(pki / f"{cert}.key"),
         "--tls-ca-cert-file", str(pki / "site-ca.pem"), "--tls-auth-clients", "yes" if client_certs else "no",
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def tls_env(netjobs_env: dict, port: int, ca: Path, **extra: str) -> dict:
    url = f"rediss://127.0.0.1:{port}/0"
    return {**netjobs_env, "NETJOBS_BROKER_URL": url, "NETJOBS_RESULT_BACKEND_URL": url,
            "NETJOBS_REDBEAT_URL": url, "NETJOBS_REDIS_TLS_CA_FILE": str(ca), **extra}


def check(result, name: str) -> dict:
    return next(c for c in result.json()["checks"] if c["name"] == name)


@pytest.mark.parametrize("overrides, message", [
    ({"NETJOBS_BROKER_URL": "rediss://10.0.0.5:6380/0"},
     "NETJOBS_REDIS_TLS_CA_FILE is not set, but NETJOBS_BROKER_URL and NETJOBS_RESULT_BACKEND_URL and "
     "NETJOBS_REDBEAT_URL use rediss://"),
    ({"NETJOBS_BROKER_URL": "redis://10.0.0.5:6379/0", "NETJOBS_REDBEAT_URL": "rediss://10.0.0.5:6380/0"},
     "NETJOBS_REDIS_TLS_CA_FILE is not set, but NETJOBS_REDBEAT_URL use"),
    ({"NETJOBS_REDIS_TLS_CA_FILE": "/etc/hostname"}, "NETJOBS_REDIS_TLS_CA_FILE is set, but no Redis URL uses rediss://"),
    ({"NETJOBS_BROKER_URL": "rediss://10.0.0.5:6380/0", "NETJOBS_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
     "NETJOBS_REDIS_TLS_CA_FILE names '/nonexistent/ca.pem', which is not a readable file"),
    ({"NETJOBS_BROKER_URL": "rediss://10.0.0.5:6380/0", "NETJOBS_REDIS_TLS_CA_FILE": "/etc/hostname",
      "NETJOBS_REDIS_TLS_CERT_FILE": "/etc/hostname"},
     "NETJOBS_REDIS_TLS_CERT_FILE and NETJOBS_REDIS_TLS_KEY_FILE go together"),
])
def test_tls_settings_that_cannot_work_are_refused_naming_the_variable(overrides, message):
    env = {"NETJOBS_BROKER_URL": "redis://127.0.0.1:6379/0",
           "NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1/netjobs", **overrides}
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert message in str(error.value)


def test_celery_kombu_and_redbeat_get_verified_tls(pki):
    from netjobs.celery_settings import celery_settings

    url = "rediss://10.0.0.5:6380/0"
    settings = celery_settings(load_settings({
        "NETJOBS_BROKER_URL": url, "NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1/netjobs",
        "NETJOBS_REDIS_TLS_CA_FILE": str(pki / "site-ca.pem")}))
    for key in ("broker_use_ssl", "redis_backend_use_ssl", "redbeat_redis_use_ssl"):
        options = settings[key]
        assert options["ssl_ca_certs"] == str(pki / "site-ca.pem") and options["ssl_check_hostname"] is True, key
        assert options["ssl_cert_reqs"] == 2, key  # ssl.CERT_REQUIRED: never CERT_NONE


@pytest.mark.slow
def test_jobs_results_and_beat_run_over_verified_tls(pki, db, netjobs_env):
    with tls_redis(pki) as port:
        env = tls_env(netjobs_env, port, pki / "site-ca.pem")
        with celery_worker(env, queues="default", pool="threads", concurrency=2,
                           hostname=f"tls-{os.getpid()}@localhost") as worker:
            submitted = run_netjobs("submit", "netjobs.diag.ping", "--wait", "--timeout", "60", env=env)
            assert submitted.exit_code == 0, (submitted.stdout, submitted.stderr, worker.log()[-3000:])
            assert "pong" in submitted.stdout
            with beat_process(env) as beat:
                wait_until(lambda: beat.has_lock, 30, message="beat to take the RedBeat lock over TLS")
            doctor = run_netjobs("doctor", "--json", "--timeout", "2", env=env)
            assert "Traceback" not in worker.log()
        assert check(doctor, "broker reachable")["ok"], doctor.stdout
        assert check(doctor, "queue default consumed")["ok"], doctor.stdout


@pytest.mark.slow
@pytest.mark.parametrize("server_cert, ca, expected", [
    ("server", "other-ca.pem", "certificate verify failed"),  # a server we have no reason to trust
    ("wrong-name", "site-ca.pem", "certificate verify failed"),  # right CA, certificate for another host
])
def test_a_server_that_fails_verification_is_refused_with_a_clear_error(pki, netjobs_env, server_cert, ca, expected):
    with tls_redis(pki, cert=server_cert) as port:
        result = run_netjobs("queues", env=tls_env(netjobs_env, port, pki / ca))
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert expected in result.stderr and "NETJOBS" not in result.stdout


@pytest.mark.slow
def test_client_certificates_when_redis_requires_them(pki, netjobs_env):
    with tls_redis(pki, client_certs=True) as port:
        without = run_netjobs("queues", env=tls_env(netjobs_env, port, pki / "site-ca.pem"))
        with_cert = run_netjobs("queues", env=tls_env(
            netjobs_env, port, pki / "site-ca.pem", NETJOBS_REDIS_TLS_CERT_FILE=str(pki / "netjobs-client.pem"),
            NETJOBS_REDIS_TLS_KEY_FILE=str(pki / "netjobs-client.key")))
    assert without.exit_code == 1 and "Traceback" not in without.stderr, without.stderr
    assert with_cert.exit_code == 0, with_cert.stderr
