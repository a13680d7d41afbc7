"""Worker leases: the tasks of a worker that died come back in about a minute, not after hours.

kombu's Redis transport keeps every delivered, not yet acknowledged message in the ``unacked``
hash (``unacked_index`` holds its delivery time) and hands it out again only after the visibility
timeout, which must exceed the longest task (two hours by default). A worker whose main process or
host dies therefore leaves its running and prefetched tasks invisible for that long.

Each worker renews a lease in Redis every ``worker_lease_seconds / 4``: the delivery tags of every
message it holds (running, waiting for a pool slot, or waiting for its ETA). A message that has been
unacked longer than one lease period and is in no live worker's lease belongs to a worker that is
gone: any worker returns it to its queue (kombu's own ``restore_by_tag``, the same transaction
kombu uses at the visibility timeout). A task still running on a live worker is always in that
worker's lease, so it is never handed to a second worker. `netjobs doctor` uses the same rule.

A worker reaps only after its own renewals have succeeded for two renewal periods in a row: after
a Redis outage every live worker gets the time to renew before anyone judges who is gone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from celery import bootsteps
from kombu.transport.redis import Channel as KombuRedisChannel

from netjobs.config import Settings, get_settings
from netjobs.forks import no_fork_during

log = logging.getLogger(__name__)

LEASES_KEY = "netjobs:leases"  # zset: worker name -> time its lease expires
LEASE_KEY = "netjobs:lease:{worker}"  # JSON {"pid", "renewed_at", "tags", "queues"}, expires with the lease
REAPER_LOCK_KEY = "netjobs:leases:reaper"
# kombu's key names for unacknowledged messages (netjobs sets no global key prefix).
UNACKED_KEY = KombuRedisChannel.unacked_key
UNACKED_INDEX_KEY = KombuRedisChannel.unacked_index_key
RENEWALS_PER_LEASE = 4
FORGET_WORKERS_AFTER = 86400


@dataclass(frozen=True)
class HeldMessage:
    """An unacknowledged message that no live worker holds."""

    delivery_tag: str
    task_id: str | None
    task_name: str | None
    queue: str | None
    age: float  # seconds since it was delivered

    def describe(self) -> str:
        return f"{self.task_name or '?'}[{self.task_id or self.delivery_tag}] on {self.queue or '?'}, {self.age:.0f}s"


def renewal_interval(settings: Settings) -> float:
    return settings.worker_lease_seconds / RENEWALS_PER_LEASE


def held_delivery_tags() -> set[str]:
    """Delivery tags of every message this worker process holds (Celery's worker state)."""
    from celery.worker import state

    for _ in range(5):
        try:
            requests = (*state.reserved_requests, *state.active_requests, *state.scheduled_requests)
            break
        except RuntimeError:  # a set changed while the event loop thread worked on it
            time.sleep(0.01)
    else:
        requests = ()
    tags = set()
    for request in requests:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag:
            tags.add(tag if isinstance(tag, str) else tag.decode())
    return tags


def renew_lease(client, worker: str, tags: set[str], lease_seconds: int, now: float | None = None,
                queues: list[str] | None = None) -> None:
    """``queues``: the queues the worker consumes (the exporter counts consumers per queue)."""
    now = time.time() if now is None else now
    value = json.dumps({"pid": os.getpid(), "renewed_at": now, "tags": sorted(tags), "queues": sorted(queues or ())})
    with client.pipeline(transaction=False) as pipe:
        pipe.set(LEASE_KEY.format(worker=worker), value, ex=lease_seconds)
        pipe.zadd(LEASES_KEY, {worker: now + lease_seconds})
        pipe.zremrangebyscore(LEASES_KEY, "-inf", now - FORGET_WORKERS_AFTER)
        pipe.execute()


def leased_tags(client, now: float, renewed_since: float | None = None) -> set[str]:
    """Every delivery tag in a lease that has not expired (and was renewed since ``renewed_since``)."""
    workers = client.zrangebyscore(LEASES_KEY, now, "+inf")
    tags: set[str] = set()
    if workers:
        for value in client.mget([LEASE_KEY.format(worker=_text(w)) for w in workers]):
            if value:
                lease = json.loads(value)
                if renewed_since is None or lease["renewed_at"] >= renewed_since:
                    tags.update(lease["tags"])
    return tags


def orphaned_messages(client, settings: Settings, now: float | None = None,
                      early: bool = False) -> list[HeldMessage]:
    """Unacknowledged messages older than one lease that no live worker holds, oldest first.

    The leases are read before the unacked index: a message delivered after that read is younger
    than a lease, and one delivered before it is in its worker's lease by then.

    ``early`` (for doctor, which only reports): also count as lost the messages of a worker that
    has missed two renewals, and messages older than two renewal periods; the reaper waits for
    the lease to expire.
    """
    now = time.time() if now is None else now
    if early:
        grace = 2 * renewal_interval(settings)
        leased = leased_tags(client, now, renewed_since=now - grace - 1)
        cutoff = now - grace
    else:
        leased = leased_tags(client, now)
        cutoff = now - settings.worker_lease_seconds
    candidates = [(_text(tag), score) for tag, score in
                  client.zrangebyscore(UNACKED_INDEX_KEY, "-inf", cutoff, withscores=True)]
    candidates = [(tag, score) for tag, score in candidates if tag not in leased]
    if not candidates:
        return []
    payloads = client.hmget(UNACKED_KEY, [tag for tag, _ in candidates])
    held = []
    for (tag, score), raw in zip(candidates, payloads):
        if raw is None:  # acknowledged meanwhile
            continue
        held.append(_describe(tag, raw, now - score))
    return held


def _describe(tag: str, raw, age: float) -> HeldMessage:
    task_id = task_name = queue = None
    try:
        message, _exchange, queue = json.loads(raw)
        headers = message.get("headers") or {}
        task_id, task_name = headers.get("id"), headers.get("task")
    except (ValueError, TypeError, AttributeError):
        pass
    return HeldMessage(tag, task_id, task_name, queue, age)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LeaseKeeper:
    """Renews this worker's lease and returns the messages of lost workers (one thread)."""

    def __init__(self, app, worker_name: str, settings: Settings | None = None):
        self.app = app
        self.worker_name = worker_name
        self.settings = settings or get_settings()
        self.interval = renewal_interval(self.settings)
        self._thread: threading.Thread | None = None
        self._client = None
        self._connection = None
        self._renewing_since: float | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netjobs-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            # This thread lives in a prefork worker's parent: a child forked while it is inside an
            # import (its first renewal and reap import lazily) or a connect hangs for ever.
            with no_fork_during():
                self.step()
            time.sleep(self.interval)

    def step(self, now: float | None = None) -> list[HeldMessage]:
        """One renewal and, when this worker may judge, one reaping pass. Returns what it returned."""
        import redis

        now = time.time() if now is None else now
        try:
            client = self._redis()
            renew_lease(client, self.worker_name, held_delivery_tags(), self.settings.worker_lease_seconds, now,
                        queues=self._consumed_queues())
        except redis.RedisError as exc:
            self._renewing_since = None
            if not self._failing:
                log.warning("worker lease: cannot renew in Redis (%s); retrying every %.0fs", exc, self.interval)
                self._failing = True
            return []
        if self._failing:
            log.warning("worker lease: renewed again")
            self._failing = False
        if self._renewing_since is None:
            self._renewing_since = now
        if now - self._renewing_since < 2 * self.interval:
            return []
        try:
            return self.reap(client, now)
        except redis.RedisError as exc:
            log.warning("worker lease: reaping failed (%s)", exc)
            return []

    def _consumed_queues(self) -> list[str]:
        # -Q selects app.amqp.queues.consume_from; add_consumer/cancel_consumer change it at run time.
        try:
            return sorted(self.app.amqp.queues.consume_from)
        except Exception:  # noqa: BLE001 - the lease matters more than this detail
            return []

    def reap(self, client, now: float) -> list[HeldMessage]:
        # One reaper at a time across all workers; the lock expires on its own.
        if not client.set(REAPER_LOCK_KEY, self.worker_name, nx=True, ex=max(1, int(self.interval))):
            return []
        orphans = orphaned_messages(client, self.settings, now)
        if not orphans:
            return []
        qos = self._channel().qos
        for orphan in orphans:
            log.warning("worker lease: returning %s to its queue: its worker is gone", orphan.describe())
            qos.restore_by_tag(orphan.delivery_tag, client=client)
        return orphans

    def _redis(self):
        if self._client is None:
            from netjobs.redis_clients import redis_from_url

            self._client = redis_from_url(self.settings.broker_url, self.settings, socket_connect_timeout=5,
                                          socket_timeout=10, health_check_interval=25)
        return self._client

    def _channel(self):
        # A kombu channel of its own, only to restore messages with kombu's transaction (a channel is
        # not shared between threads). Declaring the queues makes sure their bindings exist.
        if self._connection is None:
            self._connection = self.app.connection_for_write()
            channel = self._connection.default_channel
            for queue in self.app.conf.task_queues or ():
                queue(channel).declare()
        return self._connection.default_channel


class LeaseStep(bootsteps.StartStopStep):
    """Worker bootstep: a LeaseKeeper for the life of the worker process.

    It is not stopped with the other steps: during a warm shutdown the pool may run its tasks for
    a long time after the consumer stopped, and they stay leased until the process exits.
    """

    label = "netjobs lease"

    def start(self, worker):
        LeaseKeeper(worker.app, worker.hostname).start()
