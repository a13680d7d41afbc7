"""Helper of molecule/cluster/verify.yml, copied to the worker hosts.

Subcommands that talk to Celery run with the app's virtualenv and netjobs.env loaded, as the netjobs
user (verify.yml: runuser + netjobs-exec). `journal` reads the systemd journal and needs root and only
the standard library. Every subcommand prints one JSON document on stdout; verify.yml asserts on it.

    submit  --task T [--arg K=V]... [--queue Q] [--count N] [--interval S] [--countdown S] [--spread S]
    wait    --ids A,B,... [--timeout S]          until every task is SUCCESS, FAILURE or REVOKED
    active  --worker NODE --ids A,B,... [--min N] [--timeout S]
    held    --worker NODE --ids A,B,...          which of them the worker holds (running, reserved, ETA)
    kill-child --worker NODE --ids A,B,... [--max-age S] [--timeout S]
                                                 SIGKILL the pool process running one of them
    ping    --workers NODE,NODE [--timeout S]   until every node answers
    doctor-watch --out FILE --stop FILE [--timeout S]
    journal --since EPOCH [--unit PATTERN]...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

READY = ("SUCCESS", "FAILURE", "REVOKED")


def _app():
    from netjobs.celery_app import app

    return app


def _ids(text: str) -> list[str]:
    return [i for i in text.split(",") if i]


def submit(args) -> dict:
    from netjobs.history import recorder

    app = _app()
    kwargs = {}
    for pair in args.arg or []:
        key, _, value = pair.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    ids, started = [], time.time()
    for number in range(args.count):
        options = {}
        if args.queue:
            options["queue"] = args.queue
        countdown = args.countdown + number * args.spread
        if countdown > 0:
            options["countdown"] = countdown
        ids.append(app.send_task(args.task, kwargs=kwargs, **options).id)
        if args.interval and number < args.count - 1:
            time.sleep(args.interval)
    recorder.flush()  # the PUBLISHED rows, as `netjobs submit` does
    return {"ids": ids, "started": started, "finished": time.time()}


def wait(args) -> dict:
    from celery.result import AsyncResult

    app = _app()
    ids = _ids(args.ids)
    states = dict.fromkeys(ids, "PENDING")
    ready_at: dict[str, float] = {}
    started = time.time()
    while True:
        for task_id in ids:
            if states[task_id] not in READY:
                states[task_id] = AsyncResult(task_id, app=app).state
                if states[task_id] in READY:
                    ready_at[task_id] = time.time()
        if all(s in READY for s in states.values()) or time.time() - started >= args.timeout:
            break
        time.sleep(args.poll)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return {"counts": counts, "states": states, "done": len(ready_at) == len(ids), "ready_at": ready_at,
            "started": started, "last_ready": max(ready_at.values(), default=None), "finished": time.time()}


def active(args) -> dict:
    app = _app()
    wanted = set(_ids(args.ids))
    started = time.time()
    found: list[dict] = []
    while time.time() - started < args.timeout:
        replies = app.control.inspect([args.worker], timeout=1.0).active() or {}
        found = [{"id": t["id"], "worker_pid": t.get("worker_pid"), "time_start": t.get("time_start")}
                 for t in replies.get(args.worker) or [] if t["id"] in wanted]
        if len(found) >= args.min:
            break
        time.sleep(0.3)
    return {"active": found, "enough": len(found) >= args.min, "at": time.time()}


def kill_child(args) -> dict:
    """SIGKILL the prefork child running one of the tasks, right after the worker said it runs it and
    only if it started less than --max-age seconds ago (so that it is still running)."""
    import signal

    app = _app()
    wanted = set(_ids(args.ids))
    started = time.time()
    while time.time() - started < args.timeout:
        replies = app.control.inspect([args.worker], timeout=1.0).active() or {}
        now = time.time()
        for task in replies.get(args.worker) or []:
            if task["id"] in wanted and task.get("worker_pid") and now - (task.get("time_start") or 0) < args.max_age:
                os.kill(task["worker_pid"], signal.SIGKILL)
                return {"killed": True, "id": task["id"], "worker_pid": task["worker_pid"],
                        "time_start": task.get("time_start"), "killed_at": time.time()}
        time.sleep(0.2)
    return {"killed": False}


def held(args) -> dict:
    app = _app()
    wanted = set(_ids(args.ids))
    inspect = app.control.inspect([args.worker], timeout=2.0)
    found: dict[str, list[str]] = {}
    for kind, replies in (("active", inspect.active()), ("reserved", inspect.reserved()),
                          ("scheduled", inspect.scheduled())):
        entries = (replies or {}).get(args.worker) or []
        # scheduled() wraps each request: {"eta": ..., "request": {...}}
        found[kind] = sorted(e.get("request", e)["id"] for e in entries if e.get("request", e)["id"] in wanted)
    return {"held": found, "count": sum(len(v) for v in found.values())}


def ping(args) -> dict:
    app = _app()
    wanted = set(_ids(args.workers))
    started = time.time()
    answered: set[str] = set()
    while time.time() - started < args.timeout:
        for reply in app.control.ping(list(wanted), timeout=1.0) or []:
            answered.update(reply)
        if wanted <= answered:
            break
        time.sleep(0.5)
    return {"answered": sorted(answered), "missing": sorted(wanted - answered), "seconds": time.time() - started}


def doctor_watch(args) -> dict:
    """Run `netjobs doctor --json` back to back until the stop file appears; one JSON line per run."""
    started = time.time()
    runs = 0
    with open(args.out, "a", encoding="utf-8") as out:
        while not os.path.exists(args.stop) and time.time() - started < args.timeout:
            begin = time.time()
            proc = subprocess.run(["/usr/local/bin/netjobs", "doctor", "--json", "--timeout", "0.5"],
                                  capture_output=True, text=True, check=False)
            try:
                checks = json.loads(proc.stdout)["checks"]
            except (ValueError, KeyError):
                checks = [{"name": "doctor output", "ok": False, "detail": (proc.stdout + proc.stderr)[-500:]}]
            out.write(json.dumps({"start": begin, "end": time.time(), "rc": proc.returncode, "checks": checks}) + "\n")
            out.flush()
            runs += 1
    return {"runs": runs, "seconds": time.time() - started}


JOURNAL_PATTERNS = {
    "received": re.compile(r"Task \S+\[([0-9a-f-]{36})\] received"),
    "succeeded": re.compile(r"Task \S+\[([0-9a-f-]{36})\] succeeded in"),
    "failed": re.compile(r"Task \S+\[([0-9a-f-]{36})\] raised unexpected"),
    "returned": re.compile(r"worker lease: returning \S+\[([0-9a-f-]{36})\]"),
}
SIGKILLED = re.compile(r"Process '\S+' pid:(\d+) exited with 'signal 9 \(SIGKILL\)'")


def journal(args) -> dict:
    command = ["journalctl", "--no-pager", "-o", "short-unix", "--since", f"@{int(args.since)}"]
    for unit in args.unit or ["netjobs-worker@*"]:
        command += ["-u", unit]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result: dict = {name: {} for name in JOURNAL_PATTERNS}
    result["returned_at"] = {}  # the first time a reaper returned each task, epoch seconds
    for line in text.splitlines():
        for name, pattern in JOURNAL_PATTERNS.items():
            match = pattern.search(line)
            if match:
                task_id = match.group(1)
                result[name][task_id] = result[name].get(task_id, 0) + 1
                if name == "returned" and task_id not in result["returned_at"]:
                    result["returned_at"][task_id] = float(line.split(" ", 1)[0])
    result["sigkilled_pids"] = [int(m.group(1)) for m in SIGKILLED.finditer(text)]
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("submit")
    p.add_argument("--task", required=True)
    p.add_argument("--arg", action="append", help="keyword argument K=V, V parsed as JSON if it can be")
    p.add_argument("--queue")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between two sends")
    p.add_argument("--countdown", type=float, default=0.0, help="countdown of the first task")
    p.add_argument("--spread", type=float, default=0.0, help="added to the countdown of each next task")
    p.set_defaults(func=submit)
    p = sub.add_parser("wait")
    p.add_argument("--ids", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--poll", type=float, default=0.5)
    p.set_defaults(func=wait)
    p = sub.add_parser("active")
    p.add_argument("--worker", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--min", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=active)
    p = sub.add_parser("kill-child")
    p.add_argument("--worker", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--max-age", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=kill_child)
    p = sub.add_parser("held")
    p.add_argument("--worker", required=True)
    p.add_argument("--ids", required=True)
    p.set_defaults(func=held)
    p = sub.add_parser("ping")
    p.add_argument("--workers", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=ping)
    p = sub.add_parser("doctor-watch")
    p.add_argument("--out", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--timeout", type=float, default=400.0)
    p.set_defaults(func=doctor_watch)
    p = sub.add_parser("journal")
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--unit", action="append")
    p.set_defaults(func=journal)
    args = parser.parse_args(argv)
    print(json.dumps(args.func(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
