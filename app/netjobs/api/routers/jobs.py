"""Jobs: submit by task name, status (with PROGRESS meta), result, cancel, wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Union

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from netjobs.api import auth
from netjobs.api.deps import acting, celery, checked_task, plain
from netjobs.api.errors import invalid
from netjobs.errors import NotFoundError
from netjobs.services import jobs as service
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_WAIT = 60.0
WAIT_POLL = 0.25
TASK_ID = Path(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", description="the job's id (a UUID)")


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., min_length=1, max_length=255, description="netjobs.diag.ping, or a unique short name: ping")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="the task's keyword arguments")
    queue: str | None = Field(None, max_length=64, description="another queue than the routed one")
    countdown: float | None = Field(None, ge=0, description="start no earlier than this many seconds from now")
    priority: Union[int, str, None] = Field(None, description="urgent, high, normal (default), low, or 0-9 (0 first)")


class CancelJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terminate: bool = Field(False, description="also stop it (SIGTERM) if it is running")


def submit(body: SubmitJob, user: TokenUser) -> dict:
    from netjobs.queues import parse_priority
    from netjobs.tasks.base import check_delay

    app = celery()
    # The checks of submit_job one by one first, to name the field at fault.
    task = checked_task(app, body.task, body.kwargs, body.queue)
    with invalid("body.countdown"):
        check_delay(body.countdown)
    with invalid("body.priority"):
        priority = parse_priority(body.priority) if body.priority is not None else None
    with acting(user):
        submitted = service.submit_job(app, task.name, body.kwargs, queue=body.queue, countdown=body.countdown,
                                       priority=priority)
    return submitted.as_dict()


@router.get("/tasks", summary="The tasks a job may run, with their queue and keyword arguments")
def tasks(user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.queues import queue_for_task

    app = celery()
    return [{"name": name, "queue": queue_for_task(name), "kwargs": plain(service.task_parameters(app.tasks[name]))}
            for name in service.netjobs_task_names(app)]


@router.post("", status_code=202, summary="Submit a job (operator); checked as `netjobs submit` checks it")
def submit_job(body: SubmitJob, user: TokenUser = Depends(auth.operator)) -> dict:
    return submit(body, user)


def _status(task_id: str) -> dict:
    data = service.job_status(celery(), task_id)
    if data is None:
        raise NotFoundError(f"no job {task_id} is known (not in Redis results, not in job history)")
    data["done"] = data["state"] in service.READY_STATES
    return plain(data)


@router.get("/{task_id}", summary="A job's state, progress (PROGRESS meta), result or error")
def status(task_id: str = TASK_ID, user: TokenUser = Depends(auth.viewer)) -> dict:
    return _status(task_id)


@router.get("/{task_id}/result", summary="A finished job's result (409 while it is not finished)")
def result(task_id: str = TASK_ID, user: TokenUser = Depends(auth.viewer)) -> JSONResponse:
    data = _status(task_id)
    if not data["done"]:
        return JSONResponse(status_code=409, content={"detail": f"job {task_id} is {data['state']}: no result yet",
                                                      "state": data["state"]})
    body = {"task_id": task_id, "state": data["state"]}
    if data["state"] == "SUCCESS":
        body["result"] = data.get("result")
    else:
        body["error"] = data.get("error")
    return JSONResponse(content=body)


_CANCEL_STATUS = {service.ALREADY_FINISHED: 409, service.STILL_RUNNING: 409, service.TERMINATE_UNCONFIRMED: 202}


@router.post("/{task_id}/cancel", summary="Cancel a job (operator): says whether it was revoked before start, "
                                          "terminated, or could not be stopped")
def cancel(task_id: str = TASK_ID, body: CancelJob | None = None,
           user: TokenUser = Depends(auth.operator)) -> JSONResponse:
    body = body or CancelJob()
    with acting(user):
        outcome = service.cancel_job(celery(), task_id, terminate=body.terminate, reply_timeout=1.0,
                                     confirm_timeout=5.0)
    return JSONResponse(status_code=_CANCEL_STATUS.get(outcome.outcome, 200), content=plain(outcome))


def _peek(task_id: str, history: bool) -> str | None:
    """The job's state from Redis, or (``history``) from job history when Redis has none."""
    from celery.result import AsyncResult

    from netjobs.services.runs import get_run

    state = AsyncResult(task_id, app=celery()).state
    if state == "PENDING" and history:
        run = get_run(task_id)
        return run.state if run is not None else None
    return state


@router.get("/{task_id}/wait", summary="Wait until the job finishes or the timeout passes (at most 60 s)")
async def wait(request: Request, task_id: str = TASK_ID,
               timeout: float = Query(30.0, gt=0, le=MAX_WAIT, description="seconds, at most 60"),
               user: TokenUser = Depends(auth.viewer)) -> dict:
    # No thread is held while waiting: each look at the state is a short call on the thread pool,
    # and the wait ends when the client goes away.
    deadline = time.monotonic() + timeout
    next_history = 0.0
    while True:
        look_at_history = time.monotonic() >= next_history
        if look_at_history:
            next_history = time.monotonic() + 1.0
        state = await run_in_threadpool(_peek, task_id, look_at_history)
        if state in service.READY_STATES or time.monotonic() >= deadline or await request.is_disconnected():
            break
        await asyncio.sleep(WAIT_POLL)
    data = await run_in_threadpool(_status, task_id)
    data["timed_out"] = not data["done"]
    return data
