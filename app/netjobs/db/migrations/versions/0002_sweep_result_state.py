"""sweep: a state per reachability result (open, closed, filtered, ...)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('reachability_results', sa.Column('state', sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column('reachability_results', 'state')
