"""What the exporter reads from PostgreSQL: devices' backups and reachability, dead letters, compliance.

Each per-device figure is an index probe per enabled device (config_snapshots by (device_id,
collected_at), reachability_results by (address, checked_at), compliance_results by (device_id,
checked_at) and (run_id, device_id, rule)), so the cost follows the inventory, not the history.
Dead letters are a small table, counted whole.

Reachability is the newest sweep that probed the device's management address: a device sweep
stores every probe, a prefix sweep only answers. A device whose address is a DNS name (swept under
its resolved address) shows as ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

STATEMENT_TIMEOUT_MS = 5000  # a slow database fails the scrape's database part, not the whole scrape

DEVICES_SQL = text("""
WITH failed AS (
    SELECT args->>0 AS device, max(failed_at) AS failed_at
    FROM dead_letters WHERE task_name = 'netjobs.backup.device'
    GROUP BY 1
)
SELECT d.name, COALESCE(d.site, '') AS site, d.created_at,
       (SELECT max(s.collected_at) FROM config_snapshots s WHERE s.device_id = d.id) AS last_backup,
       (SELECT count(*) FROM config_snapshots s
         WHERE s.device_id = d.id AND s.changed AND s.collected_at >= now() - interval '24 hours') AS changes,
       f.failed_at AS last_failure,
       (SELECT bool_or(r.reachable) FROM reachability_results r
         WHERE r.address = d.mgmt_address AND r.sweep_id = (
               SELECT r2.sweep_id FROM reachability_results r2 WHERE r2.address = d.mgmt_address
               ORDER BY r2.checked_at DESC LIMIT 1)) AS reachable,
       now() AS now
FROM devices d LEFT JOIN failed f ON f.device = d.name
WHERE d.enabled
""")

DEAD_LETTERS_SQL = text("""
SELECT task_name, COALESCE(queue, '') AS queue, count(*) AS open
FROM dead_letters WHERE requeued_at IS NULL
GROUP BY 1, 2
""")

# Each enabled device's latest compliance check (its newest run), failures per rule.
COMPLIANCE_SQL = text("""
SELECT r.rule, count(*) FILTER (WHERE NOT r.passed) AS failing, count(*) AS checked
FROM devices d
CROSS JOIN LATERAL (SELECT c.run_id FROM compliance_results c WHERE c.device_id = d.id
                    ORDER BY c.checked_at DESC LIMIT 1) latest
JOIN compliance_results r ON r.run_id = latest.run_id AND r.device_id = d.id
WHERE d.enabled
GROUP BY r.rule
""")

PUBLISHED_SQL = text("SELECT task_id, published_at FROM job_runs WHERE task_id = ANY(:ids)")


@dataclass
class DeviceState:
    name: str
    site: str
    created_at: datetime
    last_backup: datetime | None
    changes_24h: int
    last_failure: datetime | None  # newest dead letter of its backup
    reachable: bool | None  # in the newest sweep of its address; None: never swept

    @property
    def backup_failing(self) -> bool:
        """Its last backup failed for good: a dead letter newer than its newest snapshot."""
        return self.last_failure is not None and (self.last_backup is None or self.last_failure > self.last_backup)


@dataclass
class DatabaseReading:
    now: datetime
    devices: list[DeviceState]
    dead_letters: dict[tuple[str, str], int]  # (task, queue) -> open
    compliance: dict[str, tuple[int, int]]  # rule -> (devices failing, devices checked)


def _begin(engine):
    conn = engine.connect()
    conn.begin()
    conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    return conn


def read_database(engine) -> DatabaseReading:
    with _begin(engine) as conn:
        rows = conn.execute(DEVICES_SQL).all()
        devices = [DeviceState(r.name, r.site, r.created_at, r.last_backup, r.changes, r.last_failure, r.reachable)
                   for r in rows]
        now = rows[0].now if rows else conn.execute(text("SELECT now()")).scalar_one()
        letters = {(r.task_name, r.queue): r.open for r in conn.execute(DEAD_LETTERS_SQL)}
        compliance = {r.rule: (r.failing, r.checked) for r in conn.execute(COMPLIANCE_SQL)}
    return DatabaseReading(now, devices, letters, compliance)


def published_times(engine, task_ids: list[str]) -> dict[str, float]:
    """job_runs.published_at (epoch seconds) of these tasks, for messages without the header."""
    if not task_ids:
        return {}
    with _begin(engine) as conn:
        rows = conn.execute(PUBLISHED_SQL, {"ids": task_ids}).all()
    return {r.task_id: r.published_at.timestamp() for r in rows if r.published_at is not None}
