"""One config archive for the fleet: two workers, the `configs` CLI, the git view, honest exit codes."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests.support.cli import invoke, run_netjobs
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture
from tests.support.servers import celery_worker, redis_server

RULES = """
rules:
  - name: ssh-v2
    require: ["ip ssh version 2"]
"""


def archive_content(engine, device: str, content: str, age_minutes: int = 0, task_id: str | None = None) -> int:
    from netjobs.services.archive import store_snapshot
    from netjobs.services.backup import content_hash

    with engine.connect() as conn:
        device_id = conn.execute(text("SELECT id FROM devices WHERE name = :n"), {"n": device}).scalar_one()
    snapshot_id = store_snapshot(device_id, content, content_hash(content), task_id).snapshot_id
    with engine.begin() as conn:
        conn.execute(text("UPDATE config_snapshots SET collected_at = now() - make_interval(mins => :m) "
                          "WHERE id = :id"), {"m": age_minutes, "id": snapshot_id})
    return snapshot_id


@pytest.mark.slow
def test_two_worker_hosts_back_up_into_one_archive_that_both_see(db, sim_lab, netjobs_env, tmp_path):
    """Two workers with their own state directories (two hosts) share the backup queue."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings
    from netjobs.services.archive import export_git
    from netjobs.services.compliance import run_compliance

    devices = [sim_lab.device(p) for p in ("cisco_ios", "arista_eos", "juniper_junos", "linux") * 3]
    for device in devices:
        add_device_row(db, device, site="two-hosts")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}
        app = Celery("archive-client")
        app.conf.update(celery_settings(load_settings(env)))
        host_env = {name: {**env, "NETJOBS_BACKUP_REPO": str(tmp_path / name / "config-backups")}
                    for name in ("host-a", "host-b")}
        with celery_worker(host_env["host-a"], queues="backup", pool="threads", concurrency=2,
                           hostname="backup@host-a") as a, \
                celery_worker(host_env["host-b"], queues="backup", pool="threads", concurrency=2,
                              hostname="backup@host-b") as b:
            summary = app.send_task("netjobs.backup.all", kwargs={"site": "two-hosts"}).get(timeout=240)
            logs = {"host-a": a.log(), "host-b": b.log()}
        app.close()
    assert (summary["devices"], summary["backed_up"], summary["failed"]) == (12, 12, 0)
    took = {host: len(re.findall(r"Task netjobs\.backup\.device\[\S+\] received", log)) for host, log in logs.items()}
    assert sum(took.values()) == 12 and all(took.values()), took

    with db.connect() as conn:
        rows = conn.execute(text("SELECT count(*), count(DISTINCT device_id) FROM config_snapshots s "
                                 "JOIN config_contents c USING (content_hash)")).one()
    assert tuple(rows) == (12, 12)  # every snapshot points at content every host reads
    checked = run_compliance(rules_path=rules, run_id="two-hosts")
    assert (checked["devices"], checked["checked"], checked["skipped"]) == (12, 12, 0)

    with db.begin() as conn:  # old enough for the git view
        conn.execute(text("UPDATE config_snapshots SET collected_at = now() - interval '5 minutes'"))
    heads = {host: export_git(tmp_path / host / "config-backups") for host in ("host-a", "host-b")}
    assert heads["host-a"] == heads["host-b"] and heads["host-a"]["exported"] == 12


@pytest.fixture
def history(db):
    add_device_row(db, name="edge-1", platform="cisco_ios")
    first = archive_content(db, "edge-1", "hostname edge-1\nip ssh version 2\n", age_minutes=120, task_id="t1")
    archive_content(db, "edge-1", "hostname edge-1\nip ssh version 2\n", age_minutes=90, task_id="t2")
    second = archive_content(db, "edge-1", "hostname edge-1\nip ssh version 2\nntp server 10.0.0.1\n",
                             age_minutes=60, task_id="t3")
    third = archive_content(db, "edge-1", "hostname edge-1\nip ssh version 1\nntp server 10.0.0.1\n", task_id="t4")
    return {"first": first, "second": second, "third": third}


def test_configs_log_show_diff_and_changed(history, db):
    log = invoke("configs", "log", "edge-1", "--json").json()
    assert [r["revision"] for r in log] == [history["third"], history["second"], history["first"]]
    assert [(r["lines_added"], r["lines_removed"]) for r in log] == [(1, 1), (1, 0), (2, 0)]
    assert len(invoke("configs", "log", "edge-1", "--all", "--json").json()) == 4

    assert invoke("configs", "show", "edge-1").stdout == "hostname edge-1\nip ssh version 1\nntp server 10.0.0.1\n"
    shown = invoke("configs", "show", "edge-1", "--at", str(history["first"]))
    assert shown.exit_code == 0 and shown.stdout == "hostname edge-1\nip ssh version 2\n"
    content_hash = log[1]["content_hash"]
    assert "ntp server" in invoke("configs", "show", "edge-1", "--at", content_hash[:10]).stdout
    from datetime import datetime, timedelta, timezone

    an_hour_and_a_half_ago = (datetime.now(timezone.utc) - timedelta(minutes=75)).strftime("%Y-%m-%dT%H:%M")
    assert invoke("configs", "show", "edge-1", "--at", an_hour_and_a_half_ago).stdout.endswith("version 2\n")

    last = invoke("configs", "diff", "edge-1")  # the last change
    assert last.exit_code == 0
    assert last.stdout.splitlines()[2:] == ["@@ -1,3 +1,3 @@", " hostname edge-1", "-ip ssh version 2",
                                            "+ip ssh version 1", " ntp server 10.0.0.1"]
    assert "\x1b[" not in last.stdout  # no colour when not on a terminal
    assert "\x1b[32m+ip ssh version 1" in invoke("configs", "diff", "edge-1", "--color").stdout
    span = invoke("configs", "diff", "edge-1", str(history["first"]), str(history["second"]), "--json").json()
    assert span["from"]["revision"] == history["first"] and span["to"]["revision"] == history["second"]
    assert "+ntp server 10.0.0.1" in span["diff"]

    changed = invoke("configs", "changed", "--since", "30m", "--json").json()
    assert [(c["device"], c["changes"], c["lines_added"], c["lines_removed"]) for c in changed] == [
        ("edge-1", 1, 1, 1)]
    assert len(invoke("configs", "changed", "--since", "1d", "--json").json()) == 1


@pytest.mark.parametrize("args, code, message", [
    (("configs", "log", "ghost"), 2, "unknown device 'ghost'"),
    (("configs", "show", "edge-1", "--at", "999999"), 2, "has no revision '999999'"),
    (("configs", "show", "edge-1", "--at", "yesterday-ish"), 2, "invalid revision 'yesterday-ish'"),
    (("configs", "show", "edge-1", "--at", "1999-01-01"), 2, "no configuration from 1999-01-01 or before"),
    (("configs", "diff", "edge-1", "abcdef0123"), 2, "has no revision 'abcdef0123'"),
    (("configs", "changed", "--since", "soon"), 2, "invalid --since 'soon'"),
])
def test_configs_bad_input_is_one_clear_error(history, args, code, message):
    result = run_netjobs(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_stale_git_lock_is_reported_then_cleared_by_the_next_export(history, db, tmp_path, netjobs_env):
    from netjobs.services.archive import export_git

    repo = tmp_path / "view"
    export_git(repo)
    (repo / ".git" / "index.lock").write_text("")  # as a git process killed mid-commit leaves it
    doctor = run_netjobs("doctor", "--json", "--timeout", "1", env={**netjobs_env, "NETJOBS_BACKUP_REPO": str(repo)})
    check = next(c for c in doctor.json()["checks"] if c["name"] == "config archive git view")
    assert not check["ok"] and ".git/index.lock" in check["detail"]
    with db.begin() as conn:
        conn.execute(text("UPDATE config_snapshots SET collected_at = now() - interval '2 hours'"))
    assert export_git(repo)["exported"] == 1  # the change that was too recent before
    assert not (repo / ".git" / "index.lock").exists()
    doctor = run_netjobs("doctor", "--json", "--timeout", "1", env={**netjobs_env, "NETJOBS_BACKUP_REPO": str(repo)})
    assert next(c for c in doctor.json()["checks"] if c["name"] == "config archive git view")["ok"]


def test_wait_and_compliance_exit_1_when_devices_failed_or_were_skipped(worker, db, celery_app, netjobs_env):
    from netjobs.config import get_settings

    add_device_row(db, name="good", platform="cisco_ios")
    add_device_row(db, name="bad", platform="cisco_ios")
    add_device_row(db, name="never-backed-up", platform="cisco_ios")
    archive_content(db, "good", "hostname good\nip ssh version 2\n")
    archive_content(db, "bad", "hostname bad\nip ssh version 1\n")
    rules = get_settings().compliance_rules
    rules.write_text(RULES)
    try:
        result = run_netjobs("compliance", "--wait", timeout=120)
        assert result.exit_code == 1, result.stdout + result.stderr
        assert "1 failed: bad" in result.stderr and "1 skipped: never-backed-up" in result.stderr
        result = run_netjobs("compliance", "--device", "good", "--wait", timeout=120)
        assert result.exit_code == 0, result.stdout + result.stderr
    finally:
        rules.unlink()
    # `netjobs wait` on a finished fan-out judges its summary the same way.
    summary_task = celery_app.send_task("netjobs.backup.summarize",
                                        args=[[{"device": "bad", "status": "failed", "error": "x"}]])
    summary_task.get(timeout=60)
    waited = run_netjobs("wait", summary_task.id, timeout=60)
    assert waited.exit_code == 1 and "1 failed: bad" in waited.stderr
