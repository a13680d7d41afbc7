"""Health: /health/live (no token: the process answers) and /health/ready (the doctor's checks)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from netjobs.api.deps import celery, plain

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The API process answers (no token needed)")
def live() -> dict:
    return {"status": "live"}


@router.get("/ready", summary="Ready: every error-level doctor check passes (503 lists the failing ones)",
            responses={503: {"description": "not ready: the failing checks"}})
async def ready(request: Request, timeout: float = Query(2.0, ge=0.1, le=10,
                                                          description="seconds to wait for workers")) -> JSONResponse:
    from netjobs.api.auth import verify
    from netjobs.config import get_settings
    from netjobs.services.doctor import ERROR, run_checks

    user = await run_in_threadpool(verify, request, True)
    if user is None:
        # PostgreSQL could not be asked whether the token is valid: not ready, and nothing more is told.
        problem = getattr(request.state, "auth_problem", "database unreachable")
        failing = [{"name": "database reachable", "ok": False, "detail": problem, "severity": ERROR}]
        return JSONResponse(status_code=503, content={"ready": False, "failing": failing, "checks": failing})
    from netjobs.api.auth import require

    require("viewer")(user)
    checks = await run_in_threadpool(run_checks, celery(), get_settings(), timeout)
    failing = [c for c in checks if not c.ok and c.severity == ERROR]
    body = {"ready": not failing, "failing": plain(failing), "checks": plain(checks)}
    return JSONResponse(status_code=503 if failing else 200, content=body)
