"""API tokens: bearer tokens for the HTTP API, one per user and purpose, with a role.

Only the SHA-256 of a token is stored. Tokens are 256-bit random strings, so a plain hash (not a
slow password hash) is enough: nobody can guess one from its hash, and the lookup is one index probe.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from netjobs.actor import current_actor
from netjobs.db.engine import session_scope
from netjobs.db.models import ApiToken
from netjobs.errors import NotFoundError, ValidationError
from netjobs.services.audit import UNKNOWN_ACTOR, log_change

ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may
TOKEN_PREFIX = "nj_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenView:
    name: str
    username: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > datetime.now(timezone.utc))

    def as_dict(self) -> dict:
        return {**asdict(self), "active": self.active}


@dataclass(frozen=True)
class TokenUser:
    """Who a valid token belongs to."""

    username: str
    role: str
    token_name: str

    @property
    def actor(self) -> str:
        return f"api:{self.username}"

    def may(self, needed_role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed_role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _view(row: ApiToken) -> TokenView:
    return TokenView(row.name, row.username, row.role, row.created_at, row.created_by, row.expires_at,
                     row.last_used_at, row.revoked_at)


def create_token(name: str, username: str, role: str, expires_in: float | None = None) -> tuple[str, TokenView]:
    """A new token for ``username``; returns (the token, shown this once; its record)."""
    if not _NAME.match(name or ""):
        raise ValidationError(f"invalid token name {name!r}: letters, digits, _ . - (at most 64)")
    if not _USER.match(username or ""):
        raise ValidationError(f"invalid user name {username!r}: letters, digits, _ . @ - (at most 64)")
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=expires_in) if expires_in else None
    creator = current_actor() or UNKNOWN_ACTOR
    statement = (insert(ApiToken)
                 .values(name=name, username=username, role=role, token_hash=_digest(token), created_by=creator,
                         expires_at=expires_at)
                 .on_conflict_do_nothing(index_elements=[ApiToken.name]).returning(ApiToken.id))
    with session_scope() as session:
        if session.execute(statement).first() is None:
            raise ValidationError(f"a token named {name!r} exists already (revoke it, or choose another name)")
        log_change("token.create", name, {"user": username, "role": role,
                                          "expires_at": expires_at.isoformat() if expires_at else None},
                   session=session)
        row = session.scalars(select(ApiToken).where(ApiToken.name == name)).one()
        return token, _view(row)


def list_tokens() -> list[TokenView]:
    with session_scope() as session:
        return [_view(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(name: str) -> TokenView:
    with session_scope() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.name == name).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no API token named {name!r} (see `netjobs tokens list`)")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(timezone.utc)
            log_change("token.revoke", name, {"user": row.username}, session=session)
        return _view(row)


def authenticate(token: str | None) -> TokenUser | None:
    """The owner of ``token`` if it is known, not revoked and not expired; else None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    now = datetime.now(timezone.utc)
    with session_scope() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
        if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        return TokenUser(row.username, row.role, row.name)
