"""Queue names and routing: each task family goes to its queue by name prefix."""

from __future__ import annotations

from kombu import Exchange, Queue

from netjobs.config import Settings

# Longest prefix wins; anything unmatched goes to "default".
ROUTES_BY_PREFIX: dict[str, str] = {
    "netjobs.network.": "network",
    "netjobs.backup.": "backup",
    "netjobs.inventory.": "heavy",
    "netjobs.compliance.": "heavy",
    "netjobs.maintenance.": "default",
    "netjobs.diag.": "default",
}
HEAVY_QUEUES = frozenset({"heavy"})


def queue_for_task(name: str) -> str:
    """The queue a task runs on unless the caller names another one."""
    best = ""
    for prefix in ROUTES_BY_PREFIX:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return ROUTES_BY_PREFIX[best] if best else "default"


def route_task(name, args, kwargs, options, task=None, **kw):  # noqa: ARG001 - Celery router signature
    return {"queue": queue_for_task(name)}


def declare_queues(settings: Settings) -> tuple[Queue, ...]:
    return tuple(Queue(q, Exchange(q, type="direct"), routing_key=q) for q in settings.queues)


class QueueTimeLimits:
    """Celery task annotation: heavy-queue tasks get the heavy time limits."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def annotate(self, task):
        if queue_for_task(task.name) in HEAVY_QUEUES:
            return {
                "time_limit": self.settings.heavy_time_limit,
                "soft_time_limit": self.settings.heavy_soft_time_limit,
            }
        return None
