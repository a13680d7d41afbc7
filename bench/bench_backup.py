#!/usr/bin/env python3
"""Backup benchmark: ``netjobs.backup.all`` over N simulated SSH devices (default 200).

Everything is real: one ``netjobs.devsim`` process serving N devices on N loopback ports (platforms
cycled: cisco_ios, arista_eos, juniper_junos, linux), a throwaway redis-server and PostgreSQL, and
a Celery worker consuming the backup queue with the shipped settings (history on, acks_late, the
strict SSH host-key policy: every device's key is trusted beforehand, as `netjobs devices trust` does).

For each worker configuration (``--pools``, default ``threads:32``) two runs are timed from
submitting ``backup.all`` to having its summary:

* ``first``: every device is new, so N commits and N snapshot rows;
* ``again``: nothing changed, so no commit and N "unchanged" snapshot rows.

    python bench/bench_backup.py [--devices 200] [--pools threads:32,threads:64,prefork:4] [--json OUT]

Target: the first run of 200 devices within 60 s.
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
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))

TARGET_SECONDS = 60.0
SIM_PLATFORMS = "cisco_ios,arista_eos,juniper_junos,linux"


class BenchError(Exception):
    """A setup problem; printed as one line."""


def parse_pools(raw: str) -> list[tuple[str, int]]:
    pools = []
    for item in raw.split(","):
        name, _, count = item.strip().partition(":")
        if name not in ("threads", "prefork", "solo") or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"pool must look like threads:32 or prefork:4, got {item!r}")
        pools.append((name, int(count)))
    return pools


def start_simulator(count: int, username: str, password: str, workdir: Path) -> tuple[subprocess.Popen, dict]:
    ports_file = workdir / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netjobs.devsim", "--listen", "127.0.0.1", "--port", "0", "--count", str(count),
         "--platform", SIM_PLATFORMS, "--hostname", "bench", "--username", username, "--ports-file", str(ports_file),
         "--host-key", str(workdir / "host_key")],
        env={**os.environ, "NETJOBS_DEVSIM_PASSWORD": password, "PYTHONPATH": str(ROOT / "app")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise BenchError(f"device simulator did not start: {line.strip()} {proc.stderr.read()[-500:]}")
    return proc, json.loads(ports_file.read_text())


def insert_devices(ports: dict[str, int], host_key_file: Path) -> None:
    """The simulated devices, each with the simulator's host key trusted (it has one for all)."""
    from sqlalchemy import insert, text

    from netjobs.db.engine import get_engine
    from netjobs.db.models import Device
    from netjobs.devsim import load_host_key
    from netjobs.services.hostkeys import HostKey

    key = HostKey.of(load_host_key(host_key_file))
    platforms = SIM_PLATFORMS.split(",")
    rows = [dict(name=name, mgmt_address="127.0.0.1", port=port, platform=platforms[i % len(platforms)],
                 site="bench", tags=["bench"]) for i, (name, port) in enumerate(sorted(ports.items()))]
    with get_engine().begin() as conn:
        conn.execute(text("TRUNCATE config_snapshots, devices RESTART IDENTITY CASCADE"))
        conn.execute(insert(Device), rows)
        conn.execute(text("INSERT INTO device_host_keys (device_id, key_type, public_key, fingerprint, trusted_by) "
                          "SELECT id, :type, :key, :fingerprint, 'bench' FROM devices"),
                     {"type": key.key_type, "key": key.public_key, "fingerprint": key.fingerprint})


def timed_backup_all(app, expected: int, timeout: float) -> dict:
    """Submit backup.all, poll its state (PROGRESS is seen), return timing and summary."""
    started = time.perf_counter()
    result = app.send_task("netjobs.backup.all", kwargs={"site": "bench"})
    progress_seen = 0
    while not result.ready():
        if time.perf_counter() - started > timeout:
            raise BenchError(f"backup.all did not finish within {timeout:.0f}s (state {result.state})")
        if result.state == "PROGRESS":
            progress_seen = max(progress_seen, int((result.info or {}).get("current", 0)))
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    summary = result.get(timeout=10)
    if summary.get("devices") != expected:
        raise BenchError(f"summary covers {summary.get('devices')} devices, expected {expected}: {summary}")
    return {"seconds": round(elapsed, 2), "devices_per_s": round(expected / elapsed, 1),
            "progress_seen": progress_seen, "summary": {k: summary[k] for k in ("backed_up", "unchanged", "failed")},
            "failures": summary["failures"][:5]}


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of ``pid`` and its live children (prefork pool), with waited-for children (git)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


def count_commits(repo: Path) -> int:
    out = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "HEAD"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def run(args) -> dict:
    from tests.support.servers import celery_worker, postgres_server, redis_server, service_env

    results: dict = {
        "benchmark": "backup", "devices": args.devices, "target_seconds": TARGET_SECONDS,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                 "loadavg": round(os.getloadavg()[0], 2)},
        "runs": [],
    }
    with ExitStack() as stack:
        workdir, env = backup_services(stack, "netjobs-bench-backup-")
        sim, ports = start_simulator(args.devices, env["NETJOBS_DEVICE_USERNAME"], env["NETJOBS_DEVICE_PASSWORD"],
                                     workdir)
        stack.callback(lambda: (sim.terminate(), sim.wait(10)))
        from netjobs.celery_app import app

        for index, (pool, concurrency) in enumerate(args.pools):
            repo = workdir / f"repo-{index}-{pool}-{concurrency}"
            run_env = env | {"NETJOBS_BACKUP_REPO": str(repo)}
            os.environ.update(run_env)
            insert_devices(ports, workdir / "host_key")
            with celery_worker(run_env, queues="backup", pool=pool, concurrency=concurrency,
                               hostname=f"bench-backup-{index}-{pool}-{concurrency}@localhost") as worker:
                measured = []
                for _ in ("first", "again"):
                    cpu_before = process_cpu_seconds(worker.proc.pid), process_cpu_seconds(sim.pid)
                    outcome = timed_backup_all(app, args.devices, args.timeout)
                    cpu_after = process_cpu_seconds(worker.proc.pid), process_cpu_seconds(sim.pid)
                    outcome["cpu_seconds"] = {"worker": round(cpu_after[0] - cpu_before[0], 1),
                                              "simulator": round(cpu_after[1] - cpu_before[1], 1)}
                    outcome["commits"] = count_commits(repo) - sum(m["commits"] for m in measured)
                    measured.append(outcome)
                first, again = measured
            results["runs"].append({"pool": pool, "concurrency": concurrency, "first": first, "again": again})
    best = min(r["first"]["seconds"] for r in results["runs"])
    results["best_first_seconds"] = best
    results["target_met"] = best <= TARGET_SECONDS
    return results


def print_table(results: dict) -> None:
    print(f"\nbackup.all over {results['devices']} simulated SSH devices "
          f"({results['host']['cpus']} CPUs; target <= {TARGET_SECONDS:.0f} s)\n")
    header = (f"{'worker pool':<14}{'run':<7}{'seconds':>9}{'dev/s':>8}{'changed':>9}{'unchanged':>10}{'failed':>8}"
              f"{'commits':>9}{'cpu wrk':>9}{'cpu sim':>9}")
    print(header)
    print("-" * len(header))
    for r in results["runs"]:
        for label in ("first", "again"):
            m = r[label]
            s = m["summary"]
            print(f"{r['pool'] + ':' + str(r['concurrency']):<14}{label:<7}{m['seconds']:>9.2f}{m['devices_per_s']:>8.1f}"
                  f"{s['backed_up']:>9}{s['unchanged']:>10}{s['failed']:>8}{m['commits']:>9}"
                  f"{m['cpu_seconds']['worker']:>9.1f}{m['cpu_seconds']['simulator']:>9.1f}")
    verdict = "met" if results["target_met"] else "MISSED"
    print(f"\nbest first run: {results['best_first_seconds']:.2f} s -> target {verdict} "
          f"(load average before: {results['host']['loadavg']})")


def backup_services(stack: ExitStack, prefix: str) -> tuple[Path, dict[str, str]]:
    """A work directory, Redis and a migrated PostgreSQL for a backup benchmark, closed by ``stack``;
    the environment (shipped timeouts and retry policy, strict host keys) is applied to this process."""
    from tests.support.servers import postgres_server, redis_server, service_env

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, workdir, True)
    redis = stack.enter_context(redis_server())
    pg = stack.enter_context(postgres_server())
    env = service_env(redis, pg, NETJOBS_COMPLIANCE_RULES=str(workdir / "compliance.yml"),
                      # the shipped timeouts and retry policy, not the tests' short ones
                      NETJOBS_DEVICE_CONN_TIMEOUT="10", NETJOBS_DEVICE_READ_TIMEOUT="60",
                      NETJOBS_RETRY_BACKOFF="2", NETJOBS_RETRY_BACKOFF_MAX="300",
                      NETJOBS_SSH_HOST_KEY_POLICY="strict")
    os.environ.update(env)
    from netjobs.config import reset_settings
    from netjobs.db.migrate import upgrade

    reset_settings()
    upgrade()
    return workdir, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--pools", type=parse_pools, default=parse_pools("threads:32,threads:16"),
                        help="worker pools to compare, e.g. threads:32,threads:64,prefork:4")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on one run after this many seconds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 2000:
        parser.error("--devices must be 1-2000")
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench_backup: {exc}", file=sys.stderr)
        return 1
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(not r["first"]["summary"]["failed"] for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
