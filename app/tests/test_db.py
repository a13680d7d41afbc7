"""Migrations and fork safety of the per-process engines."""

from __future__ import annotations

import multiprocessing
import os

from sqlalchemy import inspect, text


def test_upgrade_is_idempotent_and_creates_every_table(netjobs_env):
    from netjobs.db.engine import get_engine
    from netjobs.db.migrate import current_revision, head_revision, upgrade

    upgrade()
    upgrade()
    assert current_revision() == head_revision()
    tables = set(inspect(get_engine()).get_table_names())
    assert {"devices", "job_runs", "dead_letters", "config_snapshots", "reachability_results",
            "compliance_results", "alembic_version"} <= tables


def _child_connection_owner(queue):
    from netjobs.db.engine import get_engine

    with get_engine().connect() as conn:
        queue.put((os.getpid(), conn.execute(text("SELECT current_setting('application_name')")).scalar()))


def test_forked_child_opens_its_own_connection(netjobs_env):
    """A child must not reuse a pooled connection inherited from its parent."""
    from netjobs.db.engine import get_engine

    with get_engine().connect() as conn:
        parent_owner = conn.execute(text("SELECT current_setting('application_name')")).scalar()
    assert parent_owner == f"netjobs[{os.getpid()}]"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_connection_owner, args=(queue,))
    child.start()
    child.join(30)
    child_pid, child_owner = queue.get(timeout=5)
    assert child.exitcode == 0 and child_pid != os.getpid()
    assert child_owner == f"netjobs[{child_pid}]"
    with get_engine().connect() as conn:  # the parent's pool still works after the fork
        assert conn.execute(text("SELECT current_setting('application_name')")).scalar() == parent_owner


def test_prefork_worker_children_do_concurrent_database_work_without_sharing(worker, celery_app):
    from celery import group

    results = group(celery_app.signature("netjobs.diag.db_roundtrip", args=[50]) for _ in range(20))().get(timeout=120)
    by_pid: dict[int, set[int]] = {}
    for r in results:
        by_pid.setdefault(r["pid"], set()).update(r["backends"])
    assert len(by_pid) == 2, "both prefork children should have served tasks"
    first, second = by_pid.values()
    assert not first & second, "two processes used the same PostgreSQL backend connection"
    log = worker.log()
    for symptom in ("lost synchronization", "server closed the connection", "SSL SYSCALL", "DatabaseError"):
        assert symptom not in log
