"""Bearer tokens, roles, and the limit on failed authentication.

Every route but ``/health/live`` (and the static documentation) depends on :func:`require` with
the least role it needs: ``viewer`` reads, ``operator`` also submits, cancels, requeues and changes
schedules, ``admin`` also manages devices and tokens (netjobs.services.tokens.ROLES).

Failed authentication is counted per client address in Redis (the broker's), so every API host
behind one address shares the count: after ``NETJOBS_API_AUTH_FAILURES`` wrong tokens within
``NETJOBS_API_AUTH_WINDOW_SECONDS`` of the first, that address gets 429 until the window ends,
whatever token it sends. A request without any Authorization header is answered 401 but not
counted: it guesses nothing.
"""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from netjobs.services.tokens import ROLES, TokenUser

log = logging.getLogger("netjobs.api.auth")

FAILURES_KEY = "netjobs:api:authfail:"  # + client address: failed authentications in the current window
SCHEME = "Bearer"


def client_address(request: Request) -> str:
    """The peer's address (uvicorn puts a trusted proxy's X-Forwarded-For here, see
    NETJOBS_API_FORWARDED_ALLOW_IPS)."""
    return request.client.host if request.client else "unknown"


def _settings():
    from netjobs.config import get_settings

    return get_settings()


_redis = None


def _client():
    global _redis
    if _redis is None:
        from netjobs.redis_clients import redis_from_url

        _redis = redis_from_url(None, decode_responses=True, socket_connect_timeout=3, socket_timeout=3)
    return _redis


def reset_client() -> None:
    """Forget the Redis client (tests point the settings elsewhere)."""
    global _redis
    _redis = None


def blocked_for(address: str) -> int | None:
    """Seconds until ``address`` may try again, or None when it is not blocked."""
    s = _settings()
    key = FAILURES_KEY + address
    with _client().pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.ttl(key)
        count, ttl = pipe.execute()
    if count is not None and int(count) >= s.api_auth_failures:
        return max(1, int(ttl)) if ttl and ttl > 0 else s.api_auth_window_seconds
    return None


def count_failure(address: str) -> int:
    """Count one failed authentication; the window starts at the first failure."""
    key = FAILURES_KEY + address
    with _client().pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=_settings().api_auth_window_seconds, nx=True)
        pipe.incr(key)
        _, count = pipe.execute()
    return int(count)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": SCHEME})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("missing Authorization header: send `Authorization: Bearer TOKEN` "
                            "(tokens: `netjobs tokens create NAME --user U --role viewer|operator|admin`)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower() or not token.strip():
        return None
    return token.strip()


def verify(request: Request, lenient_database: bool = False) -> TokenUser | None:
    """The token's user, or HTTPException 401/429/503. With ``lenient_database``, None when
    PostgreSQL cannot be asked (the readiness check answers that itself)."""
    from netjobs.api.errors import unavailable_message
    from netjobs.services.tokens import authenticate

    address = client_address(request)
    try:
        wait = blocked_for(address)
    except Exception as exc:  # noqa: BLE001 - Redis down: say so, do not let the request through
        raise HTTPException(status_code=503, detail=unavailable_message(exc) or "cannot reach Redis") from None
    if wait is not None:
        raise HTTPException(status_code=429, headers={"Retry-After": str(wait)},
                            detail=f"too many failed authentications from {address}; try again in {wait} s")
    token = _bearer(request)
    try:
        user = authenticate(token) if token else None
    except Exception as exc:  # noqa: BLE001
        message = unavailable_message(exc)
        if message is None:
            raise
        if lenient_database:
            log.warning("cannot check a token: %s", message)
            request.state.auth_problem = "the database is unreachable: tokens cannot be checked"
            return None
        raise HTTPException(status_code=503, detail=f"cannot check the token: {message}") from None
    if user is None:
        failures = count_failure(address)
        log.warning("failed authentication from %s (%d in this window)", address, failures)
        raise _unauthorized("invalid token: unknown, revoked or expired (or not `Bearer TOKEN`)")
    request.state.user = user
    return user


# Declares the scheme in the OpenAPI schema (Swagger UI's "Authorize"); verify() reads the header itself.
bearer_scheme = HTTPBearer(auto_error=False, description="an API token: `netjobs tokens create`")


def authenticated(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> TokenUser:
    return verify(request)


def require(role: str) -> Callable[..., TokenUser]:
    """A dependency: the request's user, who must have at least ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(user: TokenUser = Depends(authenticated)) -> TokenUser:
        if not user.may(role):
            raise HTTPException(status_code=403, detail=f"forbidden: this needs the {role} role; the token of "
                                                        f"{user.username} has the {user.role} role")
        return user

    dependency.__name__ = f"require_{role}"
    return dependency


viewer = require("viewer")
operator = require("operator")
admin = require("admin")
