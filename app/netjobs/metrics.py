"""Cluster-wide task counters and histograms, kept in Redis hashes for the exporter.

job_runs cannot give Prometheus counters: the history purge shrinks it. Instead the history
recorder (netjobs.history) counts the events it flushes, in every process, with one pipeline of
HINCRBY per flush (:func:`count_events`); the exporter (netjobs.exporter) reads the hashes. The
values only grow, so Prometheus' ``rate()`` works across exporter restarts.

Keys (the broker's Redis; fields are JSON arrays of label values):

===================================  ======================================================
``netjobs:metrics:tasks``            ``[task, queue, state]`` -> tasks that ended in SUCCESS, FAILURE, REVOKED
``netjobs:metrics:events``           ``[task, queue, event]`` -> ``published``, ``retried`` events
``netjobs:metrics:runtime:v1``       ``[task, queue, bucket index]`` -> count, ``[task, queue, "sum"]`` -> seconds
``netjobs:metrics:queue_wait:v1``    the same, for the time from publish (or ETA) to start
===================================  ======================================================

A histogram stores the count of each bucket (not cumulative), so an observation is one HINCRBY;
changing the bounds means a new key version.

Queue wait needs the publish time at the worker: every published message carries it in the
``netjobs_published_at`` header (epoch seconds, set here at ``before_task_publish``), which also
gives the exporter the age of the oldest waiting message.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from typing import Iterable

from celery import signals


PUBLISHED_AT_HEADER = "netjobs_published_at"
TASKS_KEY = "netjobs:metrics:tasks"
EVENTS_KEY = "netjobs:metrics:events"
RUNTIME_KEY = "netjobs:metrics:runtime:v1"
QUEUE_WAIT_KEY = "netjobs:metrics:queue_wait:v1"

RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
OUTCOME_STATES = ("SUCCESS", "FAILURE", "REVOKED")
UNKNOWN = ""  # label value when an event does not say (e.g. the queue of a task revoked early)


@signals.before_task_publish.connect
def _stamp_published_at(headers=None, **_):
    # Overwrite: a retry re-publishes with its request's headers, and its wait starts now.
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = time.time()


def published_at(headers) -> float | None:
    """The publish time a message's headers carry, or None (a message from an older producer)."""
    value = (headers or {}).get(PUBLISHED_AT_HEADER)
    return float(value) if isinstance(value, (int, float)) else None


def queue_wait(request) -> float | None:
    """Seconds the task waited in its queue before this start: from publish, or from its ETA."""
    sent = published_at({PUBLISHED_AT_HEADER: getattr(request, PUBLISHED_AT_HEADER, None)})
    if sent is None:
        return None
    due = sent
    eta = getattr(request, "eta", None)
    if eta:
        try:
            due = max(sent, (eta if isinstance(eta, datetime) else datetime.fromisoformat(eta)).timestamp())
        except (TypeError, ValueError):
            pass
    return max(0.0, time.time() - due)


def field(*labels) -> str:
    return json.dumps([UNKNOWN if label is None else str(label) for label in labels], separators=(",", ":"))


def bucket_index(value: float, bounds: tuple[float, ...]) -> int:
    """The first bucket whose upper bound holds ``value``; len(bounds) is +Inf."""
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


def tally(events: Iterable) -> dict[str, Counter]:
    """What a batch of history events adds to each hash (floats for the ``sum`` fields)."""
    added: dict[str, Counter] = {TASKS_KEY: Counter(), EVENTS_KEY: Counter(), RUNTIME_KEY: Counter(),
                                 QUEUE_WAIT_KEY: Counter()}
    for event in events:
        if event.task_name is None:  # `netjobs cancel` before any worker saw it: the worker counts it
            continue
        task, queue = event.task_name, event.queue
        if event.state in OUTCOME_STATES:
            added[TASKS_KEY][field(task, queue, event.state)] += 1
            if event.duration_ms is not None and event.state != "REVOKED":
                seconds = event.duration_ms / 1000.0
                added[RUNTIME_KEY][field(task, queue, bucket_index(seconds, RUNTIME_BUCKETS))] += 1
                added[RUNTIME_KEY][field(task, queue, "sum")] += seconds
        elif event.state == "PUBLISHED":
            added[EVENTS_KEY][field(task, queue, "published")] += 1
        elif event.state == "RETRY":
            added[EVENTS_KEY][field(task, queue, "retried")] += 1
        elif event.state == "STARTED" and getattr(event, "queue_wait", None) is not None:
            added[QUEUE_WAIT_KEY][field(task, queue, bucket_index(event.queue_wait, QUEUE_WAIT_BUCKETS))] += 1
            added[QUEUE_WAIT_KEY][field(task, queue, "sum")] += event.queue_wait
    return added


def count_events(client, events: list) -> int:
    """Add a flushed batch of history events to the counters: one pipeline. Returns fields changed."""
    with client.pipeline(transaction=False) as pipe:
        changes = add_counts(pipe, events)
        if changes:
            pipe.execute()
    return changes


def add_counts(pipe, events: list) -> int:
    """Queue on ``pipe`` what ``events`` add to the counters. Returns the number of fields changed."""
    changes = 0
    for key, counts in tally(events).items():
        for name, amount in counts.items():
            if isinstance(amount, float):
                pipe.hincrbyfloat(key, name, amount)
            else:
                pipe.hincrby(key, name, amount)
            changes += 1
    return changes


def parse_field(name) -> list[str]:
    return json.loads(name.decode() if isinstance(name, bytes) else name)
