"""Alembic environment: always given a live connection by netjobs.db.migrate."""

from alembic import context

from netjobs.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when alembic is run by hand
    from netjobs.db.engine import get_engine

    connection = get_engine().connect()

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
