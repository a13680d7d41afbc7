"""Recycling of workers whose pool has no children to recycle (threads, solo).

Celery applies ``--max-tasks-per-child`` and ``--max-memory-per-child`` only to prefork children:
on the threads pool of the backup group both options did nothing, so nothing bounded that process
(bench/README.md, "Memory"). :class:`RecycleStep` gives them the meaning an operator expects there:
after that many tasks, or once the process is above that resident size after a task, the worker
stops with a warm shutdown (running tasks finish, reserved messages go back to the queue) and its
process manager starts it again (``Restart=always`` under systemd, ``autorestart`` under
supervisor), as a recycled prefork child would be replaced.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from celery import bootsteps, signals

log = logging.getLogger(__name__)

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def resident_kib() -> int:
    """This process's resident set size in KiB (what billiard compares with the prefork limit)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


@dataclass(frozen=True)
class RecycleLimits:
    max_tasks: int | None  # tasks before the process is recycled; None or 0: no limit
    max_memory_kib: int | None  # resident KiB above which it is recycled; None or 0: no limit

    @property
    def active(self) -> bool:
        return bool(self.max_tasks) or bool(self.max_memory_kib)


class RecycleWatcher:
    """Counts finished tasks and reads the resident size after each; asks once for a warm shutdown
    when a limit is reached. Thread-safe: threads pool tasks finish in their own threads."""

    def __init__(self, limits: RecycleLimits, stop: Callable[[], None],
                 rss_kib: Callable[[], int] = resident_kib):
        self.limits = limits
        self._stop = stop
        self._rss_kib = rss_kib
        self._lock = threading.Lock()
        self.tasks = 0
        self.reason: str | None = None

    def task_done(self, **_signal_kwargs) -> None:
        with self._lock:
            self.tasks += 1
            if self.reason is not None:
                return
            if self.limits.max_tasks and self.tasks >= self.limits.max_tasks:
                self.reason = f"{self.tasks} tasks done (max tasks per child {self.limits.max_tasks})"
            elif self.limits.max_memory_kib:
                rss = self._rss_kib()
                if rss > self.limits.max_memory_kib:
                    self.reason = (f"resident size {rss} KiB above the limit of {self.limits.max_memory_kib} KiB "
                                   f"(max memory per child) after {self.tasks} tasks")
            if self.reason is None:
                return
        log.warning("recycling this worker: %s; warm shutdown, then the process manager starts it again",
                    self.reason)
        self._stop()


def _warm_shutdown() -> None:
    # What `systemctl stop` sends: Celery's own warm shutdown, run by the main thread.
    os.kill(os.getpid(), signal.SIGTERM)


class RecycleStep(bootsteps.StartStopStep):
    """Worker bootstep: recycle a threads or solo worker by its per-child limits (prefork recycles
    its children itself)."""

    label = "netjobs recycle"

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.watcher: RecycleWatcher | None = None

    def start(self, worker):
        from celery.concurrency.prefork import TaskPool as PreforkPool

        if isinstance(worker.pool_cls, type) and issubclass(worker.pool_cls, PreforkPool):
            return
        limits = RecycleLimits(worker.max_tasks_per_child, worker.max_memory_per_child)
        if not limits.active:
            return
        self.watcher = RecycleWatcher(limits, _warm_shutdown)
        signals.task_postrun.connect(self.watcher.task_done, weak=False)
        log.info("pool %s recycles the whole worker: after %s tasks or above %s KiB resident",
                 worker.pool_cls.__name__, limits.max_tasks or "unlimited", limits.max_memory_kib or "unlimited")

    def stop(self, worker):
        if self.watcher is not None:
            signals.task_postrun.disconnect(self.watcher.task_done)
