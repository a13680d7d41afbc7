"""A process that asked the workers something can still fork (multiprocessing children, as the
concurrent archivers of test_backup do) and ask again afterwards.

A broadcast that waits for replies ends by its timeout inside a blocking read of the reply queue.
On a pooled broker connection that read outlives the call: a child forked later inherits the socket
mid-read, kombu's after-fork cleanup in the child waits for a reply that never comes, and the
parent's next broadcasts get none (the reply went to a child). netjobs broadcasts on a connection
of its own (netjobs.services.health.reply_connection).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ASK_FORK_ASK = r"""
import json, multiprocessing, time
from netjobs.celery_app import app
from netjobs.services import health, jobs

before = sorted(health.workers_answering(app, timeout=1.0))
jobs.cancel_job(app, "00000000-0000-4000-8000-000000000000", reply_timeout=0.5)  # waits for replies
children = [multiprocessing.get_context("fork").Process(target=int) for _ in range(4)]
for child in children:
    child.start()
for child in children:
    child.join(10)
exits = [child.exitcode for child in children]
for child in children:
    if child.exitcode is None:
        child.kill()
after = sorted(health.workers_answering(app, timeout=1.0))
print(json.dumps({"before": before, "exits": exits, "after": after}))
"""


def test_children_forked_after_a_broadcast_exit_and_the_workers_still_answer(netjobs_env, worker):
    done = subprocess.run([sys.executable, "-c", ASK_FORK_ASK], env={**os.environ, **netjobs_env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert worker.hostname in seen["before"]
    assert seen["exits"] == [0, 0, 0, 0], "forked children hung in kombu's after-fork cleanup"
    assert seen["after"] == seen["before"]
