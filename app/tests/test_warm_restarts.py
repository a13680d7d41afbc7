"""Rolling warm restarts of prefork workers under load: nothing lost, nothing run twice.

What `systemctl restart netjobs.target` (or supervisorctl restart) does to a host, one host after
the other, while tasks keep coming: each worker gets SIGTERM, finishes what it runs, gives back
what it had reserved, exits, and a new process with the same node name starts. Children recycle
every few tasks meanwhile. Real Redis, PostgreSQL and Celery workers.

NETJOBS_WARM_RESTART_CYCLES (default 3) sets how many rounds; a soak runs it with more.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import ExitStack

from sqlalchemy import text

from tests.conftest import wait_until
from tests.support.servers import celery_worker, producer_app

CYCLES = int(os.environ.get("NETJOBS_WARM_RESTART_CYCLES", "3"))
TASKS = 60 + 40 * CYCLES
SLOTS = ("warm-a@localhost", "warm-b@localhost")
WORKER_ARGS = ("--max-tasks-per-child=7", "--time-limit=60", "--soft-time-limit=50")


def test_rolling_warm_restarts_under_load_lose_nothing_and_run_nothing_twice(own_broker_env, db):
    logs: list[str] = []

    def start(stack: ExitStack, hostname: str):
        return stack.enter_context(celery_worker(own_broker_env, queues="default", concurrency=2,
                                                 hostname=hostname, extra_args=WORKER_ARGS))

    with producer_app(own_broker_env, "warm-restart-client") as client:
        results = [client.send_task("netjobs.diag.sleep", kwargs={"seconds": 0.2}, queue="default")
                   for _ in range(TASKS)]
        ids = {r.id for r in results}
        stacks = {slot: ExitStack() for slot in SLOTS}
        workers = {slot: start(stacks[slot], slot) for slot in SLOTS}
        try:
            for _ in range(CYCLES):
                for slot in SLOTS:
                    done = sum(r.ready() for r in results)
                    wait_until(lambda: sum(r.ready() for r in results) >= min(done + 8, TASKS), 60,
                               message="the workers to make progress")
                    old = workers[slot]
                    assert old.stop() == 0, old.log()[-3000:]  # SIGTERM: a warm shutdown
                    logs.append(old.log())
                    assert "Warm shutdown" in logs[-1], logs[-1][-3000:]
                    stacks[slot].close()
                    stacks[slot] = ExitStack()
                    workers[slot] = start(stacks[slot], slot)
            deadline = time.monotonic() + 120
            for result in results:
                assert result.get(timeout=max(1.0, deadline - time.monotonic()))["slept"] >= 0.2
            # A result is stored a moment before the worker logs "succeeded": wait for the lines.
            wait_until(lambda: all(f"[{task_id}] succeeded" in "".join(logs) + "".join(w.log() for w in workers.values())
                                   for task_id in ids), 30, message="every task's 'succeeded' line")
            logs.extend(w.log() for w in workers.values())
        finally:
            for stack in stacks.values():
                stack.close()

    log = "".join(logs)
    runs = {task_id: log.count(f"[{task_id}] succeeded") for task_id in ids}
    assert {task_id: n for task_id, n in runs.items() if n != 1} == {}, log[-4000:]
    assert log.count("Warm shutdown") >= CYCLES * len(SLOTS)

    def history_states() -> Counter:
        with db.connect() as conn:
            rows = conn.execute(text("SELECT task_id, state FROM job_runs WHERE task_id = ANY(:ids)"),
                                {"ids": list(ids)}).all()
        return Counter(state for _, state in rows)

    # One history row per task, each SUCCESS (the workers flush it before acknowledging).
    wait_until(lambda: history_states() == Counter({"SUCCESS": TASKS}), 30,
               message=f"a SUCCESS row for each of the {TASKS} tasks")
