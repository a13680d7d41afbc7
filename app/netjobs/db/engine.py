"""One SQLAlchemy engine per process, created on first use.

Celery's prefork pool forks children from the parent; a pooled connection shared across a fork
corrupts the protocol stream. :mod:`netjobs.db.lifecycle` disposes of the parent's engine before
forking and gives each child its own (``worker_process_init``).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from netjobs.config import get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    global _engine, _engine_pid, _sessionmaker
    with _lock:
        if _engine is None or _engine_pid != os.getpid():
            if _engine is not None:
                # Inherited across a fork we were not told about: drop the parent's pool
                # without closing its sockets (the parent still uses them).
                _engine.dispose(close=False)
            _engine = create_engine(
                get_settings().database_url,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=5,
                pool_recycle=1800,
                connect_args={"connect_timeout": 10, "application_name": f"netjobs[{os.getpid()}]"},
            )
            _engine_pid = os.getpid()
            _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def _after_fork_in_child() -> None:
    # Another thread of the parent (the archive probe, say) may hold the lock at fork time; the
    # child would then block for ever in worker_process_init. The inherited engine is dropped there.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose_engine(close: bool = True) -> None:
    """Close (or, after a fork, forget) this process's pool."""
    global _engine, _engine_pid, _sessionmaker
    with _lock:
        if _engine is not None:
            _engine.dispose(close=close)
        _engine = _engine_pid = _sessionmaker = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    get_engine()
    assert _sessionmaker is not None
    session = _sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
