"""The syslog receiver (netjobs.syslog) as a real process: configuration-change messages over UDP and
TCP trigger one backup per burst through a real worker, with the user on the snapshot; unknown
senders and garbage are counted and dropped; systemd socket activation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from netjobs.syslog.changes import ChangeDetector
from netjobs.syslog.debounce import Debouncer
from netjobs.syslog.frames import StreamFramer
from netjobs.syslog.messages import MalformedMessage, parse
from tests.conftest import wait_until
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture

LINUX_PATTERN = r"netjobs-config: changed by (?P<user>\S+)"
COUNTERS_KEY = "netjobs:metrics:syslog"


def cisco(host: str, user: str) -> str:
    return f"<189>53: {host}: *Dec  1 11:30:00.123 UTC: %SYS-5-CONFIG_I: Configured from console by {user} on vty0 (10.0.0.5)"


def arista_enter(host: str, user: str) -> str:
    return (f"<189>Dec  1 11:30:00 {host} ConfigAgent: %SYS-5-CONFIG_E: Enter configuration mode from console "
            f"by {user} on vty3 (10.1.1.1)")


def arista_done(host: str, user: str) -> str:
    return (f"<189>1 2026-12-01T11:30:01.000Z {host} ConfigAgent 1234 - - %SYS-5-CONFIG_I: Configured from "
            f"console by {user} on vty3 (10.1.1.1)")


def junos_commit(host: str, user: str) -> str:
    return (f"<189>1 2026-12-01T11:30:00.000Z {host} mgd 6520 UI_COMMIT [junos@2636.1.1.1.2.18 "
            f"username=\"{user}\"] User '{user}' requested 'commit' operation (comment: none)")


def junos_completed(host: str) -> str:
    return f"<189>Dec  1 11:30:02 {host} mgd[6520]: UI_COMMIT_COMPLETED: commit complete"


def linux(host: str, user: str) -> str:
    return f"<13>Dec  1 11:30:01 {host} root: netjobs-config: changed by {user}"


# --- the parts, without a process -------------------------------------------------------------


@pytest.mark.parametrize("line, hostname, event, user", [
    (cisco("core-sw1", "alice"), "core-sw1", "CONFIG_I", "alice"),
    ("<189>52: *Dec  1 11:30:00.123 UTC: %SYS-5-CONFIG_I: Configured from console by alice on vty0 (10.0.0.5)",
     None, "CONFIG_I", "alice"),
    ("<189>52: *Dec  1 11:30:00: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.5)", None, "CONFIG_I", None),
    (arista_enter("leaf1", "admin"), "leaf1", "CONFIG_E", "admin"),
    (arista_done("leaf1", "admin"), "leaf1", "CONFIG_I", "admin"),
    (junos_commit("mx1", "bob"), "mx1", "UI_COMMIT", "bob"),
    ("<189>Dec  1 11:30:00 mx1 mgd[6520]: UI_COMMIT: User 'bob' requested 'commit' operation (comment: none)",
     "mx1", "UI_COMMIT", "bob"),
    (junos_completed("mx1"), "mx1", "UI_COMMIT_COMPLETED", None),
    (linux("srv1", "carol"), "srv1", "pattern", "carol"),
])
def test_each_platforms_change_message_is_recognized_with_its_user(line, hostname, event, user):
    message = parse(line.encode())
    change = ChangeDetector(LINUX_PATTERN).detect(message.text)
    assert message.hostname == hostname
    assert change is not None and (change.event, change.user) == (event, user)


@pytest.mark.parametrize("line", [
    "<13>Dec  1 11:30:01 srv1 sshd[12]: Accepted publickey for alice",
    "<189>Dec  1 11:30:00 mx1 mgd[6520]: UI_COMMIT: User 'bob' requested 'commit check' operation (comment: none)",
    "<189>52: *Dec  1 11:30:00: %LINK-3-UPDOWN: Interface Gi0/1, changed state to up",
])
def test_other_messages_are_no_change(line):
    assert ChangeDetector(LINUX_PATTERN).detect(parse(line.encode()).text) is None
    assert ChangeDetector().detect(parse(linux("srv1", "carol").encode()).text) is None  # off unless set


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe\x01binary", b"no priority here", b"<999>too big", b"<13>"])
def test_garbage_is_malformed(data):
    with pytest.raises(MalformedMessage):
        parse(data)


def test_tcp_framing_octet_counting_newlines_oversize_and_half_frames():
    one, two = b"<13>1 - h a - - - first", b"<13>second line"
    framer = StreamFramer(max_bytes=100)
    frames = framer.feed(b"%d %s%s\n" % (len(one), one, two))
    assert [f.data for f in frames] == [one, two]
    assert framer.feed(b"%d %s" % (len(one), one[:5])) == []  # half a frame waits...
    assert framer.feed(one[5:]) [0].data == one  # ...for the rest
    big = framer.feed(b"<13>" + b"x" * 500 + b"\n<13>after\n")
    assert (big[0].truncated, len(big[0].data), big[1].data) == (True, 100, b"<13>after")
    assert [f.data for f in framer.feed(b"300 " + b"y" * 300 + b"<13>next\n")][1:] == [b"<13>next"]
    framer.feed(b"500 <13>cut short")
    assert [f.malformed for f in framer.close()] == [True]


def test_a_burst_debounces_to_one_backup_and_a_long_one_is_capped():
    debouncer = Debouncer(quiet_seconds=1.0)
    for second in (0, 0.5, 0.9):
        debouncer.change("edge-1", "alice", second)
    debouncer.change("edge-1", "bob", 1.2)
    assert debouncer.due(2.1) == []
    (burst,) = debouncer.due(2.2)
    assert (burst.changes, burst.changed_by) == (4, "alice, bob")
    for step in range(12):  # a change every 0.5 s never goes quiet: backed up after 5 × 1 s
        debouncer.change("edge-2", None, 10 + step * 0.5)
    assert [b.device for b in debouncer.due(15.0)] == ["edge-2"]


# --- the receiver as a process -----------------------------------------------------------------


def bound_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same loopback port (another test may hold the TCP or UDP half)."""
    for _ in range(50):
        tcp, udp = socket.socket(), socket.socket(type=socket.SOCK_DGRAM)
        tcp.bind(("127.0.0.1", 0))
        try:
            udp.bind(("127.0.0.1", tcp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return udp, tcp
    raise AssertionError("no loopback port free for both UDP and TCP in 50 tries")


def free_port() -> int:
    udp, tcp = bound_pair()
    with udp, tcp:
        return tcp.getsockname()[1]


class ReceiverProcess:
    def __init__(self, proc: subprocess.Popen, log: Path, port: int):
        self.proc, self.logfile, self.port = proc, log, port

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def udp(self, line: str | bytes, source: str = "127.0.0.1") -> None:
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(line.encode() if isinstance(line, str) else line, ("127.0.0.1", self.port))

    def tcp(self, payload: bytes, source: str = "127.0.0.1") -> None:
        with socket.create_connection(("127.0.0.1", self.port), source_address=(source, 0)) as sock:
            sock.sendall(payload)


def receiver_env(netjobs_env, **extra) -> dict:
    return {**os.environ, **netjobs_env, "NETJOBS_SYSLOG_DEBOUNCE_SECONDS": "1",
            "NETJOBS_SYSLOG_DEVICE_REFRESH_SECONDS": "1", "NETJOBS_SYSLOG_LINUX_PATTERN": LINUX_PATTERN, **extra}


@contextmanager
def running(argv, env, port, tmp_path, **popen):
    logfile = tmp_path / f"syslog-{port}.log"
    with open(logfile, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, **popen)
    receiver = ReceiverProcess(proc, logfile, port)
    try:
        wait_until(lambda: "listening on" in receiver.log() or proc.poll() is not None, 30,
                   message="the receiver to listen")
        assert proc.poll() is None, receiver.log()
        yield receiver
        assert proc.poll() is None, receiver.log()  # still alive after everything it was sent
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in receiver.log(), receiver.log()


@contextmanager
def receiver_process(netjobs_env, tmp_path, **extra):
    port = free_port()
    env = receiver_env(netjobs_env, NETJOBS_SYSLOG_LISTEN=f"127.0.0.1:{port}", **extra)
    with running([sys.executable, "-m", "netjobs.syslog"], env, port, tmp_path) as receiver:
        yield receiver


def counters(redis_client) -> dict[str, int]:
    return {k: int(v) for k, v in redis_client.hgetall(COUNTERS_KEY).items()}


def counted(redis_client, before: dict, **expected) -> bool:
    now = counters(redis_client)
    return all(now.get(k, 0) - before.get(k, 0) >= v for k, v in expected.items())


def syslog_backups(engine) -> list:
    from netjobs.history import recorder

    recorder.flush()
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT submitted_by, state FROM job_runs WHERE task_name = 'netjobs.backup.device' "
            "AND submitted_by LIKE 'syslog:%' ORDER BY submitted_by")).all()


def snapshots(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT d.name, s.changed_by FROM config_snapshots s "
                                      "JOIN devices d ON d.id = s.device_id")).all())


@pytest.mark.slow
def test_bursts_of_changes_on_each_platform_give_one_backup_each_with_the_user(db, worker, sim_lab, netjobs_env,
                                                                             tmp_path):
    from netjobs.devsim import DeviceSpec

    ios, eos, junos = (sim_lab.device(p) for p in ("cisco_ios", "arista_eos", "juniper_junos"))
    for device in (ios, eos, junos):
        add_device_row(db, device)  # all on 127.0.0.1: the HOSTNAME field tells them apart
    # A Linux host alone on 127.0.0.2: found by the source address, whatever it calls itself.
    spec = DeviceSpec(platform="linux", hostname="srv-2", username=sim_lab.username, password=sim_lab.password,
                      config_file=sim_lab.workdir / "srv-2.cfg")
    add_device_row(db, name="srv-2", port=sim_lab.fleet.add(spec, host="127.0.0.2"), platform="linux",
                   host="127.0.0.2")
    with receiver_process(netjobs_env, tmp_path) as receiver:
        for _ in range(5):  # five changes each, well within the 1 s debounce
            receiver.udp(cisco(ios.name, "alice"))
            receiver.tcp(b"\n".join(line.encode() for line in (arista_enter(eos.name, "admin"),
                                                                  arista_done(eos.name, "admin"))) + b"\n")
            frame = junos_commit(junos.name, "bob").encode()
            receiver.tcp(b"%d %s" % (len(frame), frame))  # RFC 6587 octet counting
            receiver.udp(linux("localhost", "carol"), source="127.0.0.2")
        receiver.udp(junos_completed(junos.name))
        wait_until(lambda: len(snapshots(db)) == 4, 60, message="four backups in the archive")
        time.sleep(2.5)  # more than the debounce: no second backup follows
        runs = syslog_backups(db)
        log = receiver.log()
    assert [r.submitted_by for r in runs] == sorted(f"syslog:{d}" for d in (ios.name, eos.name, junos.name, "srv-2"))
    assert {r.state for r in runs} == {"SUCCESS"}, runs
    assert snapshots(db) == {ios.name: "alice", eos.name: "admin", junos.name: "bob", "srv-2": "carol"}
    assert "matched by address" in log and "matched by hostname" in log
    from tests.support.cli import invoke

    assert invoke("configs", "log", ios.name, "--json").json()[0]["changed_by"] == "alice"


def test_unknown_senders_and_garbage_are_counted_and_dropped(db, netjobs_env, redis_client, tmp_path):
    add_device_row(db, name="edge-known", platform="cisco_ios", host="192.0.2.10")
    before = counters(redis_client)
    with receiver_process(netjobs_env, tmp_path, NETJOBS_SYSLOG_MAX_LINE_BYTES="8192") as receiver:
        receiver.udp(cisco("nobody", "mallory"))  # 127.0.0.1, a name no device has
        receiver.udp(cisco("nobody", "mallory"), source="127.0.0.3")
        receiver.udp(b"\x00\xff\xfe\x01\x02binary")
        receiver.udp(b"")
        receiver.udp(b"<13>" + b"A" * 60_000)  # a UDP datagram near the largest there is
        receiver.tcp(b"<13>" + b"B" * 100_000 + b"\n")  # 100 kB line
        receiver.tcp(b"500 <13>1 - half - - - a frame that never ends")
        receiver.tcp(b"12x3 not a length\n")
        wait_until(lambda: counted(redis_client, before, unknown_sender=2, malformed=4, truncated=2), 20,
                   message="the drops to be counted")
        receiver.udp(cisco("nobody-else", "mallory"))  # and it still answers
        wait_until(lambda: counted(redis_client, before, unknown_sender=3), 10, message="one more unknown sender")
        log = receiver.log()
    assert "dropped (unknown_sender)" in log and "dropped (malformed)" in log
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_runs")).scalar_one() == 0


def test_socket_activation_takes_the_sockets_from_fds_3_and_4(db, netjobs_env, redis_client, tmp_path):
    udp, tcp = bound_pair()
    port = tcp.getsockname()[1]
    tcp.listen(16)
    # What systemd does: the sockets as fds 3 and 4, LISTEN_PID the receiver's own pid (exec keeps it).
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
                "os.environ.update(LISTEN_FDS='2', LISTEN_PID=str(os.getpid())); "
                "os.execv(sys.executable, [sys.executable, '-m', 'netjobs.syslog'])")
    env = receiver_env(netjobs_env, NETJOBS_SYSLOG_LISTEN="127.0.0.1:1")  # would fail if it were used
    before = counters(redis_client)
    try:
        with running([sys.executable, "-c", launcher, str(udp.fileno()), str(tcp.fileno())], env, port, tmp_path,
                     pass_fds=(udp.fileno(), tcp.fileno())) as receiver:
            receiver.udp(cisco("nobody", "alice"))
            receiver.tcp(cisco("nobody", "alice").encode() + b"\n")
            wait_until(lambda: counted(redis_client, before, unknown_sender=2, received=2), 20,
                       message="both messages through the systemd sockets")
            log = receiver.log()
    finally:
        udp.close()
        tcp.close()
    assert "sockets from systemd" in log and f"udp 127.0.0.1:{port}, tcp 127.0.0.1:{port}" in log


def test_a_backup_waits_while_redis_is_down_and_is_submitted_when_it_is_back(db, netjobs_env, tmp_path):
    import json

    import redis

    from tests.support.servers import _spawn_redis, _stop, redis_server, wait_for_port

    add_device_row(db, name="edge-r", platform="cisco_ios", host="127.0.0.4")
    with redis_server() as own_redis:
        with receiver_process({**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}, tmp_path) as receiver:
            _stop(own_redis.proc)  # Redis goes away with no worker to take the backup either
            receiver.udp(cisco("edge-r", "dave"), source="127.0.0.4")
            wait_until(lambda: "not submitted" in receiver.log(), 30, message="a failed submit")
            own_redis.proc = _spawn_redis(own_redis.port, own_redis.workdir)
            wait_for_port(own_redis.port)
            client = redis.Redis.from_url(own_redis.url)
            high = "backup\x06\x163"  # kombu's list for priority 3 (high) of the backup queue
            wait_until(lambda: client.llen(high) == 1, 60, message="the backup in the queue once Redis is back")
            message = json.loads(client.lindex(high, 0))
            client.close()
    assert message["headers"]["task"] == "netjobs.backup.device"
    assert message["headers"]["netjobs_submitted_by"] == "syslog:edge-r"
    assert "'changed_by': 'dave'" in message["headers"]["kwargsrepr"]
