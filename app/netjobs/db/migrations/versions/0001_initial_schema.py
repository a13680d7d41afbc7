"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 02:59:47.332257
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('task_name', sa.String(length=255), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('kwargs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('requeued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('requeued_task_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id')
    )
    op.create_index('ix_dead_letters_failed_at', 'dead_letters', ['failed_at'], unique=False)
    op.create_table('devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('mgmt_address', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), server_default='22', nullable=False),
    sa.Column('platform', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=255), nullable=True),
    sa.Column('tags', postgresql.ARRAY(sa.String(length=64)), server_default='{}', nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('credentials_ref', sa.String(length=64), server_default='default', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('job_runs',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('task_name', sa.String(length=255), nullable=True),
    sa.Column('parent_id', sa.String(length=64), nullable=True),
    sa.Column('root_id', sa.String(length=64), nullable=True),
    sa.Column('group_id', sa.String(length=64), nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retries', sa.Integer(), server_default='0', nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.BigInteger(), nullable=True),
    sa.Column('args_summary', sa.Text(), nullable=True),
    sa.Column('result_summary', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id')
    )
    op.create_index('ix_job_runs_state', 'job_runs', ['state'], unique=False)
    op.create_index('ix_job_runs_state_at', 'job_runs', ['state_at'], unique=False)
    op.create_index('ix_job_runs_task_name_state_at', 'job_runs', ['task_name', 'state_at'], unique=False)
    op.create_table('config_snapshots',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('collected_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('git_commit', sa.String(length=64), nullable=True),
    sa.Column('changed', sa.Boolean(), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'content_hash', 'task_id', name='uq_config_snapshots_device_hash_task')
    )
    op.create_index('ix_config_snapshots_device_collected', 'config_snapshots', ['device_id', 'collected_at'], unique=False)
    op.create_table('reachability_results',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('sweep_id', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('rtt_ms', sa.Double(), nullable=True),
    sa.Column('error', sa.String(length=255), nullable=True),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sweep_id', 'address', 'port', 'method', name='uq_reachability_sweep_target')
    )
    op.create_index('ix_reachability_address_checked', 'reachability_results', ['address', 'checked_at'], unique=False)
    op.create_table('compliance_results',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('snapshot_id', sa.BigInteger(), nullable=True),
    sa.Column('rule', sa.String(length=255), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['snapshot_id'], ['config_snapshots.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'device_id', 'rule', name='uq_compliance_run_device_rule')
    )
    op.create_index('ix_compliance_device_checked', 'compliance_results', ['device_id', 'checked_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_compliance_device_checked', table_name='compliance_results')
    op.drop_table('compliance_results')
    op.drop_index('ix_reachability_address_checked', table_name='reachability_results')
    op.drop_table('reachability_results')
    op.drop_index('ix_config_snapshots_device_collected', table_name='config_snapshots')
    op.drop_table('config_snapshots')
    op.drop_index('ix_job_runs_task_name_state_at', table_name='job_runs')
    op.drop_index('ix_job_runs_state_at', table_name='job_runs')
    op.drop_index('ix_job_runs_state', table_name='job_runs')
    op.drop_table('job_runs')
    op.drop_table('devices')
    op.drop_index('ix_dead_letters_failed_at', table_name='dead_letters')
    op.drop_table('dead_letters')
