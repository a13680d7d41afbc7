"""config_snapshots.changed_by: who changed the configuration, as a device's syslog message names them

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand only: code of the previous release keeps writing snapshots without the new column.
    op.add_column('config_snapshots', sa.Column('changed_by', sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column('config_snapshots', 'changed_by')
