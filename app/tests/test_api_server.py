"""`netjobs-api` as it runs on a host: a real uvicorn process on a loopback port, with httpx, against
the session's Redis and worker, and readiness when PostgreSQL goes away."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.cli import run_netjobs
from tests.support.pki import make_cert, make_pki
from tests.support.servers import PG_BIN, VENV_BIN, _as_postgres, free_port, postgres_server, wait_for_port

API = "/api/v1"


@contextmanager
def api_process(env: dict[str, str], *args: str, hosts: tuple[str, ...] = ("127.0.0.1",), scheme: str = "http"):
    """`netjobs-api` on a free port of each loopback address in ``hosts``; yields (base URL of the
    first, log file)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="netjobs-api-", suffix=".log")[1])
    full_env = {**os.environ, **env, "NETJOBS_API_LISTEN": ",".join(f"{host}:{port}" for host in hosts)}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "netjobs-api"), *args], env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            raise AssertionError(f"netjobs-api did not listen:\n{log.read_text()}") from None
        yield f"{scheme}://{hosts[0]}:{port}", log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.unlink(missing_ok=True)


def create_token(env: dict[str, str], role: str, user: str) -> str:
    created = run_netjobs("tokens", "create", f"{user}-{uuid.uuid4().hex[:6]}", "--user", user, "--role", role,
                          "--json", env=env)
    assert created.exit_code == 0, created.stderr
    return created.json()["token"]


def test_the_api_process_serves_jobs_over_http_and_logs_no_token(netjobs_env, worker, db):
    token = create_token(netjobs_env, "operator", "uma")
    headers = {"Authorization": f"Bearer {token}"}
    with api_process(netjobs_env) as (base, log), httpx.Client(base_url=base, timeout=70) as http:
        assert http.get(f"{API}/health/live").json() == {"status": "live"}
        assert http.get(f"{API}/runs").status_code == 401
        assert http.get(f"{API}/runs", headers={"Authorization": "Bearer nj_wrong"}).status_code == 401
        submitted = http.post(f"{API}/jobs", json={"task": "netjobs.diag.sleep", "kwargs": {"seconds": 1}},
                              headers=headers)
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        done = http.get(f"{API}/jobs/{task_id}/wait", params={"timeout": 30}, headers=headers).json()
        assert done["state"] == "SUCCESS" and done["submitted_by"] == "api:uma"
        assert http.get(f"{API}/jobs/{task_id}/result", headers=headers).json()["result"]["slept"] >= 0.9
        # A token pasted into a URL by mistake does not reach the access log either.
        assert http.get(f"{API}/runs", params={"note": token}, headers=headers).status_code == 200
        docs = http.get(f"{API}/docs")
        assert docs.status_code == 200 and "https://" not in docs.text and "http://" not in docs.text
        assert http.get(f"{API}/docs/static/swagger-ui-bundle.js").status_code == 200
        assert "server" not in http.get(f"{API}/health/live").headers
        time.sleep(0.5)
        text = log.read_text()
    assert f'"GET {API}/runs HTTP/1.1" 401' in text and f"POST {API}/jobs HTTP/1.1\" 202" in text, text
    assert token not in text and token[3:] not in text
    assert "nj_<redacted>" in text
    assert "failed authentication from 127.0.0.1" in text


def test_bad_settings_stop_the_api_with_one_line(netjobs_env):
    bad = subprocess.run([str(VENV_BIN / "netjobs-api")], env={**os.environ, **netjobs_env,
                                                                "NETJOBS_API_LISTEN": "localhost:80"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "netjobs-api: configuration error: NETJOBS_API_LISTEN must name an IP address to listen on, got 'localhost'"]
    checked = subprocess.run([str(VENV_BIN / "python"), "-m", "netjobs.api", "--check"],
                             env={**os.environ, **netjobs_env, "NETJOBS_API_LISTEN": "127.0.0.1:8470"},
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "127.0.0.1:8470" in checked.stdout


def test_the_api_serves_https_on_each_of_its_addresses(netjobs_env, tmp_path):
    pki = make_pki(tmp_path)
    make_cert(pki, "site-ca", "api", "IP:127.0.0.1,IP:127.0.0.2")
    env = {**netjobs_env, "NETJOBS_API_TLS_CERT_FILE": str(pki / "api.pem"),
           "NETJOBS_API_TLS_KEY_FILE": str(pki / "api.key")}
    site_ca, other_ca = (ssl.create_default_context(cafile=pki / name) for name in ("site-ca.pem", "other-ca.pem"))
    with api_process(env, hosts=("127.0.0.1", "127.0.0.2"), scheme="https") as (base, _):
        port = base.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "127.0.0.2"):
            live = httpx.get(f"https://{host}:{port}{API}/health/live", verify=site_ca)
            assert live.json() == {"status": "live"}
        with pytest.raises(httpx.HTTPError):  # no clear text beside HTTPS
            httpx.get(f"http://127.0.0.1:{port}{API}/health/live", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}{API}/health/live", verify=other_ca)
    half = subprocess.run([str(VENV_BIN / "netjobs-api"), "--check"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **netjobs_env, "NETJOBS_API_TLS_CERT_FILE": str(pki / "api.pem")})
    assert half.returncode == 2 and "NETJOBS_API_TLS_CERT_FILE and NETJOBS_API_TLS_KEY_FILE go together" in half.stderr
    twice = subprocess.run([str(VENV_BIN / "netjobs-api"), "--check"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **netjobs_env, "NETJOBS_API_LISTEN": "127.0.0.1:8470,127.0.0.1:8470"})
    assert twice.returncode == 2 and "names an address twice" in twice.stderr


@pytest.mark.slow
def test_ready_is_503_naming_the_database_when_postgresql_stops(netjobs_env, worker):
    with postgres_server() as pg:
        env = {**netjobs_env, "NETJOBS_DATABASE_URL": pg.url}
        upgraded = run_netjobs("db", "upgrade", env=env, timeout=120)
        assert upgraded.exit_code == 0, upgraded.stderr
        headers = {"Authorization": f"Bearer {create_token(env, 'viewer', 'vic')}"}
        with api_process(env) as (base, log), httpx.Client(base_url=base, timeout=30) as http:
            before = http.get(f"{API}/health/ready", params={"timeout": 1}, headers=headers)
            checks = {c["name"]: c for c in before.json()["checks"]}
            assert checks["database reachable"]["ok"] and checks["database migrated"]["ok"], before.text
            # Stop only this test's own cluster.
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(pg.datadir), "-m", "fast", "-w", "stop"])
            after = http.get(f"{API}/health/ready", params={"timeout": 1}, headers=headers)
            assert after.status_code == 503, after.text
            body = after.json()
            assert body["ready"] is False
            assert [c["name"] for c in body["failing"]] == ["database reachable"]
            assert "unreachable" in body["failing"][0]["detail"] and pg.password not in after.text
            # Other calls say why they cannot answer, without a traceback.
            runs = http.get(f"{API}/runs", headers=headers)
            assert runs.status_code == 503 and "database" in runs.json()["detail"]
            assert http.get(f"{API}/health/live").status_code == 200
            text = log.read_text()
        assert "Traceback" not in text and pg.password not in text
