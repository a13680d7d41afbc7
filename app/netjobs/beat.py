"""netjobs' beat scheduler: RedBeat, plus fast failover, a visible lock holder and operator overrides.

* Failover. RedBeat's start-up handler waits for the lock by polling every ``beat_max_interval``, so a
  standby beat took over up to lock timeout + max interval after the active one died (measured:
  267-340 s with the old defaults). Here the standby polls every ``LOCK_POLL_SECONDS``, so it takes
  over at most ``redbeat_lock_timeout + LOCK_POLL_SECONDS`` after the last tick (95 s by default,
  within 2 x ``beat_max_interval``). Only the lock holder sends tasks, so nothing fires twice.
* Holder. While it holds the lock, a beat writes who it is and when it last ticked to
  ``holder_key`` every ``HOLDER_HEARTBEAT_SECONDS``, with a short expiry, so `netjobs doctor` can
  tell a live holder from a dead one whose lock has not expired yet.
* Overrides. Beat writes the default schedule (netjobs.schedule) into Redis on every start. An
  operator's ``netjobs schedule disable`` of a default entry is kept in ``overrides_key`` and
  applied to the defaults before they are written, so it survives restarts of every beat.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from celery.signals import beat_init
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    acquire_distributed_beat_lock,
    get_redis,
)

from netjobs.actor import acting_as
from netjobs.errors import is_transient

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 5
HOLDER_HEARTBEAT_SECONDS = 5
HOLDER_TTL_SECONDS = 3 * HOLDER_HEARTBEAT_SECONDS


def holder_key(lock_key: str) -> str:
    return f"{lock_key}:holder"


def overrides_key(key_prefix: str) -> str:
    # RedBeat's own keys are "<prefix>:schedule" and "<prefix>:statics"; entry names cannot start with ":".
    return f"{key_prefix}:overrides"


def read_overrides(client, key_prefix: str) -> dict[str, dict]:
    raw = client.hgetall(overrides_key(key_prefix))
    overrides = {}
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            log.warning("beat: ignoring an unreadable override of schedule entry %r", name)
    return overrides


def apply_overrides(defaults: dict[str, dict], overrides: dict[str, dict]) -> dict[str, dict]:
    """The default entries with the operator's overrides applied (only ``enabled`` for now)."""
    merged = {}
    for name, spec in defaults.items():
        override = overrides.get(name) or {}
        merged[name] = {**spec, "enabled": bool(override["enabled"])} if "enabled" in override else spec
    return merged


class Scheduler(RedBeatScheduler):
    last_tick_at: float | None = None

    def update_from_dict(self, dict_):
        overrides = read_overrides(get_redis(self.app), self.app.redbeat_conf.key_prefix)
        super().update_from_dict(apply_overrides(dict_, overrides))

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # job_runs.submitted_by of every job a schedule starts: "beat:NAME".
        with acting_as(f"beat:{entry.name}"):
            return super().apply_async(entry, producer, advance, **kwargs)

    def tick(self, *args, **kwargs):
        try:
            interval = super().tick(*args, **kwargs)
        except Exception as exc:
            # Redis restarting or failing over: tick again shortly instead of exiting. A lock lost
            # meanwhile fails its next extension with LockError (not transient), and beat exits.
            if not is_transient(exc):
                raise
            log.warning("beat: Redis unreachable (%s); ticking again in %ds", exc, LOCK_POLL_SECONDS)
            return LOCK_POLL_SECONDS
        self.last_tick_at = time.time()
        return interval

    def record_holder(self) -> None:
        value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "ticked_at": self.last_tick_at or time.time()})
        get_redis(self.app).set(holder_key(self.lock_key), value, ex=HOLDER_TTL_SECONDS)

    def start_holder_heartbeat(self) -> None:
        def beat_holder():
            while self.lock is not None:
                try:
                    self.record_holder()
                except Exception as exc:  # noqa: BLE001 - Redis may be restarting; try again
                    log.warning("beat: could not record the lock holder: %s", exc)
                time.sleep(HOLDER_HEARTBEAT_SECONDS)

        threading.Thread(target=beat_holder, name="netjobs-beat-holder", daemon=True).start()


@beat_init.connect
def _acquire_lock(sender=None, **kwargs):
    """Wait for the RedBeat lock, polling every LOCK_POLL_SECONDS (see the module docstring)."""
    scheduler = sender.scheduler
    if not isinstance(scheduler, Scheduler):
        return acquire_distributed_beat_lock(sender, **kwargs)
    if not scheduler.lock_key:
        return None
    client = get_redis(scheduler.app)
    lock = client.lock(scheduler.lock_key, timeout=scheduler.lock_timeout,
                       sleep=min(LOCK_POLL_SECONDS, scheduler.max_interval))
    # As RedBeat does: extending sets the timeout anew instead of adding to what is left.
    lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
    log.info("beat: waiting for the lock %s", scheduler.lock_key)
    while True:
        try:
            lock.acquire()
            break
        except Exception as exc:
            # A standby waits through a Redis restart or a Sentinel failover instead of exiting.
            if not is_transient(exc):
                raise
            log.warning("beat: Redis unreachable while waiting for the lock (%s); trying again in %ds",
                        exc, LOCK_POLL_SECONDS)
            time.sleep(LOCK_POLL_SECONDS)
    log.info("beat: Acquired lock")
    scheduler.lock = lock
    scheduler.start_holder_heartbeat()
    return None


# RedBeat's own handler would take the lock first, with its slow polling.
beat_init.disconnect(acquire_distributed_beat_lock)
