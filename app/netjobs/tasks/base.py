"""The base class of every netjobs task: error classification, retries, dead letters, progress."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timezone

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from netjobs.config import get_settings
from netjobs.errors import PoisonTaskError, ValidationError, is_transient

log = logging.getLogger(__name__)

REDELIVERY_KEY_PREFIX = "netjobs:redeliveries:"
# How long a task keeps trying to publish its retry while the broker is unreachable (a Sentinel
# failover or a Redis restart takes seconds), and the pause between two tries.
RETRY_PUBLISH_WINDOW = 60.0
RETRY_PUBLISH_PAUSE = 2.0


def backoff_delay(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(cap, base * (2**retries)))


def check_delay(countdown=None, eta=None) -> None:
    """Refuse a countdown or ETA that the broker could not keep to (see Settings.longest_delay)."""
    if countdown is None and eta is None:
        return
    if eta is not None:
        if isinstance(eta, str):
            eta = datetime.fromisoformat(eta)
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=timezone.utc)
        delay = (eta - datetime.now(timezone.utc)).total_seconds()
    else:
        delay = float(countdown)
    limit = get_settings().longest_delay
    if delay > limit:
        raise ValidationError(
            f"a delay of {delay:.0f}s is longer than the {limit}s a worker can hold a task before Redis hands it "
            "out again (NETJOBS_VISIBILITY_TIMEOUT minus the longest task time limit); use a schedule instead"
        )


def refuse_poison(task_id: str) -> None:
    """Count the redeliveries of ``task_id``; past NETJOBS_MAX_REDELIVERIES fail it for good.

    A message comes back when its worker died under it (an OOM kill, a segfault, a host crash). A
    task that kills its worker every time would otherwise come back forever; this failure lands it
    in the dead letters, with the reason, instead.
    """
    from netjobs.redis_clients import redis_from_url

    settings = get_settings()
    key = f"{REDELIVERY_KEY_PREFIX}{task_id}"
    client = redis_from_url(settings.broker_url, settings, socket_connect_timeout=5, socket_timeout=10)
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, settings.visibility_timeout * 2)
            redeliveries, _ = pipe.execute()
    finally:
        client.close()
    if redeliveries > settings.max_redeliveries:
        raise PoisonTaskError(
            f"delivered {redeliveries + 1} times and its worker was lost each time (killed, out of memory, "
            f"crashed or its host went down); NETJOBS_MAX_REDELIVERIES is {settings.max_redeliveries}"
        )


def publish_retry(task: Task, exc: Exception, countdown: float, max_retries: int) -> Retry:
    """``task.retry()``, tried again while the broker is unreachable.

    Celery rejects a task whose retry it cannot publish without requeueing it: the message is
    gone, with no result and no dead letter. Within RETRY_PUBLISH_WINDOW the publish is tried again;
    past it ``exc`` is raised, so that the task fails into the dead letters instead.
    """
    deadline = time.monotonic() + RETRY_PUBLISH_WINDOW
    while True:
        try:
            return task.retry(exc=exc, countdown=countdown, max_retries=max_retries, throw=False)
        except Reject as rejected:
            if time.monotonic() >= deadline:
                log.error("%s[%s] could not publish its retry for %.0fs (%s): failing it",
                          task.name, task.request.id, RETRY_PUBLISH_WINDOW, rejected.reason)
                raise exc from None
            log.warning("%s[%s] cannot publish its retry yet (%s); trying again in %.0fs",
                        task.name, task.request.id, rejected.reason, RETRY_PUBLISH_PAUSE)
            time.sleep(RETRY_PUBLISH_PAUSE)


class NetjobsTask(Task):
    """Transient errors are retried with backoff up to a maximum; anything else fails at once.

    After the final failure the task lands in ``dead_letters`` with its arguments, so an operator
    can requeue it with `netjobs dlq requeue`.
    """

    abstract = True
    typing = True  # wrong argument names or counts fail fast at .delay() time

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, link=None, link_error=None,
                    shadow=None, **options):
        check_delay(options.get("countdown"), options.get("eta"))
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)

    def __call__(self, *args, **kwargs):
        if self.request.called_directly is False and (self.request.delivery_info or {}).get("redelivered"):
            refuse_poison(self.request.id)
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            settings = get_settings()
            if is_transient(exc) and self.request.called_directly is False:
                if self.request.retries < settings.max_retries:
                    delay = backoff_delay(self.request.retries, settings.retry_backoff, settings.retry_backoff_max)
                    log.warning("%s[%s] transient error, retry %d/%d in %.1fs: %s", self.name, self.request.id,
                                self.request.retries + 1, settings.max_retries, delay, exc)
                    raise publish_retry(self, exc, delay, settings.max_retries) from exc
            raise

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from netjobs.services.deadletters import record_dead_letter

        try:
            record_dead_letter(
                task_id=task_id,
                task_name=self.name,
                queue=(self.request.delivery_info or {}).get("routing_key"),
                args=list(args or ()),
                kwargs=dict(kwargs or {}),
                error=f"{type(exc).__name__}: {exc}",
                traceback=str(einfo) if einfo is not None else None,
                retries=self.request.retries or 0,
            )
        except Exception:  # noqa: BLE001 - never mask the task's own failure
            log.exception("could not record dead letter for %s[%s]", self.name, task_id)

    def progress(self, current: int, total: int, **meta) -> None:
        """Report progress for `netjobs wait` and Flower (state PROGRESS). Best effort: a report that
        cannot reach Redis (a failover, a restart) is skipped, and the task goes on."""
        if self.request.id and not self.request.called_directly:
            try:
                self.update_state(state="PROGRESS", meta={"current": current, "total": total, **meta})
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.info("%s[%s] progress %d/%d not stored: %s", self.name, self.request.id, current, total, exc)
