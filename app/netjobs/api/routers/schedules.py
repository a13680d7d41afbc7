"""Beat schedules (RedBeat): list, add, remove, enable, disable; changed while beat runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from netjobs.api import auth
from netjobs.api.deps import acting, celery, checked_task, plain
from netjobs.api.errors import invalid
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/schedules", tags=["schedules"])

NAME = Path(..., min_length=1, max_length=100, description="the schedule's name")


class AddSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100)
    task: str = Field(..., min_length=1, max_length=255)
    every: str | None = Field(None, max_length=64, description="interval: 30s, 5m, 1h, 2d, 1h30m")
    cron: str | None = Field(None, max_length=200, description="'*/5 * * * *' (beat's time zone), @daily, ...")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, max_length=64)
    expires: str | None = Field(None, max_length=64, description="drop a run not started this long (5m) after it was sent")
    replace: bool = False


@router.get("", summary="Every schedule entry with its next run (default entries included)")
def list_schedules(user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.services.schedules import list_schedules as read

    return plain(read(celery()))


@router.get("/{name}", summary="One schedule entry")
def get_schedule(name: str = NAME, user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.schedules import get_schedule as read

    with invalid("path.name"):
        return plain(read(celery(), name))


@router.post("", status_code=201, summary="Add a schedule (operator); a running beat picks it up on its next tick")
def add_schedule(body: AddSchedule, user: TokenUser = Depends(auth.operator)) -> dict:
    from netjobs.services import schedules

    app = celery()
    with invalid("body.name"):
        schedules.validate_name(body.name)
    with invalid("body.every" if body.every is not None else "body.cron"):
        sched = schedules.parse_schedule_spec(every=body.every, cron=body.cron, app=app)
    task = checked_task(app, body.task, body.kwargs, body.queue)
    with invalid("body.expires"):
        expires = schedules.parse_interval(body.expires) if body.expires is not None else None
    with acting(user), invalid("body.name"):
        view = schedules.add_schedule(app, body.name, task.name, sched, kwargs=body.kwargs, queue=body.queue,
                                      expires=expires, replace=body.replace)
    return plain(view)


@router.delete("/{name}", summary="Remove a run-time schedule (operator)")
def remove_schedule(name: str = NAME, user: TokenUser = Depends(auth.operator)) -> dict:
    from netjobs.services.schedules import remove_schedule as remove

    with acting(user), invalid("path.name"):
        remove(celery(), name)
    return {"name": name, "removed": True}


def _set_enabled(name: str, enabled: bool, user: TokenUser) -> dict:
    from netjobs.services.schedules import set_enabled

    with acting(user), invalid("path.name"):
        view = set_enabled(celery(), name, enabled)
    return plain(view)


@router.post("/{name}/enable", summary="Enable a schedule (operator)")
def enable(name: str = NAME, user: TokenUser = Depends(auth.operator)) -> dict:
    return _set_enabled(name, True, user)


@router.post("/{name}/disable", summary="Disable a schedule (operator); it stays listed")
def disable(name: str = NAME, user: TokenUser = Depends(auth.operator)) -> dict:
    return _set_enabled(name, False, user)
