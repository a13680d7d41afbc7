"""The default beat schedule, stored in RedBeat on beat start-up."""

from __future__ import annotations

from celery.schedules import crontab

from netjobs.config import Settings


def default_schedule(settings: Settings) -> dict[str, dict]:
    # `expires` keeps a missed run from piling up behind a stopped worker.
    return {
        "reachability-sweep": {
            "task": "netjobs.network.sweep_inventory",
            "schedule": 15 * 60.0,
            "options": {"expires": 14 * 60},
        },
        "config-backup-all": {
            "task": "netjobs.backup.all",
            "schedule": crontab(minute=0, hour=2),
            "options": {"expires": 3 * 3600},
        },
        "history-cleanup": {
            "task": "netjobs.maintenance.purge_history",
            "schedule": crontab(minute=0, hour=3),
            "options": {"expires": 3600},
        },
        "compliance-check": {
            "task": "netjobs.compliance.check",
            "schedule": crontab(minute=0, hour=5),
            "options": {"expires": 3 * 3600},
        },
        "health-snapshot": {
            "task": "netjobs.maintenance.health_snapshot",
            "schedule": 5 * 60.0,
            "options": {"expires": 4 * 60},
        },
    }
