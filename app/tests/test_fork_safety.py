"""Locks a prefork child inherits from a worker parent whose other threads (the archive probe, the
lease keeper) were holding them at the moment of the fork.

Found by the supervisor scenario: the archive probe thread was creating the engine while the pool
forked a child; the child then blocked for ever in worker_process_init and backups stayed PENDING.
"""

from __future__ import annotations

import fcntl
import os
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
