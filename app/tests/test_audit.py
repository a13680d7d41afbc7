"""Who ran what: job_runs.submitted_by, the audit log of operator changes, and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.conftest import wait_until
from tests.support.beat import beat_process
from tests.support.cli import invoke, run_netjobs
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture


@pytest.mark.slow
def test_jobs_record_the_person_behind_sudo_and_fan_out_members_inherit_it(worker, db, sim_lab, netjobs_env):
    for platform in ("cisco_ios", "arista_eos"):
        add_device_row(db, sim_lab.device(platform), site="audit")
    as_alice = {**netjobs_env, "SUDO_USER": "alice", "NETJOBS_SSH_HOST_KEY_POLICY": "trust-on-first-use"}
    ping = run_netjobs("submit", "netjobs.diag.ping", "--wait", env=as_alice)
    assert ping.exit_code == 0, ping.stderr
    backup = run_netjobs("backup", "--all", "--site", "audit", "--wait", env=as_alice, timeout=180)
    assert backup.exit_code == 0, backup.stderr

    from netjobs.history import recorder

    recorder.flush()
    runs = wait_until(lambda: (rows := run_netjobs("runs", "--by", "alice", "--json", "--limit", "100",
                                                   env=netjobs_env).json()) and len(rows) >= 4 and rows, 10,
                      message="the history rows of alice's jobs")
    by_task = {}
    for run in runs:
        by_task.setdefault(run["task_name"], []).append(run["submitted_by"])
    # The ping, the fan-out and its two members: all alice's, though a worker published the members.
    assert by_task["netjobs.backup.device"] == ["cli:alice", "cli:alice"], by_task
    assert by_task["netjobs.backup.all"] == ["cli:alice"] and by_task["netjobs.diag.ping"] == ["cli:alice"]
    assert run_netjobs("runs", "--by", "bob", "--json", env=netjobs_env).json() == []
    assert len(run_netjobs("runs", "--by", "cli:alice", "--json", "--limit", "100", env=netjobs_env).json()) == len(runs)


@pytest.mark.slow
def test_jobs_a_schedule_starts_are_recorded_as_the_schedules(worker, db, netjobs_env):
    name = f"audit-{uuid.uuid4().hex[:8]}"
    with beat_process(netjobs_env):
        assert invoke("schedule", "add", name, "netjobs.diag.ping", "--every", "1s").exit_code == 0
        wait_until(lambda: run_netjobs("runs", "--by", f"beat:{name}", "--json", env=netjobs_env).json(), 20,
                   message="a run started by the schedule")
        assert invoke("schedule", "remove", name).exit_code == 0


def test_operator_changes_are_in_the_audit_log_with_who_and_what(db, monkeypatch):
    monkeypatch.setenv("SUDO_USER", "carol")
    assert invoke("devices", "add", "edge-7", "192.0.2.7", "--platform", "cisco_ios").exit_code == 0
    assert invoke("schedule", "add", "audit-nightly", "netjobs.diag.ping", "--every", "1d").exit_code == 0
    assert invoke("schedule", "disable", "audit-nightly").exit_code == 0
    assert invoke("schedule", "remove", "audit-nightly").exit_code == 0
    assert invoke("devices", "remove", "edge-7", "--yes").exit_code == 0
    monkeypatch.setenv("SUDO_USER", "dave")
    assert invoke("schedule", "disable", "config-backup-all").exit_code == 0  # a default entry: an override
    assert invoke("schedule", "enable", "config-backup-all").exit_code == 0

    carol = invoke("audit", "--by", "carol", "--json").json()
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(carol)] == [
        ("cli:carol", "device.add", "edge-7"),
        ("cli:carol", "schedule.add", "audit-nightly"),
        ("cli:carol", "schedule.disable", "audit-nightly"),
        ("cli:carol", "schedule.remove", "audit-nightly"),
        ("cli:carol", "device.remove", "edge-7"),
    ]
    assert carol[0]["details"] == {} and carol[-1]["details"]["address"] == "192.0.2.7"  # newest first
    assert carol[-2]["details"]["task"] == "netjobs.diag.ping" and carol[-2]["details"]["schedule"] == "every 1d"
    assert [e["action"] for e in invoke("audit", "--by", "dave", "--action", "schedule.*", "--json").json()] == \
        ["schedule.enable", "schedule.disable"]
    table = invoke("audit", "--since", "1h")
    assert table.exit_code == 0 and "cli:carol" in table.stdout and "schedule.remove" in table.stdout
    assert invoke("audit", "--by", "", "--json").exit_code == 2


def test_api_tokens_are_shown_once_stored_hashed_and_can_be_revoked(db, monkeypatch):
    from netjobs.services.tokens import authenticate

    monkeypatch.setenv("SUDO_USER", "erin")
    created = invoke("tokens", "create", "netbox-hook", "--user", "netbox", "--role", "operator", "--json")
    assert created.exit_code == 0, created.stderr
    token = created.json()["token"]
    assert token.startswith("nj_") and len(token) > 40
    user = authenticate(token)
    assert (user.username, user.role, user.token_name, user.actor) == ("netbox", "operator", "netbox-hook", "api:netbox")
    assert user.may("viewer") and user.may("operator") and not user.may("admin")
    assert authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert authenticate("") is None and authenticate(None) is None

    with db.connect() as conn:
        stored = conn.execute(text("SELECT token_hash, created_by, last_used_at FROM api_tokens")).one()
    assert token not in stored.token_hash and len(stored.token_hash) == 64
    assert stored.created_by == "cli:erin" and stored.last_used_at is not None
    listing = invoke("tokens", "list", "--json")
    assert token not in listing.stdout and listing.json()[0]["active"] is True

    assert invoke("tokens", "create", "netbox-hook", "--user", "netbox", "--role", "viewer").exit_code == 2
    assert invoke("tokens", "create", "bad name", "--user", "netbox", "--role", "viewer").exit_code == 2
    assert invoke("tokens", "create", "x", "--user", "netbox", "--role", "root").exit_code == 2
    assert invoke("tokens", "revoke", "nope").exit_code == 2
    assert invoke("tokens", "revoke", "netbox-hook").exit_code == 0
    assert authenticate(token) is None
    assert invoke("tokens", "list", "--json").json()[0]["active"] is False

    short = invoke("tokens", "create", "ci", "--user", "ci", "--role", "viewer", "--expires", "1s", "--json").json()
    with db.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET expires_at = :t WHERE name = 'ci'"),
                     {"t": datetime.now(timezone.utc) - timedelta(seconds=1)})
    assert authenticate(short["token"]) is None
    actions = [(e["action"], e["target"]) for e in invoke("audit", "--by", "erin", "--json").json()]
    assert actions == [("token.create", "ci"), ("token.revoke", "netbox-hook"), ("token.create", "netbox-hook")]
