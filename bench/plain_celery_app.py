"""The baseline: a plain Celery app with default settings except the broker and result backend URL.

No netjobs code, no history, no routing. The task returns the time it started so the benchmark can
measure submit-to-start latency the same way it does for netjobs (whose start time is in job_runs).
"""

from __future__ import annotations

import os
import time

from celery import Celery

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("plain", broker=BROKER_URL, backend=BROKER_URL)


@app.task(name="bench.plain.ping")
def ping() -> float:
    return time.time()
