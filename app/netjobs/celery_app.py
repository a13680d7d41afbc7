"""The Celery application. Importing this module reads no settings and opens no connection:
configuration is built from :mod:`netjobs.config` when Celery first needs it."""

from __future__ import annotations

from celery import Celery

TASK_MODULES = (
    "netjobs.tasks.diag",
    "netjobs.tasks.network",
    "netjobs.tasks.backup",
    "netjobs.tasks.inventory",
    "netjobs.tasks.compliance",
    "netjobs.tasks.maintenance",
)

app = Celery("netjobs", include=list(TASK_MODULES))
app.config_from_object("netjobs.celeryconfig")

# Signal handlers: job history and per-process database engines.
import netjobs.history  # noqa: E402,F401
import netjobs.db.lifecycle  # noqa: E402,F401
import netjobs.beat  # noqa: E402,F401 - replaces RedBeat's lock handler before any beat starts
from netjobs.archive_host import ArchiveHostStep  # noqa: E402
from netjobs.broker_info import PublicBrokerInfoStep  # noqa: E402
from netjobs.leases import LeaseStep  # noqa: E402
from netjobs.worker_recycle import RecycleStep  # noqa: E402

# Every worker leases the messages it holds and returns those of lost workers (netjobs.leases).
app.steps["worker"].add(LeaseStep)
# Backup workers check that their host can write the config archive and keep its git view current.
app.steps["worker"].add(ArchiveHostStep)
# `inspect stats` and Flower show the broker connection without the Sentinels' password.
app.steps["consumer"].add(PublicBrokerInfoStep)
# Threads and solo workers honour the per-child task and memory limits as a whole process.
app.steps["worker"].add(RecycleStep)
