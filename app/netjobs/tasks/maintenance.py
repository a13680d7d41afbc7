"""Maintenance tasks (default queue): history retention and the periodic health snapshot."""

from __future__ import annotations

import logging

from netjobs.celery_app import app
from netjobs.config import get_settings
from netjobs.services import health, maintenance
from netjobs.tasks.base import NetjobsTask

log = logging.getLogger(__name__)


@app.task(base=NetjobsTask, name="netjobs.maintenance.purge_history")
def purge_history(days: int | None = None) -> dict:
    """Delete job history, dead letters and results older than ``days`` (default: the retention)."""
    return maintenance.purge_history(older_than_days=days)


@app.task(base=NetjobsTask, name="netjobs.maintenance.health_snapshot")
def health_snapshot() -> dict:
    """Workers, queues and beat lock as seen now; every problem is also logged as a warning."""
    snapshot = health.health_snapshot(app, get_settings())
    for problem in snapshot["problems"]:
        log.warning("health: %s", problem)
    return snapshot
