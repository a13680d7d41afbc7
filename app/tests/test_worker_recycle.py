"""Threads workers honour the per-child limits as a whole process (netjobs.worker_recycle).

Celery applies --max-tasks-per-child and --max-memory-per-child to prefork children only; the
backup group runs -P threads, so before RecycleStep nothing bounded it. Real Redis, real workers.
"""

from __future__ import annotations

import time

import pytest

from netjobs.worker_recycle import RecycleLimits, RecycleWatcher
from tests.conftest import wait_until
from tests.support.servers import celery_worker, producer_app


def test_the_watcher_asks_once_at_the_task_limit():
    stops = []
    watcher = RecycleWatcher(RecycleLimits(max_tasks=3, max_memory_kib=None), lambda: stops.append(1),
                             rss_kib=lambda: 10**9)
    for _ in range(5):
        watcher.task_done()
    assert stops == [1]
    assert "3 tasks done" in watcher.reason


def test_the_watcher_asks_once_above_the_memory_limit():
    sizes = iter([100, 200, 300, 400])
    stops = []
    watcher = RecycleWatcher(RecycleLimits(max_tasks=0, max_memory_kib=250), lambda: stops.append(1),
                             rss_kib=lambda: next(sizes))
    for _ in range(4):
        watcher.task_done()
    assert stops == [1]
    assert "300 KiB above the limit of 250 KiB" in watcher.reason and watcher.tasks == 4


def test_no_limit_no_recycle():
    assert not RecycleLimits(None, 0).active
    assert RecycleLimits(0, 1024).active


@pytest.mark.parametrize("limit", [("--max-tasks-per-child=3", "3 tasks done"),
                                   ("--max-memory-per-child=1024", "above the limit of 1024 KiB")],
                         ids=["tasks", "memory"])
def test_a_threads_worker_recycles_itself_and_loses_no_task(own_broker_env, limit):
    option, reason = limit
    with producer_app(own_broker_env, "recycle-test-client") as client:
        results = [client.send_task("netjobs.diag.sleep", kwargs={"seconds": 0.5}, queue="backup") for _ in range(8)]
        with celery_worker(own_broker_env, queues="backup", pool="threads", concurrency=2,
                           hostname="recycled@localhost", extra_args=(option,)) as first:
            # The process ends by itself: a warm shutdown, exit status 0, for the manager to restart.
            wait_until(lambda: first.proc.poll() is not None, 60, message="the threads worker to recycle itself")
            first_log = first.log()
            assert first.proc.returncode == 0, first_log[-3000:]
            assert "recycling this worker: " in first_log and reason in first_log, first_log[-3000:]
            assert "Warm shutdown" in first_log
            done_by_first = sum(r.ready() for r in results)
        assert 1 <= done_by_first < len(results)
        # What it had not run yet went back to the queue: the next process runs it, each once.
        with celery_worker(own_broker_env, queues="backup", pool="threads", concurrency=4,
                           hostname="replacement@localhost") as replacement:
            deadline = time.monotonic() + 60
            for result in results:
                assert result.get(timeout=max(1.0, deadline - time.monotonic()))["slept"] >= 0.5
            # The result is stored a moment before the worker logs "succeeded": wait for the lines.
            wait_until(lambda: all(f"[{r.id}] succeeded" in first_log + replacement.log() for r in results), 30,
                       message="every task's 'succeeded' line")
            log = first_log + replacement.log()
            for result in results:
                assert log.count(f"[{result.id}] succeeded") == 1, log[-4000:]
