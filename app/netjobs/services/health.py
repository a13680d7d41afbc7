"""Health of the platform as Redis and the workers see it: queues, consumers, workers, beat lock.

Used by `netjobs doctor`, `netjobs workers`, `netjobs queues` and the periodic health snapshot.
Everything here only reads; the Redis commands are the ones the app's ACL user may run (no CONFIG).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from netjobs.config import Settings, get_settings
from netjobs.queues import PRIORITY_STEPS

# kombu's Redis transport keeps a queue's messages in the list named after the queue, and those
# sent with a priority in sublists "<queue>\x06\x16<step>" (kombu.transport.redis: sep, priority_steps).
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = PRIORITY_STEPS
# A beat ticks at least every beat_max_interval; a tick may take this long on top.
BEAT_TICK_GRACE = 15


def redis_client(url: str | None = None):
    """A redis-py client for ``url`` (default: the broker), with short timeouts for checks."""
    from netjobs.redis_clients import redis_from_url

    return redis_from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=5)


def broker_and_beat_clients(settings: Settings):
    """Clients for the broker's Redis and RedBeat's (the same client when they are one Redis)."""
    broker = redis_client(settings.broker_url)
    return broker, broker if settings.redbeat_url == settings.broker_url else redis_client(settings.redbeat_url)


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}" for step in KOMBU_PRIORITY_STEPS]


def queue_lengths(client, queues) -> dict[str, int]:
    """Messages waiting in each queue, priority sublists included (not counting those being worked on)."""
    queues = list(queues)
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            for key in queue_keys(queue):
                pipe.llen(key)
        sizes = pipe.execute()
    steps = len(KOMBU_PRIORITY_STEPS)
    return {queue: sum(sizes[i * steps:(i + 1) * steps]) for i, queue in enumerate(queues)}


def _declared_queues(app) -> list[str]:
    return [q.name for q in (app.conf.task_queues or ())]


@contextmanager
def reply_connection(app) -> Iterator:
    """A broker connection of its own for a broadcast that waits for replies, closed afterwards.

    A broadcast that ends by its timeout leaves its channel inside a blocking read of the reply
    queue; on a pooled connection that read outlives the call, and a process forked later (a
    multiprocessing child) inherits the socket mid-read: kombu's after-fork cleanup in the child
    then waits for a reply that never comes, and the parent's next broadcasts get none.
    """
    with app.connection_for_write() as connection:
        yield connection


def queue_consumers(app, timeout: float = 1.0) -> dict[str, list[str]]:
    """Queue name -> hostnames of the workers consuming it. Declared queues nobody consumes map to []."""
    with reply_connection(app) as connection:
        replies = app.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    consumers: dict[str, set[str]] = {name: set() for name in _declared_queues(app)}
    for hostname, queues in replies.items():
        for queue in queues or ():
            consumers.setdefault(queue["name"], set()).add(hostname)
    return {name: sorted(hosts) for name, hosts in consumers.items()}


def workers_answering(app, timeout: float = 1.0) -> dict[str, dict]:
    """Hostname -> summary of every worker that answers a ping within ``timeout``.

    Summary keys: name, ok, pid, uptime (s), pool, concurrency, processes, processed (tasks since
    start), active (tasks running now), queues.
    """
    with reply_connection(app) as connection:
        pongs = app.control.inspect(timeout=timeout, connection=connection).ping() or {}
        if not pongs:
            return {}
        # The hosts are known now: each later broadcast returns as soon as all of them have answered.
        inspect = app.control.inspect(timeout=timeout, destination=list(pongs), limit=len(pongs),
                                      connection=connection)
        stats = inspect.stats() or {}
        active = inspect.active() or {}
        queues = inspect.active_queues() or {}
    summary = {}
    for host in sorted(pongs):
        info = stats.get(host) or {}
        pool = info.get("pool") or {}
        summary[host] = {
            "name": host,
            "ok": (pongs[host] or {}).get("ok") == "pong",
            "pid": info.get("pid"),
            "uptime": info.get("uptime"),
            "pool": _pool_name(pool.get("implementation")),
            "concurrency": pool.get("max-concurrency"),
            "processes": len(pool.get("processes") or ()),
            "processed": sum((info.get("total") or {}).values()),
            "active": len(active.get(host) or ()),
            "queues": sorted(q["name"] for q in queues.get(host) or ()),
        }
    return summary


def _pool_name(implementation: str | None) -> str | None:
    # "celery.concurrency.prefork:TaskPool" -> "prefork"
    if not implementation:
        return None
    return implementation.rsplit(":", 1)[0].rsplit(".", 1)[-1]


def beat_lock_status(client, settings: Settings) -> dict:
    """The RedBeat lock and the beat that holds it.

    ``held``: the lock exists; ``ttl_seconds``: None if not held, -1 if it never expires;
    ``holder``: host and pid the holding beat recorded, ``last_tick_age``: seconds since its last
    tick; ``fresh``: held by a beat that is still ticking (it ticks at least every
    beat_max_interval, see netjobs.beat).
    """
    import json
    import time

    from netjobs.beat import holder_key

    key = f"{settings.redbeat_key_prefix}lock"
    with client.pipeline(transaction=False) as pipe:
        pipe.pttl(key)
        pipe.get(holder_key(key))
        pttl, raw_holder = pipe.execute()
    held = pttl != -2  # -2: no such key
    ttl = None if not held else -1.0 if pttl == -1 else pttl / 1000.0
    holder = None
    try:
        holder = json.loads(raw_holder) if raw_holder else None
    except ValueError:
        pass
    age = time.time() - float(holder["ticked_at"]) if holder and "ticked_at" in holder else None
    ticking = age is not None and age <= settings.beat_max_interval + BEAT_TICK_GRACE
    return {
        "key": key,
        "held": held,
        "ttl_seconds": ttl,
        "lock_timeout": settings.redbeat_lock_timeout,
        "holder": {"host": holder.get("host"), "pid": holder.get("pid")} if holder else None,
        "last_tick_age": age,
        "fresh": held and ttl is not None and ttl > 0 and ticking,
    }


def redis_persistence(client) -> dict:
    """Eviction policy and persistence, from INFO (CONFIG GET is not allowed to the app's ACL user).

    ``aof_replay_errors`` is INFO stats' ``unexpected_error_replies``: errors Redis sent to its
    AOF-loading client (or, on a replica, to its master) since it started. Each one is a command the
    AOF holds but the dataset does not, e.g. a MULTI/EXEC block refused on replay because the ACL
    of the ``default`` user forbids it (Redis 7.0, redis#14541). None if Redis does not report it.
    """
    memory = client.info("memory")
    persistence = client.info("persistence")
    stats = client.info("stats")
    last_save = persistence.get("rdb_last_save_time")
    return {
        "maxmemory_policy": memory.get("maxmemory_policy"),
        "maxmemory": memory.get("maxmemory"),
        "aof_enabled": bool(persistence.get("aof_enabled")),
        "aof_last_write_status": persistence.get("aof_last_write_status"),
        "rdb": {
            "last_save_time": datetime.fromtimestamp(last_save, timezone.utc).isoformat() if last_save else None,
            "last_bgsave_status": persistence.get("rdb_last_bgsave_status"),
            "changes_since_last_save": persistence.get("rdb_changes_since_last_save"),
            "saves": persistence.get("rdb_saves"),
        },
        "loading": bool(persistence.get("loading")),
        "aof_replay_errors": stats.get("unexpected_error_replies"),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def health_snapshot(app, settings: Settings | None = None, timeout: float = 1.0) -> dict:
    """Workers, queues, beat lock and Redis settings in one JSON-friendly dict with a ``problems`` list."""
    settings = settings or get_settings()
    problems: list[str] = []
    snapshot: dict = {"at": datetime.now(timezone.utc).isoformat(), "problems": problems}
    try:
        client = redis_client(settings.broker_url)
        lengths = queue_lengths(client, settings.queues)
        snapshot["redis"] = redis_persistence(client)
    except Exception as exc:  # noqa: BLE001 - a snapshot reports what it cannot reach
        problems.append(f"broker unreachable: {_first_line(exc)}")
        return snapshot
    if snapshot["redis"]["maxmemory_policy"] != "noeviction":
        problems.append(f"redis maxmemory-policy is {snapshot['redis']['maxmemory_policy']}, not noeviction")
    if not snapshot["redis"]["aof_enabled"]:
        problems.append("redis appendonly (AOF) is off: queued tasks are lost on restart")
    if snapshot["redis"].get("aof_replay_errors"):
        problems.append(f"redis refused {snapshot['redis']['aof_replay_errors']} commands while replaying its AOF "
                        "at start-up: writes were lost (see `netjobs doctor`)")

    try:
        workers = workers_answering(app, timeout)
    except Exception as exc:  # noqa: BLE001
        workers = {}
        problems.append(f"workers could not be asked: {_first_line(exc)}")
    snapshot["workers"] = workers
    if not workers:
        problems.append("no worker answers")
    consumers: dict[str, list[str]] = {}
    for host, worker in workers.items():
        for queue in worker["queues"]:
            consumers.setdefault(queue, []).append(host)
    snapshot["queues"] = {q: {"length": lengths[q], "consumers": sorted(consumers.get(q, []))} for q in settings.queues}
    for queue, state in snapshot["queues"].items():
        if not state["consumers"]:
            problems.append(f"queue {queue} has no consumer ({state['length']} waiting)")
        if state["length"] > settings.backlog_threshold:
            problems.append(f"queue {queue} backlog {state['length']} is over {settings.backlog_threshold}")

    try:
        from netjobs.leases import orphaned_messages

        held = orphaned_messages(client, settings, early=True)
        if held:
            problems.append(f"{len(held)} tasks held by lost workers (oldest {held[0].age:.0f}s: {held[0].describe()})")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"worker leases could not be read: {_first_line(exc)}")

    try:
        lock_client = client if settings.redbeat_url == settings.broker_url else redis_client(settings.redbeat_url)
        lock = snapshot["beat_lock"] = beat_lock_status(lock_client, settings)
        if not lock["held"]:
            problems.append(f"beat lock {lock['key']} is not held: no beat is running")
        elif not lock["fresh"]:
            problems.append(f"beat lock {lock['key']} is stale (ttl {lock['ttl_seconds']}s)")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"beat lock could not be read: {_first_line(exc)}")
    return snapshot
