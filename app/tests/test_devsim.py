"""The SSH device simulator, driven by Netmiko and paramiko exactly as the backup uses them."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netjobs.devsim import DeviceSpec, Fleet
from netjobs.devsim.shells import resolve
from netjobs.platforms import NEEDS_ENABLE, RUNNING_CONFIG_COMMANDS
from netjobs.services.backup import normalize_config
from tests.support.servers import free_port, wait_for_port

USER = "netops"
PASSWORD = secrets.token_urlsafe(10)
PLATFORMS = ["cisco_ios", "arista_eos", "juniper_junos", "linux"]


@pytest.fixture(scope="module")
def fleet():
    with Fleet() as f:
        yield f


def connect(port, platform, username=USER, password=PASSWORD, **kw):
    from netmiko import ConnectHandler

    return ConnectHandler(device_type=platform, host="127.0.0.1", port=port, username=username, password=password,
                          secret=password, conn_timeout=5, auth_timeout=5, banner_timeout=5, **kw)


def show_config(port, platform, username=USER, read_timeout=10):
    conn = connect(port, platform, username=username)
    try:
        if platform in NEEDS_ENABLE:
            conn.enable()
        output = conn.send_command(RUNNING_CONFIG_COMMANDS[platform], read_timeout=read_timeout)
    except BaseException:
        conn.paramiko_cleanup()  # no polite logout from a broken session
        raise
    conn.disconnect()
    return output


@pytest.mark.parametrize("platform, username", [
    ("cisco_ios", USER), ("arista_eos", USER), ("juniper_junos", USER), ("juniper_junos", "root"),
    ("linux", USER), ("linux", "root"),
])
def test_netmiko_reads_running_config_with_volatile_lines(fleet, platform, username, tmp_path):
    port = fleet.add(DeviceSpec(platform, "edge1", username, PASSWORD))
    first = show_config(port, platform, username)
    assert "edge1" in first
    assert "\r" not in first
    if platform in ("cisco_ios", "arista_eos"):
        assert first.rstrip().endswith("end")
    time.sleep(1.05)  # timestamps have one-second resolution
    second = show_config(port, platform, username)
    if platform in ("cisco_ios", "arista_eos"):
        assert first != second, "volatile lines must change between two shows"
    if platform in ("cisco_ios", "juniper_junos"):
        # The last-change stamp (IOS) and "## Last commit" (Junos) move only when the configuration
        # changes, as on a device: backups compare them as the change marker.
        stamp = re.compile(r"^(?:! Last configuration change at|## Last commit:) .*$", re.M)
        assert stamp.findall(first) == stamp.findall(second) != []
    assert normalize_config(platform, first) == normalize_config(platform, second)


def test_config_file_is_reread_on_each_show(fleet, tmp_path):
    body = tmp_path / "r.cfg"
    body.write_text("hostname file-one\n!\n")
    port = fleet.add(DeviceSpec("cisco_ios", "R9", USER, PASSWORD, config_file=body))
    assert "hostname file-one" in show_config(port, "cisco_ios")
    body.write_text("hostname file-two\n!\n")
    assert "hostname file-two" in show_config(port, "cisco_ios")


@pytest.mark.parametrize("platform, command, answer", [
    ("cisco_ios", "show bogus", "% Invalid input detected at '^' marker."),
    ("cisco_ios", "e", "% Ambiguous command"),
    ("cisco_ios", "terminal", "% Incomplete command."),
    ("arista_eos", "frobnicate", "% Invalid input"),
    ("juniper_junos", "frobnicate now", "unknown command."),
    ("linux", "frobnicate", "-bash: frobnicate: command not found"),
    ("linux", "cat /etc/shadow", "cat: /etc/shadow: No such file or directory"),
])
def test_unknown_commands_answer_like_a_device(fleet, platform, command, answer):
    port = fleet.add(DeviceSpec(platform, "R2", USER, PASSWORD))
    with connect(port, platform) as conn:
        assert answer in conn.send_command(command, read_timeout=5)


def test_ios_abbreviations_and_privilege(fleet):
    port = fleet.add(DeviceSpec("cisco_ios", "R3", USER, PASSWORD))
    with connect(port, "cisco_ios") as conn:
        assert conn.find_prompt() == "R3>"
        assert "Invalid input" in conn.send_command("show running-config")
        conn.enable()
        assert conn.find_prompt() == "R3#"
        assert "hostname R3" in conn.send_command("sh run")
        assert "hostname R3" in conn.send_command("show running-config | include hostname")


def test_wrong_enable_secret_is_refused(fleet):
    from netmiko.exceptions import ReadTimeout

    port = fleet.add(DeviceSpec("cisco_ios", "R4", USER, PASSWORD, secret="other-secret"))
    with connect(port, "cisco_ios") as conn:
        # Like IOS, the simulator asks for the secret again: Netmiko never sees a prompt.
        conn.read_timeout_override = 1
        with pytest.raises(ReadTimeout):
            conn.enable()
        # The device still waits for the secret; the right one gets in.
        conn.write_channel("other-secret\n")
        assert "R4#" in conn.read_until_pattern("R4#")


def test_wrong_password_fails_authentication(fleet):
    from netmiko.exceptions import NetmikoAuthenticationException

    port = fleet.add(DeviceSpec("cisco_ios", "R5", USER, PASSWORD))
    with pytest.raises(NetmikoAuthenticationException):
        connect(port, "cisco_ios", password="wrong")


def test_exec_channel_runs_one_command(fleet):
    port = fleet.add(DeviceSpec("cisco_ios", "R6", USER, PASSWORD))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username=USER, password=PASSWORD, allow_agent=False,
                   look_for_keys=False, timeout=5)
    try:
        _, stdout, _ = client.exec_command("show running-config", timeout=5)
        text = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    assert "hostname R6" in text and text.rstrip().endswith("end")


def test_public_key_login(fleet):
    key = paramiko.ECDSAKey.generate()
    port = fleet.add(DeviceSpec("linux", "R7", USER, PASSWORD,
                                authorized_keys=frozenset({(key.get_name(), key.get_base64())})))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username=USER, pkey=key, allow_agent=False, look_for_keys=False,
                   timeout=5)
    try:
        _, stdout, _ = client.exec_command("hostname", timeout=5)
        assert stdout.read().decode().strip() == "R7"
    finally:
        client.close()


def test_disconnect_mid_session_cuts_the_configuration(fleet):
    port = fleet.add(DeviceSpec("cisco_ios", "R8", USER, PASSWORD, fail_mode="disconnect-mid-session"))
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        show_config(port, "cisco_ios", read_timeout=5)
    # The session drops: Netmiko sees a closed socket (OSError) or stops reading the prompt.
    assert type(caught.value).__name__ in ("OSError", "ReadTimeout", "EOFError", "SSHException")
    assert time.monotonic() - started < 10


def test_hang_never_answers_the_configuration_command(fleet):
    from netmiko.exceptions import ReadTimeout

    port = fleet.add(DeviceSpec("arista_eos", "R10", USER, PASSWORD, fail_mode="hang"))
    started = time.monotonic()
    with pytest.raises(ReadTimeout):
        show_config(port, "arista_eos", read_timeout=1.5)
    assert 1.4 < time.monotonic() - started < 6


def test_many_concurrent_sessions(fleet):
    ports = [fleet.add(DeviceSpec("cisco_ios", f"C{i}", USER, PASSWORD)) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(lambda p: show_config(p, "cisco_ios"), ports))
    assert [f"hostname C{i}" in out for i, out in enumerate(outputs)] == [True] * 16


@given(st.lists(st.sampled_from(["show", "sh", "running-config", "run", "r", "version", "ver", "x"]), max_size=4))
def test_resolve_never_crashes_and_is_unambiguous(tokens):
    table = {("show", "running-config"): "running", ("show", "version"): "version", ("show", "clock"): "clock"}
    status, found = resolve(tokens, table)
    assert status in ("ok", "invalid", "ambiguous", "incomplete")
    if status == "ok":
        words = [w for cmd, h in table.items() if h == found for w in cmd]
        assert len(tokens) == len(words) and all(w.startswith(t) for w, t in zip(words, tokens))


# --- the command line ----------------------------------------------------------------------------


def test_cli_serves_many_devices_on_consecutive_ports(tmp_path):
    from netmiko import ConnectHandler

    base = free_port()
    ports_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netjobs.devsim", "--listen", "127.0.0.1", "--base-port", str(base), "--count", "3",
         "--platform", "cisco_ios,juniper_junos", "--hostname", "lab", "--username", USER,
         f"--password={PASSWORD}", "--ports-file", str(ports_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "3 device(s) listening" in proc.stdout.readline()
        assert json.loads(ports_file.read_text()) == {"lab-001": base, "lab-002": base + 1, "lab-003": base + 2}
        wait_for_port(base + 1)
        with ConnectHandler(device_type="juniper_junos", host="127.0.0.1", port=base + 1, username=USER,
                            password=PASSWORD, conn_timeout=5) as conn:
            assert "set system host-name lab-002" in conn.send_command("show configuration | display set")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("args, message, code", [
    (["--platform", "cisco_xr"], "unknown platform", 2),
    (["--fail-mode", "explode"], "invalid choice", 2),
    (["--port", "70000"], "port must be 0-65535", 2),
    (["--count", "0"], "count must be 1-5000", 2),
])
def test_cli_bad_arguments_get_one_clear_line(args, message, code):
    result = subprocess.run([sys.executable, "-m", "netjobs.devsim", "--username", "u", "--password", "p", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_port_in_use_is_reported_without_traceback():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "netjobs.devsim", "--port", str(port), "--username", "u",
                                 "--password", "p"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
