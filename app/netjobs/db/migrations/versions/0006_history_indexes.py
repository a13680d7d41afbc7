"""job history at scale: failed runs of one task newest first, and the waiting dead letters

Revision ID: 0006
Revises: 0005

`netjobs runs --task X --state FAILURE` (netjobs.services.runs.list_runs resolves X to stored task
names first, then filters with `task_name = X`) reads the unsuccessful runs of X newest first from a
partial index: about 6 % of job_runs, so small and cheap to keep up to date. `netjobs doctor` counts,
and `dlq list` lists, the dead letters not requeued from an index of those alone. bench/README.md,
"History at scale", has the measurements and the indexes that were tried and left out.

Both are built with CREATE INDEX CONCURRENTLY, outside the migration's transaction (job_runs can
hold millions of rows; a plain CREATE INDEX would block the history writers for as long as the build
takes). A build that failed or was interrupted leaves an INVALID index behind, which IF NOT EXISTS
would keep: such a leftover is dropped and built again.
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

INDEXES = (
    ('ix_job_runs_unsuccessful_task_state_at',
     "ON job_runs (task_name, state, state_at) WHERE state <> 'SUCCESS'"),
    ('ix_dead_letters_waiting_failed_at',
     'ON dead_letters (failed_at) WHERE requeued_at IS NULL'),
)


def _invalid(name: str) -> bool:
    return bool(op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %(name)s AND c.relnamespace = current_schema()::regnamespace "
        "AND NOT i.indisvalid", {'name': name}).first())


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, definition in INDEXES:
            if _invalid(name):
                op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS {name}')
            op.execute(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}')


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _ in reversed(INDEXES):
            op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS {name}')
