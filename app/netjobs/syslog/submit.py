"""Submitting the backups: ``netjobs.backup.device`` at high priority, as actor ``syslog:DEVICE``.

Publishing blocks (kombu), so it runs in one thread beside the event loop. When Redis does not take
it, the burst waits and is tried again with growing pauses, for at most ``GIVE_UP_AFTER`` seconds
and ``MAX_WAITING`` devices; a device that changes again meanwhile joins its waiting burst.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from netjobs.syslog.debounce import Burst

log = logging.getLogger("netjobs.syslog")

TASK = "netjobs.backup.device"
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0
GIVE_UP_AFTER = 3600.0
MAX_WAITING = 10_000
# Fail a publish fast: the receiver's own retry decides what happens next.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def actor_for(device: str) -> str:
    return f"syslog:{device}"


def send_backup(burst: Burst) -> str:
    """Publish the backup of one burst; returns the task id (blocking: run it in a thread)."""
    from netjobs.actor import acting_as
    from netjobs.celery_app import app
    from netjobs.queues import PRIORITIES

    kwargs = {"device": burst.device}
    if burst.changed_by:
        kwargs["changed_by"] = burst.changed_by
    # acting_as is a context variable: set it in the thread that publishes.
    with acting_as(actor_for(burst.device)):
        result = app.send_task(TASK, kwargs=kwargs, priority=PRIORITIES["high"], retry=True,
                               retry_policy=PUBLISH_RETRY_POLICY)
    return result.id


@dataclass
class WaitingSubmit:
    burst: Burst
    attempts: int
    next_try: float
    since: float


class RetryQueue:
    """Bursts Redis did not take yet, one per device."""

    def __init__(self):
        self._waiting: dict[str, WaitingSubmit] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, burst: Burst, now: float) -> bool:
        """Keep ``burst`` for a later try; False when the queue is full (the burst is dropped)."""
        waiting = self._waiting.get(burst.device)
        if waiting is not None:
            waiting.burst.merge(burst)
            return True
        if len(self._waiting) >= MAX_WAITING:
            return False
        self._waiting[burst.device] = WaitingSubmit(burst, 0, now + FIRST_RETRY_DELAY, now)
        return True

    def failed_again(self, waiting: WaitingSubmit, now: float) -> bool:
        """Put ``waiting`` back after another failure; False when it has waited too long (dropped)."""
        if now - waiting.since >= GIVE_UP_AFTER:
            return False
        waiting.attempts += 1
        waiting.next_try = now + min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2 ** waiting.attempts)
        current = self._waiting.get(waiting.burst.device)
        if current is not None and current is not waiting:
            waiting.burst.merge(current.burst)
        self._waiting[waiting.burst.device] = waiting
        return True

    def due(self, now: float) -> list[WaitingSubmit]:
        ready = [w for w in self._waiting.values() if w.next_try <= now]
        for waiting in ready:
            del self._waiting[waiting.burst.device]
        return ready

    def has(self, device: str) -> bool:
        return device in self._waiting
