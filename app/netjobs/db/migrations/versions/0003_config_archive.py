"""config archive: configuration contents in PostgreSQL, line counts per snapshot, SSH host keys

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'config_contents',
        sa.Column('content_hash', sa.String(length=64), primary_key=True),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.add_column('config_snapshots', sa.Column('lines_added', sa.Integer(), nullable=True))
    op.add_column('config_snapshots', sa.Column('lines_removed', sa.Integer(), nullable=True))
    op.create_index('ix_config_snapshots_changed_collected', 'config_snapshots', ['collected_at'],
                    postgresql_where=sa.text('changed'))
    op.create_table(
        'device_host_keys',
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('key_type', sa.String(length=64), nullable=False),
        sa.Column('public_key', sa.Text(), nullable=False),
        sa.Column('fingerprint', sa.String(length=128), nullable=False),
        sa.Column('trusted_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('trusted_by', sa.String(length=255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('device_host_keys')
    op.drop_index('ix_config_snapshots_changed_collected', table_name='config_snapshots')
    op.drop_column('config_snapshots', 'lines_removed')
    op.drop_column('config_snapshots', 'lines_added')
    op.drop_table('config_contents')
