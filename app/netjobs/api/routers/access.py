"""API tokens (admin) and the audit log (admin)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from netjobs.api import auth
from netjobs.api.deps import acting, plain
from netjobs.api.errors import invalid
from netjobs.services.tokens import TokenUser

router = APIRouter(tags=["tokens and audit"])


class CreateToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=64)
    user: str = Field(..., max_length=64, description="whose token: jobs are recorded as api:USER")
    role: Literal["viewer", "operator", "admin"]
    expires: str | None = Field(None, max_length=32, description="lifetime: 30d, 12w (default: until revoked)")


@router.get("/tokens", summary="Tokens with owner, role, last use and state, never the tokens (admin)")
def list_tokens(user: TokenUser = Depends(auth.admin)) -> list[dict]:
    from netjobs.services.tokens import list_tokens as read

    return plain([v.as_dict() for v in read()])


@router.post("/tokens", status_code=201, summary="Create a token (admin); the answer is the only time it is shown")
def create_token(body: CreateToken, user: TokenUser = Depends(auth.admin)) -> dict:
    from netjobs.services.schedules import parse_interval
    from netjobs.services.tokens import create_token as create

    with invalid("body.expires"):
        lifetime = parse_interval(body.expires) if body.expires else None
    with acting(user), invalid("body"):
        token, view = create(body.name, body.user, body.role, lifetime)
    return {"token": token, **plain(view.as_dict())}


@router.delete("/tokens/{name}", summary="Revoke a token at once (admin)")
def revoke_token(name: str = Path(..., max_length=64), user: TokenUser = Depends(auth.admin)) -> dict:
    from netjobs.services.tokens import revoke_token as revoke

    with acting(user):
        return plain(revoke(name).as_dict())


@router.get("/audit", summary="Who changed schedules, devices, host keys, dead letters and tokens (admin)")
def audit(since: str | None = Query(None), by: str | None = Query(None, max_length=255),
          action: str | None = Query(None, max_length=64), limit: int = Query(100, ge=1, le=10_000),
          user: TokenUser = Depends(auth.admin)) -> list[dict]:
    from netjobs.services.audit import entries
    from netjobs.services.runs import parse_since

    with invalid("query.since"):
        when = parse_since(since) if since else None
    with invalid("query.by"):
        return plain(entries(since=when, by=by, action=action, limit=limit))
