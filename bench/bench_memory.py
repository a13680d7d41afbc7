#!/usr/bin/env python3
"""Memory benchmark: a worker host running the default worker groups under mixed load.

The worker groups and their exact command lines come from the process definition, not from a list
kept here: the role's filter plugin (roles/netjobs_processes/filter_plugins/netjobs_processes.py)
expands ``netjobs_processes_default_workers`` of defaults/main.yml (the layout of every host in
netjobs_workers), each group's environment is checked against the rendered reference env file
(systemd/etc/netjobs/worker-NAME.env, `make check-rendered` keeps those equal to the role), and the
command is the ExecStart= of the rendered netjobs-worker@.service with its ${VARIABLES} filled in.

Against a throwaway redis-server and PostgreSQL (bench_backup.backup_services: the shipped device
timeouts and retry policy, strict host keys) and one ``python -m netjobs.devsim`` process, the
benchmark drives for ``--minutes`` (default 30):

* short tasks on ``default``: ``diag.ping`` at ``--rate`` per second, ``diag.db_roundtrip``,
  ``diag.sleep``;
* failures and retries: ``diag.fail`` (permanent: dead letters), ``diag.flaky`` (two transient
  failures, then success), and backups of two devices whose port is closed (retried with backoff);
* device backups on ``backup``: ``backup.device`` for every simulated device every
  ``--backup-every`` seconds;
* sweeps on ``network``: ``network.sweep`` of a loopback /22 every ``--sweep-every`` seconds;
* ``compliance.check`` on ``heavy`` every ``--compliance-every`` seconds.

A kind of load is skipped while its queue already holds more than ``--max-backlog`` messages, so
the test measures a busy host, not an ever-growing Redis list.

Every ``--interval`` seconds it samples each group's process tree (main process, pool children,
their subprocesses such as git): PSS from /proc/PID/smaps_rollup (summed: pages shared by a
forked parent and its children count once in total) and RSS per process. Once a second it lists
the prefork pool children (processes forked from a group's main process, same command line), so
child recycling is counted as child PIDs replaced. ``--max-memory-per-child`` never triggers at
the shipped 256 MiB; after the load a short check restarts the ``default`` group with the same
options but a limit below a child's resident size, and counts the recycles that causes.

Reports: peak and final PSS total, a per-process RSS table, the PSS slope over the last 15 minutes
(least squares, MB/min; half the run if shorter), recycles per group. Target: peak PSS total
<= 600 MB and slope <= 0.5 MB/min (no growth).

    python bench/bench_memory.py [--minutes 30] [--interval 10] [--rate 20] [--devices 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(BENCH_DIR))

import bench_backup  # noqa: E402
from bench_backup import BenchError, backup_services, insert_devices, start_simulator  # noqa: E402
from bench_fanout import _process_tree  # noqa: E402
from tests.support import servers  # noqa: E402
from tests.support.servers import VENV_BIN, free_port  # noqa: E402

ROLE = ROOT / "roles" / "netjobs_processes"
REFERENCE = ROOT / "systemd" / "etc"
TARGET_PSS_MB = 600.0
TARGET_SLOPE_MB_PER_MIN = 0.5
GROWTH_WINDOW_MIN = 15.0
SWEEP_TARGET = "127.3.0.0/22"
UNREACHABLE_DEVICES = 2


# --- the process definition ---------------------------------------------------------------------


def _role_spec() -> dict:
    """The worker part of __netjobs_processes_spec (vars/main.yml) for a host in netjobs_workers,
    each value resolved from defaults/main.yml (Jinja defaults rendered as Ansible would with the
    netjobs_app variables unset, i.e. their own default())."""
    import jinja2
    import yaml

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__netjobs_processes_spec"]
    env = jinja2.Environment()

    def resolve(value, depth=0):
        if not isinstance(value, str) or "{{" not in value or depth > 5:
            return value
        only = re.fullmatch(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", value)
        if only:
            name = only.group(1)
            if name == "netjobs_processes_workers":  # on a worker host: the default layout
                name = "netjobs_processes_default_workers"
            if name not in defaults:
                raise BenchError(f"{name} (in the role's worker spec) has no default in defaults/main.yml")
            return resolve(defaults[name], depth + 1)
        rendered = env.from_string(value).render()
        return int(rendered) if rendered.isdigit() else rendered

    keys = ("config_dir", "workers", "worker_max_tasks_per_child", "worker_max_memory_per_child", "task_time_limit",
            "task_soft_time_limit", "heavy_time_limit", "heavy_soft_time_limit", "stop_grace", "icmp_enabled")
    return {key: resolve(spec_vars[key]) for key in keys}


def _load_filters():
    spec = importlib.util.spec_from_file_location("netjobs_processes_filters",
                                                  ROLE / "filter_plugins" / "netjobs_processes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _exec_start() -> list[str]:
    unit = (REFERENCE / "systemd" / "system" / "netjobs-worker@.service").read_text()
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def worker_groups(log_level: str) -> list[dict]:
    """[{name, environment, argv}] of the default worker groups, as the role deploys them."""
    filters = _load_filters()
    template = _exec_start()
    if not template[0].endswith("/celery"):
        raise BenchError(f"ExecStart of netjobs-worker@.service does not run celery: {template[0]}")
    groups = []
    for process in filters.processes(_role_spec()):
        if process["kind"] != "worker":
            continue
        environment = {key: str(value) for key, value in process["environment"].items()}
        rendered = REFERENCE / "netjobs" / f"{process['name']}.env"
        if not rendered.exists() or _env_file(rendered) != environment:
            raise BenchError(f"{rendered.relative_to(ROOT)} differs from the role's definition; run make render-units")
        values = {**environment, "NETJOBS_LOG_LEVEL": log_level}
        argv = [str(VENV_BIN / "celery")] + [re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], arg)
                                              for arg in template[1:]]
        groups.append({"name": process["instance"], "environment": environment, "argv": argv})
    if not groups:
        raise BenchError("the role's default layout has no worker group")
    return groups


def worker_group(queue: str, log_level: str = "WARNING") -> dict:
    """The one default worker group that consumes ``queue``, as worker_groups gives it."""
    groups = [g for g in worker_groups(log_level) if g["environment"].get("NETJOBS_WORKER_QUEUES") == queue]
    if len(groups) != 1:
        raise BenchError(f"expected one worker group for the {queue} queue in the role, found {len(groups)}")
    return groups[0]


# --- processes and memory -----------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None


def pool_children(main_pid: int) -> set[int]:
    """Prefork pool children: forked from the main process, so the same command line (git and other
    subprocesses exec something else)."""
    main = _cmdline(main_pid)
    found = set()
    for children in Path(f"/proc/{main_pid}/task").glob("*/children"):
        text = _read(str(children)) or ""
        for child in text.split():
            if main is not None and _cmdline(int(child)) == main:
                found.add(int(child))
    return found


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) in KiB from /proc/PID/smaps_rollup, or None if the process is gone."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Pss:", "Rss:"):
            values[parts[0]] = int(parts[1])
    return values.get("Pss:", 0), values.get("Rss:", 0)


@contextmanager
def running_group(group: dict, env: dict[str, str], cwd: Path, argv: list[str] | None = None,
                  ready_timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """One worker group's `celery worker`, its environment as systemd would give it (netjobs.env, then
    worker-NAME.env), in the foreground; waits for ` ready.` in its log (the log level is INFO)."""
    log_path = cwd / f"worker-{group['name']}.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv or group["argv"], env={**os.environ, **env, **group["environment"]}, cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    try:
        deadline = time.monotonic() + ready_timeout
        while " ready." not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise BenchError(f"worker {group['name']} exited with {proc.returncode}: "
                                 f"{log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"worker {group['name']} not ready after {ready_timeout:.0f} s")
            time.sleep(0.2)
        yield proc
    finally:
        servers._stop(proc, signal.SIGTERM, 60.0)  # a warm stop, as systemd's KillSignal=SIGTERM
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind, if any
        except ProcessLookupError:
            pass


class ChildWatch(threading.Thread):
    """Lists every group's pool children once a second; every PID ever seen is kept."""

    def __init__(self, mains: dict[str, int]):
        super().__init__(daemon=True)
        self.mains = mains
        self.seen: dict[str, set[int]] = {name: set() for name in mains}
        self.initial: dict[str, int] = {}
        self.stopping = threading.Event()
        self.poll()
        self.initial = {name: len(pids) for name, pids in self.seen.items()}

    def poll(self) -> None:
        for name, pid in self.mains.items():
            self.seen[name] |= pool_children(pid)

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            self.poll()

    def recycles(self) -> dict[str, int]:
        return {name: len(self.seen[name]) - self.initial[name] for name in self.seen}


def sample(mains: dict[str, int]) -> dict:
    """PSS and RSS of every process of every group's tree, at one moment."""
    groups = {}
    pss_total = rss_total = 0
    for name, main in mains.items():
        children = pool_children(main)
        processes = []
        for pid in _process_tree(main):
            memory = memory_kb(pid)
            if memory is None:
                continue
            role = "main" if pid == main else "pool child" if pid in children else "subprocess"
            processes.append({"pid": pid, "role": role, "pss_kb": memory[0], "rss_kb": memory[1]})
            pss_total += memory[0]
            rss_total += memory[1]
        groups[name] = processes
    return {"pss_mb": round(pss_total / 1024, 1), "rss_sum_mb": round(rss_total / 1024, 1), "groups": groups,
            "load": [round(x, 2) for x in os.getloadavg()]}


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, MB) points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_x) ** 2 for p in points)
    if var == 0:
        return None
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / var


# --- load ---------------------------------------------------------------------------------------


def _queue_length(client, queue: str) -> int:
    """Messages waiting in a queue (kombu keeps one Redis list per priority step)."""
    from netjobs.queues import PRIORITY_STEPS

    names = [queue if step == 0 else f"{queue}\x06\x16{step}" for step in PRIORITY_STEPS]
    return sum(client.llen(name) for name in names)


class Load:
    """Submits the mixed load; counts what was sent and what was skipped for backlog."""

    def __init__(self, app, client, device_names: list[str], args):
        self.app, self.client, self.devices, self.args = app, client, device_names, args
        self.sent: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.next_at: dict[str, float] = {}

    def _send(self, kind: str, name: str, queue: str, count: int = 1, **kwargs_for) -> None:
        if _queue_length(self.client, queue) > self.args.max_backlog:
            self.skipped[kind] = self.skipped.get(kind, 0) + count
            return
        for i in range(count):
            kwargs = kwargs_for["kwargs"](i) if "kwargs" in kwargs_for else {}
            self.app.send_task(name, kwargs=kwargs)
        self.sent[kind] = self.sent.get(kind, 0) + count

    def _due(self, kind: str, every: float, now: float) -> bool:
        if now >= self.next_at.get(kind, 0.0):
            self.next_at[kind] = now + every
            return True
        return False

    def tick(self, now: float) -> None:
        """One second of load."""
        self._send("ping", "netjobs.diag.ping", "default", self.args.rate)
        if self._due("db_roundtrip", 5, now):
            self._send("db_roundtrip", "netjobs.diag.db_roundtrip", "default", kwargs=lambda i: {"queries": 5})
        if self._due("sleep", 10, now):
            self._send("sleep", "netjobs.diag.sleep", "default", kwargs=lambda i: {"seconds": 2})
        if self._due("fail", 2, now):
            self._send("fail", "netjobs.diag.fail", "default")
        if self._due("flaky", 3, now):
            self._send("flaky", "netjobs.diag.flaky", "default",
                       kwargs=lambda i: {"token": uuid.uuid4().hex, "failures": 2})
        if self._due("backup", self.args.backup_every, now):
            self._send("backup", "netjobs.backup.device", "backup", len(self.devices),
                       kwargs=lambda i: {"device": self.devices[i]})
        if self._due("sweep", self.args.sweep_every, now):
            self._send("sweep", "netjobs.network.sweep", "network",
                       kwargs=lambda i: {"target": SWEEP_TARGET, "ports": [22, 80], "timeout": 0.5})
        if self._due("compliance", self.args.compliance_every, now):
            self._send("compliance", "netjobs.compliance.check", "heavy")


def job_outcomes() -> dict[str, dict[str, int]]:
    """job_runs per task name and state (what the workers did)."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine

    out: dict[str, dict[str, int]] = {}
    with get_engine().connect() as conn:
        for task, state, count in conn.execute(text(
                "SELECT task_name, state, count(*) FROM job_runs GROUP BY task_name, state")):
            out.setdefault(task, {})[state] = count
    return out


def _wait_drained(client, queues: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_queue_length(client, q) == 0 for q in queues):
            return True
        time.sleep(1)
    return False


# --- the benchmark ------------------------------------------------------------------------------


def memory_limit_check(group: dict, env: dict, workdir: Path, app, limit_kb: int, tasks: int) -> dict:
    """The default group with its rendered options but --max-memory-per-child=limit_kb (below a
    child's resident size): each task should end with its child replaced."""
    argv = [re.sub(r"^--max-memory-per-child=\d+$", f"--max-memory-per-child={limit_kb}", arg) for arg in group["argv"]]
    check = {**group, "name": f"{group['name']}-memcheck"}
    with running_group(check, env, workdir, argv=argv) as proc:
        watch = ChildWatch({check["name"]: proc.pid})
        watch.start()
        for _ in range(tasks):
            app.send_task("netjobs.diag.ping").get(timeout=60)
            time.sleep(1.5)  # a replaced child is seen by the 1 s poll before the next task
        time.sleep(2)
        watch.stopping.set()
        watch.join()
        logged = proc.log_path.read_text(errors="replace").count("exceeding memory limit")
    return {"limit_kb": limit_kb, "tasks": tasks, "children_replaced": watch.recycles()[check["name"]],
            "logged_memory_limit_exits": logged,
            # With the shipped 1,000 tasks per child these few tasks would replace no child at all.
            "worked": watch.recycles()[check["name"]] >= tasks - 1}


def run(args) -> dict:
    groups = worker_groups(args.log_level)
    started_wall = time.time()
    result: dict = {"benchmark": "memory", "minutes": args.minutes, "interval_s": args.interval, "cpus": os.cpu_count(),
                    "load_before": [round(x, 2) for x in os.getloadavg()],
                    "groups": [{"name": g["name"], "argv": g["argv"][1:]} for g in groups],
                    "targets": {"pss_mb": TARGET_PSS_MB, "slope_mb_per_min": TARGET_SLOPE_MB_PER_MIN}}
    with ExitStack() as stack:
        workdir, env = backup_services(stack, "netjobs-bench-memory-")
        rules = workdir / "compliance.yml"
        shutil.copyfile(ROOT / "app" / "netjobs" / "data" / "compliance-example.yml", rules)
        sim, ports = start_simulator(args.devices, env["NETJOBS_DEVICE_USERNAME"], env["NETJOBS_DEVICE_PASSWORD"],
                                     workdir)
        stack.callback(lambda: (sim.terminate(), sim.wait(10)))
        # Devices whose port is closed: their backups fail and are retried with backoff.
        ports.update({f"bench-unreachable-{i}": free_port() for i in range(UNREACHABLE_DEVICES)})
        insert_devices(ports, workdir / "host_key")
        import redis

        from netjobs.celery_app import app

        client = redis.Redis.from_url(env["NETJOBS_BROKER_URL"])
        procs = {g["name"]: stack.enter_context(running_group(g, env, workdir)) for g in groups}
        mains = {name: proc.pid for name, proc in procs.items()}
        watch = ChildWatch(mains)
        watch.start()
        load = Load(app, client, sorted(ports), args)
        samples = []
        begin = time.monotonic()
        end = begin + args.minutes * 60
        next_sample = begin
        print(f"memory: {len(groups)} worker groups ({', '.join(mains)}), {args.minutes:g} min of load, "
              f"sample every {args.interval:g} s", file=sys.stderr, flush=True)
        while True:
            now = time.monotonic()
            if now >= next_sample:
                snap = sample(mains)
                snap["minute"] = round((now - begin) / 60, 3)
                samples.append(snap)
                next_sample += args.interval
                if len(samples) % max(1, int(60 / args.interval)) == 0:
                    print(f"  {snap['minute']:6.1f} min  PSS {snap['pss_mb']:7.1f} MB  load {snap['load']}  "
                          f"recycles {watch.recycles()}", file=sys.stderr, flush=True)
            if now >= end:
                break
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise BenchError(f"worker {name} exited with {proc.returncode} during the load")
            load.tick(now)
            time.sleep(max(0.0, min(1.0 - (time.monotonic() - now), next_sample - time.monotonic())))
        drained = _wait_drained(client, ["default", "backup", "network", "heavy"], 120)
        watch.stopping.set()
        watch.join()
        recycles = watch.recycles()
        memory_logged = {name: proc.log_path.read_text(errors="replace").count("exceeding memory limit")
                         for name, proc in procs.items()}
        outcomes = job_outcomes()
        for proc in procs.values():  # stop the load's workers before the limit check
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        child_rss = [p["rss_kb"] for s in samples for p in s["groups"].get("default", []) if p["role"] == "pool child"]
        default_group = next((g for g in groups if g["name"] == "default"), None)
        limit_check = None
        if default_group and child_rss and args.limit_check_tasks > 0:
            limit_check = memory_limit_check(default_group, env, workdir, app, max(1024, min(child_rss) // 2),
                                             args.limit_check_tasks)

    window = min(GROWTH_WINDOW_MIN, args.minutes / 2)
    last_minute = samples[-1]["minute"]
    slope = slope_mb_per_min([(s["minute"], s["pss_mb"]) for s in samples if s["minute"] >= last_minute - window])
    peak = max(samples, key=lambda s: s["pss_mb"])
    per_process = per_process_table(samples)
    result.update({
        "seconds": round(time.time() - started_wall, 1),
        "samples": samples,
        "pss_peak_mb": peak["pss_mb"], "pss_peak_minute": peak["minute"], "pss_final_mb": samples[-1]["pss_mb"],
        "growth_window_min": window, "slope_mb_per_min": None if slope is None else round(slope, 3),
        "per_process": per_process,
        "recycles": recycles, "memory_limit_exits_logged": memory_logged,
        "tasks_per_child_limit": {g["name"]: int(g["environment"]["NETJOBS_WORKER_MAX_TASKS_PER_CHILD"]) for g in groups},
        "memory_per_child_limit_kb": {g["name"]: int(g["environment"]["NETJOBS_WORKER_MAX_MEMORY_PER_CHILD"])
                                      for g in groups},
        "pools": {g["name"]: g["environment"]["NETJOBS_WORKER_POOL"] for g in groups},
        "load_sent": load.sent, "load_skipped_for_backlog": load.skipped, "drained_after_load": drained,
        "job_runs": outcomes, "memory_limit_check": limit_check,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "load_min_max": [min(s["load"][0] for s in samples), max(s["load"][0] for s in samples)],
    })
    result["pss_met"] = peak["pss_mb"] <= TARGET_PSS_MB
    result["growth_met"] = slope is not None and slope <= TARGET_SLOPE_MB_PER_MIN
    result["target_met"] = result["pss_met"] and result["growth_met"]
    return result


def per_process_table(samples: list[dict]) -> list[dict]:
    """Per group and role: processes now, RSS now (each process), peak RSS and PSS of the role."""
    rows = []
    final = samples[-1]["groups"]
    for name in final:
        for role in ("main", "pool child", "subprocess"):
            now = [p for p in final[name] if p["role"] == role]
            ever = [p for s in samples for p in s["groups"].get(name, []) if p["role"] == role]
            if not ever:
                continue
            rows.append({"group": name, "role": role, "count_now": len(now),
                         "rss_now_mb": [round(p["rss_kb"] / 1024, 1) for p in now],
                         "pss_now_mb": round(sum(p["pss_kb"] for p in now) / 1024, 1),
                         "rss_peak_mb": round(max(p["rss_kb"] for p in ever) / 1024, 1)})
    return rows


def print_report(r: dict) -> None:
    print(f"\nmemory of the default worker groups, {r['minutes']:g} min of mixed load, {r['cpus']} CPUs "
          f"(load average {r['load_min_max'][0]:.2f}-{r['load_min_max'][1]:.2f} during, 1-min)\n")
    for g in r["groups"]:
        print(f"  {g['name']:<8} celery {' '.join(g['argv'])}")
    print(f"\n{'group':<9}{'process':<12}{'now':>4}  {'RSS now MB':<24}{'PSS now MB':>11}{'RSS peak MB':>12}")
    for row in r["per_process"]:
        rss = ", ".join(f"{x:.0f}" for x in row["rss_now_mb"]) or "-"
        print(f"{row['group']:<9}{row['role']:<12}{row['count_now']:>4}  {rss:<24}{row['pss_now_mb']:>11.1f}"
              f"{row['rss_peak_mb']:>12.1f}")
    slope = "n/a" if r["slope_mb_per_min"] is None else f"{r['slope_mb_per_min']:+.2f} MB/min"
    print(f"\nPSS total: peak {r['pss_peak_mb']:.1f} MB (minute {r['pss_peak_minute']:.1f}), final "
          f"{r['pss_final_mb']:.1f} MB; target <= {TARGET_PSS_MB:.0f} MB: {'met' if r['pss_met'] else 'MISSED'}")
    print(f"growth over the last {r['growth_window_min']:g} min: {slope}; target <= "
          f"{TARGET_SLOPE_MB_PER_MIN} MB/min: {'met' if r['growth_met'] else 'MISSED'}")
    print("child recycles (pool child PIDs replaced): "
          + ", ".join(f"{n} {c} ({r['pools'][n]}, max {r['tasks_per_child_limit'][n]} tasks/child)"
                      for n, c in r["recycles"].items()))
    print(f"load sent: {r['load_sent']}; skipped for backlog: {r['load_skipped_for_backlog'] or 'none'}; "
          f"queues drained after: {r['drained_after_load']}")
    check = r["memory_limit_check"]
    if check:
        print(f"--max-memory-per-child={check['limit_kb']} KiB on default: {check['tasks']} tasks, "
              f"{check['children_replaced']} children replaced (0 expected from --max-tasks-per-child) -> "
              f"{'works' if check['worked'] else 'DID NOT WORK'}")
    print(f"\ntarget (<= {TARGET_PSS_MB:.0f} MB PSS, no growth): {'met' if r['target_met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("BENCH_MEMORY_MINUTES", 30)),
                        help="minutes of load (default 30, or $BENCH_MEMORY_MINUTES)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between memory samples (default 10)")
    parser.add_argument("--rate", type=int, default=20, help="diag.ping tasks per second (default 20)")
    parser.add_argument("--devices", type=int, default=50, help="simulated devices backed up (default 50)")
    parser.add_argument("--backup-every", type=float, default=60.0, help="seconds between backup rounds (default 60)")
    parser.add_argument("--sweep-every", type=float, default=20.0, help="seconds between sweeps (default 20)")
    parser.add_argument("--compliance-every", type=float, default=120.0,
                        help="seconds between compliance checks (default 120)")
    parser.add_argument("--max-backlog", type=int, default=500, help="skip a kind of load while its queue is longer")
    parser.add_argument("--limit-check-tasks", type=int, default=5,
                        help="tasks for the --max-memory-per-child check after the load (0: skip)")
    parser.add_argument("--log-level", default="INFO", help="NETJOBS_LOG_LEVEL (netjobs_app_log_level: INFO)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.rate < 0 or not 1 <= args.devices <= 2000:
        parser.error("--minutes and --interval must be positive, --rate >= 0, --devices 1-2000")
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench_memory: {exc}", file=sys.stderr)
        return 1
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
