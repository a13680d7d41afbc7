"""`netjobs-api`: the HTTP API (FastAPI, served by uvicorn), versioned under /api/v1.

Modules: :mod:`.app` builds the application, :mod:`.auth` checks bearer tokens and roles and limits
failed authentication per client address, :mod:`.errors` turns errors into JSON answers,
:mod:`.docs` serves the OpenAPI pages offline, :mod:`.routers` has one module per resource and
:mod:`.server` runs uvicorn. Importing any of them reads no setting and opens no connection.
"""

from __future__ import annotations

API_PREFIX = "/api/v1"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (`netjobs-api`, `python -m netjobs.api`)."""
    from netjobs.api.server import main as run

    return run(argv)
