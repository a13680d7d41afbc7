"""What every backup host does for the config archive, on its own: check it can write it, and
keep its git view current.

The archive is PostgreSQL plus a git view on each host that runs the ``backup`` queue. `netjobs
doctor` runs on one host, so it cannot see whether another host can write there. Every worker that
consumes ``backup`` therefore checks, once a minute, from its own host: the database accepts writes
to the archive tables (not a read-only standby or session, the role may insert), and the git view's
directory takes a file. The answer goes to ``netjobs:archive-probe:WORKER`` with an expiry of three
periods; doctor fails for a backup worker with problems or with no fresh answer.

The same thread brings the host's git view up to date every ``EXPORT_INTERVAL`` (a scheduled task
would reach only the host whose worker takes it). Two workers of one host share the view: the
export holds the repository's lock, and the second finds nothing left to export.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from pathlib import Path

from celery import bootsteps

from netjobs.config import Settings, get_settings
from netjobs.forks import no_fork_during

log = logging.getLogger(__name__)

PROBE_KEY = "netjobs:archive-probe:{worker}"
PROBE_INTERVAL = 60.0
EXPORT_INTERVAL = 600.0
ARCHIVE_QUEUE = "backup"
ARCHIVE_TABLES = ("config_snapshots", "config_contents")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_problems() -> list[str]:
    """Why this host could not write the archive tables now (empty: it can)."""
    from sqlalchemy import text

    from netjobs.db.engine import session_scope

    privileges = " AND ".join(f"has_table_privilege('{table}', 'INSERT')" for table in ARCHIVE_TABLES)
    try:
        with session_scope() as session:
            row = session.execute(text(
                "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') = 'on' AS read_only, "
                f"{privileges} AS may_insert")).one()
    except Exception as exc:  # noqa: BLE001 - any failure to reach or ask the database is the answer
        return [f"database: {_first_line(exc)}"]
    problems = []
    if row.standby:
        problems.append("the database is a read-only standby")
    elif row.read_only:
        problems.append("this host's database sessions are read-only (default_transaction_read_only)")
    if not row.may_insert:
        problems.append(f"the database role may not insert into {', '.join(ARCHIVE_TABLES)}")
    return problems


def git_view_problems(repo: Path) -> list[str]:
    """Why this host could not write its git view at ``repo`` (created here if missing, as export does)."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=repo, prefix=".netjobs-probe-"):
            pass
    except OSError as exc:
        return [f"git view {repo} is not writable: {exc.strerror or _first_line(exc)}"]
    return []


def archive_problems(settings: Settings) -> list[str]:
    return database_problems() + git_view_problems(settings.backup_repo)


def publish(client, worker: str, problems: list[str], now: float | None = None) -> None:
    value = json.dumps({"host": socket.gethostname(), "checked_at": time.time() if now is None else now,
                        "problems": problems})
    client.set(PROBE_KEY.format(worker=worker), value, ex=int(3 * PROBE_INTERVAL))


def read_probes(client, workers: list[str]) -> dict[str, dict | None]:
    """The latest answer of each worker (None: no fresh answer)."""
    if not workers:
        return {}
    raw = client.mget([PROBE_KEY.format(worker=w) for w in workers])
    return {worker: (json.loads(value) if value else None) for worker, value in zip(workers, raw)}


class ArchiveHostKeeper:
    """Every PROBE_INTERVAL: check and publish this worker's access to the archive; every
    EXPORT_INTERVAL, when it has access: export the new changes to this host's git view."""

    def __init__(self, worker_name: str, settings: Settings | None = None):
        self.worker_name = worker_name
        self.settings = settings or get_settings()
        self._client = None
        self._reported: list[str] | None = None
        self._exported_at: float | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="netjobs-archive-host", daemon=True).start()

    def _run(self) -> None:
        while True:
            with no_fork_during():  # libpq, imports and git: see netjobs.forks
                self.step()
            time.sleep(PROBE_INTERVAL)

    def step(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        problems = archive_problems(self.settings)
        self._report(problems)
        self._publish(problems)
        if not problems and (self._exported_at is None or now - self._exported_at >= EXPORT_INTERVAL):
            self._exported_at = now
            self._export()
        return problems

    def _report(self, problems: list[str]) -> None:
        if problems == self._reported:  # log changes only, not every minute
            return
        if problems:
            log.warning("config archive: this host cannot write it: %s", "; ".join(problems))
        elif self._reported:
            log.warning("config archive: writable again")
        self._reported = problems

    def _publish(self, problems: list[str]) -> None:
        import redis

        try:
            if self._client is None:
                from netjobs.redis_clients import redis_from_url

                self._client = redis_from_url(self.settings.broker_url, self.settings, socket_connect_timeout=5,
                                              socket_timeout=10, health_check_interval=25)
            publish(self._client, self.worker_name, problems)
        except redis.RedisError as exc:
            log.debug("config archive probe: cannot publish (%s)", exc)  # the lease thread reports Redis

    def _export(self) -> None:
        from netjobs.services.archive import export_git

        try:
            result = export_git(self.settings.backup_repo)
        except Exception as exc:  # noqa: BLE001 - the next period tries again; doctor shows the view
            log.warning("config archive: exporting to the git view %s failed: %s", self.settings.backup_repo,
                        _first_line(exc))
            return
        if result["exported"]:
            log.info("config archive: %d changes exported to %s", result["exported"], self.settings.backup_repo)


class ArchiveHostStep(bootsteps.StartStopStep):
    """Worker bootstep: an ArchiveHostKeeper in workers that consume the backup queue."""

    label = "netjobs archive host"

    def start(self, worker):
        if ARCHIVE_QUEUE in set(worker.app.amqp.queues.consume_from):
            ArchiveHostKeeper(worker.hostname).start()
