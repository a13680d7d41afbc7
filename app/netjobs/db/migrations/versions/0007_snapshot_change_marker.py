"""config_snapshots.change_marker and full_read: re-runs of an unchanged fleet skip the full read

Revision ID: 0007
Revises: 0006

A backup first asks the device for its platform's change marker (netjobs.platforms.CHANGE_MARKERS);
when it equals the one stored with the device's newest snapshot and the last full read is recent
enough (NETJOBS_BACKUP_FULL_READ_HOURS), it records an unchanged snapshot without reading the
configuration (full_read false).
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: the previous release keeps writing full reads without a marker (the defaults),
    # which the new one never skips against.
    op.add_column('config_snapshots', sa.Column('change_marker', sa.Text(), nullable=True))
    op.add_column('config_snapshots', sa.Column('full_read', sa.Boolean(), nullable=False,
                                                server_default=sa.text('true')))


def downgrade() -> None:
    op.drop_column('config_snapshots', 'full_read')
    op.drop_column('config_snapshots', 'change_marker')
