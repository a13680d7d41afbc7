"""The netjobs metrics: one Collector that reads Redis and PostgreSQL once per cache period.

Several Prometheus servers scraping within ``exporter_cache_seconds`` get the same families: one
pass over Redis and one over PostgreSQL, whoever asks. A source that fails is left out of that
scrape and counted in ``netjobs_exporter_scrape_errors_total{source}``; the other still answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from netjobs import metrics
from netjobs.config import Settings
from netjobs.exporter.database_state import DatabaseReading, published_times, read_database
from netjobs.exporter.redis_state import RedisReading, oldest_published_at, read_redis

log = logging.getLogger(__name__)

SOURCES = ("redis", "database")


class NetjobsCollector(Collector):
    def __init__(self, settings: Settings, broker=None, beat=None, engine=None):
        self.settings = settings
        self._broker, self._beat, self._engine = broker, beat, engine
        self._lock = threading.Lock()
        self._cached: list = []
        self._cached_at: float | None = None
        self._errors: Counter = Counter()

    # --- sources -----------------------------------------------------------------------------

    def _clients(self):
        if self._broker is None:
            from netjobs.services.health import broker_and_beat_clients

            self._broker, self._beat = broker_and_beat_clients(self.settings)
        return self._broker, self._beat

    def _database(self):
        if self._engine is None:
            from netjobs.db.engine import get_engine

            self._engine = get_engine()
        return self._engine

    # --- prometheus-client ------------------------------------------------------------------

    def describe(self):
        return []  # the families depend on what is read; nothing is read at registration

    def collect(self):
        with self._lock:
            age = None if self._cached_at is None else time.monotonic() - self._cached_at
            if age is None or age >= self.settings.exporter_cache_seconds:
                self._cached = self._gather()
                self._cached_at = time.monotonic()
            return list(self._cached)

    def _gather(self) -> list:
        families: list = []
        readings, took = {}, {}
        for source, read in (("redis", lambda: read_redis(*self._clients(), self.settings)),
                             ("database", lambda: read_database(self._database()))):
            started = time.monotonic()
            try:
                readings[source] = read()
            except Exception as exc:  # noqa: BLE001 - one source down must not hide the other
                self._errors[source] += 1
                log.warning("exporter: cannot read %s: %s", source, exc)
            took[source] = time.monotonic() - started
        if "redis" in readings:
            families += redis_families(readings["redis"], self._oldest_times(readings["redis"]))
        if "database" in readings:
            families += database_families(readings["database"])
        families += self._own_families(readings, took)
        return families

    def _oldest_times(self, reading: RedisReading) -> dict[str, float]:
        """Publish time of the oldest message of each queue (header, else job_runs.published_at)."""
        def lookup(task_ids: list[str]) -> dict[str, float]:
            try:
                return published_times(self._database(), task_ids)
            except Exception as exc:  # noqa: BLE001
                self._errors["database"] += 1
                log.warning("exporter: cannot look up publish times: %s", exc)
                return {}

        return oldest_published_at(reading.oldest, lookup)

    def _own_families(self, readings: dict, took: dict) -> list:
        errors = CounterMetricFamily("netjobs_exporter_scrape_errors", "Reads of a source that failed, by source.",
                                     labels=["source"])
        up = GaugeMetricFamily("netjobs_exporter_source_up", "1 if the last read of the source succeeded.",
                               labels=["source"])
        duration = GaugeMetricFamily("netjobs_exporter_read_seconds", "Seconds the last read of the source took.",
                                     labels=["source"])
        for source in SOURCES:
            errors.add_metric([source], self._errors[source])
            up.add_metric([source], 1 if source in readings else 0)
            duration.add_metric([source], took.get(source, 0.0))
        return [errors, up, duration]


# --- families ------------------------------------------------------------------------------------


def redis_families(r: RedisReading, oldest: dict[str, float]) -> list:
    waiting = GaugeMetricFamily("netjobs_queue_messages_waiting",
                                "Messages waiting in the queue (priority sub-queues included).", labels=["queue"])
    unacked = GaugeMetricFamily("netjobs_queue_messages_unacked",
                                "Messages delivered to a worker and not acknowledged yet (running, prefetched or "
                                "waiting for their ETA).", labels=["queue"])
    age = GaugeMetricFamily("netjobs_queue_oldest_message_age_seconds",
                            "Seconds since the oldest waiting message was published; 0 when the queue is empty.",
                            labels=["queue"])
    consumers = GaugeMetricFamily("netjobs_queue_consumers", "Live workers consuming the queue (worker leases).",
                                  labels=["queue"])
    live_consumers: Counter = Counter(q for w in r.workers if w.alive for q in w.queues)
    for queue, count in r.waiting.items():
        waiting.add_metric([queue], count)
        unacked.add_metric([queue], r.unacked.get(queue, 0))
        consumers.add_metric([queue], live_consumers.get(queue, 0))
        if count == 0:
            age.add_metric([queue], 0)
        elif queue in oldest:
            age.add_metric([queue], max(0.0, r.now - oldest[queue]))

    worker_up = GaugeMetricFamily("netjobs_worker_up",
                                  "1 if the worker GROUP@HOST holds a live lease; 0 if its lease expired in the last "
                                  "day (forgotten after).", labels=["group", "host"])
    for worker in r.workers:
        worker_up.add_metric([worker.group, worker.host], 1 if worker.alive else 0)
    lost = GaugeMetricFamily("netjobs_tasks_held_by_lost_workers",
                             "Unacknowledged tasks whose worker stopped renewing its lease (what `netjobs doctor` "
                             "reports); the lease reaper returns them to their queues.",
                             value=r.lost_worker_tasks)

    held = GaugeMetricFamily("netjobs_beat_lock_held", "1 if a beat holds the RedBeat lock.",
                             value=1 if r.beat_lock_held else 0)
    holder = GaugeMetricFamily("netjobs_beat_lock_holder_info", "The host of the beat holding the lock (value 1).",
                               labels=["host"])
    if r.beat_holder_host:
        holder.add_metric([r.beat_holder_host], 1)
    tick = GaugeMetricFamily("netjobs_beat_last_tick_age_seconds",
                             "Seconds since the lock-holding beat last ticked (absent when no holder is recorded).")
    if r.beat_tick_age is not None:
        tick.add_metric([], r.beat_tick_age)
    enabled_count = GaugeMetricFamily("netjobs_schedules_enabled", "Enabled beat schedule entries.",
                                      value=sum(1 for s in r.schedules if s.enabled))
    enabled = GaugeMetricFamily("netjobs_schedule_enabled", "1 if the schedule entry is enabled.",
                                labels=["schedule", "task"])
    last_run = GaugeMetricFamily("netjobs_schedule_last_run_age_seconds",
                                 "Seconds since beat last fired the entry (absent if it never fired).",
                                 labels=["schedule", "task"])
    overdue = GaugeMetricFamily("netjobs_schedule_overdue_seconds",
                                "Seconds an enabled entry is past its due time without firing; 0 when on time.",
                                labels=["schedule", "task"])
    for entry in r.schedules:
        labels = [entry.name, entry.task]
        enabled.add_metric(labels, 1 if entry.enabled else 0)
        if entry.last_run_at is not None:
            last_run.add_metric(labels, max(0.0, r.now - entry.last_run_at))
        if entry.enabled and entry.next_run_at is not None:
            overdue.add_metric(labels, max(0.0, r.now - entry.next_run_at))

    spool_entries = GaugeMetricFamily("netjobs_history_spool_entries",
                                      "Batches of job history or dead letters waiting in Redis for PostgreSQL.",
                                      labels=["spool"])
    for name, length in r.spool_entries.items():
        spool_entries.add_metric([name], length)
    spool_age = GaugeMetricFamily("netjobs_history_spool_oldest_seconds",
                                  "Seconds the oldest batch in the Redis spool has waited for PostgreSQL (0: empty). "
                                  "Workers hand history over through the spool, so a second or two is normal.",
                                  labels=["spool"])
    for name, seconds in r.spool_oldest_age.items():
        spool_age.add_metric([name], seconds)

    return [waiting, unacked, age, consumers, worker_up, lost, held, holder, tick, enabled_count, enabled, last_run,
            overdue, spool_entries, spool_age, *task_families(r.counters)]


def task_families(counters: dict[str, dict[str, float]]) -> list:
    outcomes = CounterMetricFamily("netjobs_tasks", "Tasks that ended, by task, queue and state "
                                   "(SUCCESS, FAILURE, REVOKED); counted in every worker.",
                                   labels=["task", "queue", "state"])
    for name, value in sorted(counters.get(metrics.TASKS_KEY, {}).items()):
        outcomes.add_metric(metrics.parse_field(name), value)
    published = CounterMetricFamily("netjobs_tasks_published", "Tasks published, by task and queue.",
                                    labels=["task", "queue"])
    retries = CounterMetricFamily("netjobs_task_retries", "Task retries scheduled, by task and queue.",
                                  labels=["task", "queue"])
    for name, value in sorted(counters.get(metrics.EVENTS_KEY, {}).items()):
        task, queue, event = metrics.parse_field(name)
        (published if event == "published" else retries).add_metric([task, queue], value)
    runtime = _histogram("netjobs_task_runtime_seconds", "Task run time (SUCCESS and FAILURE), by task and queue.",
                         counters.get(metrics.RUNTIME_KEY, {}), metrics.RUNTIME_BUCKETS)
    wait = _histogram("netjobs_task_queue_wait_seconds",
                      "Time from publish (or ETA) to start, by task and queue.",
                      counters.get(metrics.QUEUE_WAIT_KEY, {}), metrics.QUEUE_WAIT_BUCKETS)
    return [outcomes, published, retries, runtime, wait]


def _histogram(name: str, documentation: str, stored: dict[str, float], bounds: tuple) -> HistogramMetricFamily:
    per_series: dict[tuple[str, str], dict] = defaultdict(dict)
    for field, value in stored.items():
        task, queue, slot = metrics.parse_field(field)
        per_series[(task, queue)][slot] = value
    family = HistogramMetricFamily(name, documentation, labels=["task", "queue"])
    for labels, slots in sorted(per_series.items()):
        cumulative, buckets = 0.0, []
        for index, bound in enumerate((*bounds, float("inf"))):
            cumulative += slots.get(str(index), 0.0)
            buckets.append(("+Inf" if bound == float("inf") else str(float(bound)), cumulative))
        family.add_metric(list(labels), buckets, sum_value=slots.get("sum", 0.0))
    return family


def database_families(d: DatabaseReading) -> list:
    now = d.now
    last_backup = GaugeMetricFamily("netjobs_device_last_backup_age_seconds",
                                    "Seconds since the enabled device's newest configuration snapshot.",
                                    labels=["device", "site"])
    never = GaugeMetricFamily("netjobs_device_without_backup_seconds",
                              "Seconds since an enabled device that was never backed up was added.",
                              labels=["device", "site"])
    failing = GaugeMetricFamily("netjobs_device_backup_failing",
                                "1 if the device's last backup failed for good (a dead letter newer than its newest "
                                "snapshot).", labels=["device", "site"])
    changes: Counter = Counter()
    reach: Counter = Counter()
    for device in d.devices:
        labels = [device.name, device.site]
        if device.last_backup is not None:
            last_backup.add_metric(labels, max(0.0, (now - device.last_backup).total_seconds()))
        else:
            never.add_metric(labels, max(0.0, (now - device.created_at).total_seconds()))
        failing.add_metric(labels, 1 if device.backup_failing else 0)
        changes[device.site] += device.changes_24h
        state = "unknown" if device.reachable is None else "reachable" if device.reachable else "unreachable"
        reach[(device.site, state)] += 1
    changed = GaugeMetricFamily("netjobs_config_changes_last_24h",
                                "Configuration changes archived in the last 24 hours, by site.", labels=["site"])
    for site, count in sorted(changes.items()):
        changed.add_metric([site], count)
    sites = GaugeMetricFamily("netjobs_site_devices",
                              "Enabled devices by site and by their newest device sweep: reachable, unreachable, "
                              "unknown (never swept by device).", labels=["site", "reachability"])
    for (site, state), count in sorted(reach.items()):
        sites.add_metric([site, state], count)

    letters = GaugeMetricFamily("netjobs_dead_letters_open", "Dead letters neither requeued nor discarded.",
                                labels=["task", "queue"])
    for (task, queue), count in sorted(d.dead_letters.items()):
        letters.add_metric([task, queue], count)
    compliance = GaugeMetricFamily("netjobs_compliance_failures",
                                   "Enabled devices failing the rule in their latest compliance check.",
                                   labels=["rule"])
    checked = GaugeMetricFamily("netjobs_compliance_devices_checked",
                                "Enabled devices the rule was checked on in their latest compliance check.",
                                labels=["rule"])
    for rule, (failures, devices) in sorted(d.compliance.items()):
        compliance.add_metric([rule], failures)
        checked.add_metric([rule], devices)
    return [last_backup, never, failing, changed, sites, letters, compliance, checked]
