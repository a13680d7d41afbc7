"""The config archive: revisions, contents, diffs and recent changes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse

from netjobs.api import auth
from netjobs.api.deps import plain
from netjobs.api.errors import invalid
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/configs", tags=["config archive"])

DEVICE = Path(..., min_length=1, max_length=255, description="the device's name")


@router.get("/changed", summary="Devices whose configuration changed since then")
def changed(since: str = Query("1d", description="30m, 1h, 2d, 1w or an ISO time"),
            user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.services.archive import changed_since
    from netjobs.services.runs import parse_since

    with invalid("query.since"):
        when = parse_since(since)
    return plain(changed_since(when))


@router.get("/{device}/log", summary="Revisions of the device's configuration, newest first")
def log(device: str = DEVICE, all: bool = Query(False, description="every backup, not only changes"),
        limit: int = Query(50, ge=1, le=10_000), user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.services.archive import config_log

    return plain([r.as_dict() for r in config_log(device, limit=limit, include_unchanged=all)])


@router.get("/{device}/show", response_class=PlainTextResponse,
            summary="The configuration as archived (latest, or at a revision, hash prefix or date)")
def show(device: str = DEVICE, at: str | None = Query(None, max_length=64, description="REV, hash prefix or date"),
         user: TokenUser = Depends(auth.viewer)) -> PlainTextResponse:
    from netjobs.services.archive import content_of, resolve

    with invalid("query.at"):
        revision = resolve(device, at)
    return PlainTextResponse(content_of(revision), headers={"X-Netjobs-Revision": str(revision.revision)})


@router.get("/{device}/diff", summary="Unified diff: the last change, REV1 to the latest, or REV1 to REV2")
def diff(device: str = DEVICE, rev1: str | None = Query(None, max_length=64),
         rev2: str | None = Query(None, max_length=64), user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.archive import diff as compare

    with invalid("query.rev1"):
        old, new, lines = compare(device, rev1, rev2)
    return plain({"device": device, "from": old.as_dict() if old else None, "to": new.as_dict(), "diff": lines})
