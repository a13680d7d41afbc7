"""Fixtures: a real redis-server, a real PostgreSQL cluster and a real Celery worker per session."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.servers import celery_worker, postgres_server, redis_server, service_env

# Output width as in a pipe (netjobs.cli.common): pytest-xdist's workers inherit COLUMNS=80.
os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session")
def redis_srv():
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_srv():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def netjobs_env(redis_srv, pg_srv, tmp_path_factory):
    """NETJOBS_* for this session, applied to os.environ, with the schema migrated."""
    rules = tmp_path_factory.mktemp("etc") / "compliance.yml"
    env = service_env(redis_srv, pg_srv, NETJOBS_COMPLIANCE_RULES=str(rules))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from netjobs.config import reset_settings
    from netjobs.db.migrate import upgrade

    reset_settings()
    upgrade()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()


@pytest.fixture(scope="session")
def celery_app(netjobs_env):
    from netjobs.celery_app import app

    return app


@pytest.fixture(scope="session")
def worker(netjobs_env):
    """One prefork worker consuming every base queue, shared by the session."""
    with celery_worker(netjobs_env, concurrency=2) as w:
        yield w


@pytest.fixture
def own_broker_env(netjobs_env):
    """netjobs_env with a Redis of the test's own for broker and results: for tests that restart,
    kill or flood workers, so no other test's worker takes their messages."""
    with redis_server() as own_redis:
        yield {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_RESULT_BACKEND_URL": own_redis.url}


@pytest.fixture
def db(netjobs_env):
    """An empty database for one test (the schema stays)."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine
    from netjobs.history import recorder

    recorder.flush()
    with get_engine().begin() as conn:
        conn.execute(text(
            "TRUNCATE job_runs, dead_letters, compliance_results, reachability_results, config_snapshots, "
            "config_contents, devices, audit_log, api_tokens "
            "RESTART IDENTITY CASCADE"
        ))
    yield get_engine()


@pytest.fixture
def redis_client(redis_srv):
    import redis

    client = redis.Redis.from_url(redis_srv.url, decode_responses=True)
    yield client
    client.close()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")
