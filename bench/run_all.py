#!/usr/bin/env python3
"""`make bench`: run the benchmarks, print one combined table, keep every JSON.

    python bench/run_all.py [--out build/bench] [--only fanout,sweep,backup,fleet_backup,history,memory]
                            [--memory-minutes 30]

Each benchmark prints its own detailed table and writes OUT/<name>.json; this driver adds
OUT/summary.json with one line per benchmark: result, target, met or missed, load average.
A benchmark that fails is reported as such and the others still run; the exit code is non-zero then.

``history`` runs at a small size here (BENCHMARK_ARGS: 1M job_runs, 100 devices, 20 runs, 2 purges;
its README section has the 10M numbers). ``memory`` runs ``--memory-minutes`` of load (default
$BENCH_MEMORY_MINUTES, else 30, what issue 13 asks for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = {
    "fanout": "bench_fanout.py",
    "sweep": "bench_sweep.py",
    "backup": "bench_backup.py",
    "fleet_backup": "bench_fleet_backup.py",
    "history": "bench_history.py",
    "memory": "bench_memory.py",
}
# Arguments besides --json: history at a size `make bench` can afford (the full 10M takes hours).
BENCHMARK_ARGS = {
    "history": ["--rows", "1000000", "--devices", "100", "--runs", "20", "--purges", "2"],
}


def headline(name: str, report: dict) -> dict:
    """One comparable line from a benchmark's JSON (each script has its own layout)."""
    if name == "fanout":
        rows = {r["name"]: r for r in report["rows"]}
        plain = next(r for r in rows.values() if r["name"].startswith("plain"))
        ours = rows[report["headline"]]
        raw = next((r for r in rows.values() if r["name"].startswith("raw")), None)
        return {
            "result": f"{ours['per_s']:.0f} tasks/s vs plain Celery {plain['per_s']:.0f}/s"
                      + (f" (raw redis-py {raw['per_s']:.0f}/s)" if raw else ""),
            "measured": f"{report['ratio']:.2f}x",
            "target": f">= {report['target_ratio']}x plain Celery",
            "met": report["target_met"],
        }
    if name == "sweep":
        return {
            "result": f"{report['netjobs']['addresses_per_s']:,.0f} addresses/s vs nmap "
                      f"{report['nmap']['addresses_per_s']:,.0f}/s ({report['prefix']})",
            "measured": f"{report['ratio']:.2f}x",
            "target": f">= {report['target_ratio']}x nmap",
            "met": report["target_met"],
        }
    if name == "backup":
        return {
            "result": f"backup of {report['devices']} simulated SSH devices",
            "measured": f"{report['best_first_seconds']:.1f} s",
            "target": f"<= {report.get('target_seconds', 60):.0f} s",
            "met": report["target_met"],
        }
    if name == "fleet_backup":
        largest = max(report["fleets"], key=lambda f: f["devices"])
        first = largest["first"]
        return {
            "result": f"backup of {largest['devices']} WAN-latency devices: efficiency {first['efficiency']:.2f}, "
                      f"re-run {largest['rerun_speedup']:.2f}x faster",
            "measured": f"{first['seconds']:.0f} s",
            "target": f"<= {report['targets']['seconds_5000'] * largest['devices'] / 5000:.0f} s, eff >= "
                      f"{report['targets']['efficiency']}, re-run >= {report['targets']['rerun_speedup']:.0f}x",
            "met": report["target_met"],
        }
    if name == "history":
        # The final schema's numbers: after the last proposal step when --with-proposal ran.
        final = report.get("proposal") or report
        steps = final.get("steps") or []
        queries = steps[-1]["queries"] if steps else final.get("queries") or report["queries"]
        targeted = [q for q in queries if q.get("target")]
        worst = max(targeted, key=lambda q: q["p95_ms"])
        met = sum(1 for q in targeted if q["met"])
        purges = (final.get("purge") or report["purge"])["purges"]
        slowest = max((p["seconds"] for p in purges), default=0.0)
        return {
            "result": f"{report['rows']:,} job_runs: {met}/{len(targeted)} queries p95 <= "
                      f"{report.get('target_p95_ms', 100):.0f} ms (worst: {worst['query']}); "
                      f"slowest purge {slowest:.1f} s" + ("" if report["purges_met"] else " (purge MISSED)"),
            "measured": f"{worst['p95_ms']:.0f} ms",
            "target": f"p95 <= {report.get('target_p95_ms', 100):.0f} ms, purge <= "
                      f"{report.get('target_purge_s', 60):.0f} s",
            "met": report["target_met"],
        }
    if name == "memory":
        slope = report["slope_mb_per_min"]
        recycles = sum(report["recycles"].values())
        return {
            "result": f"{report['minutes']:g} min mixed load on {len(report['groups'])} worker groups: PSS final "
                      f"{report['pss_final_mb']:.0f} MB, growth {'n/a' if slope is None else f'{slope:+.2f}'} MB/min "
                      f"over the last {report['growth_window_min']:g} min, {recycles} child recycles",
            "measured": f"{report['pss_peak_mb']:.0f} MB",
            "target": f"<= {report['targets']['pss_mb']:.0f} MB PSS, no growth",
            "met": report["target_met"],
        }
    raise KeyError(name)


def run_one(name: str, out_dir: Path, extra: list[str] | None = None) -> dict:
    out = out_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    argv = [*BENCHMARK_ARGS.get(name, []), *(extra or []), "--json", str(out)]
    print(f"\n=== {name}: python bench/{BENCHMARKS[name]} {' '.join(argv)}  (load average {load_before})", flush=True)
    proc = subprocess.run([sys.executable, str(BENCH_DIR / BENCHMARKS[name]), *argv])
    line = {"benchmark": name, "exit_code": proc.returncode, "seconds": round(time.monotonic() - started, 1),
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}
    if not out.exists():
        return {**line, "result": "no result (the benchmark failed)", "measured": "-", "target": "-", "met": False}
    try:
        return {**line, **headline(name, json.loads(out.read_text()))}
    except (KeyError, StopIteration, TypeError, ValueError) as exc:
        return {**line, "result": f"unreadable result ({type(exc).__name__}: {exc})", "measured": "-",
                "target": "-", "met": False}


def print_summary(lines: list[dict]) -> None:
    print(f"\n=== make bench summary ({os.cpu_count()} CPUs; load average 1/5/15 min before each run)")
    print(f"{'benchmark':<12} {'measured':>9}  {'target':<30} {'verdict':<7} {'load':<16} result")
    for line in lines:
        verdict = "met" if line["met"] else "MISSED" if line["exit_code"] == 0 else "FAILED"
        load = "/".join(f"{x:.2f}" for x in line["load_before"])
        print(f"{line['benchmark']:<12} {line['measured']:>9}  {line['target']:<30} {verdict:<7} {load:<16} "
              f"{line['result']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="directory for the JSON files")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--memory-minutes", type=float,
                        default=float(os.environ.get("BENCH_MEMORY_MINUTES", 30)),
                        help="minutes of load for the memory benchmark (default $BENCH_MEMORY_MINUTES, else 30)")
    args = parser.parse_args(argv)
    if args.memory_minutes <= 0:
        parser.error("--memory-minutes must be positive")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        parser.error(f"unknown benchmark(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BENCHMARKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {"memory": ["--minutes", f"{args.memory_minutes:g}"]}
    lines = [run_one(name, args.out, extra.get(name)) for name in names]
    print_summary(lines)
    (args.out / "summary.json").write_text(json.dumps({"cpus": os.cpu_count(), "benchmarks": lines}, indent=2) + "\n")
    print(f"\nJSON: {args.out}/{{{','.join(names)},summary}}.json")
    return 0 if all(line["exit_code"] == 0 for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
