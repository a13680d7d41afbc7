"""The OpenAPI pages, offline: Swagger UI at /api/v1/docs and ReDoc at /api/v1/redoc.

Their JavaScript and CSS come from the fastapi-offline package (MIT; it ships Swagger UI, Apache-2.0,
and ReDoc, MIT), which is in the wheelhouse; they are served from /api/v1/docs/static. No page loads
anything from another host (no CDN, no web fonts; a Content-Security-Policy makes the browser refuse it). These pages, their assets and the schema
(/api/v1/openapi.json) need no token: they describe the code every installation ships and hold no
data, and a browser cannot send a bearer token to load a page. Every call made from them needs one
("Authorize" in Swagger UI).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles


def assets_directory() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


# The pages may load only what the API serves itself. ReDoc's bundle draws its "API docs by
# Redocly" logo from cdn.redoc.ly whatever its options say: the browser refuses that request.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; worker-src 'self' blob:")


def _own_assets_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install(app: FastAPI, prefix: str) -> None:
    static = f"{prefix}/docs/static"
    app.mount(static, StaticFiles(directory=assets_directory()), name="docs-static")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that adds a path
        return _own_assets_only(get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title}: API",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js", swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": False, "validatorUrl": None},
        ))

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _own_assets_only(get_redoc_html(
            openapi_url=root + app.openapi_url, title=f"{app.title}: API reference",
            redoc_js_url=f"{root}{static}/redoc.standalone.js", redoc_favicon_url=f"{root}{static}/favicon.png",
            with_google_fonts=False))
