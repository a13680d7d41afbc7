"""Opt-in realism of the device simulator, driven over real SSH by Netmiko and paramiko.

Latencies are kept to tenths of a second so the file stays quick; bounds are asserted with slack
for a busy machine, and only ever in the direction that a sleep guarantees (never faster).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import secrets
import socket
import subprocess
import sys
import time

import paramiko
import pytest

from netjobs.devsim import DeviceSpec, Fleet, Latency, Realism
from netjobs.devsim.realism import DISTRIBUTIONS, SessionPlan, login_banner, motd
from netjobs.platforms import NEEDS_ENABLE, RUNNING_CONFIG_COMMANDS
from netjobs.services.backup import normalize_config

USER = "netops"
PASSWORD = secrets.token_urlsafe(10)
QUICK = dict(login=Latency(0.0, 0.0), command=Latency(0.0, 0.0), config=Latency(0.0, 0.0))
PROMPTS = {"cisco_ios": "{h}>", "arista_eos": "{h}>", "juniper_junos": USER + "@{h}>", "linux": USER + "@{h}:~$"}
MORE = {"cisco_ios": "--More--", "arista_eos": "--More--", "juniper_junos": "---(more)---"}
NO_PAGING = {"cisco_ios": "terminal length 0", "arista_eos": "terminal length 0",
             "juniper_junos": "set cli screen-length 0"}


@pytest.fixture(scope="module")
def fleet():
    with Fleet() as f:
        yield f


def netmiko(port, platform, **kw):
    from netmiko import ConnectHandler

    return ConnectHandler(device_type=platform, host="127.0.0.1", port=port, username=USER, password=PASSWORD,
                          secret=PASSWORD, conn_timeout=5, auth_timeout=5, banner_timeout=5, fast_cli=True, **kw)


def show_config(port, platform, read_timeout: float = 20) -> str:
    """The configuration as the backup reads it (enable, then the platform's command)."""
    conn = netmiko(port, platform)
    try:
        if platform in NEEDS_ENABLE:
            conn.enable()
        return conn.send_command(RUNNING_CONFIG_COMMANDS[platform], read_timeout=read_timeout)
    finally:
        conn.disconnect()


class RawShell:
    """An interactive SSH shell read byte by byte, the way a person at a terminal sees it."""

    def __init__(self, port: int):
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect("127.0.0.1", port=port, username=USER, password=PASSWORD, allow_agent=False,
                            look_for_keys=False, timeout=5)
        self.channel = self.client.invoke_shell()
        self.channel.settimeout(5)

    def read_until(self, pattern: str) -> str:
        text = ""
        deadline = time.monotonic() + 10
        while not re.search(pattern, text):
            assert time.monotonic() < deadline, f"no {pattern!r} in {text[-300:]!r}"
            text += self.channel.recv(65536).decode()
        return text

    def send(self, text: str) -> None:
        self.channel.sendall(text.encode())

    def close(self) -> None:
        self.client.close()


def add(fleet, platform, hostname, **realism) -> int:
    return fleet.add(DeviceSpec(platform, hostname, USER, PASSWORD, realism=Realism(**{**QUICK, **realism})))


def hostname_where(test, realism: Realism, prefix: str = "h") -> str:
    """The first hostname whose profile passes ``test`` (profiles are fixed by seed and name)."""
    return next(f"{prefix}{i}" for i in range(10_000) if test(realism.profile(f"{prefix}{i}")))


# --- banners and prompts -------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["cisco_ios", "arista_eos", "juniper_junos", "linux"])
def test_banner_motd_and_prompt_per_platform(fleet, platform):
    port = add(fleet, platform, "edge1", config_lines=(100, 100))
    with netmiko(port, platform) as conn:
        assert conn.find_prompt().strip() == PROMPTS[platform].format(h="edge1")
        ssh_banner = conn.remote_conn.get_transport().get_banner()
    expected_banner = login_banner(platform, "edge1")
    assert (ssh_banner or b"").decode() == expected_banner
    if platform in ("cisco_ios", "arista_eos"):
        assert "Authorized access only" in expected_banner

    shell = RawShell(port)
    try:
        greeting = shell.read_until(re.escape(PROMPTS[platform].format(h="edge1")))
    finally:
        shell.close()
    first_line = motd(platform, "edge1", USER).strip().splitlines()[0]
    assert first_line in greeting.replace("\r\n", "\n")


def test_banners_are_off_without_realism(fleet):
    port = fleet.add(DeviceSpec("cisco_ios", "plain1", USER, PASSWORD))
    with netmiko(port, "cisco_ios") as conn:
        assert conn.remote_conn.get_transport().get_banner() is None


# --- paging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["cisco_ios", "arista_eos", "juniper_junos"])
def test_netmiko_turns_paging_off_and_reads_everything(fleet, platform):
    port = add(fleet, platform, "paged1", config_lines=(1000, 1000))
    output = show_config(port, platform)
    assert MORE[platform] not in output
    assert len(output.splitlines()) >= 990
    if platform in ("cisco_ios", "arista_eos"):
        assert output.rstrip().endswith("end")


def _login_privileged(shell: RawShell, platform: str) -> None:
    shell.read_until(r"[>$] ?$")
    if platform == "cisco_ios":
        shell.send("enable\n")
        shell.read_until("Password: ")
        shell.send(PASSWORD + "\n")
        shell.read_until("#$")
    elif platform == "arista_eos":
        shell.send("enable\n")
        shell.read_until("#$")


@pytest.mark.parametrize("platform", ["cisco_ios", "arista_eos", "juniper_junos"])
def test_paging_without_the_client_disabling_it(fleet, platform):
    port = add(fleet, platform, "paged2", config_lines=(80, 80), page_lines=24)
    command = RUNNING_CONFIG_COMMANDS[platform].replace(" | display set", "")
    prompt = "#$" if platform in NEEDS_ENABLE else "> $"
    shell = RawShell(port)
    try:
        _login_privileged(shell, platform)
        shell.send(command + "\n")
        first = shell.read_until(re.escape(MORE[platform]))
        page = first.split(command, 1)[1].split(MORE[platform])[0]
        assert 20 <= page.count("\n") <= 24  # one screen, the last line holds the more prompt
        shell.send("\r")  # Enter: one more line, then the more prompt again
        one = shell.read_until(re.escape(MORE[platform]))
        assert one.count("\n") <= 2
        rest = ""
        while not re.search(prompt, rest):
            shell.send(" ")
            rest += shell.read_until(re.escape(MORE[platform]) + "|" + prompt)
        full = (first + one + rest).replace("\r\n", "\n")
        assert full.count("\n") >= 78

        # "q" stops the output and gives the prompt back at once.
        shell.send(command + "\n")
        shell.read_until(re.escape(MORE[platform]))
        shell.send("q")
        assert re.search(prompt, shell.read_until(prompt))

        # After the platform's "no paging" command the same output comes without a more prompt.
        shell.send(NO_PAGING[platform] + "\n")
        shell.read_until(prompt)
        shell.send(command + "\n")
        whole = shell.read_until(r"\n[^\n]*" + prompt)
        assert MORE[platform] not in whole and whole.count("\n") >= 78
    finally:
        shell.close()


# --- configuration size, determinism, changing share ------------------------------------------


def test_config_size_is_within_bounds_and_deterministic():
    realism = Realism(**QUICK, seed=7, config_lines=(1000, 5000))
    sizes = []
    for i in range(12):
        platform = ["cisco_ios", "arista_eos", "juniper_junos", "linux"][i % 4]
        first = DeviceSpec(platform, f"sz{i}", USER, PASSWORD, realism=realism).show_config()
        again = DeviceSpec(platform, f"sz{i}", USER, PASSWORD, realism=Realism(**QUICK, seed=7)).show_config()
        assert 1000 <= first.count("\n") <= 5000
        assert normalize_config(platform, first) == normalize_config(platform, again)
        sizes.append(first.count("\n"))
    assert len(set(sizes)) > 6, "sizes should vary between devices"
    other_seed = DeviceSpec("cisco_ios", "sz0", USER, PASSWORD, realism=Realism(**QUICK, seed=8)).show_config()
    assert other_seed.count("\n") != sizes[0]


def test_config_over_ssh_has_the_profiled_size(fleet):
    realism = Realism(**QUICK, seed=3, config_lines=(1000, 5000))
    port = fleet.add(DeviceSpec("cisco_ios", "big1", USER, PASSWORD, realism=realism))
    expected = realism.profile("big1").config_lines
    output = show_config(port, "cisco_ios")
    assert 1000 <= len(output.splitlines()) <= 5000
    assert abs(len(output.splitlines()) - expected) <= 2  # Netmiko drops the prompt line


def test_changing_share_changes_between_runs_and_the_rest_does_not(fleet):
    realism = Realism(**QUICK, seed=11, change_share=0.3, config_lines=(1000, 1000))
    names = [f"ch{i}" for i in range(100)]
    changing = {n for n in names if realism.profile(n).changes}
    assert 0.15 < len(changing) / len(names) < 0.45

    specs = {n: DeviceSpec("arista_eos", n, USER, PASSWORD, realism=realism) for n in names}
    first = {n: normalize_config("arista_eos", s.show_config()) for n, s in specs.items()}
    second = {n: normalize_config("arista_eos", s.show_config()) for n, s in specs.items()}
    assert {n for n in names if first[n] != second[n]} == changing

    # The same over SSH, for one device of each kind.
    picked = sorted(changing)[:1] + sorted(set(names) - changing)[:1]
    ports = {n: fleet.add(DeviceSpec("cisco_ios", n, USER, PASSWORD, realism=realism)) for n in picked}
    runs = [{n: normalize_config("cisco_ios", show_config(p, "cisco_ios")) for n, p in ports.items()}
            for _ in range(2)]
    assert [runs[0][n] != runs[1][n] for n in picked] == [True, False]
    changed = [a for a, b in zip(runs[0][picked[0]].splitlines(), runs[1][picked[0]].splitlines()) if a != b]
    assert len(changed) == 1 and "rev" in changed[0]


def test_last_change_stamps_move_only_on_changing_devices():
    from netjobs.devsim.shells import BOOT_TIME

    realism = Realism(**QUICK, seed=11, change_share=0.5, config_lines=(1000, 1000))
    stable = hostname_where(lambda p: not p.changes, realism, "st")
    moving = hostname_where(lambda p: p.changes, realism, "st")
    fixed = time.strftime("%H:%M:%S UTC %a %b %-d %Y", time.gmtime(BOOT_TIME - 7200))
    stamp = re.compile(r"^! Last configuration change at (.*) by netops$", re.M)

    still = DeviceSpec("cisco_ios", stable, USER, PASSWORD, realism=realism)
    assert [stamp.search(still.show_config()).group(1) for _ in range(2)] == [fixed, fixed]
    busy = DeviceSpec("cisco_ios", moving, USER, PASSWORD, realism=realism)
    before = time.time()
    shown = calendar.timegm(time.strptime(stamp.search(busy.show_config()).group(1), "%H:%M:%S UTC %a %b %d %Y"))
    assert abs(shown - before) < 5  # the changing device's stamp is "now"


# --- latency --------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_drawn_latencies_stay_within_bounds(distribution):
    latency = Latency(0.2, 1.5, distribution)
    rng = Realism().session_rng("x", 0)
    draws = [latency.draw(rng) for _ in range(2000)]
    assert 0.2 <= min(draws) and max(draws) <= 1.5
    assert max(draws) - min(draws) > 0.5


def test_latencies_are_deterministic_per_device_and_seed():
    realism = Realism(seed=5)
    plans = [[SessionPlan.for_session(realism, "dev", s).login_delay for s in range(5)] for _ in range(2)]
    assert plans[0] == plans[1] and len(set(plans[0])) == 5
    other = [SessionPlan.for_session(Realism(seed=6), "dev", s).login_delay for s in range(5)]
    assert other != plans[0]


def test_login_and_config_latency_over_ssh_stay_within_bounds(fleet):
    port = add(fleet, "cisco_ios", "lat1", login=Latency(0.3, 0.5), command=Latency(0.0, 0.0),
               config=Latency(0.4, 0.6), config_lines=(1000, 1000))
    started = time.monotonic()
    shell = RawShell(port)
    login = time.monotonic() - started
    try:
        _login_privileged(shell, "cisco_ios")
        shell.send("terminal length 0\n")
        shell.read_until("#$")
        started = time.monotonic()
        shell.send("show running-config\n")
        shell.read_until(r"\nend\r\nlat1#$")
        config = time.monotonic() - started
    finally:
        shell.close()
    # The lower bounds are sleeps; the upper ones have slack for a busy machine (handshake, CPU).
    assert 0.3 <= login < 0.5 + 5
    assert 0.4 <= config < 0.6 + 5


# --- slow, flaky, unreachable ---------------------------------------------------------------------


def test_slow_devices_take_factor_times_longer(fleet):
    realism = Realism(login=Latency(0.05, 0.05), command=Latency(0.005, 0.005), config=Latency(0.1, 0.1),
                      slow_share=0.5, slow_factor=4.0, config_lines=(1000, 1000))
    slow = hostname_where(lambda p: p.kind == "slow", realism, "s")
    normal = hostname_where(lambda p: p.kind == "normal", realism, "s")
    shares = [realism.profile(f"s{i}").kind for i in range(400)]
    assert 0.4 < shares.count("slow") / 400 < 0.6

    timings = {}
    for name in (normal, slow):
        port = fleet.add(DeviceSpec("juniper_junos", name, USER, PASSWORD, realism=realism))
        started = time.monotonic()
        show_config(port, "juniper_junos")
        timings[name] = time.monotonic() - started
    # A slow session sleeps at least 4 x (0.05 + 0.1 + 0.005 per command) = 0.62+ s. Only this lower
    # bound is asserted: the normal session's time depends on the machine's load.
    assert timings[slow] >= 0.62
    plans = [SessionPlan.for_session(realism, name, 0) for name in (normal, slow)]
    assert [p.factor for p in plans] == [1.0, 4.0]
    assert [p.login_delay for p in plans] == [0.05, 0.2]


def test_flaky_devices_fail_some_sessions_deterministically(fleet):
    from netmiko.exceptions import NetmikoAuthenticationException

    realism = Realism(**QUICK, flaky_share=1.0, flaky_rate=0.5, config_lines=(1000, 1000))

    def plan(name):
        return [SessionPlan.for_session(realism, name, s).failure for s in range(4)]

    name = next(f"f{i}" for i in range(1000)
                if {None, "refuse-auth", "drop-output"} <= set(plan(f"f{i}")))
    expected = plan(name)
    assert expected == plan(name)  # the same seed and name give the same sessions

    port = fleet.add(DeviceSpec("cisco_ios", name, USER, PASSWORD, realism=realism))
    seen = []
    for _ in expected:
        try:
            # Netmiko does not notice the dropped channel; it waits for the prompt until read_timeout.
            output = show_config(port, "cisco_ios", read_timeout=1.0)
        except NetmikoAuthenticationException:
            seen.append("refuse-auth")
        except Exception as exc:  # noqa: BLE001 - a dropped session surfaces as several types
            assert type(exc).__name__ in ("OSError", "ReadTimeout", "EOFError", "SSHException"), repr(exc)
            seen.append("drop-output")
        else:
            assert output.rstrip().endswith("end")
            seen.append(None)
    assert seen == expected


def test_unreachable_devices_refuse_or_never_answer(fleet):
    realism = Realism(**QUICK, unreachable_share=1.0)
    closed = hostname_where(lambda p: p.unreachable_how == "closed", realism, "u")
    silent = hostname_where(lambda p: p.unreachable_how == "silent", realism, "u")
    closed_port = fleet.add(DeviceSpec("cisco_ios", closed, USER, PASSWORD, realism=realism))
    silent_port = fleet.add(DeviceSpec("cisco_ios", silent, USER, PASSWORD, realism=realism))

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()

    with socket.create_connection(("127.0.0.1", silent_port), timeout=2) as sock:
        sock.sendall(b"SSH-2.0-test\r\n")
        sock.settimeout(0.7)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # no SSH banner ever comes

    from netmiko.exceptions import NetmikoTimeoutException

    started = time.monotonic()
    with pytest.raises(NetmikoTimeoutException):
        netmiko(closed_port, "cisco_ios")
    assert time.monotonic() - started < 5
    shares = [realism.profile(f"u{i}").unreachable_how for i in range(200)]
    assert 0.35 < shares.count("silent") / 200 < 0.65


def test_realism_off_keeps_devices_instant(fleet):
    port = fleet.add(DeviceSpec("cisco_ios", "instant1", USER, PASSWORD))
    started = time.monotonic()
    output = show_config(port, "cisco_ios")
    assert len(output.splitlines()) < 200
    assert time.monotonic() - started < 3


# --- command line -----------------------------------------------------------------------------


def test_cli_realistic_options_and_stats_file(tmp_path):
    # Port 0: the simulator picks free ports (a base port from free_port() left its neighbour to
    # chance, and a loaded clean-clone run lost that race).
    ports_file, stats_file = tmp_path / "ports.json", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netjobs.devsim", "--port", "0", "--count", "2", "--platform", "arista_eos",
         "--hostname", "cli", "--username", USER, f"--password={PASSWORD}", "--ports-file", str(ports_file),
         "--stats-file", str(stats_file), "--realistic", "--seed", "4", "--login-latency", "0.05-0.1",
         "--command-latency", "0", "--config-latency", "0.05", "--config-lines", "1500-1600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "2 device(s) listening" in proc.stdout.readline(), proc.stderr.read() if proc.poll() else ""
        output = show_config(max(json.loads(ports_file.read_text()).values()), "arista_eos")
        assert 1500 <= len(output.splitlines()) <= 1600
        deadline = time.monotonic() + 5
        while json.loads(stats_file.read_text() if stats_file.exists() else '{"sessions": 0}')["sessions"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert json.loads(stats_file.read_text())["threads"] >= 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("args, message", [
    (["--realistic", "--login-latency", "2-1"], "expected 0 <= low <= high"),
    (["--realistic", "--slow-share", "0.6", "--flaky-share", "0.6"], "add up to more than 1"),
])
def test_cli_bad_realism_options_get_one_clear_line(args, message, capsys):
    from netjobs.devsim.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--username", "u", "--password", "p", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- change markers -------------------------------------------------------------------------------


def _marker(spec: DeviceSpec) -> str:
    from netjobs.devsim.shells import open_shell
    from netjobs.platforms import CHANGE_MARKERS, find_change_marker

    shell = open_shell(spec, USER)
    shell.privileged = True
    return find_change_marker(spec.platform, shell.handle(CHANGE_MARKERS[spec.platform].command).text)


def stamps(marker: str, shown: str) -> bool:
    """The marker is the stamp of ``shown``: its last-change line, or on linux the file's digest."""
    if marker.endswith("  /etc/network/interfaces"):
        return marker.split()[0] == hashlib.sha256(shown.encode()).hexdigest()
    return marker in shown


@pytest.mark.parametrize("platform", ["cisco_ios", "juniper_junos", "linux"])
def test_change_marker_moves_exactly_when_the_configuration_changes(platform, tmp_path):
    realism = Realism(**QUICK, seed=11, change_share=0.5, config_lines=(1000, 1000))
    stable = DeviceSpec(platform, hostname_where(lambda p: not p.changes, realism, "mk"), USER, PASSWORD,
                        realism=realism)
    moving = DeviceSpec(platform, hostname_where(lambda p: p.changes, realism, "mk"), USER, PASSWORD,
                        realism=realism)
    for spec in (stable, moving):
        before = _marker(spec)
        assert before is not None and _marker(spec) == before  # looking at the marker changes nothing
        shown = spec.show_config()
        assert (_marker(spec) != before) == (spec is moving)  # a changing device changes on a full show
        assert stamps(_marker(spec), shown)  # and the marker is the stamp of what was shown

    lab = DeviceSpec(platform, "mk-file", USER, PASSWORD, config_file=tmp_path / "mk.cfg")  # no realism
    first = _marker(lab)
    assert _marker(lab) == first and stamps(_marker(lab), lab.show_config())
    (tmp_path / "mk.cfg").write_text(lab.body().replace("mk-file", "mk-file-2", 1))
    second = _marker(lab)
    assert second != first and stamps(second, lab.show_config())


def test_change_marker_comes_at_command_latency_not_config_latency(fleet):
    from netjobs.platforms import CHANGE_MARKERS

    port = add(fleet, "cisco_ios", "mklat", command=Latency(0.0, 0.0), config=Latency(3.0, 3.0),
               config_lines=(3000, 3000))
    conn = netmiko(port, "cisco_ios")
    try:
        conn.enable()
        started = time.monotonic()
        output = conn.send_command(CHANGE_MARKERS["cisco_ios"].command, read_timeout=20)
        elapsed = time.monotonic() - started
    finally:
        conn.disconnect()
    assert output.strip().startswith("! Last configuration change at ") and len(output.splitlines()) == 1
    assert elapsed < 2.5  # the whole configuration would take 3 s
