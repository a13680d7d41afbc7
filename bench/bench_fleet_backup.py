#!/usr/bin/env python3
"""Fleet backup benchmark: ``netjobs.backup.all`` over 1,000-5,000 simulated devices with WAN latency.

Like ``bench/bench_backup.py`` (whose helpers it uses), but the devices behave like switches reached
over a WAN (``netjobs.devsim --realistic``): login banners, 0.2-1.5 s to log in, 0.5-3 s to print
a running configuration of 1,000-5,000 lines, paging until Netmiko turns it off, and optionally a
share of slow, flaky and unreachable devices. The worker runs with the settings the
``netjobs_processes`` role deploys for the backup queue, read from the role (pool, concurrency,
time limits, task events, max tasks/memory per child; see ``deployed_backup_worker``).

For every fleet size two runs are timed from submitting ``backup.all`` to having its summary:
``first`` (every device is new) and ``again`` (nothing changed, or ``--change-share``). Reported per run: wall time,
how many devices were read in full and how many only had their change marker checked,
devices/s, CPU ms per device of the worker and of the simulator, the simulator's mean SSH session
time and the efficiency ``(N x mean session time / concurrency) / wall time`` (1.0: the worker's
threads were never idle and nothing but the sessions took time).

    python bench/bench_fleet_backup.py [--devices 1000,5000] [--concurrency N] [--json OUT]
    python bench/bench_fleet_backup.py --probe-sessions 1000   # simulator cost of concurrent sessions

Targets (issue 13): 5,000 devices in <= 10 minutes on 2 cores, efficiency >= 0.8, the re-run at
least 2x faster than the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_backup import (  # noqa: E402  (bench_backup puts app/ on sys.path)
    ROOT, SIM_PLATFORMS, BenchError, backup_services, count_commits, insert_devices, process_cpu_seconds,
    timed_backup_all)

TARGET_SECONDS_5000 = 600.0
TARGET_EFFICIENCY = 0.8
TARGET_RERUN_SPEEDUP = 2.0


def deployed_backup_worker() -> dict:
    """The backup worker group as roles/netjobs_processes deploys it, read through bench_memory's
    expansion of the role (which also checks systemd/etc/netjobs/worker-backup.env against it).
    Threads recycle as a whole at its limits (netjobs.worker_recycle): a benchmark worker that did
    would not come back, so one run must stay below max-tasks-per-child backups per worker."""
    from bench_memory import worker_group

    env = worker_group("backup")["environment"]
    limits = {"max-tasks-per-child": "NETJOBS_WORKER_MAX_TASKS_PER_CHILD",
              "max-memory-per-child": "NETJOBS_WORKER_MAX_MEMORY_PER_CHILD",
              "time-limit": "NETJOBS_WORKER_TIME_LIMIT", "soft-time-limit": "NETJOBS_WORKER_SOFT_TIME_LIMIT"}
    return {"pool": env["NETJOBS_WORKER_POOL"], "concurrency": int(env["NETJOBS_WORKER_CONCURRENCY"]),
            "max_tasks": int(env["NETJOBS_WORKER_MAX_TASKS_PER_CHILD"]),
            "args": tuple(f"--{flag}={env[key]}" for flag, key in limits.items()) + ("--task-events",)}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def parse_counts(raw: str) -> list[int]:
    try:
        counts = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1000,5000, got {raw!r}") from None
    if not counts or any(not 1 <= c <= 5000 for c in counts):
        raise argparse.ArgumentTypeError("device counts must be 1-5000")
    return counts


def simulator_args(args) -> list[str]:
    """The realism options handed to ``python -m netjobs.devsim``."""
    return ["--realistic", "--seed", str(args.seed), "--login-latency", args.login_latency,
            "--command-latency", args.command_latency, "--config-latency", args.config_latency,
            "--config-lines", args.config_lines, "--change-share", str(args.change_share),
            "--slow-share", str(args.slow_share), "--slow-factor", str(args.slow_factor),
            "--flaky-share", str(args.flaky_share), "--unreachable-share", str(args.unreachable_share)]


def start_realistic_simulator(count: int, username: str, password: str, workdir: Path,
                              extra: list[str]) -> tuple[subprocess.Popen, dict, Path]:
    """bench_backup's simulator with realism options and a stats file; returns it, its ports, the stats path."""
    ports_file, stats_file = workdir / "ports.json", workdir / "devsim-stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netjobs.devsim", "--listen", "127.0.0.1", "--port", "0", "--count", str(count),
         "--platform", SIM_PLATFORMS, "--hostname", "bench", "--username", username, "--ports-file", str(ports_file),
         "--host-key", str(workdir / "host_key"), "--stats-file", str(stats_file), *extra],
        env={**os.environ, "NETJOBS_DEVSIM_PASSWORD": password, "PYTHONPATH": str(ROOT / "app")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise BenchError(f"device simulator did not start: {line.strip()} {proc.stderr.read()[-500:]}")
    return proc, json.loads(ports_file.read_text()), stats_file


def read_stats(path: Path, wait: float = 1.5) -> dict:
    """The simulator's counters, after its next rewrite (once a second) so they cover what just ended."""
    time.sleep(wait)
    return json.loads(path.read_text())


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status in MB: VmRSS (now) or VmHWM (the process's peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def mean_task_seconds(run_started: float) -> float | None:
    """Mean run time of the device tasks that finished after ``run_started`` (job_runs history)."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine

    with get_engine().connect() as conn:
        value = conn.execute(text("SELECT avg(duration_ms) FROM job_runs WHERE task_name = 'netjobs.backup.device' "
                                  "AND finished_at >= to_timestamp(:t)"), {"t": run_started}).scalar()
    return round(float(value) / 1000, 3) if value is not None else None


def reads_since(run_started: float) -> dict:
    """Snapshots written since ``run_started``: full reads, and marker checks that skipped the read."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine

    with get_engine().connect() as conn:
        full, marker = conn.execute(text("SELECT count(*) FILTER (WHERE full_read), count(*) FILTER (WHERE NOT full_read) "
                                         "FROM config_snapshots WHERE collected_at >= to_timestamp(:t)"),
                                    {"t": run_started}).one()
    return {"full": full, "marker": marker}


def one_run(app, sim, stats_file: Path, worker_pids: list[int], devices: int, concurrency: int, timeout: float,
            repo: Path, commits_before: int) -> dict:
    """One timed backup.all; ``concurrency`` is the total of all workers' threads."""
    def workers_cpu() -> float:
        return sum(process_cpu_seconds(pid) for pid in worker_pids)

    load_before = loadavg()
    stats_before = read_stats(stats_file, wait=0)
    cpu_before = workers_cpu(), process_cpu_seconds(sim.pid)
    wall_started = time.time()
    outcome = timed_backup_all(app, devices, timeout)
    cpu_after = workers_cpu(), process_cpu_seconds(sim.pid)
    stats_after = read_stats(stats_file)
    sessions = stats_after["sessions"] - stats_before["sessions"]
    session_seconds = stats_after["session_seconds"] - stats_before["session_seconds"]
    mean_session = session_seconds / sessions if sessions else 0.0
    wall = outcome["seconds"]
    outcome.update(
        load_before=load_before, load_after=loadavg(),
        cpu_ms_per_device={"worker": round((cpu_after[0] - cpu_before[0]) * 1000 / devices, 1),
                           "simulator": round((cpu_after[1] - cpu_before[1]) * 1000 / devices, 1)},
        sessions=sessions, mean_session_s=round(mean_session, 3), mean_task_s=mean_task_seconds(wall_started),
        reads=reads_since(wall_started),
        ideal_seconds=round(devices * mean_session / concurrency, 1),
        efficiency=round(devices * mean_session / concurrency / wall, 3) if wall else 0.0,
        peak_sessions=stats_after["peak_active"], simulator_threads_peak=stats_after.get("peak_threads"),
        simulator_rss_mb=rss_mb(sim.pid), commits=count_commits(repo) - commits_before,
        # Fresh workers per run: their peak is this run's (the role recycles a backup worker above 384 MiB).
        worker_rss_peak_mb=max(rss_mb(pid, "VmHWM") for pid in worker_pids),
    )
    return outcome


def run_fleet(args, devices: int, env: dict, workdir: Path) -> dict:
    from tests.support.servers import celery_worker

    from netjobs.celery_app import app

    with ExitStack() as stack:
        fleet_dir = workdir / f"fleet-{devices}"
        fleet_dir.mkdir()
        sim, ports, stats_file = start_realistic_simulator(
            devices, env["NETJOBS_DEVICE_USERNAME"], env["NETJOBS_DEVICE_PASSWORD"], fleet_dir, simulator_args(args))
        stack.callback(lambda: (sim.terminate(), sim.wait(30)))
        repo = fleet_dir / "repo"
        run_env = env | {"NETJOBS_BACKUP_REPO": str(repo)}
        os.environ.update(run_env)
        insert_devices(ports, fleet_dir / "host_key")
        idle_threads = threads_of(sim.pid)
        total_threads = args.concurrency * args.workers
        runs = {}
        for label in ("first", "again"):
            # Fresh workers per run, as after a nightly restart: 5,000 backups twice would pass the
            # role's max-tasks-per-child and the worker would recycle itself mid-run with nothing to
            # restart it (systemd does in production).
            with ExitStack() as run_stack:
                workers = [run_stack.enter_context(celery_worker(
                    run_env, queues="backup", pool=args.deployed["pool"], concurrency=args.concurrency,
                    hostname=f"bench-fleet-{devices}-{i}@localhost", extra_args=args.deployed["args"]))
                    for i in range(args.workers)]
                print(f"  {devices} devices, {label} run (load {loadavg()})", flush=True)
                runs[label] = one_run(app, sim, stats_file, [w.proc.pid for w in workers], devices, total_threads,
                                      args.timeout, repo, sum(r["commits"] for r in runs.values()))
    first, again = runs["first"], runs["again"]
    return {"devices": devices, "workers": args.workers, "concurrency": args.concurrency,
            "simulator_threads_idle": idle_threads, "first": first, "again": again,
            "rerun_speedup": round(first["seconds"] / again["seconds"], 2)}


def run(args) -> dict:
    results: dict = {
        "benchmark": "fleet_backup", "device_counts": args.devices, "workers": args.workers,
        "concurrency": args.concurrency,
        "simulator": simulator_args(args), "pool": args.deployed["pool"],
        "worker_args": list(args.deployed["args"]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                 "loadavg": loadavg()},
        "targets": {"seconds_5000": TARGET_SECONDS_5000, "efficiency": TARGET_EFFICIENCY,
                    "rerun_speedup": TARGET_RERUN_SPEEDUP},
        "fleets": [],
    }
    with ExitStack() as stack:
        workdir, env = backup_services(stack, "netjobs-bench-fleet-")
        for devices in args.devices:
            results["fleets"].append(run_fleet(args, devices, env, workdir))
    judge(results)
    return results


def judge(results: dict) -> None:
    verdicts = {}
    for fleet in results["fleets"]:
        first = fleet["first"]
        n = fleet["devices"]
        # The 10-minute target is for 5,000 devices; smaller fleets are held to the same rate.
        allowed = TARGET_SECONDS_5000 * n / 5000
        verdicts[str(n)] = {"seconds_allowed": round(allowed, 1), "seconds_met": first["seconds"] <= allowed,
                            "efficiency_met": first["efficiency"] >= TARGET_EFFICIENCY,
                            "rerun_met": fleet["rerun_speedup"] >= TARGET_RERUN_SPEEDUP}
    results["verdicts"] = verdicts
    results["target_met"] = bool(verdicts) and all(all(v for k, v in d.items() if k.endswith("_met"))
                                                   for d in verdicts.values())


def print_table(results: dict) -> None:
    print(f"\nbackup.all over simulated WAN devices ({results['host']['cpus']} CPUs; {results['workers']} worker "
          f"process(es), threads pool, concurrency {results['concurrency']} each; "
          f"simulator: {' '.join(results['simulator'])})\n")
    header = (f"{'devices':>7} {'run':<6}{'seconds':>9}{'dev/s':>7}{'ok':>6}{'fail':>5}{'session s':>10}"
              f"{'task s':>8}{'ideal s':>9}{'effic.':>7}{'wrk ms/d':>9}{'sim ms/d':>9}{'peak':>5}{'thr':>5}"
              f"{'full':>6}{'marker':>7}{'wrk MB':>7}  load before")
    print(header)
    print("-" * len(header))
    for fleet in results["fleets"]:
        for label in ("first", "again"):
            m = fleet[label]
            s = m["summary"]
            print(f"{fleet['devices']:>7} {label:<6}{m['seconds']:>9.1f}{m['devices_per_s']:>7.1f}"
                  f"{s['backed_up'] + s['unchanged']:>6}{s['failed']:>5}{m['mean_session_s']:>10.2f}"
                  f"{m['mean_task_s'] or 0:>8.2f}{m['ideal_seconds']:>9.1f}{m['efficiency']:>7.2f}"
                  f"{m['cpu_ms_per_device']['worker']:>9.1f}{m['cpu_ms_per_device']['simulator']:>9.1f}"
                  f"{m['peak_sessions']:>5}{m['simulator_threads_peak'] or 0:>5}"
                  f"{m['reads']['full']:>6}{m['reads']['marker']:>7}{m['worker_rss_peak_mb']:>7.0f}  "
                  + "/".join(f"{x:.2f}" for x in m["load_before"]))
    print()
    for n, v in results["verdicts"].items():
        fleet = next(f for f in results["fleets"] if str(f["devices"]) == n)
        print(f"{n} devices: wall {fleet['first']['seconds']:.0f} s vs {v['seconds_allowed']:.0f} s allowed "
              f"({'met' if v['seconds_met'] else 'MISSED'}); efficiency {fleet['first']['efficiency']:.2f} "
              f"({'met' if v['efficiency_met'] else 'MISSED'}); re-run {fleet['rerun_speedup']:.2f}x faster "
              f"({'met' if v['rerun_met'] else 'MISSED'})")


# --- simulator cost of many concurrent sessions ------------------------------------------------


def probe_sessions(args) -> dict:
    """Hold N SSH sessions open at once against one simulator; its CPU and threads per session."""
    import paramiko

    workdir = Path(tempfile.mkdtemp(prefix="netjobs-bench-probe-"))
    try:
        sim, ports, stats_file = start_realistic_simulator(
            args.probe_sessions, "probe", "probe-pw", workdir,
            ["--realistic", "--login-latency", "0", "--command-latency", "0", "--config-lines", "1000"])
        try:
            idle_threads, cpu_start = threads_of(sim.pid), process_cpu_seconds(sim.pid)
            clients: list[paramiko.SSHClient] = []
            lock = threading.Lock()
            errors: list[str] = []

            def connect(port: int) -> None:
                client = paramiko.SSHClient()
                client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                try:
                    client.connect("127.0.0.1", port=port, username="probe", password="probe-pw", timeout=60,
                                   banner_timeout=60, auth_timeout=60, allow_agent=False, look_for_keys=False)
                    client.invoke_shell().recv(4096)
                    # The client's own polling would otherwise dominate the machine, not the simulator's.
                    client.get_transport().sock.settimeout(1.0)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    return
                with lock:
                    clients.append(client)

            started = time.monotonic()
            port_list = sorted(ports.values())
            for batch in range(0, len(port_list), 50):  # 50 handshakes at a time, as a worker pool would
                threads = [threading.Thread(target=connect, args=(p,)) for p in port_list[batch:batch + 50]]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            connect_seconds = time.monotonic() - started
            cpu_connected = process_cpu_seconds(sim.pid)
            threads_open = threads_of(sim.pid)
            load_open = loadavg()
            time.sleep(args.probe_idle)
            cpu_idle_end = process_cpu_seconds(sim.pid)
            open_sessions = len(clients)
            for client in clients:
                client.close()
            rss = rss_mb(sim.pid)
        finally:
            sim.terminate()
            sim.wait(30)
    finally:
        shutil.rmtree(workdir, True)
    return {
        "benchmark": "devsim_sessions", "sessions_requested": args.probe_sessions, "sessions_open": open_sessions,
        "errors": errors[:5], "error_count": len(errors), "connect_seconds": round(connect_seconds, 1),
        "cpu_ms_per_session_login": round((cpu_connected - cpu_start) * 1000 / max(open_sessions, 1), 1),
        "idle_seconds": args.probe_idle,
        "idle_cpu_percent": round((cpu_idle_end - cpu_connected) * 100 / args.probe_idle, 1),
        "idle_cpu_us_per_session_per_s": round((cpu_idle_end - cpu_connected) * 1e6 / args.probe_idle
                                               / max(open_sessions, 1), 1),
        "threads_idle": idle_threads, "threads_with_sessions_open": threads_open, "simulator_rss_mb": rss,
        "load_average_while_open": load_open, "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=parse_counts, default=parse_counts("1000,5000"),
                        help="fleet sizes, e.g. 1000,5000 (each gets a fresh simulator and worker)")
    parser.add_argument("--concurrency", type=int, help="threads per worker (default: what the role deploys)")
    parser.add_argument("--workers", type=int, default=1,
                        help="backup worker processes (deployed: 1); their threads add up in the ideal bound")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--login-latency", default="0.2-1.5")
    parser.add_argument("--command-latency", default="0.03-0.15")
    parser.add_argument("--config-latency", default="0.5-3")
    parser.add_argument("--config-lines", default="1000-5000")
    parser.add_argument("--change-share", type=float, default=0.0, help="0: the re-run finds nothing changed")
    parser.add_argument("--slow-share", type=float, default=0.05)
    parser.add_argument("--slow-factor", type=float, default=3.0)
    parser.add_argument("--flaky-share", type=float, default=0.0, help="flaky devices are retried with backoff")
    parser.add_argument("--unreachable-share", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up on one run after this many seconds")
    parser.add_argument("--probe-sessions", type=int, default=0,
                        help="instead of backups: hold this many SSH sessions open and measure the simulator")
    parser.add_argument("--probe-idle", type=float, default=10.0, help="seconds the probe's sessions stay idle")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    try:
        args.deployed = deployed_backup_worker()
        if args.concurrency is None:
            args.concurrency = args.deployed["concurrency"]
        if args.deployed["max_tasks"] and max(args.devices) + 1 >= args.deployed["max_tasks"]:
            raise BenchError(f"{max(args.devices)} devices in one run would recycle the worker mid-run "
                             f"(max-tasks-per-child {args.deployed['max_tasks']})")
        if args.probe_sessions:
            results = probe_sessions(args)
            print(json.dumps(results, indent=2))
        else:
            results = run(args)
            print_table(results)
    except BenchError as exc:
        print(f"bench_fleet_backup: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
