"""Every error as a JSON answer: ``{"detail": "...", ...}``, never a traceback.

- bad input: 422 with ``errors: [{"field": "body.kwargs", "reason": "..."}]`` (FastAPI's own
  validation and netjobs' ValidationError, through :func:`invalid` which names the field);
- unknown object: 404; a conflict (already requeued, already finished): 409;
- Redis or PostgreSQL unreachable: 503 naming which, without its password;
- anything else: 500 with a reference to the log line, which has the traceback.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import contextmanager
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from netjobs.errors import NotFoundError, PermanentError, ValidationError

log = logging.getLogger("netjobs.api")


class FieldError(ValidationError):
    """A ValidationError about one named field of the request."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


class Conflict(PermanentError):
    """The request is well formed but the object's state does not allow it (409)."""


@contextmanager
def invalid(field: str) -> Iterator[None]:
    """Name ``field`` in the 422 answer for a ValidationError raised inside."""
    try:
        yield
    except FieldError:
        raise
    except ValidationError as exc:
        raise FieldError(field, str(exc)) from None


def _location(loc) -> str:
    return ".".join(str(part) for part in loc)


def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _location(e.get("loc", ())), "reason": e.get("msg", "invalid")} for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": f"invalid request: {summary}", "errors": errors})


def _validation(request: Request, exc: ValidationError) -> JSONResponse:
    field = getattr(exc, "field", None)
    errors = [{"field": field, "reason": str(exc)}] if field else [{"field": None, "reason": str(exc)}]
    return JSONResponse(status_code=422, content={"detail": str(exc), "errors": errors})


def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
    text = str(exc)
    # services say "already requeued" with NotFoundError (nothing left to requeue): a conflict to HTTP.
    return JSONResponse(status_code=409 if "already" in text else 404, content={"detail": text})


def _permanent(request: Request, exc: PermanentError) -> JSONResponse:
    from netjobs.services.jobs import Unreachable

    if isinstance(exc, Unreachable):
        return JSONResponse(status_code=503, content={"detail": str(exc)})
    return JSONResponse(status_code=409 if isinstance(exc, Conflict) else 400, content={"detail": str(exc)})


def unavailable_message(exc: BaseException) -> str | None:
    """One line naming the unreachable service (password hidden), or None if ``exc`` is not that."""
    from netjobs.cli.common import EXIT_FAILED, explain

    try:
        known = explain(exc)
    except Exception:  # noqa: BLE001 - only decorates a message
        return None
    if known is None or known[0] != EXIT_FAILED:
        return None
    return known[1]


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    message = unavailable_message(exc)
    if message is not None:
        log.warning("%s %s: %s", request.method, request.url.path, message)
        return JSONResponse(status_code=503, content={"detail": message})
    reference = secrets.token_hex(4)
    log.error("%s %s failed (reference %s)", request.method, request.url.path, reference, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": f"internal error (reference {reference} in the API log)"})


def _service_down(request: Request, exc: Exception) -> JSONResponse:
    message = unavailable_message(exc) or f"a service is unreachable: {type(exc).__name__}"
    log.warning("%s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=503, content={"detail": message})


def _service_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError, redis.exceptions.AuthenticationError, kombu.exceptions.OperationalError,
            ConnectionError, TimeoutError)


def install(app: FastAPI) -> None:
    for error in _service_errors():
        app.add_exception_handler(error, _service_down)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(PermanentError, _permanent)
    app.add_exception_handler(Exception, _unexpected)


def json_response(value, status_code: int = 200) -> JSONResponse:
    from netjobs.cli.common import plain

    return JSONResponse(status_code=status_code, content=jsonable_encoder(plain(value)))
