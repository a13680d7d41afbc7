"""The SSH side of the simulator: a paramiko server per connection, many devices per process.

One thread accepts on every device's listening socket; each connection gets paramiko's transport
thread plus one thread running the device shell, so hundreds of sessions run side by side.
Simulated latency is a sleep in the connection's own threads: waiting costs no CPU.
"""

from __future__ import annotations

import hmac
import logging
import selectors
import socket
import threading
import time
from pathlib import Path

import paramiko

from netjobs.devsim.realism import MORE_PROMPTS, SessionPlan, login_banner
from netjobs.devsim.shells import CiscoLikeShell, DeviceSpec, Reply, Shell, open_shell

log = logging.getLogger("netjobs.devsim")

ACCEPT_BACKLOG = 256
CHANNEL_WAIT = 30.0


def load_host_key(path: Path | None) -> paramiko.PKey:
    """The host key at ``path``, created there on first use; a fresh one when ``path`` is None."""
    if path is not None and path.exists():
        return paramiko.ECDSAKey.from_private_key_file(str(path))
    key = paramiko.ECDSAKey.generate()
    if path is not None:
        key.write_private_key_file(str(path))
    return key


def read_authorized_keys(path: Path) -> frozenset[tuple[str, str]]:
    """(type, base64) pairs from an OpenSSH authorized_keys file; options are not supported."""
    keys = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.lstrip().startswith("#"):
            keys.add((parts[0], parts[1]))
    return frozenset(keys)


class _DeviceServer(paramiko.ServerInterface):
    def __init__(self, device: DeviceSpec, plan: SessionPlan):
        self.device = device
        self.plan = plan
        self.username: str | None = None
        self.exec_command: str | None = None
        self.ready = threading.Event()

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username):
        return "password,publickey" if self.device.authorized_keys else "password"

    def get_banner(self):
        realism = self.device.realism
        if realism is not None and realism.banners:
            return login_banner(self.device.platform, self.device.hostname) or None, "en-US"
        return None, None

    def _login_wait(self) -> bool:
        """Wait as long as this device takes to log in; False: this session refuses the login."""
        if self.plan.login_delay:
            time.sleep(self.plan.login_delay)
        return self.plan.failure != "refuse-auth"

    def check_auth_password(self, username, password):
        if not self._login_wait():
            return paramiko.AUTH_FAILED
        user_ok = hmac.compare_digest(username.encode(), self.device.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.device.password.encode())
        if user_ok and password_ok:
            self.username = username
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if not self._login_wait():
            return paramiko.AUTH_FAILED
        if username == self.device.username and (key.get_name(), key.get_base64()) in self.device.authorized_keys:
            self.username = username
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        return True

    def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight):
        return True

    def check_channel_shell_request(self, channel):
        self.ready.set()
        return True

    def check_channel_exec_request(self, channel, command):
        self.exec_command = command.decode(errors="replace") if isinstance(command, bytes) else command
        self.ready.set()
        return True


class _Transport(paramiko.Transport):
    # paramiko wakes each transport thread this often to check for shutdown; at its 0.1 s,
    # 200 idle sessions cost 7.6% of a core (bench_fleet_backup.py --probe-sessions). Closing
    # a session then takes up to this long to free its thread, which nothing here waits for.
    _active_check_timeout = 1.0


def _send(channel: paramiko.Channel, text: str) -> None:
    if text:
        channel.sendall(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())


class _Session:
    """One SSH connection to one simulated device."""

    def __init__(self, sock: socket.socket, device: DeviceSpec, host_key: paramiko.PKey):
        self.sock = sock
        self.device = device
        self.host_key = host_key
        self.transport: paramiko.Transport | None = None
        self.plan = SessionPlan.for_session(device.realism, device.hostname, next(device.sessions))
        self.shell: Shell | None = None

    def run(self) -> None:
        transport = self.transport = _Transport(self.sock)
        transport.add_server_key(self.host_key)
        server = _DeviceServer(self.device, self.plan)
        try:
            transport.start_server(server=server)
            channel = transport.accept(CHANNEL_WAIT)
            if channel is None or not server.ready.wait(CHANNEL_WAIT):
                return
            shell = self.shell = open_shell(self.device, server.username or self.device.username)
            if server.exec_command is not None:
                self.run_exec(channel, shell, server.exec_command)
            else:
                self.run_interactive(channel, shell)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("%s: session ended: %s", self.device.hostname, exc)
        finally:
            transport.close()

    def run_exec(self, channel: paramiko.Channel, shell: Shell, command: str) -> None:
        if isinstance(shell, CiscoLikeShell):
            shell.privileged = True  # exec runs at the account's privilege level (15 here)
        shell.page_lines = 0  # no terminal, no pager
        prompt = shell.prompt()
        self.device.commands.append(command)
        reply = shell.handle(command)
        if not self.deliver(channel, Reply(reply.text.removesuffix(prompt), is_config=reply.is_config)):
            return
        channel.send_exit_status(0)
        channel.close()

    def run_interactive(self, channel: paramiko.Channel, shell: Shell) -> None:
        _send(channel, shell.greeting())
        line: list[str] = []
        after_cr = False
        while True:
            data = channel.recv(4096)
            if not data:
                return
            echo: list[str] = []
            for char in data.decode(errors="replace"):
                if after_cr and char == "\n":  # CR LF is one end of line
                    after_cr = False
                    continue
                after_cr = char == "\r"
                if char in "\r\n\x1a":
                    if char == "\x1a":
                        line = ["end"]
                    if not shell.awaiting_secret:
                        echo.append("\n")
                    _send(channel, "".join(echo))
                    echo = []
                    text, line = "".join(line), []
                    if not shell.awaiting_secret:  # an enable secret is not kept
                        self.device.commands.append(text)
                    reply = shell.handle(text)
                    if not reply.is_config and self.plan.realism is not None:
                        time.sleep(self.plan.command_delay())  # the device's round trip
                    if not self.deliver(channel, reply):
                        return
                elif char in "\x7f\x08":
                    if line:
                        line.pop()
                        echo.append("\b \b")
                elif char == "\x03":
                    line = []
                    echo.append("^C\n" + shell.prompt())
                elif char.isprintable() or char == "\t":
                    line.append(char)
                    if not shell.awaiting_secret:
                        echo.append(char)
            _send(channel, "".join(echo))

    def deliver(self, channel: paramiko.Channel, reply: Reply) -> bool:
        """Send a reply, unless this device is set to fail there. False: the session is over."""
        mode = self.device.fail_mode
        if reply.is_config and self.plan.failure == "drop-output":
            mode = "disconnect-mid-session"
        if reply.is_config and mode == "disconnect-mid-session":
            _send(channel, reply.text[: len(reply.text) // 3])
            self.transport.close()  # the connection drops as if the device rebooted
            return False
        if reply.is_config and mode == "hang":
            while channel.recv(4096):  # swallow input, answer nothing, until the client gives up
                pass
            return False
        paged = self.shell is not None and self.shell.page_lines and not reply.unpaged and not reply.close
        if reply.is_config and self.plan.realism is not None:
            if not paged:
                self.send_slowly(channel, reply.text, self.plan.config_delay())
                return True
            time.sleep(self.plan.config_delay())
        if paged and reply.text.count("\n") >= self.shell.page_lines:
            return self.send_paged(channel, reply.text)
        _send(channel, reply.text)
        if reply.close:
            channel.close()
            return False
        return True


    @staticmethod
    def send_slowly(channel: paramiko.Channel, text: str, delay: float, parts: int = 4) -> None:
        """``text`` in a few parts spread over ``delay`` seconds, as a device streams a long output."""
        size = -(-len(text) // parts)
        for start in range(0, len(text), size):
            time.sleep(delay / parts)
            _send(channel, text[start:start + size])

    def send_paged(self, channel: paramiko.Channel, text: str) -> bool:
        """Page by page, waiting for a key after each: space a page, Enter a line, anything else stops."""
        more, erase = MORE_PROMPTS[self.device.platform]
        body, newline, prompt = text.rpartition("\n")
        lines = (body + newline).splitlines(keepends=True)
        page = self.shell.page_lines - 1  # the last line of the screen shows the more prompt
        start, step = 0, page
        while start < len(lines):
            _send(channel, "".join(lines[start:start + step]))
            start += step
            if start >= len(lines):
                break
            _send(channel, more)
            key = channel.recv(1)
            if not key:
                return False
            _send(channel, erase)
            if key == b" ":
                step = page
            elif key in (b"\r", b"\n"):
                step = 1
            else:
                _send(channel, "\n")
                break
        _send(channel, prompt)
        return True


class Fleet:
    """Simulated devices, each on its own TCP port, served by one process.

    Use as a context manager, or ``start()``/``stop()``. Devices may be added while running and
    their :class:`DeviceSpec` changed (fail mode, config file, host key) between sessions. Every
    device presents the fleet's host key unless its spec has one of its own.

    A device whose realism profile is unreachable either refuses connections (its port is bound
    but not listening) or accepts them and never says a word (held without a thread).
    """

    def __init__(self, host_key: paramiko.PKey | None = None):
        self.host_key = host_key or load_host_key(None)
        self.devices: dict[int, DeviceSpec] = {}
        self._listeners: dict[int, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._sessions: set[_Session] = set()
        self._closed_ports: list[socket.socket] = []  # bound, not listening: connection refused
        self._silent_ports: set[int] = set()
        self._lock = threading.Lock()
        self.stats = {"sessions": 0, "active": 0, "peak_active": 0, "session_seconds": 0.0, "silent_accepts": 0,
                      "failures_injected": 0}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, device: DeviceSpec, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for ``device`` on ``host:port`` (0: any free port). Returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError:
            listener.close()
            raise
        profile = device.realism.profile(device.hostname) if device.realism is not None else None
        if profile is not None and profile.kind == "unreachable" and profile.unreachable_how == "closed":
            with self._lock:
                self.devices[listener.getsockname()[1]] = device
                self._closed_ports.append(listener)  # keeps the port taken, so nobody else answers there
            return listener.getsockname()[1]
        listener.listen(ACCEPT_BACKLOG)
        listener.setblocking(False)
        bound = listener.getsockname()[1]
        with self._lock:
            self.devices[bound] = device
            self._listeners[bound] = listener
            if profile is not None and profile.kind == "unreachable":
                self._silent_ports.add(bound)
            self._selector.register(listener, selectors.EVENT_READ, bound)
        return bound

    def start(self) -> Fleet:
        self._thread = threading.Thread(target=self._accept_loop, name="devsim-accept", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.data is None:  # a silent connection: swallow what the client says until it leaves
                    self._drain_silent(key.fileobj)
                    continue
                try:
                    conn, _ = key.fileobj.accept()
                except (BlockingIOError, OSError):
                    continue
                if key.data in self._silent_ports:
                    conn.setblocking(False)
                    self.stats["silent_accepts"] += 1
                    self._selector.register(conn, selectors.EVENT_READ, None)
                    continue
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                device = self.devices[key.data]
                host_key = device.host_key if device.host_key is not None else self.host_key
                session = _Session(conn, device, host_key)
                with self._lock:
                    self._sessions.add(session)
                threading.Thread(target=self._serve, args=(session,), name=f"devsim-{key.data}", daemon=True).start()

    def _drain_silent(self, conn: socket.socket) -> None:
        try:
            if conn.recv(4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._selector.unregister(conn)
        conn.close()

    def _serve(self, session: _Session) -> None:
        started = time.monotonic()
        with self._lock:
            self.stats["sessions"] += 1
            self.stats["active"] += 1
            self.stats["peak_active"] = max(self.stats["peak_active"], self.stats["active"])
            self.stats["peak_threads"] = max(self.stats.get("peak_threads", 0), threading.active_count())
            if session.plan.failure:
                self.stats["failures_injected"] += 1
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.discard(session)
                self.stats["active"] -= 1
                self.stats["session_seconds"] += time.monotonic() - started

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for listener in self._listeners.values():
                self._selector.unregister(listener)
                listener.close()
            self._listeners.clear()
            for key in list(self._selector.get_map().values()):  # silent connections still held
                key.fileobj.close()
            for closed in self._closed_ports:
                closed.close()
            self._closed_ports.clear()
            sessions = list(self._sessions)
        for session in sessions:
            if session.transport is not None:
                session.transport.close()
        self._selector.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
