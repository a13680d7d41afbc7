"""The operator CLI against the session's real Redis, PostgreSQL and Celery worker."""

from __future__ import annotations

import json
import keyword
import uuid

import pytest
from hypothesis import given, settings, strategies as st

# The machine is shared: a slow first example is not a failure.
relaxed = settings(deadline=None)

from tests.conftest import wait_until
from tests.support.cli import assert_one_error_line, invoke, run_netjobs

# --- value parsers (no services) -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@relaxed
@given(key=st.from_regex(r"\A[a-z_][a-z0-9_]{0,10}\Z").filter(lambda k: not keyword.iskeyword(k)),
       value=json_values)
def test_arg_values_round_trip_as_json(key, value):
    from netjobs.cli.params import parse_task_args

    assert parse_task_args([f"{key}={json.dumps(value)}"]) == {key: value}


@pytest.mark.parametrize("key", ["not", "None", "lambda", "2x", "a-b"])
def test_arg_names_python_cannot_take_are_refused(key):
    from netjobs.cli.params import parse_task_args
    from netjobs.errors import ValidationError

    with pytest.raises(ValidationError, match="is not a valid argument name"):
        parse_task_args([f"{key}=1"])


@relaxed
@given(st.text())
def test_arg_values_are_json_or_else_the_text_itself(text):
    from netjobs.cli.params import parse_value

    value = parse_value(text)
    try:
        expected = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError):
        expected = text
    assert value == expected or (value != value and expected != expected)
    json.dumps(value, allow_nan=False)  # always sendable as a task argument


@relaxed
@given(st.text())
def test_arg_parser_never_crashes(pair):
    from netjobs.cli.params import parse_task_args
    from netjobs.errors import ValidationError

    try:
        kwargs = parse_task_args([pair])
    except ValidationError as exc:
        assert str(exc).startswith("--arg")
    else:
        (key,) = kwargs
        assert key.isidentifier() and pair.partition("=")[0].strip() == key


@pytest.mark.parametrize("pair, expected", [
    ("n=5", {"n": 5}), ("x=1.5", {"x": 1.5}), ("flag=true", {"flag": True}), ("v=null", {"v": None}),
    ("devices=[\"a\",\"b\"]", {"devices": ["a", "b"]}), ("o={\"k\":1}", {"o": {"k": 1}}),
    ("s=hello world", {"s": "hello world"}), ("s=\"42\"", {"s": "42"}), ("e=", {"e": ""}),
    ("eq=a=b", {"eq": "a=b"}), ("nan=NaN", {"nan": "NaN"}), ("prefix=10.0.0.0/24", {"prefix": "10.0.0.0/24"}),
])
def test_arg_value_examples(pair, expected):
    from netjobs.cli.params import parse_task_args

    assert parse_task_args([pair]) == expected


@pytest.mark.parametrize("pairs, message", [
    (["noequals"], "not KEY=VALUE"), (["1x=2"], "not a valid argument name"), (["class=1"], "not a valid"),
    (["a=1", "a=2"], "given twice"), (["=5"], "not a valid"),
])
def test_bad_arg_pairs(pairs, message):
    from netjobs.cli.params import parse_task_args
    from netjobs.errors import ValidationError

    with pytest.raises(ValidationError, match=message):
        parse_task_args(pairs)


@relaxed
@given(amount=st.integers(0, 10_000), unit=st.sampled_from(["s", "m", "min", "h", "d", "w", "H", "D"]))
def test_since_durations_count_back_from_now(amount, unit):
    from datetime import datetime, timedelta, timezone

    from netjobs.errors import ValidationError
    from netjobs.services.runs import parse_since

    now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    seconds = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}[unit.lower()]
    if amount * seconds > 100 * 365 * 86400:
        with pytest.raises(ValidationError, match="100 years"):
            parse_since(f"{amount}{unit}", now)
    else:
        assert parse_since(f"{amount}{unit}", now) == now - timedelta(seconds=amount * seconds)


@relaxed
@given(st.datetimes(timezones=st.none() | st.timezones()))
def test_since_iso_times_round_trip(when):
    from datetime import datetime, timezone

    from netjobs.services.runs import parse_since

    written = datetime.fromisoformat(when.isoformat())  # the instant the text names (DST gaps included)
    parsed = parse_since(when.isoformat())
    assert parsed.tzinfo is not None
    assert parsed == (written if written.tzinfo else written.replace(tzinfo=timezone.utc))


@relaxed
@given(st.text(max_size=30))
def test_since_parser_only_raises_validation_errors(text):
    from netjobs.errors import ValidationError
    from netjobs.services.runs import parse_since

    try:
        assert parse_since(text).tzinfo is not None
    except ValidationError as exc:
        assert "--since" in str(exc)


# --- CLI errors: exit 2, one line, no traceback ------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["submit", "netjobs.diag.pnig"], ["unknown task", "netjobs.diag.ping"]),
    (["submit", "netjobs.diag.sleep", "--arg", "seconds"], ["not KEY=VALUE"]),
    (["submit", "netjobs.diag.sleep", "--arg", "secs=1"], ["unexpected keyword argument 'secs'", "seconds=1.0"]),
    (["submit", "netjobs.diag.ping", "--queue", "nowhere"], ["unknown queue 'nowhere'", "default"]),
    (["submit", "netjobs.diag.ping", "--countdown", "soon"], ["--countdown"]),
    (["sweep", "10.0.0.0/33"], ["'10.0.0.0/33' is not an IPv4/IPv6 prefix"]),
    (["sweep", "not-an-address"], ["'not-an-address' is not an IPv4/IPv6 prefix"]),
    (["sweep", "10.0.0.0/8"], ["16777216 addresses", "65536"]),
    (["sweep", "10.0.0.0/24", "--ports", "22,70000"], ["70000", "out of range"]),
    (["sweep", "10.0.0.0/24", "--timeout", "fast"], ["--timeout"]),
    (["sweep"], ["give either a target"]),
    (["sweep", "10.0.0.0/24", "--devices", "r1"], ["not both"]),
    (["backup"], ["DEVICE or --all"]),
    (["runs", "--since", "yesterday"], ["invalid --since"]),
    (["runs", "--state", "DONE"], ["unknown state"]),
    (["schedule", "add", "x", "netjobs.diag.ping", "--cron", "61 * * * *"], ["minute", "61"]),
    (["schedule", "add", "x", "netjobs.diag.ping", "--cron", "* * *"], ["expected 5 fields"]),
    (["schedule", "add", "x", "netjobs.diag.ping", "--every", "5x"], ["invalid interval"]),
    (["schedule", "add", "x", "netjobs.diag.ping"], ["exactly one of --every"]),
    (["schedule", "add", "bad name", "netjobs.diag.ping", "--every", "1m"], ["invalid schedule name"]),
    (["dlq", "show", "999999"], ["no dead letter with id 999999"]),
    (["status", "no-such-task-id"], ["no task no-such-task-id is known"]),
])
def test_bad_input_is_one_line_and_exit_2(db, args, fragments):
    assert_one_error_line(invoke(*args), 2, *fragments)


# --- jobs through the real worker ---------------------------------------------------------------


def test_submit_and_wait_prints_the_result(worker, db):
    result = invoke("submit", "netjobs.diag.sleep", "--arg", "seconds=0.3", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.stderr
    task_id, *json_lines = result.stdout.splitlines()
    assert uuid.UUID(task_id)
    assert json.loads("\n".join(json_lines))["slept"] >= 0.3
    assert "SUCCESS" in result.stderr


def test_failed_job_exits_1_and_goes_through_the_dead_letter_flow(worker, db):
    failed = invoke("submit", "netjobs.diag.fail", "--arg", "message=boom 42", "--wait")
    assert failed.exit_code == 1
    assert "FAILURE" in failed.stderr and "boom 42" in failed.stderr
    task_id = failed.stdout_lines[0]

    letters = wait_until(lambda: invoke("dlq", "list", "--json").json(), 10, message="dead letter")
    assert [(d["task_id"], d["task_name"], d["kwargs"]) for d in letters] == [
        (task_id, "netjobs.diag.fail", {"message": "boom 42"})]
    letter_id = str(letters[0]["id"])
    table = invoke("dlq", "list")
    assert table.exit_code == 0 and "netjobs.diag.fail" in table.stdout
    shown = invoke("dlq", "show", letter_id)
    assert shown.exit_code == 0 and "boom 42" in shown.stdout and "Traceback" in shown.stdout

    requeued = invoke("dlq", "requeue", letter_id)
    assert requeued.exit_code == 0
    new_id = requeued.stdout_lines[0]
    assert invoke("wait", new_id, "--timeout", "30").exit_code == 1  # fails again, as it must
    assert_one_error_line(invoke("dlq", "requeue", letter_id), 2, "already requeued")

    second = wait_until(lambda: [d for d in invoke("dlq", "list", "--json").json() if d["task_id"] == new_id], 10,
                        message="second dead letter")
    refused = invoke("dlq", "discard", str(second[0]["id"]), input="n\n")
    assert refused.exit_code == 1
    assert invoke("dlq", "show", str(second[0]["id"])).exit_code == 0
    assert invoke("dlq", "discard", str(second[0]["id"]), "--yes").exit_code == 0
    assert_one_error_line(invoke("dlq", "show", str(second[0]["id"])), 2, "no dead letter")


def test_status_shows_progress_and_wait_follows_it(worker, db):
    task_id = invoke("submit", "netjobs.diag.sleep", "--arg", "seconds=3").stdout_lines[0]
    progress = wait_until(lambda: invoke("status", task_id, "--json").json().get("progress"), 30,
                          message="PROGRESS in status")
    assert progress["total"] == 3 and 1 <= progress["current"] <= 3
    waited = invoke("wait", task_id, "--timeout", "30")
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout)["slept"] >= 3
    status = invoke("status", task_id, "--json").json()
    assert status["state"] == "SUCCESS" and status["task"] == "netjobs.diag.sleep"


def test_wait_timeout_exits_1_and_cancel_terminates_a_running_job(worker, db):
    task_id = invoke("submit", "netjobs.diag.sleep", "--arg", "seconds=30").stdout_lines[0]
    assert_one_error_line(invoke("wait", task_id, "--timeout", "0.5"), 1, "still", task_id)
    wait_until(lambda: invoke("status", task_id, "--json").json()["state"] in ("STARTED", "PROGRESS"), 30,
               message="task running")
    cancelled = invoke("cancel", task_id, "--terminate")
    assert cancelled.exit_code == 0, cancelled.stderr
    waited = invoke("wait", task_id, "--timeout", "30")
    assert waited.exit_code == 1 and "REVOKED" in waited.stderr
    assert_one_error_line(invoke("cancel", task_id), 1, "already finished")


def test_cancel_before_start_records_revoked(worker, db):
    task_id = invoke("submit", "netjobs.diag.ping", "--countdown", "3").stdout_lines[0]
    assert invoke("cancel", task_id).exit_code == 0
    runs = invoke("runs", "--task", "netjobs.diag.ping", "--state", "REVOKED", "--json").json()
    assert [r["task_id"] for r in runs] == [task_id]
    waited = invoke("wait", task_id, "--timeout", "30")
    assert waited.exit_code == 1 and "REVOKED" in waited.stderr


def test_runs_table_and_json_filters(worker, db):
    from netjobs.history import recorder

    ok = invoke("submit", "netjobs.diag.ping", "--wait").stdout_lines[0]
    bad = invoke("submit", "netjobs.diag.fail", "--wait").stdout_lines[0]
    recorder.flush()

    def rows(*args):
        return [r["task_id"] for r in invoke("runs", "--json", *args).json()]

    wait_until(lambda: ok in rows("--state", "SUCCESS") and bad in rows("--state", "failure"), 10,
               message="runs in history")
    # Rows of earlier tests' jobs may still arrive from the worker: compare within ours.
    assert rows("--task", "ping", "--state", "success") == [ok]
    newest_first = [i for i in rows("--task", "netjobs.diag.*", "--since", "5m") if i in (ok, bad)]
    assert newest_first == [bad, ok]
    assert ok not in rows("--task", "netjobs.backup.*")
    assert rows("--since", "2099-01-01T00:00") == []
    assert rows("--limit", "1", "--state", "FAILURE") == [bad]
    full = invoke("runs", "--json", "--task", "fail").json()[0]
    assert full["state"] == "FAILURE" and "ValidationError" in full["error"] and full["queue"] == "default"
    table = invoke("runs")
    assert table.exit_code == 0
    assert ok in table.stdout and "SUCCESS" in table.stdout and "netjobs.diag.fail" in table.stdout


def test_sweep_and_backup_shortcuts_run_on_the_worker(worker, db):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        swept = invoke("sweep", "127.0.0.0/30", "--ports", str(port), "--timeout", "0.5", "--wait")
    assert swept.exit_code == 0, swept.stderr
    summary = json.loads("\n".join(swept.stdout.splitlines()[1:]))
    assert summary["target"] == "127.0.0.0/30" and summary["ports"] == [port]
    assert summary["open_ports"] == [f"127.0.0.1:{port}"]
    assert invoke("runs", "--task", "netjobs.network.sweep", "--json").json()[0]["queue"] == "network"

    backed_up = invoke("backup", "--all", "--site", "nowhere", "--wait")
    assert backed_up.exit_code == 0, backed_up.stderr
    assert json.loads("\n".join(backed_up.stdout.splitlines()[1:]))["failed"] == 0


# --- devices and inventory -----------------------------------------------------------------


def test_devices_add_list_remove_and_backup_of_unknown_device(db):
    assert invoke("devices", "add", "core-sw1", "10.0.0.1", "--platform", "cisco_ios", "--site", "ams",
                  "--tag", "core").exit_code == 0
    assert_one_error_line(invoke("devices", "add", "core-sw1", "10.0.0.1", "--platform", "cisco_ios"), 2,
                          "already exists")
    assert_one_error_line(invoke("devices", "add", "x", "10.0.0.300", "--platform", "cisco_ios"), 2, "address")
    listed = invoke("devices", "list", "--site", "ams", "--json").json()
    assert [(d["name"], d["address"], d["tags"]) for d in listed] == [("core-sw1", "10.0.0.1", ["core"])]
    assert "core-sw1" in invoke("devices", "list").stdout
    assert_one_error_line(invoke("backup", "nope"), 2, "no device named 'nope'")
    assert invoke("devices", "remove", "core-sw1", "--yes").exit_code == 0
    assert invoke("devices", "list", "--json").json() == []


def test_import_reports_bad_rows_locally_and_through_the_worker(worker, db, tmp_path):
    inventory = tmp_path / "devices.csv"
    inventory.write_text("name,address,platform\nr1,10.0.0.1,cisco_ios\nr2,10.0.0.999,cisco_ios\n"
                         "r3,10.0.0.3,arista_eos\n")
    local = invoke("import", str(inventory), "--local")
    assert local.exit_code == 1  # a bad row is a problem to report, even though good rows went in
    assert "line 3" in local.stderr
    assert json.loads(local.stdout)["created"] == 2
    remote = invoke("import", str(inventory), "--wait")
    assert remote.exit_code == 1, remote.stderr
    summary = json.loads("\n".join(remote.stdout.splitlines()[1:]))
    assert (summary["created"], summary["unchanged"], summary["invalid"]) == (0, 2, 1)
    assert summary["errors"][0]["line"] == 3
    assert_one_error_line(invoke("import", str(tmp_path / "missing.csv")), 2, "does not exist")


# --- the real console script -----------------------------------------------------------------


def test_console_script_config_error_is_one_line_exit_2(netjobs_env):
    result = run_netjobs("runs", drop=("NETJOBS_DATABASE_URL",), env=netjobs_env)
    line = assert_one_error_line(result, 2, "NETJOBS_DATABASE_URL")
    assert "not set" in line
    bad = run_netjobs("runs", env={**netjobs_env, "NETJOBS_TASK_TIME_LIMIT": "ten"})
    assert_one_error_line(bad, 2, "NETJOBS_TASK_TIME_LIMIT")


def test_console_script_bad_input_and_unreachable_services(netjobs_env):
    assert_one_error_line(run_netjobs("submit", "netjobs.diag.ping", "--arg", "9=1", env=netjobs_env), 2,
                          "not a valid argument name")
    assert_one_error_line(run_netjobs("schedule", "add", "x", "netjobs.diag.ping", "--cron", "*/0 * * * *",
                                      env=netjobs_env), 2, "minute")
    dead_redis = {**netjobs_env, "NETJOBS_BROKER_URL": "redis://netjobs:s3cret@127.0.0.1:1/0"}
    line = assert_one_error_line(run_netjobs("submit", "netjobs.diag.ping", env=dead_redis), 1,
                                 "Redis (broker)", "127.0.0.1:1")
    assert "s3cret" not in line
    dead_pg = {**netjobs_env, "NETJOBS_DATABASE_URL": "postgresql+psycopg2://netjobs:s3cret@127.0.0.1:1/netjobs"}
    line = assert_one_error_line(run_netjobs("runs", env=dead_pg), 1, "database unreachable", "127.0.0.1:1")
    assert "s3cret" not in line
    debug = run_netjobs("--debug", "runs", env=dead_pg)
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    usage = run_netjobs("runs", "--limit", "0", env=netjobs_env)
    assert usage.exit_code == 2 and "Traceback" not in usage.stderr


def test_console_script_version():
    result = run_netjobs("--version")
    assert result.exit_code == 0 and result.stdout.startswith("netjobs, version ")
