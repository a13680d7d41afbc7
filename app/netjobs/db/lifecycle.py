"""Engine lifecycle around Celery's process model (fork safety)."""

from __future__ import annotations

import atexit

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from netjobs.db.engine import dispose_engine, get_engine


@worker_init.connect
def _parent_drops_engine_before_fork(**_):
    # Anything the parent opened (e.g. at start-up checks) must not leak into the children.
    dispose_engine(close=True)


@worker_process_init.connect
def _child_gets_own_engine(**_):
    dispose_engine(close=False)
    get_engine()


@worker_process_shutdown.connect
def _child_closes_pool(**_):
    dispose_engine(close=True)


@worker_shutdown.connect
def _parent_closes_pool(**_):
    dispose_engine(close=True)


atexit.register(dispose_engine)
