"""Throwaway redis-server, PostgreSQL cluster and Celery worker for tests, demos and benchmarks.

They use Debian's packages (redis-server, postgresql-15) on free loopback ports in a temp dir and
are torn down by the caller (context managers).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PG_BIN = Path(os.environ.get("NETJOBS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        """Stop and start on the same port, keeping data (AOF), as `systemctl restart` would."""
        _stop(self.proc)
        self.proc = start_redis(self.port, self.workdir)


def start_redis(port: int, workdir: Path, timeout: float = 20.0) -> subprocess.Popen:
    """A redis-server on `port` that has loaded its AOF: the port opens before the data is loaded,
    and until then every command but a few fails with LOADING (seen under load with 6 test workers)."""
    import redis

    proc = _spawn_redis(port, workdir)
    wait_for_port(port, timeout)
    client = redis.Redis(port=port, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.llen("netjobs:start-probe")  # refused with LOADING, unlike PING
                return proc
            except (redis.BusyLoadingError, redis.ConnectionError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {port} still loading its data after {timeout}s")
                time.sleep(0.05)
    finally:
        client.close()


def _spawn_redis(port: int, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "yes", "--appendfsync", "no",
         "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    workdir = Path(tempfile.mkdtemp(prefix="netjobs-redis-"))
    port = free_port()
    server = RedisServer(port, start_redis(port, workdir), workdir)
    try:
        yield server
    finally:
        _stop(server.proc)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class PostgresServer:
    port: int
    datadir: Path
    user: str = "netjobs"
    password: str = "netjobs-test"
    database: str = "netjobs"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"


def _as_postgres(argv: list[str], **kw) -> subprocess.CompletedProcess:
    # PostgreSQL refuses to run as root; CI and developers here are root.
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


@contextmanager
def postgres_server(options: str = "", hba: str | None = None,
                    files: dict[str, Path] | None = None) -> Iterator[PostgresServer]:
    """A throwaway cluster. ``options``: more ``-c name=value``; ``hba``: pg_hba.conf instead of
    initdb's; ``files``: copied into the cluster's base directory (owned by postgres, 0600), named
    there as the keys, for ``options`` to refer to as ``{base}/NAME``."""
    base = Path(tempfile.mkdtemp(prefix="netjobs-pg-"))
    datadir = base / "data"
    port = free_port()
    server = PostgresServer(port, datadir)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    pwfile = base / "pw"
    pwfile.write_text(server.password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(datadir), "-U", server.user, "--pwfile", str(pwfile),
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"])
        for name, source in (files or {}).items():
            shutil.copyfile(source, base / name)
            os.chmod(base / name, 0o600)
            if os.geteuid() == 0:
                shutil.chown(base / name, "postgres", "postgres")
        if hba is not None:
            (datadir / "pg_hba.conf").write_text(hba)
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   + options.format(base=base))
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(base / "log"),
                      "-w", "-t", "60", "start"])
        _as_postgres([str(PG_BIN / "psql"), "-h", str(base), "-p", str(port), "-U", server.user, "-d", "postgres",
                      "-c", f"CREATE DATABASE {server.database}"], env={**os.environ, "PGPASSWORD": server.password})
        yield server
    finally:
        if (datadir / "postmaster.pid").exists():
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def service_env(redis: RedisServer, pg: PostgresServer, **extra: str) -> dict[str, str]:
    """NETJOBS_* settings pointing at throwaway services."""
    env = {
        "NETJOBS_BROKER_URL": redis.url,
        "NETJOBS_DATABASE_URL": pg.url,
        "NETJOBS_BACKUP_REPO": str(Path(tempfile.mkdtemp(prefix="netjobs-backups-")) / "repo"),
        "NETJOBS_RETRY_BACKOFF": "0.05",
        "NETJOBS_RETRY_BACKOFF_MAX": "0.2",
        # Device logins for simulated devices (netjobs.devsim); short timeouts keep failures fast.
        "NETJOBS_DEVICE_USERNAME": "netjobs",
        "NETJOBS_DEVICE_PASSWORD": secrets.token_urlsafe(12),
        "NETJOBS_DEVICE_CONN_TIMEOUT": "5",
        "NETJOBS_DEVICE_READ_TIMEOUT": "2",
        "NETJOBS_SSH_HOST_KEY_POLICY": "trust-on-first-use",  # simulated devices get new keys each run
    }
    env.update(extra)
    return env


@dataclass
class Worker:
    proc: subprocess.Popen
    logfile: Path
    hostname: str

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        _stop(self.proc, sig, timeout)
        return self.proc.returncode


@contextmanager
def celery_worker(env: dict[str, str], queues: str = "default,backup,network,heavy", pool: str = "prefork",
                  concurrency: int = 2, hostname: str | None = None, extra_args: tuple[str, ...] = (),
                  ready_timeout: float = 60.0) -> Iterator[Worker]:
    """A real `celery worker` subprocess; waits until it reports ready."""
    hostname = hostname or f"test-{queues.split(',')[0]}-{os.getpid()}@localhost"
    logfile = Path(tempfile.mkstemp(prefix="netjobs-worker-", suffix=".log")[1])
    argv = [str(VENV_BIN / "celery"), "-A", "netjobs.celery_app:app", "worker", "-Q", queues, "-P", pool,
            "-c", str(concurrency), "-n", hostname, "--without-mingle", "--without-gossip", "-l", "INFO",
            *extra_args]
    with open(logfile, "w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    worker = Worker(proc, logfile, hostname)
    try:
        deadline = time.monotonic() + ready_timeout
        while " ready." not in worker.log():
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{worker.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"celery worker not ready after {ready_timeout}s:\n{worker.log()[-4000:]}")
            time.sleep(0.1)
        yield worker
    finally:
        worker.stop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray prefork children, if any
        except ProcessLookupError:
            pass
        logfile.unlink(missing_ok=True)


@contextmanager
def producer_app(env: dict[str, str], name: str):
    """A Celery app that publishes to env's broker (the session's app stays bound to the session's)."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings

    app = Celery(name)
    app.conf.update(celery_settings(load_settings(env)))
    try:
        yield app
    finally:
        app.close()
