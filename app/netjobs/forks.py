"""Keep forks out of other threads' library calls, and keep what a fork shares shared.

A prefork worker's parent forks pool children at any time (start, max-tasks-per-child, a lost
child), and netjobs runs threads in that parent (the archive probe, the history flusher). A child
forked while such a thread is inside libpq's connect or an import inherits that lock held and hangs
for ever: seen as backups stuck PENDING (the child never finished worker_process_init) or STARTED
(its first database connection never returned).

``no_fork_during()`` marks such a section; a fork of this process (os.register_at_fork) waits until
no thread is inside one. Only the forking thread waits, for at most one section, and processes
that do not fork never wait at all.

A worker freezes its heap (``gc.freeze``) once its modules are loaded, before the pool forks: a
garbage collection in a child writes to the header of every object it examines, which would copy
each page of the parent's heap into the child (copy-on-write) at its first full collection.
"""

from __future__ import annotations

import gc
import os
import threading
from contextlib import contextmanager
from typing import Iterator

from celery import signals

_sections = threading.Condition()
_inside = 0
_forking = False


@contextmanager
def no_fork_during() -> Iterator[None]:
    global _inside
    with _sections:
        while _forking:
            _sections.wait()
        _inside += 1
    try:
        yield
    finally:
        with _sections:
            _inside -= 1
            _sections.notify_all()


def _before_fork() -> None:
    global _forking
    with _sections:
        _forking = True
        while _inside:
            _sections.wait()


def _after_fork_in_parent() -> None:
    global _forking
    with _sections:
        _forking = False
        _sections.notify_all()


def _after_fork_in_child() -> None:
    # Only the forking thread exists here; another one may have held the condition's lock.
    global _sections, _inside, _forking
    _sections, _inside, _forking = threading.Condition(), 0, False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


@signals.worker_init.connect
def _freeze_loaded_heap(**_):
    # Sent after the task modules are imported and before the pool starts. What is frozen is never
    # collected: modules, classes and functions, which live as long as the process anyway.
    gc.freeze()
