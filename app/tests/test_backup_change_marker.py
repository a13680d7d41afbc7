"""Backups skip the full read when the device's change marker is as stored (issue 13), proved from the
simulated device's side: which commands it was sent. Real SSH (netjobs.devsim), real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import inspect, text

from netjobs.config import get_settings
from netjobs.platforms import CHANGE_MARKERS, RUNNING_CONFIG_COMMANDS, find_change_marker
from netjobs.services.backup import backup_device
from tests.support.cli import invoke
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture

MARKER_PLATFORMS = ["cisco_ios", "juniper_junos", "linux"]


def reads(device) -> tuple[int, int]:
    """(full reads, marker checks) the simulated device answered since the last call."""
    sent = list(device.spec.commands)
    device.spec.commands.clear()
    marker = CHANGE_MARKERS.get(device.spec.platform)
    return (sent.count(RUNNING_CONFIG_COMMANDS[device.spec.platform]),
            sent.count(marker.command) if marker else 0)


def rows(engine, device_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, content_hash, changed, full_read, change_marker, task_id "
                                 "FROM config_snapshots WHERE device_id = :d ORDER BY id"), {"d": device_id}).all()


def with_hours(hours: int):
    return dataclasses.replace(get_settings(), backup_full_read_hours=hours)


@pytest.mark.parametrize("platform", MARKER_PLATFORMS)
def test_unchanged_device_is_checked_by_its_marker_and_a_changed_one_read_in_full(db, sim_lab, platform):
    from netjobs.services.archive import config_log, resolve

    device = sim_lab.device(platform)
    device_id = add_device_row(db, device)
    first = backup_device(device.name, task_id="t-1")
    assert (first.status, first.full_read) == ("changed", True)
    assert reads(device) == (1, 1)  # the first backup reads both: the marker is stored for next time

    second = backup_device(device.name, task_id="t-2")
    assert (second.status, second.full_read, second.content_hash) == ("unchanged", False, first.content_hash)
    assert reads(device) == (0, 1)  # the device never printed its configuration

    device.set_body(device.spec.body().replace(device.name, device.name + "-renamed", 1))
    third = backup_device(device.name, task_id="t-3")
    assert (third.status, third.full_read, third.lines_added, third.lines_removed) == ("changed", True, 1, 1)
    assert reads(device) == (1, 1)

    stored = rows(db, device_id)
    assert [(r.changed, r.full_read, r.task_id) for r in stored] == [
        (True, True, "t-1"), (False, False, "t-2"), (True, True, "t-3")]
    assert stored[0].content_hash == stored[1].content_hash and stored[0].change_marker == stored[1].change_marker
    assert find_change_marker(platform, stored[1].change_marker) == stored[1].change_marker
    # What reads "the last backup" sees the marker check as one.
    assert resolve(device.name, str(second.snapshot_id)).content_hash == first.content_hash
    assert [r.revision for r in config_log(device.name, include_unchanged=True)] == \
        [third.snapshot_id, second.snapshot_id, first.snapshot_id]


def test_device_without_a_marker_is_always_read_in_full(db, sim_lab):
    platform = "arista_eos"
    device = sim_lab.device(platform)
    add_device_row(db, device)
    backup_device(device.name, task_id="t-1")
    again = backup_device(device.name, task_id="t-2")
    assert (again.status, again.full_read) == ("unchanged", True)
    assert reads(device) == (2, 0)


def test_stale_full_read_changed_by_and_full_force_a_full_read(db, sim_lab):
    device = sim_lab.device("cisco_ios")
    device_id = add_device_row(db, device)
    backup_device(device.name, task_id="t-1")
    reads(device)

    assert backup_device(device.name, task_id="t-by", changed_by="alice").full_read  # the device said it changed
    assert backup_device(device.name, task_id="t-full", full=True).full_read
    assert reads(device) == (2, 2)

    off = backup_device(device.name, task_id="t-off", settings=with_hours(0))  # 0: every backup in full
    assert off.full_read and reads(device) == (1, 0)  # not even the marker is asked
    # So the newest snapshot has no marker to compare with: one more full read stores it.
    assert backup_device(device.name, task_id="t-restored").full_read
    assert not backup_device(device.name, task_id="t-fresh").full_read
    assert reads(device) == (1, 2)

    with db.begin() as conn:  # the last full read is now 25 hours old
        conn.execute(text("UPDATE config_snapshots SET collected_at = collected_at - interval '25 hours' "
                          "WHERE device_id = :d"), {"d": device_id})
    assert backup_device(device.name, task_id="t-stale", settings=with_hours(24)).full_read
    assert reads(device) == (1, 1)
    assert not backup_device(device.name, task_id="t-young", settings=with_hours(24)).full_read
    by_task = {r.task_id: r for r in rows(db, device_id)}
    assert by_task["t-by"].change_marker == by_task["t-1"].change_marker  # the marker is kept on full reads too
    assert by_task["t-off"].change_marker is None


def test_redelivered_marker_check_adds_no_snapshot(db, sim_lab):
    device = sim_lab.device("juniper_junos")
    device_id = add_device_row(db, device)
    backup_device(device.name, task_id="t-1")
    check = backup_device(device.name, task_id="t-2")
    again = backup_device(device.name, task_id="t-2")
    assert not check.full_read and again.as_dict() == check.as_dict()
    assert len(rows(db, device_id)) == 2


def test_a_newer_snapshot_without_the_marker_forces_a_full_read(db, sim_lab):
    """Another host (or the previous release) archived the device after us: its row is the newest."""
    from netjobs.services.archive import store_snapshot
    from netjobs.services.backup import content_hash

    device = sim_lab.device("cisco_ios")
    device_id = add_device_row(db, device)
    backup_device(device.name, task_id="t-1")
    store_snapshot(device_id, "hostname other\n", content_hash("hostname other\n"), "t-elsewhere")
    reads(device)
    after = backup_device(device.name, task_id="t-2")
    assert (after.status, after.full_read) == ("changed", True) and reads(device) == (1, 1)


@pytest.mark.parametrize("output", [
    "! No configuration change since last restart",
    "                 ^\n% Invalid input detected at '^' marker.",
    "", "\n\n", "! Last configuration change at ",
])
def test_marker_output_that_says_nothing_is_no_marker(output):
    assert find_change_marker("cisco_ios", output) is None


def test_marker_lines_are_found_per_platform():
    assert find_change_marker("cisco_ios", "\r\n! Last configuration change at 10:11:12 UTC Mon Mar 4 2024 by admin\r\n") \
        == "! Last configuration change at 10:11:12 UTC Mon Mar 4 2024 by admin"
    assert find_change_marker("cisco_nxos", "!Running configuration last done at: Mon Mar  4 10:11:12 2024") \
        == "!Running configuration last done at: Mon Mar  4 10:11:12 2024"
    assert find_change_marker("juniper_junos", "## Last commit: 2024-03-04 10:11:12 UTC by admin\n\n") \
        == "## Last commit: 2024-03-04 10:11:12 UTC by admin"
    digest = "0" * 63 + "a"
    assert find_change_marker("linux", f"{digest}  /etc/network/interfaces\n") == f"{digest}  /etc/network/interfaces"
    assert find_change_marker("arista_eos", "! Time: Mon Mar  4 10:11:12 2024") is None


@pytest.mark.parametrize("output", [
    "sha256sum: /etc/network/interfaces: Permission denied",
    "sha256sum: /etc/network/interfaces: No such file or directory",
    "-bash: sha256sum: command not found",
    "0123  /etc/network/interfaces",
    "0" * 64 + "  /etc/hostname",
])
def test_linux_digest_output_that_is_not_the_file_digest_is_no_marker(output):
    assert find_change_marker("linux", output) is None


def test_backup_task_and_cli_take_full(worker, db, celery_app, sim_lab):
    device = sim_lab.device("cisco_ios")
    add_device_row(db, device)
    assert celery_app.send_task("netjobs.backup.device", args=[device.name]).get(timeout=60)["full_read"]
    checked = celery_app.send_task("netjobs.backup.device", args=[device.name]).get(timeout=60)
    forced = celery_app.send_task("netjobs.backup.device", args=[device.name], kwargs={"full": True}).get(timeout=60)
    assert (checked["status"], checked["full_read"], forced["full_read"]) == ("unchanged", False, True)

    for args, full_read in ((["--full"], True), ([], False)):
        result = invoke("backup", device.name, *args, "--wait")
        assert result.exit_code == 0, result.stderr
        assert json.loads("\n".join(result.stdout.splitlines()[1:]))["full_read"] is full_read
    assert reads(device) == (3, 5)  # every backup asked the marker; the first, --full and kwargs full read it all


def test_migration_0007_downgrades_and_upgrades(db):
    from alembic import command

    from netjobs.db.engine import get_engine
    from netjobs.db.migrate import alembic_config, current_revision, upgrade

    add_device_row(db, name="mig-7")

    def columns():
        return {c["name"] for c in inspect(get_engine()).get_columns("config_snapshots")}

    cfg = alembic_config()
    try:
        with get_engine().begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0006")
        assert current_revision() == "0006" and not {"change_marker", "full_read"} & columns()
        with db.begin() as conn:  # a row the previous release writes
            conn.execute(text("INSERT INTO config_snapshots (device_id, content_hash, changed) "
                              "SELECT id, 'abc', true FROM devices WHERE name = 'mig-7'"))
    finally:
        upgrade()
    assert current_revision() == "0007" and {"change_marker", "full_read"} <= columns()
    with db.connect() as conn:
        row = conn.execute(text("SELECT full_read, change_marker FROM config_snapshots WHERE content_hash = 'abc'")).one()
    assert (row.full_read, row.change_marker) == (True, None)
