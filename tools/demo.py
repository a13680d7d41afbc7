#!/usr/bin/env python3
"""`make demo`: the whole platform on this machine, without Ansible or test hosts.

Starts a throwaway Redis and PostgreSQL, a worker per queue, beat and Flower, three simulated
SSH devices; then runs a sweep and a backup through the `netjobs` CLI and prints the results.
With --keep it stays up until Ctrl-C so you can use the CLI and Flower yourself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))

from tests.support.servers import (  # noqa: E402
    VENV_BIN,
    celery_worker,
    free_port,
    postgres_server,
    redis_server,
    service_env,
    wait_for_port,
)

# queue -> (pool, concurrency): I/O-bound queues get threads, the rest prefork.
WORKERS = {"default": ("prefork", 1), "network": ("prefork", 1), "backup": ("threads", 8), "heavy": ("prefork", 1)}
DEVICES = [("demo-r1", "cisco_ios"), ("demo-sw1", "arista_eos"), ("demo-fw1", "juniper_junos")]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def netjobs(env: dict, *args: str, check: bool = True) -> int:
    print("$ netjobs " + " ".join(args), flush=True)
    return subprocess.run([str(VENV_BIN / "netjobs"), *args], env=env, check=check).returncode


@contextlib.contextmanager
def background(argv: list[str], env: dict, logfile: Path):
    with open(logfile, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
    args = parser.parse_args()
    logs = REPO / "build" / "demo"
    logs.mkdir(parents=True, exist_ok=True)

    with redis_server() as redis, postgres_server() as pg, contextlib.ExitStack() as stack:
        device_password = secrets.token_urlsafe(12)
        flower_password = secrets.token_urlsafe(12)
        env = {**os.environ, **service_env(redis, pg,
                                           NETJOBS_DEVICE_USERNAME="netjobs",
                                           NETJOBS_DEVICE_PASSWORD=device_password,
                                           NETJOBS_BEAT_MAX_INTERVAL="5",
                                           NETJOBS_REDBEAT_LOCK_TIMEOUT="30",
                                           # the shipped default: backups need `netjobs devices trust`
                                           NETJOBS_SSH_HOST_KEY_POLICY="strict")}
        env["NETJOBS_COMPLIANCE_RULES"] = str(REPO / "app" / "netjobs" / "data" / "compliance-example.yml")
        say(f"Redis on port {redis.port}, PostgreSQL on port {pg.port}; logs in {logs}")
        netjobs(env, "db", "upgrade")

        base_port = free_port()
        stack.enter_context(background(
            [str(VENV_BIN / "python"), "-m", "netjobs.devsim", "--listen", "127.0.0.1", "--port", str(base_port),
             "--count", str(len(DEVICES)), "--platform", ",".join(p for _, p in DEVICES), "--username", "netjobs",
             "--password", device_password], env, logs / "devsim.log"))
        for index in range(len(DEVICES)):
            wait_for_port(base_port + index)
        say("Three simulated devices, one per platform")
        for index, (name, platform) in enumerate(DEVICES):
            netjobs(env, "devices", "add", name, "127.0.0.1", "--port", str(base_port + index),
                    "--platform", platform, "--site", "demo")
        say("Trust each device's SSH host key (backups accept no other)")
        for name, _ in DEVICES:
            netjobs(env, "devices", "trust", name)

        for queue, (pool, concurrency) in WORKERS.items():
            stack.enter_context(celery_worker(env, queues=queue, pool=pool, concurrency=concurrency,
                                              hostname=f"{queue}@demo"))
        stack.enter_context(background([str(VENV_BIN / "celery"), "-A", "netjobs.celery_app:app", "beat"],
                                       env, logs / "beat.log"))
        flower_port = free_port()
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"admin:{flower_password}", "FLOWER_MAX_TASKS": "10000"}
        stack.enter_context(background([str(VENV_BIN / "celery"), "-A", "netjobs.celery_app:app", "flower",
                                        "--address=127.0.0.1", f"--port={flower_port}"], flower_env,
                                       logs / "flower.log"))
        wait_for_port(flower_port, timeout=60)
        say("Workers per queue, beat and Flower are up")
        netjobs(env, "workers")

        say("Reachability sweep of the simulators' ports")
        ports = ",".join(str(base_port + i) for i in range(len(DEVICES)))
        netjobs(env, "sweep", "127.0.0.0/30", "--ports", ports, "--wait")
        say("Config backup of every device, into the archive")
        netjobs(env, "backup", "--all", "--wait")
        netjobs(env, "configs", "changed", "--since", "1h")
        say("Job history")
        netjobs(env, "runs", "--limit", "20")
        say("Health")
        netjobs(env, "doctor", check=False)

        if args.keep:
            say(f"Flower: http://127.0.0.1:{flower_port} (admin / {flower_password})")
            print("Use the CLI from another shell with these variables:")
            for key in sorted(k for k in env if k.startswith("NETJOBS_")):
                print(f"  export {key}={env[key]!r}")
            print("Ctrl-C stops everything.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
