"""The audit log: who changed schedules, devices, host keys, dead letters and API tokens, and when.

A change stored in PostgreSQL is logged in the same transaction (:func:`log_change` with the
caller's session), so there is no change without its entry; a change stored in Redis (schedules) is
logged right after it succeeded (:func:`log_change` without a session).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select

from netjobs.actor import current_actor
from netjobs.db.engine import session_scope
from netjobs.db.models import AuditEntry
from netjobs.errors import ValidationError

UNKNOWN_ACTOR = "unknown"


def log_change(action: str, target: str | None = None, details: dict | None = None, *, session=None,
               actor: str | None = None) -> None:
    entry = AuditEntry(actor=(actor or current_actor() or UNKNOWN_ACTOR)[:255], action=action,
                       target=target[:255] if target else None, details=details or {})
    if session is not None:
        session.add(entry)
        return
    with session_scope() as own:
        own.add(entry)


def actor_filter(column, who: str):
    """``alice`` matches cli:alice and api:alice; ``beat:NAME`` or ``cli:alice`` match exactly."""
    who = who.strip()
    if not who:
        raise ValidationError("--by needs a user name (alice) or an actor (cli:alice, api:alice, beat:NAME)")
    if ":" in who:
        return column == who
    return or_(column == f"cli:{who}", column == f"api:{who}")


def entries(since: datetime | None = None, by: str | None = None, action: str | None = None,
            limit: int = 100) -> list[dict]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if by is not None:
        query = query.where(actor_filter(AuditEntry.actor, by))
    if action:
        query = query.where(AuditEntry.action.like(action.replace("*", "%")))
    with session_scope() as session:
        return [{"at": row.at, "actor": row.actor, "action": row.action, "target": row.target,
                 "details": row.details} for row in session.scalars(query)]
