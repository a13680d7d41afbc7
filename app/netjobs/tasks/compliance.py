"""Compliance check task (heavy queue). A thin wrapper over :mod:`netjobs.services.compliance`."""

from __future__ import annotations

from netjobs.celery_app import app
from netjobs.services.compliance import run_compliance
from netjobs.tasks.base import NetjobsTask


@app.task(base=NetjobsTask, bind=True, name="netjobs.compliance.check")
def check(self, devices: list[str] | None = None) -> dict:
    """Check the latest snapshots of ``devices`` (default: every enabled device).

    The task id is the run id, so a redelivered task rewrites its own results instead of adding more.
    """
    return run_compliance(devices=devices, run_id=self.request.id, progress=self.progress)
