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

# kombu's Redis transport keeps one list per queue and priority step and pops the lowest step first:
# 0 is the most urgent. Jobs are "normal" unless asked otherwise, so that "high" and "urgent" ones
# (`submit --priority`, `backup DEVICE --now`) overtake a backlog.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITIES = {"urgent": 0, "high": 3, "normal": 6, "low": 9}
DEFAULT_PRIORITY = PRIORITIES["normal"]


def parse_priority(text: str | int) -> int:
    """A priority name (urgent, high, normal, low) or a number 0-9 (0 is the most urgent)."""
    from netjobs.errors import ValidationError

    raw = str(text).strip().lower()
    if raw in PRIORITIES:
        return PRIORITIES[raw]
    if raw.isdigit() and 0 <= int(raw) <= 9:
        return int(raw)
    raise ValidationError(f"invalid priority {text!r}: one of {', '.join(PRIORITIES)} or 0-9 (0 is the most urgent)")


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
