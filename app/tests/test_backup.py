"""Configuration backup: normalization, credentials, the archive and its git view, and backups over real SSH
(simulated devices) both in-process and through the real Celery worker."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from netjobs.config import load_settings
from netjobs.devsim.configs import generated_body, running_config
from netjobs.errors import NotFoundError, PermanentError, TransientError, is_transient
from netjobs.services.backup import backup_device, normalize_config, summarize_results
from netjobs.services.credentials import CredentialsError, credentials_for
from netjobs.services.gitrepo import device_filename, git
from tests.conftest import wait_until
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture
from tests.support.servers import free_port

PLATFORMS = ["cisco_ios", "arista_eos", "juniper_junos", "linux"]
BASE_ENV = {"NETJOBS_BROKER_URL": "redis://127.0.0.1:6379/0", "NETJOBS_DATABASE_URL": "postgresql://u:p@h/db"}


# --- normalization -------------------------------------------------------------------------------

VOLATILE = {
    "cisco_ios": ["Building configuration...", "Current configuration : 1234 bytes",
                  "! Last configuration change at 10:11:12 UTC Mon Mar 4 2024 by admin",
                  "! NVRAM config last updated at 10:11:12 UTC Mon Mar 4 2024", "ntp clock-period 17208119"],
    "arista_eos": ["! Command: show running-config", "! Time: Mon Mar  4 10:11:12 2024"],
    "juniper_junos": ["## Last commit: 2024-03-04 10:11:12 UTC by admin", "{master:0}"],
}
config_line = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).filter(
    lambda s: not s.lstrip().startswith(("!", "#", "{", "Building", "Current", "ntp clock", "Load for", "Time source"))
    and "uptime is" not in s
)


@given(platform=st.sampled_from(sorted(VOLATILE)), lines=st.lists(config_line, max_size=30), data=st.data())
def test_volatile_lines_anywhere_do_not_change_the_normalized_config(platform, lines, data):
    noisy = list(lines)
    for volatile in VOLATILE[platform]:
        noisy.insert(data.draw(st.integers(0, len(noisy))), volatile)
    crlf = data.draw(st.booleans())
    raw = ("\r\n" if crlf else "\n").join(noisy)
    assert normalize_config(platform, raw) == normalize_config(platform, "\n".join(lines))


@given(platform=st.sampled_from(PLATFORMS + ["cisco_nxos"]), raw=st.text(max_size=300))
def test_normalizing_twice_changes_nothing(platform, raw):
    once = normalize_config(platform, raw)
    assert normalize_config(platform, once) == once
    assert once == "" or (once.endswith("\n") and not once.endswith("\n\n"))


@given(lines=st.lists(config_line, min_size=1, max_size=20))
def test_real_configuration_lines_are_kept_in_order(lines):
    kept = normalize_config("cisco_ios", "\n".join(lines)).splitlines()
    assert [ln for ln in kept if ln] == [ln.rstrip() for ln in lines if ln.rstrip()]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_simulated_shows_normalize_to_the_same_text(platform):
    body = generated_body(platform, "R1")
    first = normalize_config(platform, running_config(platform, "R1", body, now=1_700_000_000))
    second = normalize_config(platform, running_config(platform, "R1", body, now=1_800_000_000.5))
    assert first == second
    assert "hostname R1" in first or "host-name R1" in first or "R1:" in first


def test_summary_counts_each_outcome():
    summary = summarize_results([
        {"device": "a", "status": "changed"}, {"device": "b", "status": "unchanged"},
        {"device": "d", "status": "failed", "error": "boom"}, {"device": "c", "status": "failed", "error": "x"},
    ])
    assert (summary["devices"], summary["backed_up"], summary["unchanged"], summary["failed"]) == (4, 1, 1, 2)
    assert summary["failures"] == [{"device": "c", "error": "x"}, {"device": "d", "error": "boom"}]


# --- credentials -----------------------------------------------------------------------------------


def test_default_credentials_come_from_settings():
    s = load_settings(BASE_ENV | {"NETJOBS_DEVICE_USERNAME": "ops", "NETJOBS_DEVICE_PASSWORD": "pw"})
    creds = credentials_for("default", s)
    assert (creds.username, creds.password, creds.enable_secret) == ("ops", "pw", "pw")
    assert "pw" not in repr(creds)


def test_credentials_file_entries_are_picked_by_reference(tmp_path):
    path = tmp_path / "creds.yml"
    path.write_text(yaml.safe_dump({"core": {"username": "core-ops", "password": "c0re", "secret": "en"}}))
    s = load_settings(BASE_ENV | {"NETJOBS_DEVICE_USERNAME": "ops", "NETJOBS_DEVICE_PASSWORD": "pw",
                                  "NETJOBS_DEVICE_CREDENTIALS_FILE": str(path)})
    core = credentials_for("core", s)
    assert (core.username, core.password, core.enable_secret) == ("core-ops", "c0re", "en")
    assert credentials_for("default", s).username == "ops"  # not in the file: settings


@pytest.mark.parametrize("content, ref, message", [
    (None, "default", "no default device credentials: set NETJOBS_DEVICE_USERNAME"),
    (None, "branch", "credentials reference 'branch' needs NETJOBS_DEVICE_CREDENTIALS_FILE"),
    ({"core": {"username": "u", "password": "p"}}, "branch", "credentials reference 'branch' is not in"),
    ({"core": {"username": "u"}}, "core", "need a password or a key_file"),
    ({"core": {"username": "u", "pasword": "p"}}, "core", "unknown field(s): pasword"),
    ({"core": {"username": "u", "key_file": "/nonexistent/key"}}, "core", "is not readable"),
    ("- just\n- a list\n", "core", "must map references to credentials"),
    ("core: [unclosed\n", "core", "is not valid YAML"),
])
def test_credentials_problems_are_permanent_and_clear(tmp_path, content, ref, message):
    env = dict(BASE_ENV)
    if content is not None:
        path = tmp_path / "creds.yml"
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        env["NETJOBS_DEVICE_CREDENTIALS_FILE"] = str(path)
    with pytest.raises(CredentialsError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        credentials_for(ref, load_settings(env))
    assert not is_transient(caught.value)


# --- the archive and its git view ----------------------------------------------------------------


def commits(repo: Path, filename: str | None = None) -> int:
    args = ["rev-list", "--count", "HEAD"] + (["--", filename] if filename else [])
    return int(git(repo, *args).stdout.strip())


def archive(engine, device: str, content: str, task_id: str | None = None, age_minutes: int = 10):
    """Store ``content`` as ``device``'s snapshot, aged so that the git export takes it."""
    from netjobs.services.archive import store_snapshot
    from netjobs.services.backup import content_hash

    with engine.connect() as conn:
        device_id = conn.execute(text("SELECT id FROM devices WHERE name = :n"), {"n": device}).scalar_one()
    stored = store_snapshot(device_id, content, content_hash(content), task_id)
    with engine.begin() as conn:
        conn.execute(text("UPDATE config_snapshots SET collected_at = now() - make_interval(mins => :m) "
                          "WHERE id = :id"), {"m": age_minutes, "id": stored.snapshot_id})
    return stored


def test_archive_stores_each_content_once_and_counts_changed_lines(db):
    add_device_row(db, name="arc-1")
    first = archive(db, "arc-1", "hostname arc-1\nntp server 10.0.0.1\n", "t1", age_minutes=30)
    same = archive(db, "arc-1", "hostname arc-1\nntp server 10.0.0.1\n", "t2", age_minutes=20)
    redelivered = archive(db, "arc-1", "hostname arc-1\nntp server 10.0.0.1\n", "t2", age_minutes=20)
    changed = archive(db, "arc-1", "hostname arc-1\nntp server 10.0.0.2\nlogging host 10.0.0.9\n", "t3")
    assert (first.changed, first.lines_added, first.lines_removed) == (True, 2, 0)
    assert (same.changed, same.lines_added, same.lines_removed) == (False, 0, 0)
    assert redelivered == same  # the same task adds no second snapshot
    assert (changed.changed, changed.lines_added, changed.lines_removed) == (True, 2, 1)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM config_snapshots")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM config_contents")).scalar() == 2


def test_git_view_gets_one_commit_per_change_with_the_same_ids_on_every_host(db, tmp_path):
    from netjobs.services.archive import export_git

    add_device_row(db, name="gv-1")
    add_device_row(db, name="gv-2")
    archive(db, "gv-1", "hostname gv-1\n", "a", age_minutes=50)
    archive(db, "gv-2", "hostname gv-2\n", "b", age_minutes=40)
    archive(db, "gv-1", "hostname gv-1\n", "c", age_minutes=30)  # unchanged: no commit
    archive(db, "gv-1", "hostname gv-1\nsnmp-server location lab\n", "d", age_minutes=20)
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    assert export_git(host_a)["exported"] == 3
    assert commits(host_a) == 3 and commits(host_a, device_filename("gv-1")) == 2
    assert (host_a / "gv-1.cfg").read_text() == "hostname gv-1\nsnmp-server location lab\n"
    assert git(host_a, "log", "-1", "--format=%an <%ae>").stdout.strip() == "netjobs <netjobs@config-archive>"
    assert export_git(host_a)["exported"] == 0  # nothing new

    archive(db, "gv-2", "hostname gv-2\nip ssh version 2\n", "e", age_minutes=10)
    archive(db, "gv-2", "hostname gv-2\nip ssh version 1\n", "f", age_minutes=0)  # too recent to export
    assert export_git(host_a)["exported"] == 1
    # Another host exporting later, in one go, ends at the very same commit.
    assert export_git(host_b) == {"exported": 4, "head": git(host_a, "rev-parse", "HEAD").stdout.strip()}
    with db.connect() as conn:
        exported = conn.execute(text("SELECT count(*) FROM config_snapshots WHERE git_commit IS NOT NULL")).scalar()
        head_snapshot = conn.execute(text("SELECT git_commit FROM config_snapshots WHERE task_id = 'e'")).scalar()
    assert exported == 4 and head_snapshot == git(host_b, "rev-parse", "HEAD").stdout.strip()
    git(host_b, "fsck", "--no-progress")


@pytest.mark.parametrize("name, expected", [("core-1", "core-1.cfg"), ("../etc/passwd", "_etc_passwd.cfg"),
                                            ("a b/c", "a_b_c.cfg"), (".hidden", "hidden.cfg")])
def test_device_filenames_stay_inside_the_repository(name, expected):
    assert device_filename(name) == expected


def _archive_many(worker: int) -> None:
    from netjobs.db.engine import dispose_engine, get_engine

    dispose_engine(close=False)  # the parent's pool is the parent's
    for i in range(6):
        archive(get_engine(), f"conc-{worker}", f"hostname conc-{worker}\nversion {i}\n", f"t-{worker}-{i}")


def test_concurrent_processes_archive_without_losing_anything(db):
    for worker in range(4):
        add_device_row(db, name=f"conc-{worker}")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_archive_many, args=(w,)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    with db.connect() as conn:
        rows = conn.execute(text("SELECT count(*), count(*) FILTER (WHERE changed) FROM config_snapshots")).one()
    assert tuple(rows) == (24, 24)


# --- backup over SSH, in-process -----------------------------------------------------------------


def snapshot_rows(engine, device_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT content_hash, changed, task_id FROM config_snapshots "
                                 "WHERE device_id = :d ORDER BY id"), {"d": device_id}).all()


def archived(device: str) -> str:
    from netjobs.services.archive import content_of, resolve

    return content_of(resolve(device))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_backup_archives_once_and_records_unchanged_checks(db, sim_lab, netjobs_env, platform):
    device = sim_lab.device(platform)
    device_id = add_device_row(db, device)
    first = backup_device(device.name, task_id="t-first")
    assert first.status == "changed" and first.lines_removed == 0 and first.lines_added > 5
    stored = archived(device.name)
    assert device.name in stored
    assert "Last configuration change" not in stored and "! Time:" not in stored and "## Last commit" not in stored

    second = backup_device(device.name, task_id="t-second")  # volatile lines differ on the device
    assert second.status == "unchanged" and second.content_hash == first.content_hash

    device.set_body(device.spec.body().replace(device.name, device.name + "-renamed", 1))
    third = backup_device(device.name, task_id="t-third")
    assert third.status == "changed" and third.content_hash != first.content_hash
    assert (third.lines_added, third.lines_removed) == (1, 1)

    rows = snapshot_rows(db, device_id)
    assert [(r.changed, r.task_id) for r in rows] == [(True, "t-first"), (False, "t-second"), (True, "t-third")]
    assert rows[0].content_hash == rows[1].content_hash != rows[2].content_hash


def test_redelivered_backup_adds_no_snapshot(db, sim_lab):
    device = sim_lab.device("cisco_ios")
    device_id = add_device_row(db, device)
    first = backup_device(device.name, task_id="same-task")
    again = backup_device(device.name, task_id="same-task")
    assert again.as_dict() == first.as_dict()
    assert len(snapshot_rows(db, device_id)) == 1


@pytest.mark.parametrize("fail_mode, message", [("disconnect-mid-session", "connection lost"), ("hang", "no answer to")])
def test_broken_sessions_are_transient(db, sim_lab, fail_mode, message):
    device = sim_lab.device("cisco_ios", fail_mode=fail_mode)
    device_id = add_device_row(db, device)
    started = time.monotonic()
    with pytest.raises(TransientError, match=message) as caught:
        backup_device(device.name, task_id="t")
    assert is_transient(caught.value)
    assert time.monotonic() - started < 8  # read timeout is 2 s in tests; no slow logout
    assert snapshot_rows(db, device_id) == []


def test_connection_refused_is_transient(db):
    add_device_row(db, name="nobody-home", port=free_port())
    with pytest.raises(TransientError, match="cannot connect"):
        backup_device("nobody-home")


@pytest.mark.parametrize("case, message", [
    ("unknown", "unknown device 'ghost'"),
    ("platform", "platform 'fortios', which backup does not support"),
    ("disabled", "is disabled"),
    ("password", "authentication failed for user 'netjobs'"),
    ("ref", "credentials reference 'vault' needs NETJOBS_DEVICE_CREDENTIALS_FILE"),
])
def test_permanent_problems_fail_with_a_clear_message(db, sim_lab, case, message):
    name = "ghost"
    if case == "platform":
        add_device_row(db, name=name, platform="fortios")
    elif case == "disabled":
        add_device_row(db, name=name, enabled=False)
    elif case == "password":
        device = sim_lab.device("cisco_ios", password="not-the-configured-one")
        add_device_row(db, device)
        name = device.name
    elif case == "ref":
        add_device_row(db, name=name, credentials_ref="vault")
    with pytest.raises(PermanentError, match=message) as caught:
        backup_device(name)
    assert not is_transient(caught.value)
    if case == "unknown":
        assert isinstance(caught.value, NotFoundError)


# --- through the real worker -----------------------------------------------------------------------


def test_backup_device_task_returns_the_result(worker, db, celery_app, sim_lab):
    device = sim_lab.device("juniper_junos")
    add_device_row(db, device)
    result = celery_app.send_task("netjobs.backup.device", args=[device.name])
    value = result.get(timeout=60)
    assert value["device"] == device.name and value["status"] == "changed"
    assert isinstance(value["snapshot_id"], int) and len(value["content_hash"]) == 64


def test_unreachable_device_is_retried_then_dead_lettered(worker, db, celery_app):
    from netjobs.history import recorder

    add_device_row(db, name="unreachable", port=free_port())
    result = celery_app.send_task("netjobs.backup.device", args=["unreachable"])
    with pytest.raises(TransientError, match="cannot connect"):
        result.get(timeout=120, propagate=True)
    recorder.flush()

    def dead_letter():
        with db.connect() as conn:
            return conn.execute(text("SELECT retries, args, error FROM dead_letters WHERE task_id = :t"),
                                {"t": result.id}).first()

    row = wait_until(dead_letter, 30, message="dead letter")
    assert row.retries == 5 and row.args == ["unreachable"]
    assert "cannot connect" in row.error


def test_backup_all_survives_failing_devices_and_summarizes(worker, db, celery_app, sim_lab, redis_client):
    good = [sim_lab.device(p) for p in PLATFORMS]
    broken = sim_lab.device("cisco_ios", fail_mode="disconnect-mid-session")
    hanging = sim_lab.device("arista_eos", fail_mode="hang")
    wrong_password = sim_lab.device("cisco_ios", password="rotated-elsewhere")
    for device in good + [broken, hanging, wrong_password]:
        add_device_row(db, device, site="lab")
    add_device_row(db, name="elsewhere", site="other", port=free_port())  # not selected
    add_device_row(db, name="switched-off", site="lab", enabled=False)  # not selected

    result = celery_app.send_task("netjobs.backup.all", kwargs={"site": "lab"})
    summary = result.get(timeout=240)
    assert (summary["devices"], summary["backed_up"], summary["unchanged"], summary["failed"]) == (7, 4, 0, 3)
    failures = {f["device"]: f["error"] for f in summary["failures"]}
    assert set(failures) == {broken.name, hanging.name, wrong_password.name}
    assert "after 5 retries" in failures[broken.name] and "after 5 retries" in failures[hanging.name]
    assert "authentication failed" in failures[wrong_password.name] and "retries" not in failures[wrong_password.name]
    assert redis_client.keys(f"netjobs:backup:progress:{result.id}") == []

    def run_row():  # history of the replaced task ends with the chord body's outcome
        with db.connect() as conn:
            return conn.execute(text("SELECT task_name, state FROM job_runs WHERE task_id = :t AND state = 'SUCCESS'"),
                                {"t": result.id}).first()

    assert wait_until(run_row, 30, message="backup.all history").task_name == "netjobs.backup.all"

    def device_rows():  # each device's own run: FAILURE for those that failed for good
        with db.connect() as conn:
            rows = conn.execute(text("SELECT args_summary, state, error FROM job_runs "
                                     "WHERE task_name = 'netjobs.backup.device' AND root_id = :t"), {"t": result.id}).all()
        return rows if len(rows) == 7 and all(r.state in ("SUCCESS", "FAILURE") for r in rows) else None

    rows = wait_until(device_rows, 30, message="the devices' job_runs rows")
    failed_rows = {next(n for n in failures if n in r.args_summary): r.error for r in rows if r.state == "FAILURE"}
    assert set(failed_rows) == set(failures)
    assert "authentication failed" in failed_rows[wrong_password.name]

    with db.connect() as conn:
        dead = dict(conn.execute(text("SELECT args->>0, kwargs::text FROM dead_letters")).all())
    assert set(dead) == {broken.name, hanging.name, wrong_password.name}
    assert set(dead.values()) == {"{}"}  # a requeue runs a plain single-device backup

    with db.begin() as conn:  # the slow failures were shown above
        conn.execute(text("UPDATE devices SET enabled = false WHERE name IN (:a, :b)"),
                     {"a": broken.name, "b": hanging.name})
    again = celery_app.send_task("netjobs.backup.all", kwargs={"site": "lab"}).get(timeout=120)
    assert (again["devices"], again["backed_up"], again["unchanged"], again["failed"]) == (5, 0, 4, 1)


def test_backup_all_with_no_devices_returns_an_empty_summary(worker, db, celery_app):
    summary = celery_app.send_task("netjobs.backup.all", kwargs={"tag": "nothing-has-this"}).get(timeout=30)
    assert (summary["devices"], summary["backed_up"], summary["failed"]) == (0, 0, 0)


def test_backup_all_rejects_bad_arguments(worker, celery_app):
    result = celery_app.send_task("netjobs.backup.all", kwargs={"site": ""})
    with pytest.raises(Exception, match="site must be a non-empty string"):
        result.get(timeout=30)
