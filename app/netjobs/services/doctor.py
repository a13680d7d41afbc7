"""`netjobs doctor`: checks of everything the platform needs, each with a verdict an operator can act on.

Every check is independent: one unreachable service fails its own checks (and those that need it)
but the others still run, so one doctor run shows every problem at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from netjobs.services.health import (
    _first_line, beat_lock_status, queue_consumers, queue_lengths, redis_client, redis_persistence,
)

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    severity: str = ERROR  # how bad it is when not ok

    def as_dict(self) -> dict:
        return asdict(self)


def redact_url(url: str) -> str:
    """``url`` with its password as ***; each node of a ``;``-joined Sentinel URL alike."""
    if ";" in url:
        return ";".join(redact_url(node) for node in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class Doctor:
    """Runs the checks against ``app`` (Celery) and ``settings``; see :func:`run_checks`."""

    def __init__(self, app, settings, timeout: float = 2.0):
        self.app = app
        self.settings = settings
        self.timeout = timeout
        self.checks: list[Check] = []
        self._consumers: dict[str, list[str]] = {}

    def add(self, name: str, ok: bool, detail: str, severity: str = ERROR) -> None:
        self.checks.append(Check(name, bool(ok), detail, severity))

    def guarded(self, name: str, probe: Callable[[], None]) -> bool:
        """Run ``probe`` (which adds its own checks); an exception becomes a failed check ``name``."""
        try:
            probe()
            return True
        except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
            self.add(name, False, _first_line(exc))
            return False

    # --- individual checks -------------------------------------------------------------------

    def redis_reachable(self, role: str, url: str):
        client = redis_client(url)
        client.ping()
        self.add(f"{role} reachable", True, f"PING ok at {redact_url(url)}")
        return client

    def redis_config(self, client) -> None:
        info = redis_persistence(client)
        policy = info.get("maxmemory_policy")
        self.add("redis maxmemory-policy", policy == "noeviction",
                 f"maxmemory-policy is {policy}" + ("" if policy == "noeviction" else
                                                    ": Redis may evict queued tasks; set noeviction"))
        aof = info.get("aof_enabled")
        self.add("redis persistence", bool(aof),
                 "appendonly (AOF) is on" if aof else "appendonly (AOF) is off: queued tasks are lost on restart")
        refused = info.get("aof_replay_errors")
        if refused is not None:  # INFO stats unexpected_error_replies, Redis >= 6.2
            self.add("redis AOF replay", not refused,
                     "no command refused while Redis replayed its AOF at start-up" if not refused else
                     f"Redis refused {refused} commands replaying its AOF at its last start (INFO stats "
                     "unexpected_error_replies): writes made in MULTI/EXEC (kombu's unacked messages, RedBeat "
                     "entries) were lost. Known cause: the ACL of the `default` user, whose rights Redis 7.0 "
                     "re-checks at EXEC when replaying (redis#14541). Fix /etc/redis/users.acl to "
                     "`user default off resetpass ~* &* +@all` (the redis role does), then restart redis-server; "
                     "`journalctl -u redis-server` shows the refusals as '== CRITICAL ==' lines")

    def database(self) -> bool:
        """Reachable and migrated to head; True when later checks may query it."""
        from netjobs.db.migrate import current_revision, head_revision

        url = redact_url(self.settings.database_url)
        try:
            current, head = current_revision(), head_revision()
        except Exception as exc:  # noqa: BLE001
            self.add("database reachable", False, f"{url}: {_first_line(exc)}")
            return False
        self.add("database reachable", True, f"connected to {url}")
        if current == head:
            self.add("database migrated", True, f"at head revision {head}")
        else:
            self.add("database migrated", False,
                     f"at revision {current or 'none'}, head is {head}: run `netjobs db upgrade`")
        return current == head

    def consumers(self) -> None:
        consumers = self._consumers = queue_consumers(self.app, self.timeout)
        for queue in self.settings.queues:
            names = sorted(consumers.get(queue) or [])
            self.add(f"queue {queue} consumed", bool(names),
                     f"consumed by {', '.join(names)}" if names else f"no worker consumes queue {queue!r}")

    def backlogs(self, client) -> None:
        lengths = queue_lengths(client, self.settings.queues)
        threshold = self.settings.backlog_threshold
        for queue in self.settings.queues:
            length = int(lengths.get(queue) or 0)
            self.add(f"queue {queue} backlog", length <= threshold,
                     f"{length} waiting" + (f", over the threshold of {threshold}" if length > threshold else ""),
                     WARNING)

    def beat_lock(self, client) -> None:
        status = beat_lock_status(client, self.settings)
        ttl, key, holder, age = status["ttl_seconds"], status["key"], status["holder"], status["last_tick_age"]
        who = f"beat on {holder['host']} (pid {holder['pid']})" if holder else None
        if status["fresh"]:
            detail = f"{key} held by {who}, last tick {age:.0f}s ago"
        elif status["held"] and ttl is not None and ttl < 0:
            detail = f"{key} never expires: a stale lock blocks every beat; delete it once no beat runs"
        elif status["held"]:
            why = (f"{who} has not ticked for {age:.0f}s" if holder else
                   "the beat holding it sends no heartbeat: it is not alive")
            detail = (f"{key}: {why}; scheduled jobs wait until the lock expires in {ttl:.0f}s and a standby "
                      "beat takes over")
        else:
            detail = f"{key} is not held: no beat is running, scheduled jobs do not start"
        self.add("beat lock", status["fresh"], detail)

    def lost_workers(self, client) -> None:
        from netjobs.leases import orphaned_messages

        held = orphaned_messages(client, self.settings, early=True)
        if not held:
            self.add("tasks held by lost workers", True, "none")
            return
        shown = "; ".join(m.describe() for m in held[:5]) + (f"; and {len(held) - 5} more" if len(held) > 5 else "")
        self.add("tasks held by lost workers", False,
                 f"{len(held)} unacknowledged, held by workers that are gone or have stopped renewing their lease "
                 f"(oldest {held[0].age:.0f}s): {shown}. A live worker returns them to their queues once the lease "
                 f"expires ({self.settings.worker_lease_seconds}s after the last renewal); if none does, start one")

    def history_spool(self, client) -> None:
        # Workers hand every finished task's history over through the spool, so entries in it are
        # normal; entries that wait longer than a hand-off takes are not.
        from netjobs.spool import DEAD_LETTERS_KEY, HISTORY_KEY, STALE_SECONDS, oldest_ages

        with client.pipeline(transaction=False) as pipe:
            pipe.llen(HISTORY_KEY)
            pipe.llen(DEAD_LETTERS_KEY)
            history, letters = pipe.execute()
        ages = [age for age in oldest_ages(client, [HISTORY_KEY, DEAD_LETTERS_KEY]).values() if age is not None]
        oldest = max(ages, default=0.0)
        stuck = oldest >= STALE_SECONDS
        if not (history or letters):
            detail = "empty"
        elif not stuck:
            detail = f"{history} job_runs batches and {letters} dead-letter batches being handed over (oldest {oldest:.0f}s)"
        else:
            waited = "of unknown age" if oldest == float("inf") else f"the oldest for {oldest:.0f}s"
            detail = (f"{history} job_runs batches and {letters} dead-letter batches wait in Redis for PostgreSQL, "
                      f"{waited} (written by the next process that reaches it)")
        self.add("history spool", not stuck, detail, WARNING)

    def config_archive(self) -> None:
        """The git view of the archive on this host (the archive itself is the database)."""
        from netjobs.services.archive import git_view_problems

        repo = self.settings.backup_repo
        problems = git_view_problems(repo)
        if problems is None:
            self.add("config archive git view", True, f"{repo} not created on this host (nothing exported here)",
                     WARNING)
            return
        self.add("config archive git view", not problems,
                 f"{repo}: " + ("; ".join(problems) if problems else "intact"), WARNING)

    def archive_writers(self, client) -> None:
        """Every worker of the backup queue, from its own host, can write the config archive."""
        from netjobs.archive_host import ARCHIVE_QUEUE, PROBE_INTERVAL, read_probes

        workers = sorted(self._consumers.get(ARCHIVE_QUEUE) or [])
        if not workers:
            return  # "queue backup consumed" already fails
        answers = read_probes(client, workers)
        silent = [w for w, answer in answers.items() if answer is None]
        failing = {w: answer["problems"] for w, answer in answers.items() if answer and answer["problems"]}
        details = [f"{w}: {'; '.join(problems)}" for w, problems in failing.items()]
        if silent:
            details.append(f"{', '.join(silent)} sent no answer in the last {3 * PROBE_INTERVAL:.0f}s "
                           "(an older netjobs, or its probe is stuck)")
        self.add("config archive writable from backup hosts", not details,
                 " | ".join(details) if details else
                 f"all {len(workers)} backup workers can write it: {', '.join(workers)}")

    def dead_letters(self) -> None:
        from netjobs.services.deadletters import count_dead_letters

        count = count_dead_letters()
        self.add("dead letters", count == 0,
                 "none" if count == 0 else f"{count} waiting: see `netjobs dlq list`", WARNING)

    # --- all of them -------------------------------------------------------------------------

    def run(self) -> list[Check]:
        s = self.settings
        broker = None
        try:
            broker = self.redis_reachable("broker", s.broker_url)
        except Exception as exc:  # noqa: BLE001
            self.add("broker reachable", False, f"{redact_url(s.broker_url)}: {_first_line(exc)}")
        for role, url in (("result backend", s.result_backend_url), ("redbeat redis", s.redbeat_url)):
            if url != s.broker_url:
                self.guarded(f"{role} reachable", lambda role=role, url=url: self.redis_reachable(role, url))
        database_ok = self.database()
        if broker is not None:
            self.guarded("redis configuration", lambda: self.redis_config(broker))
            self.guarded("queue consumers", self.consumers)
            self.guarded("config archive writable from backup hosts", lambda: self.archive_writers(broker))
            self.guarded("queue backlogs", lambda: self.backlogs(broker))
            self.guarded("tasks held by lost workers", lambda: self.lost_workers(broker))
            self.guarded("history spool", lambda: self.history_spool(broker))
        else:
            self.add("queue consumers", False, "not checked: the broker is unreachable")
        if s.redbeat_url != s.broker_url:
            self.guarded("beat lock", lambda: self.beat_lock(redis_client(s.redbeat_url)))
        elif broker is not None:
            self.guarded("beat lock", lambda: self.beat_lock(broker))
        if database_ok:
            self.guarded("dead letters", self.dead_letters)
        self.guarded("config archive git view", self.config_archive)
        return self.checks


def run_checks(app, settings, timeout: float = 2.0) -> list[Check]:
    """Every check, in a stable order. Nothing raises: failures are checks with ok=False."""
    return Doctor(app, settings, timeout).run()


def healthy(checks: list[Check]) -> bool:
    # Warnings count too: a dead letter or a backlog needs a person, so doctor exits non-zero.
    return all(c.ok for c in checks)
