#!/usr/bin/env python3
"""Sweep benchmark: netjobs' reachability sweep versus ``nmap -sT -n -Pn -T5`` on a loopback prefix.

Both contenders probe the same ports on the same addresses in the same run, alternately, ``--repeat``
times each; the median run counts. A few listeners bound on addresses inside the prefix (in a child
process that accepts and closes) give both something to find, and both must find exactly them.

* ``netjobs``: ``netjobs.services.sweep.run_sweep`` — the function behind ``netjobs.network.sweep``:
  target generation, probing, storing the results in a throwaway PostgreSQL and the summary.
  netjobs skips the IPv4 network and broadcast addresses (65,534 of a /16); rates are per address.
* ``nmap``: the same prefix and ports, wall time of the process; nmap probes all 65,536 addresses.

Only loopback prefixes are accepted: this must never send traffic off the machine.

    python bench/bench_sweep.py [--prefix 127.1.0.0/16] [--ports 22,80,443] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import platform
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))

TARGET_RATIO = 1.0
_NMAP_OPEN = re.compile(r"(\d+)/open/tcp")
_NMAP_HOST = re.compile(r"^Host: (\S+) .*Ports: (.*)$")


class BenchError(Exception):
    """A setup problem the operator can fix; printed as one line."""


# --- the listeners both contenders should find --------------------------------------------------


def listener_addresses(network: ipaddress.IPv4Network, ports: tuple[int, ...], count: int) -> list[tuple[str, int]]:
    """``count`` (address, port) pairs spread over the prefix, ports taken in turn."""
    hosts = network.num_addresses - 2 if network.num_addresses > 2 else network.num_addresses
    first = int(network.network_address) + (1 if network.num_addresses > 2 else 0)
    step = max(1, hosts // max(1, count))
    pairs = []
    for i in range(min(count, hosts)):
        address = str(ipaddress.IPv4Address(first + (i * step + i * 7) % hosts))
        pairs.append((address, ports[i % len(ports)]))
    return sorted(set(pairs))


def _serve(pairs: list[tuple[str, int]], pipe) -> None:
    """Child process: listen on every pair, accept and close until the parent goes away."""
    selector = selectors.DefaultSelector()
    try:
        for address, port in pairs:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(1024)
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
    except OSError as exc:
        pipe.send(f"cannot listen on {address}:{port}: {exc}")
        return
    pipe.send("ready")
    selector.register(pipe.fileno(), selectors.EVENT_READ, data="parent")
    while True:
        for key, _ in selector.select():
            if key.data == "parent":  # EOF or a message: stop
                return
            try:
                connection, _ = key.fileobj.accept()
                connection.close()
            except OSError:
                pass


@contextmanager
def listeners(pairs: list[tuple[str, int]]) -> Iterator[None]:
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_serve, args=(pairs, child_end), daemon=True)
    child.start()
    try:
        if not parent_end.poll(20):
            raise BenchError("the listener process did not start")
        status = parent_end.recv()
        if status != "ready":
            raise BenchError(status)
        yield
    finally:
        parent_end.send("stop")
        child.join(10)
        if child.is_alive():
            child.kill()


def wildcard_listeners(ports: tuple[int, ...]) -> list[str]:
    """Listeners on 0.0.0.0/:: for our ports would answer on every loopback address."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and set(address) == {"0"} and int(port_hex, 16) in ports:
                found.append(f"{'[::]' if table.endswith('6') else '0.0.0.0'}:{int(port_hex, 16)}")
    return found


# --- contenders ------------------------------------------------------------------------------------


def run_netjobs(network, ports: tuple[int, ...], timeout: float, concurrency: int) -> dict:
    from netjobs.services.sweep import SweepRequest, run_sweep

    request = SweepRequest(network=network, devices=None, site=None, tag=None, ports=ports, timeout=timeout,
                           concurrency=concurrency, icmp=False, store_all=False)
    started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    summary = run_sweep(request, sweep_id=f"bench-{uuid.uuid4()}")
    seconds, cpu = time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu
    found = set()
    for entry in summary["open_ports"]:
        address, port = entry.rsplit(":", 1)
        found.add((address, int(port)))
    return {"seconds": seconds, "cpu": cpu, "addresses": summary["addresses"], "probes": summary["probes"],
            "open": found,
            "stored": summary["stored"], "probe_seconds": summary["addresses"] / summary["addresses_per_s"]}


def run_nmap(nmap: str, network, ports: tuple[int, ...]) -> dict:
    argv = [nmap, "-sT", "-n", "-Pn", "-T5", "-p", ",".join(map(str, ports)), str(network), "-oG", "-"]
    started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(argv, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - started, _cpu(resource.RUSAGE_CHILDREN) - cpu
    if completed.returncode != 0:
        raise BenchError(f"nmap failed (exit {completed.returncode}): {completed.stderr.strip()[:300]}")
    found = set()
    for line in completed.stdout.splitlines():
        match = _NMAP_HOST.match(line)
        if match:
            found.update((match.group(1), int(port)) for port in _NMAP_OPEN.findall(match.group(2)))
    return {"seconds": seconds, "cpu": cpu, "addresses": network.num_addresses, "probes": network.num_addresses * len(ports),
            "open": found, "argv": " ".join(argv)}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _rates(runs: list[dict]) -> dict:
    median = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    return {
        "runs_s": [round(r["seconds"], 3) for r in runs],
        "median_s": round(median, 3),
        "cpu_s": round(cpu, 3),  # user + system, median; insensitive to other load on the machine
        "probes_per_cpu_s": round(runs[0]["probes"] / cpu, 1),
        "addresses": runs[0]["addresses"],
        "probes": runs[0]["probes"],
        "addresses_per_s": round(runs[0]["addresses"] / median, 1),
        "probes_per_s": round(runs[0]["probes"] / median, 1),
    }


@contextmanager
def database() -> Iterator[None]:
    """A throwaway PostgreSQL (and Redis, which the settings require) for run_sweep's storage."""
    from tests.support.servers import postgres_server, redis_server, service_env

    with redis_server() as redis, postgres_server() as pg:
        os.environ.update(service_env(redis, pg))
        from netjobs.config import reset_settings
        from netjobs.db.engine import dispose_engine
        from netjobs.db.migrate import upgrade

        reset_settings()
        upgrade()
        try:
            yield
        finally:
            dispose_engine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="127.1.0.0/16", help="a loopback IPv4 prefix (default 127.1.0.0/16)")
    parser.add_argument("--ports", default="22,80,443", help="ports for both tools (default 22,80,443)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender, alternating (default 3)")
    parser.add_argument("--listeners", type=int, default=12, help="open ports placed in the prefix (default 12)")
    parser.add_argument("--concurrency", type=int, default=1024, help="netjobs concurrency (default 1024)")
    parser.add_argument("--timeout", type=float, default=1.0, help="netjobs connect timeout (default 1.0 s)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    args = parser.parse_args(argv)
    try:
        return _bench(args)
    except BenchError as exc:
        print(f"bench_sweep: {exc}", file=sys.stderr)
        return 2


def _bench(args) -> int:
    from netjobs.errors import ValidationError
    from netjobs.services.sweep import parse_ports

    try:
        network = ipaddress.ip_network(args.prefix, strict=False)
        ports = parse_ports(args.ports)
    except ValidationError as exc:
        raise BenchError(str(exc)) from None
    except ValueError:
        raise BenchError(f"--prefix {args.prefix!r} is not a prefix") from None
    if network.version != 4 or not network.subnet_of(ipaddress.ip_network("127.0.0.0/8")):
        raise BenchError("--prefix must lie inside 127.0.0.0/8: the benchmark only sweeps loopback")
    if not 1 <= args.repeat <= 20 or not 1 <= args.listeners <= 100:
        raise BenchError("--repeat must be 1-20 and --listeners 1-100")
    busy = wildcard_listeners(ports)
    if busy:
        raise BenchError(f"{', '.join(busy)} answers on every loopback address; pick other --ports")
    nmap = shutil.which("nmap")
    if not nmap:
        raise BenchError("nmap is not installed (apt-get install nmap, or `make deps`)")

    pairs = listener_addresses(network, ports, args.listeners)
    expected = set(pairs)
    print(f"sweep benchmark: {network} ({network.num_addresses} addresses) × ports {','.join(map(str, ports))}, "
          f"{len(pairs)} listeners, {args.repeat} runs each, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    netjobs_runs, nmap_runs = [], []
    with listeners(pairs), database():
        for i in range(args.repeat):
            for name, runs, run in (
                ("netjobs", netjobs_runs, lambda: run_netjobs(network, ports, args.timeout, args.concurrency)),
                ("nmap", nmap_runs, lambda: run_nmap(nmap, network, ports)),
            ):
                result = run()
                runs.append(result)
                status = "ok" if result["open"] == expected else f"MISMATCH ({len(result['open'])} open)"
                print(f"  run {i + 1} {name:8} {result['seconds']:7.2f} s  open ports found: {status}", flush=True)

    netjobs, nm = _rates(netjobs_runs), _rates(nmap_runs)
    ratio = netjobs["addresses_per_s"] / nm["addresses_per_s"]
    correct = all(r["open"] == expected for r in netjobs_runs + nmap_runs)
    print()
    print(f"{'contender':10} {'addresses':>10} {'probes':>8} {'median s':>9} {'addresses/s':>12} {'ports/s':>10} "
          f"{'cpu s':>7} {'ports/cpu-s':>12}")
    for name, row in (("netjobs", netjobs), ("nmap", nm)):
        print(f"{name:10} {row['addresses']:>10} {row['probes']:>8} {row['median_s']:>9.2f} "
              f"{row['addresses_per_s']:>12,.0f} {row['probes_per_s']:>10,.0f} {row['cpu_s']:>7.2f} "
              f"{row['probes_per_cpu_s']:>12,.0f}")
    verdict = "met" if ratio >= TARGET_RATIO else f"MISSED by {(1 - ratio) * 100:.0f}%"
    cpu_ratio = netjobs["probes_per_cpu_s"] / nm["probes_per_cpu_s"]
    print(f"\nratio netjobs/nmap (addresses/s): {ratio:.2f}x  (target >= {TARGET_RATIO:.1f}x: {verdict}); "
          f"per CPU second: {cpu_ratio:.2f}x; load average now {os.getloadavg()[0]:.2f}")
    print(f"netjobs stored {netjobs_runs[-1]['stored']} rows per run (open ports only); probing alone took "
          f"{statistics.median(r['probe_seconds'] for r in netjobs_runs):.2f} s (median)")
    if not correct:
        print("ERROR: a contender did not find exactly the open ports that were listening", file=sys.stderr)

    report = {
        "benchmark": "sweep",
        "prefix": str(network),
        "ports": list(ports),
        "listeners": [f"{a}:{p}" for a, p in pairs],
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "nmap_command": nmap_runs[0]["argv"],
        "netjobs": netjobs,
        "nmap": nm,
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "open_ports_correct": correct,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
