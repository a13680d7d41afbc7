"""Redis keeps what was written in MULTI/EXEC across restarts, with the ACL file the redis role writes.

Redis 7.0 replays its AOF as the `default` user and re-checks ACL rights at EXEC (redis#14541): with
`default` denied everything, every replayed MULTI/EXEC block is refused with NOPERM and lost, while
plain writes survive. These tests start their own redis-server with `users.acl` rendered from the
role's real template, restart it (SIGTERM, and SIGKILL + start) and check the data and
`netjobs doctor`'s "redis AOF replay" check.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import jinja2
import pytest
import redis
import yaml

from tests.support.servers import REDIS_SERVER, _stop, free_port, wait_for_port

ROLE = Path(__file__).resolve().parents[2] / "roles" / "redis"
# The rule the role shipped before the fix: every replayed transaction was refused.
OLD_DEFAULT_RULE = "user default off resetkeys resetchannels -@all"


def render_users_acl(users: list[dict], previous_passwords: dict[str, str] | None = None) -> str:
    """roles/redis/templates/etc/redis/users.acl.j2 rendered as Ansible renders it (trim_blocks)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["hash"] = lambda value, algorithm: hashlib.new(algorithm, value.encode()).hexdigest()
    return env.get_template("etc/redis/users.acl.j2").render(__redis_users=users,
                                                                   redis_previous_passwords=previous_passwords or {})


def with_default_rule(acl: str, rule: str) -> str:
    lines = acl.splitlines()
    assert [line.startswith("user default ") for line in lines].count(True) == 1, acl
    return "\n".join(rule if line.startswith("user default ") else line for line in lines) + "\n"


@dataclass
class AclRedis:
    """A redis-server with an ACL file, configured for persistence as the role configures it."""

    acl: str
    app_password: str
    admin_password: str
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="netjobs-redis-acl-")))
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        (self.workdir / "users.acl").write_text(self.acl)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
             "--dir", str(self.workdir), "--aclfile", str(self.workdir / "users.acl"),
             "--appendonly", "yes", "--appendfsync", "everysec", "--aof-use-rdb-preamble", "yes",
             "--aof-load-truncated", "yes", "--save", "", "--maxmemory-policy", "noeviction",
             "--daemonize", "no", "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        deadline = time.monotonic() + 20
        while True:  # the port opens before the AOF is loaded
            try:
                self.client("admin").ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self, sig: int) -> None:
        """Stop with ``sig`` (SIGTERM: `systemctl restart`; SIGKILL: a crash) and start again on the same AOF."""
        _stop(self.proc, sig)
        self.start()

    def client(self, user: str | None = "netjobs") -> redis.Redis:
        password = {"netjobs": self.app_password, "admin": self.admin_password}.get(user)
        return redis.Redis(host="127.0.0.1", port=self.port, username=user, password=password,
                           decode_responses=True, socket_timeout=5)

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")


@contextmanager
def acl_redis(default_rule: str | None = None) -> Iterator[AclRedis]:
    """Redis with the role's users.acl (app user with the role's default ACL, an admin), optionally
    with the `default` user's line replaced by ``default_rule``."""
    app_acl = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["redis_app_acl"]
    app_password, admin_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    acl = render_users_acl([{"name": "netjobs", "password": app_password, "acl": app_acl},
                            {"name": "admin", "password": admin_password, "acl": "~* &* +@all"}])
    if default_rule is not None:
        acl = with_default_rule(acl, default_rule)
    server = AclRedis(acl, app_password, admin_password)
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None:
            _stop(server.proc)
        shutil.rmtree(server.workdir, ignore_errors=True)


def write_like_the_app(client: redis.Redis) -> dict[str, object]:
    """Writes as kombu and RedBeat make them, in MULTI/EXEC; returns what must be read back."""
    tag = secrets.token_hex(8)
    with client.pipeline(transaction=True) as pipe:  # kombu QoS.append: unacked index + unacked hash
        pipe.zadd("unacked_index", {tag: 1_700_000_000.5})
        pipe.hset("unacked", tag, '[{"body": "..."}, "", "default"]')
        pipe.execute()
    with client.pipeline(transaction=True) as pipe:  # RedBeat entry: definition + schedule
        pipe.hset("netjobs:redbeat:nightly-backup", mapping={"definition": '{"task": "netjobs.backup.all"}',
                                                              "meta": '{"last_run_at": null}'})
        pipe.zadd("netjobs:redbeat::schedule", {"netjobs:redbeat:nightly-backup": 1_700_003_600})
        pipe.execute()
    client.set("netjobs:test:plain", tag)  # not in a transaction: survives either way
    return {"unacked": {tag: '[{"body": "..."}, "", "default"]'},
            "unacked_index": [(tag, 1_700_000_000.5)],
            "netjobs:redbeat:nightly-backup": {"definition": '{"task": "netjobs.backup.all"}',
                                               "meta": '{"last_run_at": null}'},
            "netjobs:redbeat::schedule": [("netjobs:redbeat:nightly-backup", 1_700_003_600.0)],
            "netjobs:test:plain": tag}


def read_back(client: redis.Redis) -> dict[str, object]:
    return {"unacked": client.hgetall("unacked"),
            "unacked_index": client.zrange("unacked_index", 0, -1, withscores=True),
            "netjobs:redbeat:nightly-backup": client.hgetall("netjobs:redbeat:nightly-backup"),
            "netjobs:redbeat::schedule": client.zrange("netjobs:redbeat::schedule", 0, -1, withscores=True),
            "netjobs:test:plain": client.get("netjobs:test:plain")}


def aof_replay_check(client: redis.Redis) -> dict:
    from netjobs.services.doctor import Doctor

    doctor = Doctor(app=None, settings=None)
    doctor.redis_config(client)
    checks = {c.name: c.as_dict() for c in doctor.checks}
    assert checks["redis persistence"]["ok"], checks
    return checks["redis AOF replay"]


def raw_replies(port: int, *commands: tuple[str, ...]) -> list[str]:
    """Send ``commands`` on one fresh connection, as a client would without any login; the first line
    of each reply (redis-py itself logs in with HELLO on connect and retries failures)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, sock.makefile("rb") as replies_in:
        for command in commands:
            sock.sendall(f"*{len(command)}\r\n".encode()
                         + b"".join(f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in command))
            replies.append(replies_in.readline().decode().rstrip("\r\n"))
    return replies


def test_role_acl_keeps_the_default_user_unusable():
    with acl_redis() as server:
        wrongpass = "-WRONGPASS invalid username-password pair or user is disabled."
        unauthenticated = raw_replies(server.port, ("PING",), ("SET", "netjobs:test:anonymous", "1"), ("GET", "x"))
        assert unauthenticated == ["-NOAUTH Authentication required."] * 3
        for password in ("", "anything", "nopass", server.app_password, server.admin_password):
            replies = raw_replies(server.port, ("AUTH", "default", password), ("AUTH", password),
                                  ("HELLO", "3", "AUTH", "default", password), ("PING",))
            assert replies == [wrongpass, wrongpass, wrongpass, "-NOAUTH Authentication required."], replies
        # `resetpass`, not `nopass`: with nopass protected-mode would refuse every non-loopback client.
        default = server.client("admin").acl_getuser("default")
        assert "off" in default["flags"] and "nopass" not in default["flags"], default
        assert default["passwords"] == [], default
        assert raw_replies(server.port, ("AUTH", "netjobs", server.app_password), ("PING",)) == ["+OK", "+PONG"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_transactions_survive_a_restart_with_the_role_acl(sig):
    with acl_redis() as server:
        app = server.client()
        expected = write_like_the_app(app)
        assert read_back(app) == expected
        if sig == signal.SIGKILL:
            time.sleep(1.2)  # appendfsync everysec; the writes are already in the AOF file, not yet fsynced
        server.restart(sig)
        app = server.client()
        assert read_back(app) == expected, server.log()[-3000:]
        assert "NOPERM" not in server.log()
        check = aof_replay_check(app)
        assert check["ok"], check
        assert check["detail"].startswith("no command refused")
        # A second restart replays the same AOF again.
        server.restart(signal.SIGTERM)
        assert read_back(server.client()) == expected


def test_old_default_rule_loses_transactions_and_doctor_names_the_cause():
    with acl_redis(OLD_DEFAULT_RULE) as server:
        app = server.client()
        expected = write_like_the_app(app)
        assert aof_replay_check(app)["ok"]  # nothing replayed yet
        server.restart(signal.SIGTERM)
        app = server.client()
        after = read_back(app)
        assert after["netjobs:test:plain"] == expected["netjobs:test:plain"]
        if after == expected:
            pytest.skip("this redis-server replays MULTI/EXEC regardless of the ACL (redis#14541 fixed)")
        assert after["unacked"] == {} and after["netjobs:redbeat::schedule"] == [], after
        assert "NOPERM ACLs rules changed" in server.log()
        check = aof_replay_check(app)
        assert check["ok"] is False and check["severity"] == "error"
        assert "Redis refused 4 commands" in check["detail"]  # two commands in each of two transactions
        for words in ("redis#14541", "/etc/redis/users.acl", "user default off resetpass ~* &* +@all"):
            assert words in check["detail"]

        # The refused transactions are still in the AOF: with the fixed rule, the next start replays them.
        server.acl = with_default_rule(server.acl, render_users_acl([]).strip())
        server.restart(signal.SIGTERM)
        app = server.client()
        assert read_back(app) == expected
        assert aof_replay_check(app)["ok"]
