"""Job history (job_runs): the filters of `netjobs runs`, paginated."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from netjobs.api import auth
from netjobs.api.deps import page, plain
from netjobs.api.errors import FieldError, invalid
from netjobs.errors import NotFoundError
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_PAGE = 500


@router.get("", summary="Job runs, newest first; filters as `netjobs runs`; page with limit and offset")
def list_runs(task: str | None = Query(None, max_length=255, description="name, short name (ping) or pattern (*)"),
              state: str | None = Query(None, description="PUBLISHED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED"),
              since: str | None = Query(None, description="30m, 1h, 2d, 1w or an ISO time"),
              by: str | None = Query(None, max_length=255,
                                     description="who submitted: alice (CLI or API), cli:USER, api:USER, beat:NAME"),
              limit: int = Query(50, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
              user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services import runs

    if offset + limit > runs.MAX_LIMIT:
        raise FieldError("query.offset", f"offset + limit must be at most {runs.MAX_LIMIT}: narrow the filters")
    with invalid("query.state"):
        state = runs.normalize_state(state) if state else None
    with invalid("query.since"):
        when = runs.parse_since(since) if since else None
    with invalid("query.by"):
        rows = runs.list_runs(task=task, state=state, since=when, by=by,
                              limit=min(runs.MAX_LIMIT, offset + limit + 1))
    return page(rows, limit, offset)


@router.get("/{task_id}", summary="One job run")
def get_run(task_id: str = Path(..., max_length=64), user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.runs import get_run as read

    run = read(task_id)
    if run is None:
        raise NotFoundError(f"no job run {task_id} in job history")
    return plain(run)
