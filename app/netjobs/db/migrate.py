"""Run the Alembic migrations shipped inside the package (no alembic.ini needed on hosts)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from netjobs.db.engine import get_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
UPGRADE_LOCK = 8265430117


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when already there. Serialised by an advisory lock."""
    engine = get_engine()
    cfg = alembic_config()
    with engine.connect() as connection:
        # Two hosts running `netjobs db upgrade` at once must not race each other. A session lock,
        # not a transaction one: a migration that builds an index CONCURRENTLY (0006) commits the
        # migrations before it and runs outside any transaction, and the lock must outlast that.
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({UPGRADE_LOCK})")
        connection.commit()  # Alembic then runs its own transaction(s) on this connection
        try:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
        finally:
            try:
                connection.rollback()
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({UPGRADE_LOCK})")
                connection.commit()
            except Exception:
                # a broken connection: not back into the pool still holding the lock
                connection.invalidate()


def current_revision() -> str | None:
    with get_engine().connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
