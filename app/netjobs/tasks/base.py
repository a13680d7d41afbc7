"""The base class of every netjobs task: error classification, retries, dead letters, progress."""

from __future__ import annotations

import logging
import random

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from netjobs.config import get_settings
from netjobs.errors import is_transient

log = logging.getLogger(__name__)


def backoff_delay(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(cap, base * (2**retries)))


class NetjobsTask(Task):
    """Transient errors are retried with backoff up to a maximum; anything else fails at once.

    After the final failure the task lands in ``dead_letters`` with its arguments, so an operator
    can requeue it with `netjobs dlq requeue`.
    """

    abstract = True
    typing = True  # wrong argument names or counts fail fast at .delay() time

    def __call__(self, *args, **kwargs):
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
                    raise self.retry(exc=exc, countdown=delay, max_retries=settings.max_retries) from exc
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
        """Report progress for `netjobs wait` and Flower (state PROGRESS)."""
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta={"current": current, "total": total, **meta})
