"""`netjobs doctor`, `queues` and `workers` against the session's real services and worker."""

from __future__ import annotations

import json
import time

from sqlalchemy import text

from tests.support.cli import invoke, run_netjobs


def checks_by_name(result) -> dict[str, dict]:
    return {c["name"]: c for c in result.json()["checks"]}


def test_doctor_names_a_queue_nobody_consumes(worker, db, netjobs_env, redis_client):
    redis_client.delete("netjobs:redbeat:lock")  # no beat in this test
    result = run_netjobs("doctor", "--json", "--timeout", "1", env={**netjobs_env, "NETJOBS_EXTRA_QUEUES": "audit"})
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    checks = checks_by_name(result)
    assert result.json()["ok"] is False
    assert checks["queue audit consumed"]["ok"] is False
    assert "audit" in checks["queue audit consumed"]["detail"]
    for queue in ("default", "backup", "network", "heavy"):
        assert checks[f"queue {queue} consumed"]["ok"], checks[f"queue {queue} consumed"]
        assert worker.hostname in checks[f"queue {queue} consumed"]["detail"]
    for name in ("broker reachable", "redis maxmemory-policy", "redis persistence", "database reachable",
                 "database migrated", "dead letters"):
        assert checks[name]["ok"], checks[name]
    assert checks["beat lock"]["ok"] is False and "not held" in checks["beat lock"]["detail"]

    human = run_netjobs("doctor", "--timeout", "1", env={**netjobs_env, "NETJOBS_EXTRA_QUEUES": "audit"})
    assert human.exit_code == 1
    assert "FAIL queue audit consumed: no worker consumes queue 'audit'" in human.stdout


def test_doctor_passes_when_all_is_well_and_flags_dead_letters_and_backlogs(worker, db, netjobs_env, redis_client,
                                                                           monkeypatch):
    from netjobs.config import reset_settings

    # A lock as a live beat keeps it: fresh TTL, and the holder's heartbeat.
    redis_client.set("netjobs:redbeat:lock", "test-token", px=90_000)
    redis_client.set("netjobs:redbeat:lock:holder", json.dumps({"host": "h", "pid": 1, "ticked_at": time.time()}),
                     ex=60)
    try:
        healthy = invoke("doctor", "--json", "--timeout", "1")
        assert healthy.exit_code == 0, healthy.stdout
        assert all(c["ok"] for c in healthy.json()["checks"])

        with db.begin() as conn:
            conn.execute(text("INSERT INTO dead_letters (task_id, task_name, args, kwargs, error, retries) "
                              "VALUES ('t-1', 'netjobs.diag.fail', '[]', '{}', 'ValidationError: x', 0)"))
        # A queue nobody consumes (so the session worker never takes its messages) with a backlog.
        monkeypatch.setenv("NETJOBS_EXTRA_QUEUES", "doctor-backlog")
        monkeypatch.setenv("NETJOBS_BACKLOG_THRESHOLD", "2")
        reset_settings()
        redis_client.rpush("doctor-backlog", "a", "b", "c")
        try:
            flagged = invoke("doctor", "--json", "--timeout", "1")
        finally:
            redis_client.delete("doctor-backlog")
        checks = checks_by_name(flagged)
        assert flagged.exit_code == 1
        assert checks["queue doctor-backlog backlog"]["ok"] is False
        assert "3 waiting, over the threshold of 2" in checks["queue doctor-backlog backlog"]["detail"]
        assert checks["queue default backlog"]["ok"]
        assert checks["dead letters"]["ok"] is False and "1 waiting" in checks["dead letters"]["detail"]
        assert checks["dead letters"]["severity"] == "warning"
    finally:
        redis_client.delete("netjobs:redbeat:lock")
        monkeypatch.undo()
        reset_settings()


def test_queues_and_workers_commands(worker, netjobs_env):
    queues = {q["queue"]: q for q in invoke("queues", "--json", "--timeout", "1").json()}
    assert set(queues) >= {"default", "backup", "network", "heavy"}
    assert all(worker.hostname in q["consumers"] for q in queues.values())
    extra_env = {**netjobs_env, "NETJOBS_EXTRA_QUEUES": "audit"}
    extra = run_netjobs("queues", "--json", "--timeout", "1", env=extra_env).json()
    assert {"queue": "audit", "length": 0, "consumers": []} in extra
    workers = invoke("workers", "--json", "--timeout", "1")
    assert workers.exit_code == 0
    (mine,) = [w for w in workers.json() if w["name"] == worker.hostname]
    assert mine["ok"] and set(mine["queues"]) == {"default", "backup", "network", "heavy"}
    table = invoke("workers", "--timeout", "1")
    assert worker.hostname in table.stdout


def test_db_upgrade_is_idempotent_and_current_reports_head(netjobs_env):
    first = invoke("db", "upgrade")
    second = invoke("db", "upgrade")
    assert first.exit_code == second.exit_code == 0
    assert "database at revision" in second.stderr and "upgraded from" not in second.stderr
    current = invoke("db", "current", "--json")
    assert current.exit_code == 0 and current.json()["up_to_date"] is True


def test_doctor_reports_unreachable_services_without_secrets(netjobs_env):
    env = {**netjobs_env, "NETJOBS_BROKER_URL": "redis://netjobs:s3cret@127.0.0.1:1/0",
           "NETJOBS_DATABASE_URL": "postgresql+psycopg2://netjobs:s3cret@127.0.0.1:1/netjobs"}
    result = run_netjobs("doctor", "--json", "--timeout", "1", env=env)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "s3cret" not in result.stdout
    checks = checks_by_name(result)
    assert checks["broker reachable"]["ok"] is False
    assert "redis://netjobs:***@127.0.0.1:1/0" in checks["broker reachable"]["detail"]
    assert checks["database reachable"]["ok"] is False
    assert "127.0.0.1:1" in checks["database reachable"]["detail"]
    assert checks["queue consumers"]["ok"] is False
    assert "dead letters" not in checks  # not asked of a database that is not there
