"""`netjobs top`: a live terminal view of queues, workers, running tasks, failures, beat and dead letters.

Each frame is one read of Redis and one of PostgreSQL with the exporter's readers
(netjobs.exporter.redis_state / database_state: one pipelined pass, indexed SQL) and two indexed
queries of job_runs (netjobs.services.runs); what `netjobs-exporter` serves is what `top` shows.
A source that cannot be read is named in the frame, the rest still shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import click

from netjobs.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, escape, fail, out, print_json, settings

RECENT_FAILURES = 10
RUNNING_ROWS = 20
# STARTED rows read per frame: newest first, enough for every pool slot of a large site; older
# STARTED rows are tasks whose worker died before recording their end.
RUNNING_SCAN = 500


@dataclass
class Frame:
    """What one refresh read; a section is None when its source could not be read."""

    at: datetime
    problems: list[str] = field(default_factory=list)
    queues: list[dict] | None = None
    workers: list[dict] | None = None
    running: list[dict] | None = None
    running_total: int = 0
    failures: list[dict] | None = None
    beat: dict | None = None
    dead_letters: list[dict] | None = None

    def as_dict(self) -> dict:
        return {
            "at": self.at.isoformat(),
            "problems": self.problems,
            "queues": self.queues,
            "workers": self.workers,
            "running": self.running,
            "running_total": self.running_total,
            "recent_failures": self.failures,
            "beat": self.beat,
            "dead_letters_open": None if self.dead_letters is None else sum(d["open"] for d in self.dead_letters),
            "dead_letters": self.dead_letters,
        }


def _problem(source: str, exc: BaseException) -> str:
    from netjobs.cli.common import explain

    known = explain(exc)
    if known is not None:
        return known[1]
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"cannot read {source}: {type(exc).__name__}: {first}".rstrip(": ")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _worker_name(worker) -> str:
    """GROUP@HOST, the Celery node name job_runs.worker holds too."""
    return f"{worker.group}@{worker.host}" if worker.group else worker.host


class Reader:
    """Reads frames; keeps its Redis clients between them (the database engine is the process's own)."""

    def __init__(self):
        self.settings = settings()
        self._broker = self._beat = None

    def _clients(self):
        if self._broker is None:
            from netjobs.services.health import broker_and_beat_clients

            self._broker, self._beat = broker_and_beat_clients(self.settings)
        return self._broker, self._beat

    def read(self) -> Frame:
        from netjobs.db.engine import get_engine
        from netjobs.exporter.database_state import published_times, read_database
        from netjobs.exporter.redis_state import oldest_published_at, read_redis
        from netjobs.services.runs import list_runs

        frame = Frame(at=datetime.now(timezone.utc))
        redis_reading = database_reading = None
        try:
            redis_reading = read_redis(*self._clients(), self.settings)
        except Exception as exc:  # noqa: BLE001 - the frame says what it cannot reach
            frame.problems.append(_problem("Redis", exc))
        try:
            database_reading = read_database(get_engine())
            started = list_runs(state="STARTED", limit=RUNNING_SCAN)
            failed = list_runs(state="FAILURE", limit=RECENT_FAILURES)
        except Exception as exc:  # noqa: BLE001
            database_reading = None
            frame.problems.append(_problem("PostgreSQL", exc))

        if redis_reading is not None:
            def lookup(task_ids):
                # Only messages without the publish header need job_runs; without PostgreSQL their age is unknown.
                try:
                    return published_times(get_engine(), task_ids) if database_reading is not None else {}
                except Exception:  # noqa: BLE001 - shown as "?" age
                    return {}

            self._queues_workers_beat(frame, redis_reading, oldest_published_at(redis_reading.oldest, lookup))
        if database_reading is not None:
            alive = None if redis_reading is None else {_worker_name(w) for w in redis_reading.workers if w.alive}
            self._runs(frame, started, failed, alive)
            frame.dead_letters = [{"task": task, "queue": queue, "open": count}
                                  for (task, queue), count in sorted(database_reading.dead_letters.items())]
        return frame

    def _queues_workers_beat(self, frame: Frame, reading, oldest: dict[str, float]) -> None:
        from collections import Counter

        from netjobs.services.health import BEAT_TICK_GRACE

        consumers = Counter(q for w in reading.workers if w.alive for q in w.queues)
        frame.queues = []
        for queue, waiting in reading.waiting.items():
            age = 0.0 if waiting == 0 else (max(0.0, reading.now - oldest[queue]) if queue in oldest else None)
            frame.queues.append({"queue": queue, "waiting": waiting, "unacked": reading.unacked.get(queue, 0),
                                 "oldest_age_seconds": age, "consumers": consumers.get(queue, 0)})
        frame.workers = [{"worker": _worker_name(w), "group": w.group, "host": w.host,
                          "alive": w.alive, "held": w.held, "queues": sorted(w.queues)}
                         for w in sorted(reading.workers, key=lambda w: (not w.alive, w.group, w.host))]
        ticking = (reading.beat_tick_age is not None
                   and reading.beat_tick_age <= self.settings.beat_max_interval + BEAT_TICK_GRACE)
        frame.beat = {"lock_held": reading.beat_lock_held, "holder": reading.beat_holder_host,
                      "last_tick_age_seconds": reading.beat_tick_age, "ticking": reading.beat_lock_held and ticking,
                      "schedules_enabled": sum(1 for s in reading.schedules if s.enabled)}
        if reading.lost_worker_tasks:
            frame.problems.append(f"{reading.lost_worker_tasks} tasks held by lost workers (`netjobs doctor`)")

    @staticmethod
    def _runs(frame: Frame, started, failed, alive_workers: set[str] | None) -> None:
        now = frame.at
        running = sorted((r for r in started if r.started_at is not None), key=lambda r: r.started_at)
        frame.running_total = len(running)
        frame.running = [{"task": r.task_name, "task_id": r.task_id, "worker": r.worker,
                          "running_seconds": max(0.0, (now - r.started_at).total_seconds()),
                          # None: Redis unreadable, so nobody knows whether its worker still lives
                          "worker_alive": None if alive_workers is None else r.worker in alive_workers}
                         for r in running[:RUNNING_ROWS]]
        frame.failures = [{"task": r.task_name, "task_id": r.task_id, "worker": r.worker, "at": r.state_at,
                           "error": _first_line(r.error)} for r in failed]


# --- rendering -------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _unreadable(title: str):
    from rich.text import Text

    return Text(f"{title}: not available (see above)", style="red")


def render(frame: Frame):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    header = Text(f"netjobs top  {frame.at.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}", style="bold")
    parts.append(header)
    for problem in frame.problems:
        parts.append(Text(f"! {problem}", style="red"))

    def table(title: str, columns: tuple[str, ...], rows: list[tuple], shrinks: str | None = None) -> Table:
        # Every column keeps its full width but ``shrinks`` (an error text), which is cut to fit the terminal.
        t = Table(title=title, title_justify="left", expand=shrinks is not None)
        for index, column in enumerate(columns):
            if column == shrinks:
                t.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
            else:
                widest = max([len(Text.from_markup(str(row[index])).plain) for row in rows] + [len(column)])
                t.add_column(column, no_wrap=True, min_width=widest)
        for row in rows:
            t.add_row(*row)
        return t

    if frame.queues is None:
        parts.append(_unreadable("queues"))
    else:
        rows = [(escape(q["queue"]), str(q["waiting"]), str(q["unacked"]), _age(q["oldest_age_seconds"]),
                 str(q["consumers"]) if q["consumers"] else "[red]0[/red]") for q in frame.queues]
        parts.append(table("queues", ("queue", "waiting", "unacked", "oldest", "consumers"), rows))

    if frame.workers is None:
        parts.append(_unreadable("workers"))
    else:
        rows = [(escape(w["worker"]), "[green]yes[/green]" if w["alive"] else "[red]no[/red]", str(w["held"]),
                 escape(", ".join(w["queues"]))) for w in frame.workers]
        parts.append(table(f"workers ({sum(1 for w in frame.workers if w['alive'])} alive)",
                           ("worker", "alive", "held", "queues"), rows))

    if frame.running is None:
        parts.append(_unreadable("running tasks"))
    else:
        more = frame.running_total - len(frame.running)
        rows = [(escape(r["task"] or "?"), escape(r["task_id"]),
                 escape(r["worker"] or "?") + (" [red](lost)[/red]" if r["worker_alive"] is False else ""),
                 _age(r["running_seconds"])) for r in frame.running]
        parts.append(table(f"running ({frame.running_total}{f', longest {len(frame.running)} shown' if more else ''})",
                           ("task", "id", "worker", "running for"), rows))

    if frame.failures is None:
        parts.append(_unreadable("recent failures"))
    else:
        rows = [(f["at"].astimezone().strftime("%m-%d %H:%M:%S"), escape(f["task"] or "?"), escape(f["task_id"]),
                 escape(f["error"] or "")) for f in frame.failures]
        parts.append(table("recent failures", ("when", "task", "id", "error"), rows, shrinks="error"))

    beat = frame.beat
    if beat is None:
        beat_line = Text("beat: not available", style="red")
    elif not beat["lock_held"]:
        beat_line = Text.from_markup("beat: [red]lock not held: no beat is running[/red]")
    else:
        state = "[green]ticking[/green]" if beat["ticking"] else "[red]not ticking[/red]"
        beat_line = Text.from_markup(f"beat: lock held by {escape(beat['holder'] or '?')}, last tick "
                                     f"{_age(beat['last_tick_age_seconds'])} ago ({state}), "
                                     f"{beat['schedules_enabled']} schedules enabled")
    parts.append(beat_line)
    if frame.dead_letters is None:
        parts.append(Text("dead letters: not available", style="red"))
    else:
        total = sum(d["open"] for d in frame.dead_letters)
        detail = ", ".join(f"{d['task']} {d['open']}" for d in frame.dead_letters)
        parts.append(Text.from_markup(f"dead letters open: {'[red]' if total else ''}{total}{'[/red]' if total else ''}"
                                      + (f" ({escape(detail)}; `netjobs dlq list`)" if total else "")))
    return Group(*parts)


def _unreachable(frame: Frame) -> bool:
    # Problems that mean a source is down, as opposed to what the platform reports (lost workers).
    return frame.queues is None or frame.running is None


@click.command()
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (1 if Redis or PostgreSQL is unreachable).")
@click.option("--json", "as_json", is_flag=True, help="With --once: the frame as JSON.")
def top(interval, once, as_json):
    """Live view of queues, workers, running tasks, recent failures, beat and dead letters (Ctrl-C quits)."""
    if as_json and not once:
        fail("--json needs --once (a live view has no JSON form)", EXIT_USAGE)
    reader = Reader()
    if once:
        frame = reader.read()
        if as_json:
            print_json(frame.as_dict())
        else:
            out().print(render(frame))
        if _unreachable(frame):
            # For scripts: the frame names the problem too, but stderr and the exit code must say it.
            for problem in frame.problems:
                err().print(f"[red]error:[/red] {escape(problem)}")
            raise SystemExit(EXIT_FAILED)
        raise SystemExit(EXIT_OK)

    from rich.live import Live

    console = out()
    try:
        with Live(render(reader.read()), console=console, screen=console.is_terminal, auto_refresh=False,
                  vertical_overflow="crop") as live:
            while True:
                time.sleep(interval)
                live.update(render(reader.read()), refresh=True)
    except KeyboardInterrupt:
        pass  # the operator is done watching: not an error
    raise SystemExit(EXIT_OK)


COMMANDS = (top,)
