"""Run-time beat schedules, stored in RedBeat's Redis keys.

A running beat reads its due entries from Redis on every tick, so adding, removing, enabling or
disabling an entry here takes effect without a restart or a redeploy. The default schedule
(``netjobs.schedule``) is installed by beat at start-up; those "static" entries can be disabled
here but not removed or replaced, since beat would put them back on its next start.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from celery.schedules import ParseException, crontab, schedule as interval_schedule

from netjobs.errors import NotFoundError, ValidationError
from netjobs.services.audit import log_change

MIN_INTERVAL = 1.0
MAX_INTERVAL = 366 * 86400.0
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# Names become part of Redis keys next to RedBeat's own (":schedule", ":statics", "lock").
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RESERVED_NAMES = frozenset({"lock"})
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


# --- parsing ---------------------------------------------------------------------------------


def parse_interval(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``2d``, ``1w``, ``1h30m`` or plain seconds (``90``) -> seconds."""
    raw = text.strip().lower()
    if not raw:
        raise ValidationError("interval is empty; use e.g. 30s, 5m, 1h or 1h30m")
    try:
        seconds = float(raw)
        if not math.isfinite(seconds):
            raise ValueError
    except ValueError:
        parts = _INTERVAL_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ValidationError(f"invalid interval {text!r}; use e.g. 30s, 5m, 1h, 2d or 1h30m") from None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValidationError(
            f"interval {text!r} must be between {MIN_INTERVAL:g} second and {MAX_INTERVAL / 86400:g} days"
        )
    return seconds


def parse_cron(text: str, app=None) -> crontab:
    """A five-field cron expression (minute hour day-of-month month day-of-week) or @daily etc."""
    raw = " ".join(text.split())
    raw = CRON_ALIASES.get(raw.lower(), raw)
    fields = raw.split(" ") if raw else []
    if len(fields) != 5:
        raise ValidationError(
            f"invalid cron expression {text!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    values = dict(zip(CRON_FIELDS, fields))
    # Check each field on its own so the message can say which one is wrong.
    for name, value in values.items():
        try:
            crontab(**{name: value})
        except (ValueError, ParseException, TypeError, KeyError, IndexError) as exc:
            field_name = name.replace("_", "-")
            raise ValidationError(f"invalid cron expression {text!r}: {field_name} {value!r}: {exc}") from None
    try:
        return crontab(app=app, **values)
    except (ValueError, ParseException) as exc:
        raise ValidationError(f"invalid cron expression {text!r}: {exc}") from None


def parse_schedule_spec(every: str | None = None, cron: str | None = None, app=None):
    """Exactly one of ``every`` (interval) or ``cron``; returns a Celery schedule object."""
    if (every is None) == (cron is None):
        raise ValidationError("give exactly one of --every (e.g. 30s, 5m, 1h) or --cron (e.g. '*/5 * * * *')")
    if every is not None:
        return interval_schedule(run_every=timedelta(seconds=parse_interval(every)), app=app)
    return parse_cron(cron, app=app)


def validate_name(name: str) -> str:
    if not _NAME.match(name or "") or name in RESERVED_NAMES:
        raise ValidationError(
            f"invalid schedule name {name!r}: use 1-100 letters, digits, '_', '.', '-' (not 'lock')"
        )
    return name


def describe_schedule(sched) -> str:
    """Human form of a schedule: ``every 30s`` or ``cron */5 * * * *``."""
    if isinstance(sched, crontab):
        parts = (sched._orig_minute, sched._orig_hour, sched._orig_day_of_month,
                 sched._orig_month_of_year, sched._orig_day_of_week)
        return "cron " + " ".join(str(p) for p in parts)
    if isinstance(sched, interval_schedule):
        return "every " + format_seconds(sched.run_every.total_seconds())
    return str(sched)


def format_seconds(seconds: float) -> str:
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = ""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


# --- entries in Redis ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleView:
    name: str
    task: str
    schedule: str
    enabled: bool
    static: bool
    installed: bool  # False: a default entry that beat has not stored in Redis yet
    next_run: datetime | None
    last_run: datetime | None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    total_run_count: int = 0

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        for key in ("next_run", "last_run"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _entry_class():
    from redbeat import RedBeatSchedulerEntry

    return RedBeatSchedulerEntry


def _redis(app):
    from redbeat.schedulers import ensure_conf, get_redis

    ensure_conf(app)
    return get_redis(app)


def static_names(app) -> set[str]:
    return set(app.conf.beat_schedule or {})


def _load(app, name: str):
    entry_cls = _entry_class()
    _redis(app)
    try:
        return entry_cls.from_key(entry_cls.generate_key(app, name), app=app)
    except KeyError:
        return None


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _view(entry, static: bool) -> ScheduleView:
    due = _as_utc(entry.due_at) if entry.enabled else None
    return ScheduleView(
        name=entry.name, task=entry.task, schedule=describe_schedule(entry.schedule), enabled=bool(entry.enabled),
        static=static, installed=True, next_run=due, last_run=_as_utc(entry.last_run_at),
        args=list(entry.args or []), kwargs=dict(entry.kwargs or {}), options=dict(entry.options or {}),
        total_run_count=int(getattr(entry, "total_run_count", 0) or 0),
    )


def list_schedules(app) -> list[ScheduleView]:
    """Every entry in RedBeat plus default entries beat has not installed yet, by name."""
    from netjobs.beat import apply_overrides, read_overrides

    client = _redis(app)
    conf = app.redbeat_conf
    statics = static_names(app)
    views: dict[str, ScheduleView] = {}
    for key in client.zrange(conf.schedule_key, 0, -1):
        name = key[len(conf.key_prefix):] if key.startswith(conf.key_prefix) else key
        entry = _load(app, name)
        if entry is not None:
            views[entry.name] = _view(entry, entry.name in statics)
    now = datetime.now(timezone.utc)
    overrides = read_overrides(client, conf.key_prefix)
    for name, spec in apply_overrides(app.conf.beat_schedule or {}, overrides).items():
        if name in views:
            continue
        sched = spec["schedule"]
        if isinstance(sched, (int, float, timedelta)):
            sched = interval_schedule(run_every=sched, app=app)
        remaining = sched.remaining_estimate(now)
        views[name] = ScheduleView(
            name=name, task=spec["task"], schedule=describe_schedule(sched), enabled=spec.get("enabled", True),
            static=True,
            installed=False, next_run=now + remaining if remaining is not None else None, last_run=None,
            args=list(spec.get("args") or []), kwargs=dict(spec.get("kwargs") or {}),
            options=dict(spec.get("options") or {}),
        )
    return sorted(views.values(), key=lambda v: v.name)


def get_schedule(app, name: str) -> ScheduleView:
    entry = _load(app, name)
    if entry is None:
        raise NotFoundError(f"no schedule named {name!r} (see `netjobs schedule list`)")
    return _view(entry, name in static_names(app))


def add_schedule(app, name: str, task: str, sched, *, args: list | None = None, kwargs: dict | None = None,
                 queue: str | None = None, expires: float | None = None, replace: bool = False) -> ScheduleView:
    """Store a new entry; a running beat picks it up on its next tick."""
    validate_name(name)
    if name in static_names(app):
        raise ValidationError(f"{name!r} is a default schedule entry; use `netjobs schedule enable/disable` for it")
    if expires is not None and not 0 < expires <= MAX_INTERVAL:
        raise ValidationError(f"expires must be a positive number of seconds, got {expires!r}")
    existing = _load(app, name)
    if existing is not None and not replace:
        raise ValidationError(f"a schedule named {name!r} already exists (remove it first, or use --replace)")
    options: dict = {}
    if queue:
        options["queue"] = queue
    if expires is not None:
        options["expires"] = expires
    entry = _entry_class()(
        name=name, task=task, schedule=sched, args=list(args or []), kwargs=dict(kwargs or {}),
        options=options, enabled=True, app=app,
    )
    # As beat does for new entries: the first run comes one interval (or cron match) from now.
    entry.last_run_at = datetime.now(timezone.utc)
    # save() keeps any stored last-run time: a replaced entry (or the meta a beat tick may write
    # for an entry removed under it) must not carry over.
    entry.delete()
    entry.save()
    log_change("schedule.replace" if existing is not None else "schedule.add", name,
               {"task": task, "schedule": describe_schedule(sched), "args": list(args or []),
                "kwargs": dict(kwargs or {}), "queue": queue})
    return get_schedule(app, name)


def remove_schedule(app, name: str) -> None:
    if name in static_names(app):
        raise ValidationError(
            f"{name!r} is a default schedule entry and beat would restore it; use `netjobs schedule disable {name}`"
        )
    entry = _load(app, name)
    if entry is None:
        raise NotFoundError(f"no schedule named {name!r} (see `netjobs schedule list`)")
    entry.delete()
    log_change("schedule.remove", name, {"task": entry.task})


def set_enabled(app, name: str, enabled: bool) -> ScheduleView:
    """Enable or disable an entry now. For a default entry the choice is also kept as an override
    that every beat applies when it writes the defaults at start-up (netjobs.beat)."""
    from netjobs.beat import overrides_key

    static = name in static_names(app)
    entry = _load(app, name)
    if entry is None and not static:
        raise NotFoundError(f"no schedule named {name!r} (see `netjobs schedule list`)")
    if static:
        key = overrides_key(app.redbeat_conf.key_prefix)
        client = _redis(app)
        current = json.loads(client.hget(key, name) or "{}")
        client.hset(key, name, json.dumps({**current, "enabled": enabled}))
    log_change("schedule.enable" if enabled else "schedule.disable", name)
    if entry is not None:
        entry.enabled = enabled
        entry.save()  # keeps meta (last run) as it is
        return get_schedule(app, name)
    return next(view for view in list_schedules(app) if view.name == name)
