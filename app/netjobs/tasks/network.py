"""Network tasks (network queue): reachability sweeps. Thin wrappers over :mod:`netjobs.services.sweep`."""

from __future__ import annotations

from netjobs.celery_app import app
from netjobs.config import get_settings
from netjobs.services.sweep import SweepRequest, build_request, run_sweep
from netjobs.tasks.base import NetjobsTask


def _request(**arguments) -> SweepRequest:
    settings = get_settings()
    return build_request(**arguments, max_addresses=settings.sweep_max_addresses,
                         default_concurrency=settings.sweep_concurrency, icmp_enabled=settings.icmp_enabled,
                         time_limit=settings.task_soft_time_limit)


def _progress(task: NetjobsTask, stage: str):
    return lambda done, total: task.progress(done, total, stage=stage)


@app.task(base=NetjobsTask, bind=True, name="netjobs.network.sweep")
def sweep(self, target: str | None = None, devices: list[str] | str | None = None, site: str | None = None,
          tag: str | None = None, ports: list[int] | str | int | None = None, timeout: float = 1.0,
          icmp: bool = False, concurrency: int | None = None, store_all: bool = False) -> dict:
    """Sweep a prefix (``target``) or the selected devices; results are stored under this task's id."""
    request = _request(target=target, devices=devices, site=site, tag=tag, ports=ports, timeout=timeout,
                       icmp=icmp, concurrency=concurrency, store_all=store_all)
    return run_sweep(request, sweep_id=self.request.id, progress=_progress(self, "probing"))


@app.task(base=NetjobsTask, bind=True, name="netjobs.network.sweep_inventory")
def sweep_inventory(self, timeout: float = 1.0, icmp: bool = False) -> dict:
    """Every enabled device on its management port (the 15-minute beat job)."""
    request = _request(inventory=True, timeout=timeout, icmp=icmp)
    return run_sweep(request, sweep_id=self.request.id, progress=_progress(self, "probing"))
