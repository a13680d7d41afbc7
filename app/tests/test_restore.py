"""`netjobs schedule export|import` and `netjobs db known` (cli/restore.py), against real Redis and PostgreSQL."""

from __future__ import annotations

import json
import uuid

from netjobs.services import schedules
from tests.support.cli import invoke


def test_schedules_survive_export_and_import_into_an_empty_redis(celery_app, redis_client, tmp_path):
    name = f"restore-{uuid.uuid4().hex[:6]}"
    prefix = celery_app.conf.redbeat_key_prefix
    schedules.add_schedule(celery_app, name, "netjobs.diag.sleep", schedules.parse_schedule_spec(cron="*/5 * * * *"),
                           kwargs={"seconds": 2}, queue="default", expires=120)
    schedules.set_enabled(celery_app, name, False)
    assert invoke("schedule", "disable", "health-snapshot").exit_code == 0
    try:
        exported = invoke("schedule", "export")
        assert exported.exit_code == 0, exported.stderr
        data = exported.json()
        assert data["format"] == "netjobs-schedules/1"
        assert name in [e["name"] for e in data["entries"]]
        # Default entries are left to beat; only the override travels.
        assert "health-snapshot" not in [e["name"] for e in data["entries"]]
        assert data["overrides"]["health-snapshot"] == {"enabled": False}
        before = schedules.get_schedule(celery_app, name)

        # A fresh Redis: the entry, its place in the schedule and the overrides are gone.
        schedules.remove_schedule(celery_app, name)
        redis_client.delete(f"{prefix}:overrides")
        assert name not in {v.name for v in schedules.list_schedules(celery_app)}

        path = tmp_path / "schedules.json"
        path.write_text(exported.stdout)
        imported = invoke("schedule", "import", str(path))
        assert imported.exit_code == 0, imported.stderr
        assert f"imported {len(data['entries'])} schedule(s) and {len(data['overrides'])} override(s)" in imported.stderr
        after = schedules.get_schedule(celery_app, name)
        assert (after.task, after.schedule, after.kwargs, after.options, after.enabled) == (
            before.task, before.schedule, before.kwargs, before.options, before.enabled)
        assert after.last_run == before.last_run
        assert redis_client.zscore(f"{prefix}:schedule", f"{prefix}{name}") is not None
        assert json.loads(redis_client.hget(f"{prefix}:overrides", "health-snapshot")) == {"enabled": False}
        # Importing again replaces rather than duplicates.
        assert invoke("schedule", "import", str(path)).exit_code == 0
        assert [v.name for v in schedules.list_schedules(celery_app)].count(name) == 1
    finally:
        redis_client.hdel(f"{prefix}:overrides", "health-snapshot")
        try:
            schedules.remove_schedule(celery_app, name)
        except Exception:
            pass


def test_schedule_import_refuses_other_files(celery_app, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"entries": []}))
    refused = invoke("schedule", "import", str(path))
    assert refused.exit_code == 2 and "not a schedule export" in refused.stderr
    path.write_text(json.dumps({"format": "netjobs-schedules/1",
                                "entries": [{"name": "reachability-sweep", "definition": {}}]}))
    refused = invoke("schedule", "import", str(path))
    assert refused.exit_code == 2 and "default schedule entry" in refused.stderr
    path.write_text("{not json")
    refused = invoke("schedule", "import", str(path))
    assert refused.exit_code == 2 and "not JSON" in refused.stderr


def test_db_known_accepts_head_and_ancestors_only(netjobs_env):
    from netjobs.db.migrate import head_revision

    head = head_revision()
    ok = invoke("db", "known", head)
    assert ok.exit_code == 0 and f"revision {head}: known" in ok.stdout
    # The first migration: a dump that old is restored, then `netjobs db upgrade` brings it to head.
    assert invoke("db", "known", "0001").exit_code == 0
    unknown = invoke("db", "known", "ffffdeadbeef")
    assert unknown.exit_code == 1 and "revision ffffdeadbeef: unknown" in unknown.stdout
