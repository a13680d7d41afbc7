"""Submitting, following and cancelling jobs: the checks and reads the CLI and the HTTP API share.

A job is refused before it is sent when its task name is unknown, its keyword arguments cannot bind
to the task's signature, its queue is not configured, its delay exceeds what the broker can keep to
or its priority is not one of netjobs.queues' (all ValidationError, naming what is wrong). Both the
`netjobs` CLI and `netjobs-api` call :func:`submit_job`, :func:`job_status` and :func:`cancel_job`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import time
from dataclasses import asdict, dataclass, field

from netjobs.errors import PermanentError, ValidationError
from netjobs.services.health import reply_connection

READY_STATES = ("SUCCESS", "FAILURE", "REVOKED")
RUNNING_STATES = ("STARTED", "PROGRESS", "RETRY")


class Unreachable(PermanentError):
    """A service the command needs does not answer."""


# --- checks ----------------------------------------------------------------------------------


def _settings():
    from netjobs.config import get_settings

    return get_settings()


def netjobs_task_names(app) -> list[str]:
    app.loader.import_default_modules()
    return sorted(n for n in app.tasks if n.startswith("netjobs."))


def resolve_task(app, name: str):
    """The registered task called ``name``, or a ValidationError naming close matches."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("no task name given")
    names = netjobs_task_names(app)
    if name in names:
        return app.tasks[name]
    # Let `submit diag.ping` and `submit ping` work when unambiguous.
    suffix = [n for n in names if n.endswith("." + name)]
    if len(suffix) == 1:
        return app.tasks[suffix[0]]
    close = suffix or difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name.rsplit(".", 1)[-1], [n.rsplit(".", 1)[-1] for n in names], n=3)
        close = [n for n in names if n.rsplit(".", 1)[-1] in close]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known tasks: {', '.join(names)}"
    raise ValidationError(f"unknown task {name!r}{hint}")


def task_parameters(task) -> list[dict]:
    """The keyword arguments ``task`` takes: name, and default when it has one."""
    try:
        params = inspect.signature(task.run).parameters.values()
    except ValueError:
        return []
    return [{"name": p.name, **({} if p.default is p.empty else {"default": p.default})} for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_task_kwargs(task, kwargs: dict) -> None:
    """Fail before sending when the arguments cannot match the task's signature."""
    if not isinstance(kwargs, dict):
        raise ValidationError(f"{task.name}: arguments must be an object of name: value, got {type(kwargs).__name__}")
    try:
        inspect.signature(task.run).bind(**kwargs)
    except TypeError as exc:
        params = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                           for p in inspect.signature(task.run).parameters.values())
        raise ValidationError(f"{task.name}: {exc} (it takes: {params or 'no arguments'})") from None
    except ValueError:  # no signature available (C function): let the worker judge
        pass
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{task.name}: arguments must be JSON values ({exc})") from None


def check_queue(name: str | None) -> str | None:
    if name is None:
        return None
    queues = _settings().queues
    if name not in queues:
        raise ValidationError(f"unknown queue {name!r}; configured queues: {', '.join(queues)}")
    return name


def require_redis(role: str, url: str, timeout: float = 3.0) -> None:
    """Fail fast, naming the service: Celery itself would retry for many seconds first."""
    import redis

    from netjobs.redis_clients import redis_from_url
    from netjobs.services.doctor import redact_url

    client = redis_from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        raise Unreachable(f"Redis ({role}) at {redact_url(url)} refused the credentials: {exc}") from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise Unreachable(f"cannot reach Redis ({role}) at {redact_url(url)}: {exc}") from None
    finally:
        client.close()


def require_broker_and_backend() -> None:
    s = _settings()
    require_redis("broker", s.broker_url)
    if s.result_backend_url != s.broker_url:
        require_redis("result backend", s.result_backend_url)


# --- submitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    task_id: str
    task: str
    queue: str
    priority: int
    countdown: float | None
    submitted_by: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def submit_job(app, name: str, kwargs: dict | None = None, queue: str | None = None,
               countdown: float | None = None, priority: int | None = None) -> Submitted:
    """Check everything, send the task, record it in job history at once; the actor in force
    (netjobs.actor.acting_as) is recorded as its submitter."""
    from netjobs.actor import current_actor
    from netjobs.history import recorder
    from netjobs.queues import DEFAULT_PRIORITY, queue_for_task
    from netjobs.tasks.base import check_delay

    kwargs = {} if kwargs is None else kwargs
    task = resolve_task(app, name)
    check_task_kwargs(task, kwargs)
    check_queue(queue)
    check_delay(countdown)
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9):
        raise ValidationError(f"invalid priority {priority!r}: 0-9, 0 the most urgent")
    require_broker_and_backend()
    options = {"queue": queue or queue_for_task(task.name),
               "priority": DEFAULT_PRIORITY if priority is None else priority}
    if countdown:
        options["countdown"] = countdown
    result = app.send_task(task.name, kwargs=kwargs, **options)
    recorder.flush()  # so `status ID` from another shell (or API host) knows the job at once
    return Submitted(result.id, task.name, options["queue"], options["priority"], countdown or None, current_actor())


# --- following -------------------------------------------------------------------------------


def summary_value(text: str | None):
    """A job_runs result_summary as the value it was, when it is JSON."""
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def job_status(app, task_id: str) -> dict | None:
    """State, progress (PROGRESS meta), result or error of a job, from Redis, else from job history.
    None when neither knows the id."""
    from celery.result import AsyncResult

    from netjobs.services.runs import get_run

    result = AsyncResult(task_id, app=app)
    state, info = result.state, result.info
    history = get_run(task_id)
    if state == "PENDING" and history is None:
        return None
    if state == "PENDING" and history is not None:
        state = history.state  # the result expired from Redis, or no worker took it yet
    data = {"task_id": task_id, "state": state, "task": history.task_name if history else result.name}
    if state == "PROGRESS" and isinstance(info, dict):
        data["progress"] = info
    elif state == "SUCCESS":
        data["result"] = info if result.state == "SUCCESS" else summary_value(history.result_summary)
    elif state in ("FAILURE", "RETRY") and isinstance(info, BaseException):
        data["error"] = f"{type(info).__name__}: {info}"
    if history is not None:
        data.update(queue=history.queue, worker=history.worker, retries=history.retries,
                    published_at=history.published_at, started_at=history.started_at,
                    finished_at=history.finished_at, duration_ms=history.duration_ms,
                    submitted_by=history.submitted_by)
        data.setdefault("error", history.error)
    return data


# --- cancelling ------------------------------------------------------------------------------

# What cancel_job could do, for people and scripts alike.
ALREADY_FINISHED = "already_finished"  # nothing to do
REVOKED_BEFORE_START = "revoked_before_start"  # it will not run
REVOKED_UNKNOWN = "revoked_unknown"  # no such job known yet; revoked anyway, in case it appears
STILL_RUNNING = "still_running"  # running, and it keeps running (terminate not asked for)
TERMINATED = "terminated"  # it was running and was stopped (SIGTERM), confirmed
TERMINATE_UNCONFIRMED = "terminate_unconfirmed"  # SIGTERM asked for; the job was not seen to stop


@dataclass(frozen=True)
class Cancelled:
    task_id: str
    outcome: str
    state: str | None  # the job's state when cancel was asked for
    detail: str
    acknowledged_by: list[str] | None = field(default=None)  # workers that took the revoke (None: not asked)

    @property
    def cancelled(self) -> bool:
        return self.outcome in (REVOKED_BEFORE_START, REVOKED_UNKNOWN, TERMINATED)

    def as_dict(self) -> dict:
        return {**asdict(self), "cancelled": self.cancelled}


def cancel_job(app, task_id: str, terminate: bool = False, reply_timeout: float | None = None,
               confirm_timeout: float = 0.0) -> Cancelled:
    """Revoke a job: a job that has not started will not run; a running one is stopped with SIGTERM
    only when ``terminate``. ``reply_timeout``: wait that long for the workers to acknowledge the
    revoke (None: do not ask); ``confirm_timeout``: after a terminate, wait that long to see the job
    end as REVOKED."""
    from celery.result import AsyncResult

    from netjobs.history import TERMINAL_STATES, record_revoked, recorder
    from netjobs.services.runs import get_run

    result = AsyncResult(task_id, app=app)
    state = result.state
    history = get_run(task_id)
    finished = next((s for s in (state, history.state if history else None) if s in TERMINAL_STATES), None)
    if finished:
        return Cancelled(task_id, ALREADY_FINISHED, finished, f"task {task_id} already finished ({finished}); "
                         "nothing to cancel")
    known = not (state == "PENDING" and history is None)
    shown_state = state if state != "PENDING" or history is None else history.state
    running = state in RUNNING_STATES or (history is not None and history.state == "STARTED")
    acknowledged = None
    if reply_timeout is None:
        app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")
    else:
        with reply_connection(app) as connection:
            replies = app.control.revoke(task_id, terminate=terminate, signal="SIGTERM", reply=True,
                                         timeout=reply_timeout, connection=connection) or []
        acknowledged = sorted(name for reply in replies for name in reply)
    if running and not terminate:
        return Cancelled(task_id, STILL_RUNNING, shown_state,
                         f"task {task_id} is running ({shown_state}); it will finish unless you terminate it",
                         acknowledged)
    if running:
        deadline = time.monotonic() + confirm_timeout
        while confirm_timeout > 0:
            run = get_run(task_id)
            if result.state == "REVOKED" or (run is not None and run.state == "REVOKED"):
                break
            if time.monotonic() >= deadline:
                record_revoked(task_id, "terminated by operator")
                recorder.flush()
                return Cancelled(task_id, TERMINATE_UNCONFIRMED, shown_state,
                                 f"task {task_id} was running; SIGTERM was asked for but the job was not seen to stop "
                                 f"within {confirm_timeout:g}s (a worker with a thread pool cannot stop a running "
                                 "task): follow it with its status", acknowledged)
            time.sleep(0.1)
        record_revoked(task_id, "terminated by operator")
        recorder.flush()
        return Cancelled(task_id, TERMINATED, shown_state, f"task {task_id} was running and was terminated (SIGTERM)",
                         acknowledged)
    record_revoked(task_id, "revoked by operator")
    recorder.flush()
    if not known:
        return Cancelled(task_id, REVOKED_UNKNOWN, None,
                         f"task {task_id} is not known yet; revoked anyway, so it will not run if it appears",
                         acknowledged)
    detail = f"task {task_id} had not started ({shown_state}); it will not run"
    if acknowledged == []:
        detail += ("; but no worker answered the revoke: a worker that starts later does not know of it and would "
                   "run the job")
    return Cancelled(task_id, REVOKED_BEFORE_START, shown_state, detail, acknowledged)
