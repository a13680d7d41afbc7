"""Locks a prefork child inherits from a worker parent whose other threads (the archive probe, the
lease keeper) were holding them at the moment of the fork.

Found by the supervisor and backup-restore scenarios: a child forked while the archive probe
thread was creating the engine or importing psycopg2's extras blocked for ever in
worker_process_init (backups stayed PENDING); one forked during the thread's libpq connect hung in
its own first connect (STARTED). netjobs.forks keeps forks out of such sections.

And a broker connection: a broadcast that waits for replies ends by its timeout inside a blocking
read of the reply queue; on a pooled connection that read outlives the call, a child forked later
inherits the socket mid-read and hangs in kombu's after-fork cleanup, and the parent's next
broadcasts get no replies. netjobs broadcasts on a connection of its own
(netjobs.services.health.reply_connection).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

from netjobs.db import engine
from netjobs.services.gitrepo import repo_lock


def _exit_code(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None (and the child killed) if it has not ended within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def test_a_child_forked_while_another_thread_holds_the_engine_lock_gets_its_own_engine():
    held, release = threading.Event(), threading.Event()

    def probe_thread():
        with engine._lock:  # as get_engine() holds it while it creates the engine
            held.set()
            release.wait(10)

    thread = threading.Thread(target=probe_thread, daemon=True)
    thread.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: what worker_process_init does (without a database: close=False)
        try:
            engine.dispose_engine(close=False)
            os._exit(0)
        finally:
            os._exit(1)
    try:
        assert _exit_code(pid, timeout=5) == 0, "the child blocked on the engine lock it inherited"
    finally:
        release.set()
        thread.join(5)


def test_the_archive_lock_is_released_although_a_child_forked_meanwhile_still_runs(tmp_path):
    repo = tmp_path / "archive"
    with repo_lock(repo):
        pid = os.fork()
        if pid == 0:  # a pool child forked while the lock was held: it lives on, doing other work
            time.sleep(30)
            os._exit(0)
    try:
        fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: still held by the child
        finally:
            os.close(fd)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_fork_waits_until_no_thread_is_inside_an_import_or_a_connect(tmp_path, monkeypatch):
    # An import holds its module's lock (as libpq's connect holds its own): a child forked inside it
    # would block for ever on its first import of that module. no_fork_during() keeps forks out.
    from netjobs.forks import no_fork_during

    (tmp_path / "netjobs_slow_import_probe.py").write_text("import time\ntime.sleep(1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "netjobs_slow_import_probe", raising=False)
    inside = threading.Event()

    def probe_thread():
        with no_fork_during():
            inside.set()
            import netjobs_slow_import_probe  # noqa: F401

    thread = threading.Thread(target=probe_thread, daemon=True)
    thread.start()
    assert inside.wait(5)
    time.sleep(0.2)  # the thread is inside the import now
    pid = os.fork()
    if pid == 0:
        try:
            import netjobs_slow_import_probe  # noqa: F401
            os._exit(0)
        finally:
            os._exit(1)
    thread.join(5)
    assert _exit_code(pid, timeout=5) == 0, "the child blocked on a lock the thread held at the fork"
    sys.modules.pop("netjobs_slow_import_probe", None)


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


FIRST_COLLECTION_IN_A_CHILD = r"""
import gc, os
from celery import signals
from netjobs.celery_app import app
app.loader.import_default_modules()
signals.worker_init.send(sender=None)  # as a worker does before its pool forks

def private_kib():
    with open("/proc/self/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean:", "Private_Dirty:")))

read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    before = private_kib()
    gc.collect()
    os.write(write_end, str(private_kib() - before).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read_end, 64).decode())
"""


def test_a_pool_child_s_first_full_collection_does_not_copy_the_parent_s_heap():
    # Without the freeze at worker_init this copies ~27 MB into every prefork child (measured).
    env = {"NETJOBS_BROKER_URL": "redis://127.0.0.1:1/0", **os.environ}
    proc = subprocess.run([sys.executable, "-c", FIRST_COLLECTION_IN_A_CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    copied_kib = int(proc.stdout.split()[-1])
    assert copied_kib < 4096, f"the child's first gc.collect() made {copied_kib} KiB private"
