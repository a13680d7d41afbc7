"""Tables. The schema itself is created only by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    mgmt_address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22, server_default="22")
    platform: Mapped[str] = mapped_column(String(64))
    site: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list, server_default="{}")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    credentials_ref: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    snapshots: Mapped[list[ConfigSnapshot]] = relationship(back_populates="device")


class JobRun(Base):
    """One row per task id, updated as the task moves through its states (see netjobs.history)."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_name: Mapped[str | None] = mapped_column(String(255))
    parent_id: Mapped[str | None] = mapped_column(String(64))
    root_id: Mapped[str | None] = mapped_column(String(64))
    group_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    args_summary: Mapped[str | None] = mapped_column(Text)
    result_summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # "cli:USER", "api:USER" or "beat:SCHEDULE" (netjobs.actor); a task's children inherit it.
    submitted_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_job_runs_task_name_state_at", "task_name", "state_at"),
        Index("ix_job_runs_state_at", "state_at"),
        Index("ix_job_runs_state", "state"),
        Index("ix_job_runs_submitted_by_state_at", "submitted_by", "state_at"),
        # migration 0006: `runs --task X --state S` for S other than SUCCESS, newest first
        Index("ix_job_runs_unsuccessful_task_state_at", "task_name", "state", "state_at",
              postgresql_where=text("state <> 'SUCCESS'")),
    )


class AuditEntry(Base):
    """An operator change (schedules, devices, host keys, dead letters, API tokens): who, what, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")

    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_actor_at", "actor", "at"))


class ApiToken(Base):
    """A bearer token for the HTTP API: only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_by: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_name: Mapped[str] = mapped_column(String(255))
    queue: Mapped[str | None] = mapped_column(String(64))
    args: Mapped[list] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict] = mapped_column(JSONB, default=dict)
    error: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requeued_task_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_dead_letters_failed_at", "failed_at"),
        # migration 0006: doctor's count and `dlq list` read the waiting letters only
        Index("ix_dead_letters_waiting_failed_at", "failed_at", postgresql_where=text("requeued_at IS NULL")),
    )


class ConfigContent(Base):
    """A configuration as stored (normalized, redacted), once per distinct content: the archive."""

    __tablename__ = "config_contents"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    lines: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeviceHostKey(Base):
    """The SSH host key netjobs trusts for a device (see netjobs.services.hostkeys)."""

    __tablename__ = "device_host_keys"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)  # base64, as in known_hosts
    fingerprint: Mapped[str] = mapped_column(String(128))  # SHA256:..., as ssh-keygen -l shows it
    trusted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    trusted_by: Mapped[str] = mapped_column(String(255))


class ConfigSnapshot(Base):
    __tablename__ = "config_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    collected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    content_hash: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    changed: Mapped[bool] = mapped_column(Boolean)
    task_id: Mapped[str | None] = mapped_column(String(64))
    # Against the device's previous snapshot; NULL for snapshots older than the archive (0003).
    lines_added: Mapped[int | None] = mapped_column(Integer)
    lines_removed: Mapped[int | None] = mapped_column(Integer)
    # Who changed the configuration, as the device's syslog message named them (0005); NULL otherwise.
    changed_by: Mapped[str | None] = mapped_column(String(255))
    # The device's change marker read at this backup (0007; netjobs.platforms.CHANGE_MARKERS); NULL: none.
    change_marker: Mapped[str | None] = mapped_column(Text)
    # False: the marker matched, so the configuration was not read and content_hash is the previous one.
    full_read: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")

    device: Mapped[Device] = relationship(back_populates="snapshots")

    __table_args__ = (
        # A redelivered backup of the same content must not add a second row.
        UniqueConstraint("device_id", "content_hash", "task_id", name="uq_config_snapshots_device_hash_task"),
        Index("ix_config_snapshots_device_collected", "device_id", "collected_at"),
    )


class ReachabilityResult(Base):
    __tablename__ = "reachability_results"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    port: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(8))
    reachable: Mapped[bool] = mapped_column(Boolean)
    rtt_ms: Mapped[float | None]
    # open / closed / filtered / unreachable / error (TCP), up / down (ICMP); see services/sweep.py.
    state: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(255))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("sweep_id", "address", "port", "method", name="uq_reachability_sweep_target"),
        Index("ix_reachability_address_checked", "address", "checked_at"),
    )


class ComplianceResult(Base):
    __tablename__ = "compliance_results"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("config_snapshots.id", ondelete="SET NULL"))
    rule: Mapped[str] = mapped_column(String(255))
    passed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("run_id", "device_id", "rule", name="uq_compliance_run_device_rule"),
        Index("ix_compliance_device_checked", "device_id", "checked_at"),
    )
