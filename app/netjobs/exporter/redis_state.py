"""What the exporter reads from Redis: queues, unacked messages, worker leases, beat, counters, spool.

Two pipelined passes: the first reads everything that does not depend on anything else, the second
the lease payloads of the live workers and the RedBeat entries the first found. The count of tasks
held by lost workers comes from :func:`netjobs.leases.orphaned_messages`, the rule `netjobs doctor`
applies (a few more small round trips).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from netjobs import metrics, spool
from netjobs.beat import holder_key
from netjobs.config import Settings
from netjobs.leases import LEASE_KEY, LEASES_KEY, UNACKED_KEY, orphaned_messages
from netjobs.services.health import queue_keys

COUNTER_KEYS = (metrics.TASKS_KEY, metrics.EVENTS_KEY, metrics.RUNTIME_KEY, metrics.QUEUE_WAIT_KEY)
SPOOLS = {"job_runs": spool.HISTORY_KEY, "dead_letters": spool.DEAD_LETTERS_KEY}


@dataclass
class OldestMessage:
    task_id: str | None
    published_at: float | None  # from the message's header; None: look it up in job_runs


@dataclass
class Worker:
    group: str
    host: str
    alive: bool
    queues: list[str] = field(default_factory=list)
    held: int = 0  # messages in its lease: running, prefetched or waiting for an ETA (0 when not alive)


@dataclass
class Schedule:
    name: str
    task: str
    enabled: bool
    last_run_at: float | None
    next_run_at: float | None  # RedBeat's due time (its zset score); None: it never runs again


@dataclass
class RedisReading:
    now: float
    waiting: dict[str, int]
    oldest: dict[str, list[OldestMessage]]  # the oldest message of each priority sub-list
    unacked: dict[str, int]
    workers: list[Worker]
    lost_worker_tasks: int
    beat_lock_held: bool
    beat_holder_host: str | None
    beat_tick_age: float | None
    schedules: list[Schedule]
    counters: dict[str, dict[str, float]]
    spool_entries: dict[str, int]
    spool_oldest_age: dict[str, float]  # seconds the head entry has waited (0 when empty, inf unknown)


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _oldest(raw) -> OldestMessage | None:
    if raw is None:
        return None
    try:
        headers = json.loads(raw).get("headers") or {}
    except (ValueError, AttributeError):
        return OldestMessage(None, None)
    return OldestMessage(headers.get("id"), metrics.published_at(headers))


def _split_worker(name: str) -> tuple[str, str]:
    group, sep, host = name.partition("@")
    return (group, host) if sep else ("", name)


def _unacked_by_queue(raw: dict, queues) -> dict[str, int]:
    counts = {queue: 0 for queue in queues}
    for payload in raw.values():
        try:
            queue = json.loads(payload)[2]  # kombu: [message, exchange, routing_key]
        except (ValueError, IndexError, TypeError):
            continue
        counts[queue] = counts.get(queue, 0) + 1
    return counts


def _epoch(value) -> float | None:
    return value.timestamp() if value is not None else None


def read_redis(broker, beat, settings: Settings) -> RedisReading:
    """``broker`` and ``beat``: redis-py clients (the same object when RedBeat uses the broker's Redis)."""
    from redbeat.schedulers import RedBeatSchedulerEntry

    now = time.time()
    queues = list(settings.queues)
    prefix = settings.redbeat_key_prefix
    lock_key = f"{prefix}lock"
    first = broker.pipeline(transaction=False)
    beat_first = first if beat is broker else beat.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            first.llen(key)
            first.lindex(key, -1)  # kombu LPUSHes and BRPOPs: the oldest is last
    first.hgetall(UNACKED_KEY)
    first.zrange(LEASES_KEY, 0, -1, withscores=True)
    for key in COUNTER_KEYS:
        first.hgetall(key)
    for key in SPOOLS.values():
        first.llen(key)
    beat_first.pttl(lock_key)
    beat_first.get(holder_key(lock_key))
    beat_first.zrange(f"{prefix}:schedule", 0, -1, withscores=True)
    results = first.execute()
    beat_results = results[-3:] if beat is broker else beat_first.execute()

    waiting, oldest = {}, {}
    position = 0
    for queue in queues:
        waiting[queue], oldest[queue] = 0, []
        for _ in queue_keys(queue):
            length, tail = results[position], results[position + 1]
            position += 2
            waiting[queue] += length
            message = _oldest(tail)
            if message is not None:
                oldest[queue].append(message)
    unacked = _unacked_by_queue(results[position], queues)
    leases = results[position + 1]
    counters = {key: {_text(name): float(value) for name, value in raw.items()}
                for key, raw in zip(COUNTER_KEYS, results[position + 2:position + 2 + len(COUNTER_KEYS)])}
    position += 2 + len(COUNTER_KEYS)
    spool_entries = dict(zip(SPOOLS, results[position:position + len(SPOOLS)]))
    pttl, raw_holder, schedule_scores = beat_results

    # Second pass: what the live workers consume, and the schedule entries.
    alive = [_text(name) for name, score in leases if score >= now]
    second = broker.pipeline(transaction=False)
    if alive:
        second.mget([LEASE_KEY.format(worker=name) for name in alive])
    beat_second = second if beat is broker else beat.pipeline(transaction=False)
    for key, _score in schedule_scores:
        beat_second.hmget(_text(key), "definition", "meta")
    answers = second.execute() if len(second) else []
    payloads = answers.pop(0) if alive else []
    entries = answers if beat is broker else (beat_second.execute() if len(beat_second) else [])

    consumed, held = {}, {}
    for name, payload in zip(alive, payloads):
        try:
            lease = json.loads(payload) if payload else {}
        except ValueError:
            lease = {}
        consumed[name] = list(lease.get("queues") or [])
        held[name] = len(lease.get("tags") or ())
    workers = [Worker(*_split_worker(_text(name)), alive=_text(name) in consumed,
                      queues=consumed.get(_text(name), []), held=held.get(_text(name), 0)) for name, _score in leases]

    schedules = []
    for (key, score), (definition, meta) in zip(schedule_scores, entries):
        if not definition:
            continue
        try:
            spec = RedBeatSchedulerEntry.decode_definition(definition)
            last_run = RedBeatSchedulerEntry.decode_meta(meta).get("last_run_at")
        except (ValueError, TypeError):
            continue
        schedules.append(Schedule(name=str(spec.get("name") or _text(key)[len(prefix):]), task=str(spec.get("task")),
                                  enabled=bool(spec.get("enabled", True)), last_run_at=_epoch(last_run),
                                  next_run_at=score if score >= 0 else None))

    holder = None
    try:
        holder = json.loads(raw_holder) if raw_holder else None
    except ValueError:
        pass
    tick_age = now - float(holder["ticked_at"]) if holder and "ticked_at" in holder else None

    return RedisReading(
        now=now, waiting=waiting, oldest=oldest, unacked=unacked, workers=workers,
        lost_worker_tasks=len(orphaned_messages(broker, settings, now=time.time(), early=True)),
        beat_lock_held=pttl != -2, beat_holder_host=holder.get("host") if holder else None,
        beat_tick_age=tick_age, schedules=schedules, counters=counters, spool_entries=spool_entries,
        spool_oldest_age={name: age or 0.0 for name, age
                          in zip(SPOOLS, spool.oldest_ages(broker, list(SPOOLS.values()), now).values())},
    )


def oldest_published_at(oldest: dict[str, list[OldestMessage]], lookup) -> dict[str, float]:
    """Publish time (epoch seconds) of the oldest waiting message of each queue that has one.

    A message's own header is used; for those without it, ``lookup(task_ids)`` (e.g.
    :func:`netjobs.exporter.database_state.published_times`) answers from job_runs. It is called once,
    only when needed.
    """
    unknown = [m.task_id for messages in oldest.values() for m in messages if m.published_at is None and m.task_id]
    looked_up = lookup(unknown) if unknown else {}
    times = {}
    for queue, messages in oldest.items():
        known = [m.published_at if m.published_at is not None else looked_up.get(m.task_id) for m in messages]
        known = [t for t in known if t is not None]
        if known:
            times[queue] = min(known)
    return times
