"""Retention: delete job history, dead letters and check results older than the retention period.

Deletes run in short batches, each its own transaction, so a table with millions of old rows is
never locked for long and replication/vacuum keep up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from netjobs.config import get_settings
from netjobs.db.engine import get_engine
from netjobs.errors import ValidationError

log = logging.getLogger(__name__)

PURGE_BATCH = 5000
# A batch that waits this long for a row lock gives up (and the purge fails, to retry later)
# rather than stall the writers queued behind it.
LOCK_TIMEOUT = "5s"

# Tables with an index on their time column: take the oldest rows by that index.
INDEXED = {
    "job_runs": "state_at",  # a finished run's last state change is its finish
    "dead_letters": "failed_at",
}
# Result tables, only indexed by id: walk them in id order, which is their insertion order.
BY_ID = {
    "reachability_results": "checked_at",
    "compliance_results": "checked_at",
}


def _delete_indexed(table: str, column: str, cutoff: datetime, batch: int) -> int:
    statement = text(f"DELETE FROM {table} WHERE id IN "
                     f"(SELECT id FROM {table} WHERE {column} < :cutoff ORDER BY {column} LIMIT :batch)")
    total = 0
    while True:
        with get_engine().begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            deleted = conn.execute(statement, {"cutoff": cutoff, "batch": batch}).rowcount
        total += deleted
        if deleted < batch:
            return total


def _delete_by_id(table: str, column: str, cutoff: datetime, batch: int) -> int:
    """Walk ``table`` in id ranges of ``batch`` rows, deleting the old rows in each.

    Rows are inserted in time order, so the walk stops at the first range with no old row left;
    a straggler past it (a slow concurrent insert) is caught by the next day's purge.
    """
    next_range = text(f"SELECT max(id), count(*) FILTER (WHERE {column} < :cutoff) FROM "
                      f"(SELECT id, {column} FROM {table} WHERE id > :after ORDER BY id LIMIT :batch) AS r")
    delete = text(f"DELETE FROM {table} WHERE id > :after AND id <= :upto AND {column} < :cutoff")
    total, after = 0, 0
    while True:
        with get_engine().begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            upto, old = conn.execute(next_range, {"after": after, "cutoff": cutoff, "batch": batch}).one()
            if upto is None or old == 0:
                return total
            total += conn.execute(delete, {"after": after, "upto": upto, "cutoff": cutoff}).rowcount
        after = upto


def purge_history(older_than_days=None, batch: int = PURGE_BATCH) -> dict:
    """Delete rows older than ``older_than_days`` (default NETJOBS_HISTORY_RETENTION_DAYS).

    job_runs: runs whose last state change (their finish, for finished runs) is before the cutoff.
    Returns the cutoff and the number of rows deleted per table.
    """
    days = get_settings().history_retention_days if older_than_days is None else older_than_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36500:
        raise ValidationError(f"older_than_days must be a whole number of days from 1 to 36500, got {days!r}")
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    summary: dict = {"cutoff": cutoff.isoformat(), "older_than_days": days}
    for table, column in INDEXED.items():
        summary[table] = _delete_indexed(table, column, cutoff, batch)
    for table, column in BY_ID.items():
        summary[table] = _delete_by_id(table, column, cutoff, batch)
    log.info("purged history older than %s: %s", cutoff.isoformat(),
             ", ".join(f"{t} {summary[t]}" for t in (*INDEXED, *BY_ID)))
    return summary
