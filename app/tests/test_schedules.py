"""Schedule specs and RedBeat entries (services/schedules.py) against the session's real Redis."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab, schedule as interval_schedule
from hypothesis import given, settings, strategies as st

# The machine is shared: a slow first example is not a failure.
relaxed = settings(deadline=None)

from netjobs.errors import NotFoundError, ValidationError
from netjobs.services import schedules
from tests.support.cli import invoke

# --- parsers ---------------------------------------------------------------------------------


@relaxed
@given(st.integers(1, 366 * 86400))
def test_interval_of_whole_seconds_round_trips(seconds):
    text = schedules.format_seconds(seconds)
    assert schedules.parse_interval(text) == seconds
    assert schedules.parse_interval(str(seconds)) == seconds


@relaxed
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("smhdw")), min_size=1, max_size=4))
def test_compound_intervals_add_up(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    total = sum(n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[u] for n, u in parts)
    if 1 <= total <= 366 * 86400:
        assert schedules.parse_interval(text) == total
    else:
        with pytest.raises(ValidationError):
            schedules.parse_interval(text)


@relaxed
@given(st.text(max_size=20))
def test_interval_parser_only_raises_validation_errors(text):
    try:
        seconds = schedules.parse_interval(text)
    except ValidationError as exc:
        assert "interval" in str(exc)
    else:
        assert 1 <= seconds <= 366 * 86400


cron_field = st.one_of(
    st.just("*"), st.integers(0, 70).map(str), st.builds("*/{}".format, st.integers(0, 70)),
    st.builds("{}-{}".format, st.integers(0, 70), st.integers(0, 70)), st.text(max_size=4),
)


@relaxed
@given(st.lists(cron_field, min_size=0, max_size=7).map(" ".join))
def test_cron_parser_returns_a_crontab_or_a_clear_error(expr):
    try:
        parsed = schedules.parse_cron(expr)
    except ValidationError as exc:
        assert "cron expression" in str(exc)
    else:
        assert isinstance(parsed, crontab)
        assert parsed.remaining_estimate(datetime.now(timezone.utc)) is not None


@pytest.mark.parametrize("expr, minutes, hours", [
    ("*/15 * * * *", {0, 15, 30, 45}, set(range(24))), ("0 2 * * *", {0}, {2}), ("@hourly", {0}, set(range(24))),
    ("  30   5 * * mon-fri ", {30}, {5}),
])
def test_cron_examples(expr, minutes, hours):
    parsed = schedules.parse_cron(expr)
    assert parsed.minute == minutes and parsed.hour == hours


@pytest.mark.parametrize("expr, fragment", [
    ("61 * * * *", "minute '61'"), ("* 24 * * *", "hour '24'"), ("* * 0 * *", "day-of-month '0'"),
    ("* * * 13 *", "month-of-year '13'"), ("* * * * 8", "day-of-week '8'"), ("*/0 * * * *", "minute"),
    ("* * *", "expected 5 fields"), ("", "expected 5 fields"), ("0 0 31 2 *", "never occurs"),
])
def test_bad_cron_names_the_field(expr, fragment):
    with pytest.raises(ValidationError, match=fragment):
        schedules.parse_cron(expr)


def test_schedule_spec_needs_exactly_one_kind():
    assert isinstance(schedules.parse_schedule_spec(every="5m"), interval_schedule)
    assert isinstance(schedules.parse_schedule_spec(cron="*/5 * * * *"), crontab)
    for every, cron in ((None, None), ("5m", "* * * * *")):
        with pytest.raises(ValidationError, match="exactly one"):
            schedules.parse_schedule_spec(every=every, cron=cron)


@pytest.mark.parametrize("name", ["", "lock", "a b", ":schedule", "x" * 101, "-x", "a/b"])
def test_bad_schedule_names(name):
    with pytest.raises(ValidationError):
        schedules.validate_name(name)


# --- entries in RedBeat ----------------------------------------------------------------------


@pytest.fixture
def app(celery_app, redis_client):
    names: list[str] = []
    yield celery_app, names
    for name in names:
        try:
            schedules.remove_schedule(celery_app, name)
        except NotFoundError:
            pass


def test_add_list_disable_enable_remove(app, redis_client):
    celery_app, cleanup = app
    name = f"sweep-{uuid.uuid4().hex[:6]}"
    cleanup.append(name)
    before = datetime.now(timezone.utc)
    view = schedules.add_schedule(celery_app, name, "netjobs.network.sweep",
                                  schedules.parse_schedule_spec(every="10m"),
                                  kwargs={"target": "10.0.0.0/24", "ports": [22]}, queue="network", expires=300)
    assert (view.task, view.schedule, view.enabled, view.static) == ("netjobs.network.sweep", "every 10m", True, False)
    ten_minutes = before + timedelta(minutes=10)
    assert ten_minutes - timedelta(seconds=2) <= view.next_run <= ten_minutes + timedelta(seconds=5)
    # Stored where beat looks: the RedBeat schedule key under the configured prefix.
    prefix = celery_app.conf.redbeat_key_prefix
    assert redis_client.zscore(f"{prefix}:schedule", f"{prefix}{name}") is not None

    listed = {v.name: v for v in schedules.list_schedules(celery_app)}
    assert listed[name].kwargs == {"target": "10.0.0.0/24", "ports": [22]}
    assert listed[name].options == {"queue": "network", "expires": 300}
    # The default schedule is listed too, installed by beat or not.
    defaults = {v.name for v in listed.values() if v.static}
    assert {"reachability-sweep", "config-backup-all", "health-snapshot"} <= defaults
    assert all(v.next_run is not None for v in listed.values() if v.static and v.enabled)

    with pytest.raises(ValidationError, match="already exists"):
        schedules.add_schedule(celery_app, name, "netjobs.diag.ping", schedules.parse_schedule_spec(every="1m"))
    replaced = schedules.add_schedule(celery_app, name, "netjobs.diag.ping",
                                      schedules.parse_schedule_spec(cron="0 4 * * *"), replace=True)
    assert (replaced.task, replaced.schedule, replaced.kwargs) == ("netjobs.diag.ping", "cron 0 4 * * *", {})

    assert schedules.set_enabled(celery_app, name, False).enabled is False
    assert schedules.get_schedule(celery_app, name).next_run is None
    assert schedules.set_enabled(celery_app, name, True).enabled is True
    schedules.remove_schedule(celery_app, name)
    assert name not in {v.name for v in schedules.list_schedules(celery_app)}
    assert redis_client.exists(f"{prefix}{name}") == 0
    with pytest.raises(NotFoundError):
        schedules.remove_schedule(celery_app, name)


def test_default_entries_cannot_be_replaced_or_removed(app):
    celery_app, _ = app
    with pytest.raises(ValidationError, match="default schedule entry"):
        schedules.add_schedule(celery_app, "reachability-sweep", "netjobs.diag.ping",
                               schedules.parse_schedule_spec(every="1m"))
    with pytest.raises(ValidationError, match="disable"):
        schedules.remove_schedule(celery_app, "reachability-sweep")


def test_schedule_cli_round_trip(app):
    _, cleanup = app
    name = f"cli-{uuid.uuid4().hex[:6]}"
    cleanup.append(name)
    added = invoke("schedule", "add", name, "diag.sleep", "--cron", "*/5 * * * *", "--arg", "seconds=2",
                   "--queue", "default", "--json")
    assert added.exit_code == 0, added.stderr
    assert added.json()["task"] == "netjobs.diag.sleep" and added.json()["kwargs"] == {"seconds": 2}
    table = invoke("schedule", "list")
    assert table.exit_code == 0 and name in table.stdout and "cron */5 * * * *" in table.stdout
    assert invoke("schedule", "disable", name).exit_code == 0
    assert [s["enabled"] for s in invoke("schedule", "list", "--json").json() if s["name"] == name] == [False]
    bad_arg = invoke("schedule", "add", f"{name}-x", "netjobs.diag.sleep", "--every", "1m", "--arg", "minutes=2")
    assert bad_arg.exit_code == 2 and "unexpected keyword argument 'minutes'" in bad_arg.stderr
    assert invoke("schedule", "remove", name).exit_code == 0
    gone = invoke("schedule", "remove", name)
    assert gone.exit_code == 2 and f"no schedule named '{name}'" in gone.stderr
