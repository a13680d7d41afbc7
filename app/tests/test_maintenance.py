"""History retention: old rows go in batches, recent rows stay."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import zip_longest

import pytest
from sqlalchemy import text

OLD, RECENT = 100, 1  # days ago


def seed(engine, old: int, recent: int) -> None:
    """``old`` rows 100 days old and ``recent`` rows 1 day old in each purged table."""
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        device_id = conn.execute(text(
            "INSERT INTO devices (name, mgmt_address, platform) VALUES ('m1', '10.0.0.1', 'linux') RETURNING id"
        )).scalar_one()
        # Interleave ages in id order for job_runs and dead letters (their purge uses the time index),
        # keep the results tables in insertion order as a sweep or check writes them.
        interleaved = [age for pair in zip_longest([OLD] * old, [RECENT] * recent) for age in pair if age]
        for i, age in enumerate(interleaved):
            at = now - timedelta(days=age, minutes=i)
            conn.execute(text(
                "INSERT INTO job_runs (task_id, task_name, state, state_at, finished_at) "
                "VALUES (:id, 'netjobs.diag.ping', 'SUCCESS', :at, :at)"), {"id": f"run-{age}-{i}", "at": at})
            conn.execute(text(
                "INSERT INTO dead_letters (task_id, task_name, args, kwargs, error, retries, failed_at) "
                "VALUES (:id, 'netjobs.diag.fail', '[]', '{}', 'boom', 0, :at)"), {"id": f"dl-{age}-{i}", "at": at})
        for i, age in enumerate([OLD] * old + [RECENT] * recent):
            at = now - timedelta(days=age, minutes=-i)
            conn.execute(text(
                "INSERT INTO reachability_results (sweep_id, address, port, method, reachable, checked_at) "
                "VALUES ('s', :address, 22, 'tcp', true, :at)"), {"address": f"10.0.{age}.{i}", "at": at})
            conn.execute(text(
                "INSERT INTO compliance_results (run_id, device_id, rule, passed, checked_at) "
                "VALUES ('c', :device, :rule, true, :at)"), {"device": device_id, "rule": f"rule-{age}-{i}", "at": at})


def ages_left(engine) -> dict[str, list[int]]:
    """Ages in days of the seeded rows left (job_runs may also get rows from other tests' late history)."""
    queries = {
        "job_runs": "SELECT state_at FROM job_runs WHERE task_id LIKE 'run-%'",
        "dead_letters": "SELECT failed_at FROM dead_letters",
        "reachability_results": "SELECT checked_at FROM reachability_results",
        "compliance_results": "SELECT checked_at FROM compliance_results",
    }
    now = datetime.now(timezone.utc)
    with engine.connect() as conn:
        return {table: sorted(round((now - at) / timedelta(days=1)) for at in conn.execute(text(sql)).scalars())
                for table, sql in queries.items()}


def test_purge_deletes_old_rows_in_batches_and_keeps_recent_ones(db):
    from netjobs.services.maintenance import purge_history

    seed(db, old=7, recent=3)
    summary = purge_history(older_than_days=30, batch=2)
    assert {k: v for k, v in summary.items() if k != "cutoff"} == {
        "older_than_days": 30, "job_runs": 7, "dead_letters": 7, "reachability_results": 7, "compliance_results": 7,
    }
    cutoff = datetime.fromisoformat(summary["cutoff"])
    assert abs((datetime.now(timezone.utc) - cutoff) - timedelta(days=30)) < timedelta(minutes=1)
    assert ages_left(db) == {table: [RECENT] * 3 for table in
                             ("job_runs", "dead_letters", "reachability_results", "compliance_results")}
    # Nothing old is left: a second purge deletes nothing.
    again = purge_history(older_than_days=30, batch=2)
    assert [again[t] for t in ("job_runs", "dead_letters", "reachability_results", "compliance_results")] == [0] * 4


def test_purge_defaults_to_the_retention_setting(db):
    from netjobs.config import get_settings
    from netjobs.services.maintenance import purge_history

    seed(db, old=2, recent=2)
    assert get_settings().history_retention_days == 90
    summary = purge_history()
    assert (summary["older_than_days"], summary["job_runs"], summary["compliance_results"]) == (90, 2, 2)


@pytest.mark.parametrize("days", [0, -1, "7", 2.5, True])
def test_purge_refuses_bad_ages(days):
    from netjobs.errors import ValidationError
    from netjobs.services.maintenance import purge_history

    with pytest.raises(ValidationError, match="whole number of days from 1 to 36500"):
        purge_history(days)


def test_purge_task_on_the_real_worker(worker, db, celery_app):
    seed(db, old=3, recent=2)
    summary = celery_app.send_task("netjobs.maintenance.purge_history", kwargs={"days": 50}).get(timeout=60)
    assert [summary[t] for t in ("dead_letters", "reachability_results", "compliance_results")] == [3, 3, 3]
    # job_runs also holds this task's own (recent) row by now; the 3 old seeded runs are gone.
    assert summary["job_runs"] == 3
    left = ages_left(db)
    assert left["dead_letters"] == left["compliance_results"] == [RECENT, RECENT]
    assert OLD not in left["job_runs"]
