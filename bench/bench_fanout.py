#!/usr/bin/env python3
"""Fan-out benchmark: N short tasks end to end through a real Redis and a real worker.

Three contenders run in the same process tree, on the same machine and the same Redis (flushed
between them), with the same N and the same warm-up (excluded from the numbers):

* ``raw``      redis-py LPUSH from one process, BRPOP in another: the ceiling.
* ``plain``    a plain Celery app with default settings and no history (bench/plain_celery_app.py),
               default worker (prefork, concurrency = CPUs, prefetch 4, log level WARNING).
* ``netjobs``  ``netjobs.diag.ping`` with netjobs' shipped settings (acks_late, reject on worker lost,
               track started, task events, results kept) and job history ON, once per worker profile
               of NETJOBS_VARIANTS; the first, ``deployed-default``, is the default queue's worker group
               as the netjobs_processes role deploys it, and is compared with the target (issue 13:
               >= 1.0x plain Celery). One extra run has history OFF, to show its cost.

CPU microseconds per task are summed over the producer, the worker's processes, redis-server and
PostgreSQL: unlike tasks/s they barely move when other work shares the machine.

Per task, the submit time is taken by the producer (``before_task_publish``) and the start time by
the consumer: the pop time (raw), the task's own clock (plain, it returns ``time.time()``), or
``job_runs.started_at`` (netjobs). Throughput is N / (last finish - first submit): publishing is
part of the work, as it is for an operator's fan-out.

With ``--only ...,breakdown`` (or ``--breakdown``) it also runs the netjobs ``default`` queue profile
(``short-tasks`` worker, history on) once with everything on and once per semantic turned off alone
(acks_late, track_started, task events, job history), ``--breakdown-n`` tasks each, so the cost of
each in tasks/s and CPU per task can be read off. Those rows are kept apart (``breakdown`` in the
JSON) and change neither the headline nor the ratio.

    python bench/bench_fanout.py [--n 10000] [--json OUT] [--producer loop|group|both]
                                 [--breakdown] [--breakdown-n 3000] [--breakdown-passes 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "app"))

from tests.support.servers import VENV_BIN, postgres_server, redis_server, service_env  # noqa: E402

RAW_QUEUE = "bench:raw"
WARMUP = 200

# Worker command lines for the netjobs contender. "deployed-default" is the `default` worker group
# as roles/netjobs_processes deploys it (read from the role, see deployed_default_options): the
# headline, compared with the target of issue 13. The others show what each other choice costs.
DEPLOYED = "deployed-default"
SHORT_TASKS = ("-P threads -c 8 --prefetch-multiplier 16 -E --without-mingle --without-gossip "
               "--without-heartbeat -l WARNING")
NETJOBS_WORKERS = {
    # threads: the fastest, but Celery enforces no time limit on a threads worker
    "short-tasks": SHORT_TASKS,
    # prefork keeps hard time limits and terminate-on-cancel for short tasks too
    "prefork": "-P prefork -c 4 --prefetch-multiplier 16 -O fair -E --without-mingle --without-gossip "
               "--without-heartbeat -l WARNING",
}
# (profile, history on): the first one is the headline compared with the target.
NETJOBS_VARIANTS = ((DEPLOYED, True), ("short-tasks", True), ("prefork", True), ("short-tasks", False))
TARGET_RATIO = 1.0  # issue 13: >= 1.0x plain Celery with the shipped profile of the default queue


def deployed_default_options() -> str:
    """The role's `default` worker group: its celery worker options, log level WARNING, without the
    node name (worker_process names every worker)."""
    from bench_memory import worker_group

    argv = worker_group("default")["argv"]
    options = argv[argv.index("worker") + 1:]
    return shlex.join(o for o in options if not o.startswith("--hostname="))


def worker_options(profile: str) -> str:
    """A profile's options; anything else is taken as literal celery worker options."""
    return deployed_default_options() if profile == DEPLOYED else NETJOBS_WORKERS.get(profile, profile)


PLAIN_WORKER = ""  # celery's defaults

# Per-semantic breakdown: each row turns one of these off, the rest as shipped.
SEMANTICS = ("acks_late", "track_started", "events", "history")
BREAKDOWN_N = 3000
# What "off" means for the Celery settings (the worker reads them; -E is dropped for events too).
SEMANTIC_SETTINGS = {
    "acks_late": {"task_acks_late": False, "task_reject_on_worker_lost": False},
    "track_started": {"task_track_started": False},
    "events": {"worker_send_task_events": False},
}


def __getattr__(name: str):
    """``celery -A bench_fanout:semantics_app``: netjobs' app with the settings of the semantics named
    in BENCH_SEMANTICS_OFF turned off (set before the app is finalized, so tasks take them)."""
    if name != "semantics_app":
        raise AttributeError(name)
    from netjobs.celery_app import app

    for semantic in filter(None, os.environ.get("BENCH_SEMANTICS_OFF", "").split(",")):
        app.conf.update(SEMANTIC_SETTINGS.get(semantic, {}))
    return app


# --- measurement ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [p for child in children.read_text().split() for p in _process_tree(int(child))]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """User+system CPU seconds used so far by each named process tree (Linux /proc), including
    children that exited and were waited for (a prefork child recycled by --max-tasks-per-child)."""
    used = {}
    for name, root in roots.items():
        total = 0
        for pid in _process_tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        used[name] = total / CLOCK_TICKS
    return used


def cpu_per_task(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, int]:
    """Microseconds of CPU per task for each process tree, and their sum: robust to other load."""
    per = {name: round((after[name] - before[name]) / n * 1e6) for name in before}
    per["total"] = sum(per.values())
    return per


def _watched() -> dict[str, int]:
    """The process trees the driver asked this producer to account for (BENCH_CPU_PIDS)."""
    watched = json.loads(os.environ.get("BENCH_CPU_PIDS", "{}"))
    watched["producer"] = os.getpid()
    return watched


@dataclass
class Outcome:
    name: str
    n: int
    publish_s: float
    wall_s: float
    latencies: list[float]
    extra: dict

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        return {
            "name": self.name,
            "n": self.n,
            "publish_s": round(self.publish_s, 3),
            "wall_s": round(self.wall_s, 3),
            "per_s": round(self.n / self.wall_s, 1),
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1),
            **self.extra,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def outcome_from(name: str, n: int, publish_s: float, submits: dict, starts: dict, finishes: dict,
                 extra: dict | None = None) -> Outcome:
    missing = set(submits) - set(starts)
    if missing or len(submits) != n:
        raise RuntimeError(f"{name}: {len(submits)} submitted, {len(missing)} never started (expected {n})")
    first = min(submits.values())
    last = max(finishes.values())
    latencies = [starts[k] - submits[k] for k in submits]
    return Outcome(name, n, publish_s, last - first, latencies, extra or {})


class PublishTimes:
    """Submit time per task id, taken just before each message is published."""

    def __init__(self):
        from celery import signals

        self.times: dict[str, float] = {}
        signals.before_task_publish.connect(self._on_publish, weak=False)

    def _on_publish(self, headers=None, **_):
        self.times[headers["id"]] = time.time()


def publish(task, n: int, mode: str) -> list[str]:
    if mode == "group":
        from celery import group

        result = group(task.s() for _ in range(n)).apply_async()
        return [r.id for r in result.results]
    return [task.apply_async().id for _ in range(n)]


def _deadline(n: int) -> float:
    return time.monotonic() + max(120.0, n / 50)


# --- raw redis-py --------------------------------------------------------------------------------


def raw_consumer(url: str, total: int, skip: int, out: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    pairs = []
    for count in range(1, total + 1):
        popped = client.brpop([RAW_QUEUE], timeout=120)
        now = time.time()
        if popped is None:
            raise SystemExit(f"raw consumer: nothing to pop after {count - 1} messages")
        message = json.loads(popped[1])
        if count > skip:
            pairs.append((message["t"], now))
    Path(out).write_text(json.dumps(pairs))


def run_raw(url: str, n: int, redis_pid: int) -> Outcome:
    import redis

    client = redis.Redis.from_url(url)
    out = tempfile.mktemp(prefix="bench-raw-", suffix=".json")
    consumer = subprocess.Popen([sys.executable, __file__, "--raw-consumer", url, str(WARMUP + n), str(WARMUP), out])
    try:
        for i in range(WARMUP):
            client.lpush(RAW_QUEUE, json.dumps({"i": i, "t": time.time()}))
        deadline = _deadline(n)
        while client.llen(RAW_QUEUE) and time.monotonic() < deadline:
            time.sleep(0.01)
        watched = {"producer": os.getpid(), "consumer": consumer.pid, "redis": redis_pid}
        cpu_before = cpu_seconds(watched)
        started = time.perf_counter()
        for i in range(n):
            client.lpush(RAW_QUEUE, json.dumps({"i": i, "t": time.time()}))
        publish_s = time.perf_counter() - started
        drained_by = _deadline(n)
        while client.llen(RAW_QUEUE) and time.monotonic() < drained_by:
            time.sleep(0.01)
        cpu = cpu_per_task(cpu_before, cpu_seconds(watched), n)
        if consumer.wait(max(120.0, n / 50)) != 0:
            raise RuntimeError("raw consumer failed")
        pairs = json.loads(Path(out).read_text())
    finally:
        if consumer.poll() is None:
            consumer.kill()
        Path(out).unlink(missing_ok=True)
    submits = {i: p[0] for i, p in enumerate(pairs)}
    pops = {i: p[1] for i, p in enumerate(pairs)}
    return outcome_from("raw redis-py LPUSH/BRPOP", n, publish_s, submits, pops, pops, {"cpu_us_per_task": cpu})


# --- plain Celery -----------------------------------------------------------------------------


def _plain_results(client, ids: list[str]) -> dict[str, dict] | None:
    """Every task's stored result, or None while some are missing."""
    keys = [f"celery-task-meta-{i}" for i in ids]
    found = {}
    for start in range(0, len(keys), 2000):
        for task_id, raw in zip(ids[start:start + 2000], client.mget(keys[start:start + 2000])):
            if raw is None:
                return None
            found[task_id] = json.loads(raw)
    return found


def _wait_plain(client, ids: list[str]) -> dict[str, dict]:
    deadline = _deadline(len(ids))
    while time.monotonic() < deadline:
        # The last one published is about the last one done: poll one key, not all of them.
        if client.exists(f"celery-task-meta-{ids[-1]}"):
            results = _plain_results(client, ids)
            if results is not None:
                return results
        time.sleep(0.05)
    raise TimeoutError(f"plain Celery: {len(ids)} tasks not all done in time")


def _timestamp(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def produce_plain(n: int, mode: str) -> Outcome:
    import redis

    from plain_celery_app import BROKER_URL, ping

    client = redis.Redis.from_url(BROKER_URL)
    published = PublishTimes()
    _wait_plain(client, publish(ping, WARMUP, mode))
    published.times.clear()
    cpu_before = cpu_seconds(_watched())
    started = time.perf_counter()
    ids = publish(ping, n, mode)
    publish_s = time.perf_counter() - started
    results = _wait_plain(client, ids)
    cpu = cpu_per_task(cpu_before, cpu_seconds(_watched()), n)
    failed = [r for r in results.values() if r["status"] != "SUCCESS"]
    if failed:
        raise RuntimeError(f"plain Celery: {len(failed)} tasks failed: {failed[0]}")
    starts = {k: r["result"] for k, r in results.items()}
    finishes = {k: _timestamp(r["date_done"]) for k, r in results.items()}
    return outcome_from(f"plain Celery defaults ({mode})", n, publish_s, published.times, starts, finishes,
                        {"cpu_us_per_task": cpu})


# --- netjobs ----------------------------------------------------------------------------------


def _wait_history(ids: list[str]) -> tuple[dict, dict, float]:
    """Start and finish time per task from job_runs, once every row is complete."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine
    from netjobs.history import recorder

    recorder.flush()  # the producer's PUBLISHED events
    deadline = _deadline(len(ids))
    engine = get_engine()
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM job_runs WHERE state = 'SUCCESS'")).scalar_one()
        if done >= len(ids):
            break
        time.sleep(0.1)
    else:
        with engine.connect() as conn:
            stuck = conn.execute(text(
                "SELECT state, count(*), max(published_at - started_at) FROM job_runs "
                "WHERE state <> 'SUCCESS' GROUP BY state")).all()
        raise TimeoutError(f"netjobs: only {done} of {len(ids)} job_runs rows reached SUCCESS in time; "
                           f"others (state, count, latest published_at - started_at): {stuck}")
    seen_at = time.time()
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT task_id, started_at, finished_at FROM job_runs "
            "WHERE state = 'SUCCESS' AND published_at IS NOT NULL AND started_at IS NOT NULL"
        )).all()
    by_id = {r.task_id: r for r in rows}
    missing = [i for i in ids if i not in by_id]
    if missing or len(by_id) != len(ids):
        raise RuntimeError(f"netjobs: job_runs has {len(by_id)} complete rows for {len(ids)} tasks "
                           f"({len(missing)} of ours missing)")
    starts = {i: by_id[i].started_at.timestamp() for i in ids}
    finishes = {i: by_id[i].finished_at.timestamp() for i in ids}
    return starts, finishes, seen_at


def _wait_results(client, ids: list[str]) -> tuple[dict, dict]:
    """History off: finish times from the result backend; start = finish (ping does nothing)."""
    results = _wait_plain(client, ids)
    finishes = {k: _timestamp(r["date_done"]) for k, r in results.items()}
    return finishes, finishes


def produce_netjobs(n: int, mode: str) -> Outcome:
    import redis
    from sqlalchemy import text

    from netjobs.config import get_settings
    from netjobs.db.engine import get_engine
    from netjobs.tasks.diag import ping

    settings = get_settings()
    client = redis.Redis.from_url(settings.result_backend_url)
    history = settings.history_enabled

    def wait(ids):
        return _wait_history(ids) if history else (*_wait_results(client, ids), None)

    def forget_history():
        if history:
            with get_engine().begin() as conn:
                conn.execute(text("TRUNCATE job_runs"))

    published = PublishTimes()
    forget_history()  # rows of an earlier contender
    wait(publish(ping, WARMUP, mode))
    forget_history()
    published.times.clear()
    cpu_before = cpu_seconds(_watched())
    started = time.perf_counter()
    ids = publish(ping, n, mode)
    publish_s = time.perf_counter() - started
    starts, finishes, seen_at = wait(ids)
    extra = {"history": history, "cpu_us_per_task": cpu_per_task(cpu_before, cpu_seconds(_watched()), n)}
    if history:
        with get_engine().connect() as conn:
            extra["job_runs_rows"] = conn.execute(text("SELECT count(*) FROM job_runs")).scalar_one()
        if extra["job_runs_rows"] != n:
            raise RuntimeError(f"netjobs: job_runs has {extra['job_runs_rows']} rows, expected {n}")
        # How long after the last task finished its history row was visible (batching delay).
        extra["history_lag_s"] = round(seen_at - max(finishes.values()), 3)
    profile = os.environ.get("BENCH_PROFILE", "custom")
    label = f"netjobs ping ({mode}, {profile}{'' if history else ', history OFF'})"
    return outcome_from(label, n, publish_s, published.times, starts, finishes, extra)


# --- worker processes -------------------------------------------------------------------------


@contextmanager
def worker_process(app: str, options: str, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen]:
    """A `celery worker` subprocess. Readiness is proven by the warm-up tasks, not by log lines,
    so the log level stays whatever the contender uses."""
    argv = [str(VENV_BIN / "celery"), "-A", app, "worker", "-n", f"bench-{os.getpid()}@localhost",
            *shlex.split(options)]
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{Path(log.name).read_text()[-3000:]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        Path(log.name).unlink(missing_ok=True)


def run_child(kind: str, n: int, mode: str, env: dict[str, str], watched: dict[str, int]) -> dict:
    """Producer and measurement in a fresh process, so no signal handler of one contender
    (netjobs' history) is connected while another one publishes."""
    proc = subprocess.run([sys.executable, __file__, "--produce", kind, "--n", str(n), "--producer", mode],
                          env={**os.environ, **env, "BENCH_CPU_PIDS": json.dumps(watched)}, cwd=BENCH_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} producer failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def measure(kind: str, n: int, mode: str, env: dict, servers: dict[str, int], redis_url: str,
            worker: tuple[str, str] | None) -> dict:
    import redis

    redis.Redis.from_url(redis_url).flushall()
    before = load()
    if worker is None:
        summary = run_raw(redis_url, n, servers["redis"]).summary()
    else:
        app, options = worker
        with worker_process(app, options, env, BENCH_DIR) as proc:
            summary = run_child(kind, n, mode, env, {"worker": proc.pid, **servers})
        summary["worker"] = " ".join(proc.args[1:])
    summary["load_before"], summary["load_after"] = before, load()
    return summary


# --- per-semantic breakdown ---------------------------------------------------------------------


def breakdown_runs(env: dict) -> list[tuple[str, str, dict]]:
    """(label, worker options, environment) of the deployed `default` worker group with everything on,
    then with each semantic off alone."""
    runs = []
    deployed = deployed_default_options()
    for off in (None, *SEMANTICS):
        options = deployed if off != "events" else shlex.join(o for o in shlex.split(deployed)
                                                              if o not in ("-E", "--task-events"))
        label = "default profile, all on" if off is None else f"default profile, {off} OFF"
        runs.append((label, options, {**env, "NETJOBS_HISTORY_ENABLED": "false" if off == "history" else "true",
                                      "BENCH_SEMANTICS_OFF": off if off in SEMANTIC_SETTINGS else "",
                                      "BENCH_PROFILE": label}))
    return runs


def breakdown_summary(runs: list[dict]) -> list[dict]:
    """One line per configuration: medians over its passes (passes are interleaved, so a change of
    outside load hits every configuration alike)."""
    import statistics

    lines = []
    for label in dict.fromkeys(r["semantic_label"] for r in runs):
        mine = [r for r in runs if r["semantic_label"] == label]
        lines.append({"semantic_label": label, "semantics_off": mine[0]["semantics_off"], "n": mine[0]["n"],
                      "passes": len(mine), "per_s": statistics.median(r["per_s"] for r in mine),
                      "per_s_each": [r["per_s"] for r in mine],
                      "cpu_us_per_task": statistics.median(r["cpu_us_per_task"]["total"] for r in mine),
                      "loads": [r["load_before"].split("/")[0] for r in mine]})
    base = lines[0]
    for line in lines:
        line["vs_all_on"] = round(line["per_s"] / base["per_s"], 3)
        line["cpu_vs_all_on"] = round(line["cpu_us_per_task"] - base["cpu_us_per_task"])
    return lines


def print_breakdown(lines: list[dict]) -> None:
    print(f"\nper-semantic breakdown (netjobs `default` queue profile: {DEPLOYED} worker), N={lines[0]['n']}, "
          f"median of {lines[0]['passes']} interleaved pass(es)")
    print(f"{'run':34} {'tasks/s':>8} {'vs all on':>9} {'CPU us/task':>11} {'CPU vs all on':>13}  "
          f"{'tasks/s each':<20} load (1 min) each")
    for r in lines:
        each = "/".join(f"{x:.0f}" for x in r["per_s_each"])
        print(f"{r['semantic_label']:34} {r['per_s']:>8.0f} {r['vs_all_on']:>8.2f}x {r['cpu_us_per_task']:>11.0f} "
              f"{r['cpu_vs_all_on']:>+13}  {each:<20} {', '.join(r['loads'])}")


# --- driver -----------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    base = next((r["per_s"] for r in rows if r["name"].startswith("plain")), None)
    print(f"{'contender':56} {'N':>6} {'tasks/s':>9} {'vs plain':>8} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'publish s':>9} {'CPU us/task':>11}  load(1/5/15)")
    for r in rows:
        ratio = f"{r['per_s'] / base:.2f}x" if base else "-"
        print(f"{r['name']:56} {r['n']:>6} {r['per_s']:>9.0f} {ratio:>8} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
              f"{r['publish_s']:>9.2f} {r['cpu_us_per_task']['total']:>11}  {r['load_before']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per contender (default 10000)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    parser.add_argument("--producer", choices=("loop", "group", "both"), default="loop",
                        help="apply_async in a loop, one group, or both (default loop)")
    parser.add_argument("--only", default="raw,plain,netjobs", help="comma-separated contenders to run")
    parser.add_argument("--netjobs-worker", metavar="PROFILE|OPTIONS",
                        help=f"run only this netjobs worker: a profile ({', '.join([DEPLOYED, *NETJOBS_WORKERS])}) or literal "
                             "celery worker options (default: every profile of NETJOBS_VARIANTS)")
    parser.add_argument("--history", choices=("on", "off"), default="on",
                        help="netjobs job history, with --netjobs-worker")
    parser.add_argument("--breakdown", action="store_true",
                        help="also run the per-semantic breakdown (same as adding breakdown to --only)")
    parser.add_argument("--breakdown-n", type=int, default=BREAKDOWN_N,
                        help=f"tasks per breakdown run (default {BREAKDOWN_N})")
    parser.add_argument("--breakdown-passes", type=int, default=1,
                        help="interleaved passes over the breakdown's configurations; medians reported (default 1)")
    parser.add_argument("--produce", help=argparse.SUPPRESS)
    parser.add_argument("--raw-consumer", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    if args.raw_consumer:
        url, total, skip, out = args.raw_consumer
        raw_consumer(url, int(total), int(skip), out)
        return 0
    if args.produce:
        produce = produce_plain if args.produce == "plain" else produce_netjobs
        print(json.dumps(produce(args.n, args.producer).summary()))
        return 0

    modes = ("loop", "group") if args.producer == "both" else (args.producer,)
    contenders = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(contenders) - {"raw", "plain", "netjobs", "breakdown"}
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(sorted(unknown))}; use raw, plain, netjobs, breakdown")
    breakdown = args.breakdown or "breakdown" in contenders
    contenders = [c for c in contenders if c != "breakdown"]
    if args.breakdown_n < 1 or args.breakdown_passes < 1:
        parser.error("--breakdown-n and --breakdown-passes must be at least 1")
    if args.netjobs_worker:
        variants = ((args.netjobs_worker, args.history == "on"),)
    else:
        variants = NETJOBS_VARIANTS

    rows = []
    with redis_server() as redis_srv, postgres_server() as pg:
        env = service_env(redis_srv, pg, BENCH_BROKER_URL=redis_srv.url)
        os.environ.update(env)
        from netjobs.config import reset_settings
        from netjobs.db.migrate import upgrade

        reset_settings()
        upgrade()
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        servers = {"redis": redis_srv.proc.pid, "postgres": postmaster}
        for kind in contenders:
            if kind == "raw":
                rows.append(measure(kind, args.n, "loop", env, servers, redis_srv.url, None))
                continue
            runs = [(("plain_celery_app", PLAIN_WORKER), env)] if kind == "plain" else [
                (("netjobs.celery_app:app", worker_options(profile)),
                 {**env, "NETJOBS_HISTORY_ENABLED": "true" if history else "false",
                  "BENCH_PROFILE": profile if profile in NETJOBS_WORKERS or profile == DEPLOYED else "custom"})
                for profile, history in variants]
            for worker, run_env in runs:
                for mode in modes:
                    rows.append(measure(kind, args.n, mode, run_env, servers, redis_srv.url, worker))
                    print(f"  done: {rows[-1]['name']}: {rows[-1]['per_s']:.0f}/s", file=sys.stderr)
        breakdown_rows = []
        passes = [run for _ in range(args.breakdown_passes) for run in breakdown_runs(env)] if breakdown else []
        for label, options, run_env in passes:
            row = measure("netjobs", args.breakdown_n, "loop", run_env, servers, redis_srv.url,
                          ("bench_fanout:semantics_app", options))
            row["semantic_label"] = label
            row["semantics_off"] = run_env["BENCH_SEMANTICS_OFF"] or (
                "history" if run_env["NETJOBS_HISTORY_ENABLED"] == "false" else
                "events" if "-E" not in options.split() else "")
            breakdown_rows.append(row)
            print(f"  done: {label}: {row['per_s']:.0f}/s", file=sys.stderr)

    if rows:
        print(f"fan-out, N={args.n}, {os.cpu_count()} CPUs, load average now {load()}")
        print_table(rows)
    if breakdown_rows:
        print_breakdown(breakdown_summary(breakdown_rows))
    result = {"benchmark": "fanout", "n": args.n, "cpus": os.cpu_count(), "rows": rows,
              "load_average": [round(x, 2) for x in os.getloadavg()], "target_ratio": TARGET_RATIO}
    if breakdown_rows:
        result["breakdown"] = {"runs": breakdown_rows, "summary": breakdown_summary(breakdown_rows)}
    plain = next((r for r in rows if r["name"].startswith("plain")), None)
    headline = next((r for r in rows if r["name"].startswith("netjobs")), None)
    if plain and headline:
        ratio = headline["per_s"] / plain["per_s"]
        result.update(headline=headline["name"], ratio=round(ratio, 3), target_met=ratio >= TARGET_RATIO)
        verdict = "met" if ratio >= TARGET_RATIO else f"MISSED by {(1 - ratio / TARGET_RATIO) * 100:.0f}%"
        print(f"\n{headline['name']} / plain Celery: {ratio:.2f}x (target >= {TARGET_RATIO}x: {verdict})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
