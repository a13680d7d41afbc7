"""Diagnostic tasks for smoke tests, warm-stop checks and exercising the retry path."""

from __future__ import annotations

import os
import signal
import time

from celery.signals import worker_process_init

from netjobs.celery_app import app
from netjobs.errors import TransientError, ValidationError
from netjobs.tasks.base import NetjobsTask


_in_pool_child = False


@worker_process_init.connect
def _mark_pool_child(**_):
    global _in_pool_child
    _in_pool_child = True


@app.task(base=NetjobsTask, name="netjobs.diag.ping")
def ping() -> str:
    return "pong"


@app.task(base=NetjobsTask, bind=True, name="netjobs.diag.sleep")
def sleep(self, seconds: float = 1.0) -> dict:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
        raise ValidationError(f"seconds must be a number from 0 to 3600, got {seconds!r}")
    started = time.monotonic()
    steps = max(1, int(seconds))
    for step in range(steps):
        time.sleep(seconds / steps)
        self.progress(step + 1, steps)
    return {"slept": round(time.monotonic() - started, 3)}


@app.task(base=NetjobsTask, bind=True, name="netjobs.diag.flaky")
def flaky(self, token: str, failures: int) -> dict:
    """Fail with a transient error ``failures`` times per ``token``, then succeed."""
    from netjobs.redis_clients import redis_from_url

    client = redis_from_url()
    attempt = client.incr(f"netjobs:diag:flaky:{token}")
    client.expire(f"netjobs:diag:flaky:{token}", 3600)
    if attempt <= failures:
        raise TransientError(f"simulated transient failure {attempt} of {failures}")
    return {"attempts": attempt}


@app.task(base=NetjobsTask, name="netjobs.diag.fail")
def fail(message: str = "simulated permanent failure") -> None:
    raise ValidationError(message)


@app.task(base=NetjobsTask, name="netjobs.diag.db_roundtrip")
def db_roundtrip(queries: int = 10) -> dict:
    """Run a few queries on this process's pool; reports which PostgreSQL backend served them."""
    import os

    from sqlalchemy import text

    from netjobs.db.engine import get_engine

    if not isinstance(queries, int) or isinstance(queries, bool) or not 1 <= queries <= 10000:
        raise ValidationError(f"queries must be a whole number from 1 to 10000, got {queries!r}")
    backends = set()
    with get_engine().connect() as conn:
        for _ in range(queries):
            backends.add(conn.execute(text("SELECT pg_backend_pid()")).scalar())
            conn.execute(text("SELECT count(*) FROM job_runs"))
    return {"pid": os.getpid(), "backends": sorted(backends)}


@app.task(base=NetjobsTask, name="netjobs.diag.crash")
def crash() -> None:
    """Kill the pool process running this task, as the OOM killer would (drills of poison tasks)."""
    if not _in_pool_child:
        raise ValidationError("netjobs.diag.crash runs only in a prefork pool child; here it would kill the worker")
    os.kill(os.getpid(), signal.SIGKILL)
