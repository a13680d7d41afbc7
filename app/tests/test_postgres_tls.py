"""PostgreSQL over verified TLS: a server that takes `hostssl` connections only, and netjobs
connecting with sslmode=verify-full against the site's CA."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from netjobs.config import ConfigError, load_settings
from tests.support.cli import run_netjobs
from tests.support.pki import make_pki
from tests.support.servers import postgres_server

# TLS or nothing, password (scram) on top: what the postgresql role writes for remote app hosts.
HOSTSSL_ONLY = ("local all all scram-sha-256\n"
                "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                "hostnossl all all 0.0.0.0/0 reject\n")


@pytest.fixture(scope="module")
def pki():
    directory = make_pki(Path(tempfile.mkdtemp(prefix="netjobs-pki-")))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_postgres(pki):
    options = "-c ssl=on -c ssl_cert_file={base}/server.crt -c ssl_key_file={base}/server.key"
    with postgres_server(options, hba=HOSTSSL_ONLY,
                         files={"server.crt": pki / "server.pem", "server.key": pki / "server.key"}) as server:
        yield server


def database_env(netjobs_env: dict, url: str) -> dict:
    return {**netjobs_env, "NETJOBS_DATABASE_URL": url}


@pytest.mark.parametrize("query, message", [
    ("sslmode=verify-fulll", "NETJOBS_DATABASE_URL has sslmode='verify-fulll'; libpq knows disable, allow"),
    ("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
     "NETJOBS_DATABASE_URL has sslrootcert='/nonexistent/ca.pem', which is not a readable file"),
])
def test_database_tls_settings_that_cannot_work_are_refused(query, message):
    with pytest.raises(ConfigError) as error:
        load_settings({"NETJOBS_BROKER_URL": "redis://127.0.0.1:6379/0",
                       "NETJOBS_DATABASE_URL": f"postgresql+psycopg2://u:p@10.0.0.5/netjobs?{query}"})
    assert message in str(error.value)


@pytest.mark.slow
def test_netjobs_migrates_and_reads_over_verified_tls(tls_postgres, pki, netjobs_env):
    url = f"{tls_postgres.url}?sslmode=verify-full&sslrootcert={pki / 'site-ca.pem'}"
    migrated = run_netjobs("db", "upgrade", env=database_env(netjobs_env, url))
    assert migrated.exit_code == 0, migrated.stderr
    listed = run_netjobs("devices", "list", "--json", env=database_env(netjobs_env, url))
    assert listed.exit_code == 0 and listed.json() == [], listed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", [
    ("sslmode=disable", "no encryption"),  # hostnossl is rejected: nothing crosses in clear text
    ("sslmode=verify-full&sslrootcert={pki}/other-ca.pem", "certificate verify failed"),
])
def test_plain_or_unverified_connections_are_refused(tls_postgres, pki, netjobs_env, query, expected):
    url = f"{tls_postgres.url}?{query.format(pki=pki)}"
    result = run_netjobs("devices", "list", env=database_env(netjobs_env, url))
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert tls_postgres.password not in result.stderr
