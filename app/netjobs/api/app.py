"""The application factory: routers under /api/v1, JSON errors, offline docs, a request body limit."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from netjobs.api import API_PREFIX

# The largest body accepted: an inventory import (10 MiB of text, netjobs.services.inventory) in JSON.
MAX_BODY_BYTES = 12 * 1024 * 1024


class BodyLimit:
    """Refuse a request body over ``limit`` bytes: 413 when its Content-Length says so, before it is
    read; a chunked body is cut off at the limit (FastAPI then answers 400)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse(status_code=413, content={"detail": f"request body over {self.limit} bytes"})
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netjobs")
    except PackageNotFoundError:  # pragma: no cover - a source tree
        return "unknown"


def create_app() -> FastAPI:
    """A new application. Reads no setting and connects to nothing until a request comes."""
    from netjobs.api import docs, errors
    from netjobs.api.routers import access, configs, deadletters, devices, health, jobs, runs, schedules, workers

    app = FastAPI(
        title="netjobs", version=_version(),
        description="Background jobs for network operations. Every call needs `Authorization: Bearer TOKEN` "
                    "(`netjobs tokens create NAME --user U --role viewer|operator|admin`) except "
                    f"`{API_PREFIX}/health/live`.",
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
    )
    errors.install(app)
    for module in (health, jobs, runs, deadletters, schedules, workers, devices, configs, access):
        app.include_router(module.router, prefix=API_PREFIX)
    docs.install(app, API_PREFIX)
    app.add_middleware(BodyLimit)
    return app
