"""The command line of each simulated platform: prompts, modes, the commands Netmiko sends.

A shell turns one input line into a :class:`Reply`. It knows nothing about SSH; the server feeds
it lines and writes replies (with ``\\r\\n`` line endings, as devices do).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from netjobs.devsim.configs import load_body, running_config, sized_body
from netjobs.devsim.realism import MORE_PROMPTS, Realism, motd, unit_hash
from netjobs.platforms import LINUX_CONFIG_PATH

PLATFORMS = ("cisco_ios", "arista_eos", "juniper_junos", "linux")
FAIL_MODES = ("none", "disconnect-mid-session", "hang")
BOOT_TIME = time.time()


@dataclass
class DeviceSpec:
    platform: str
    hostname: str
    username: str
    password: str = field(repr=False)
    secret: str = field(default="", repr=False)  # enable secret; empty means the login password
    config_file: Path | None = None
    fail_mode: str = "none"
    authorized_keys: frozenset[tuple[str, str]] = frozenset()  # (key type, base64)
    host_key: object | None = field(default=None, repr=False)  # a paramiko PKey; None: the Fleet's key
    realism: Realism | None = None  # None: instant answers, small config, no banner, no paging
    # Sessions so far: they seed per-session draws.
    sessions: itertools.count = field(default_factory=itertools.count, repr=False, compare=False)
    # Lines the device was sent (not passwords), newest last: what a test asks the device for.
    commands: deque = field(default_factory=lambda: deque(maxlen=200), repr=False, compare=False, init=False)
    # The configuration's revision (a realistic changing device changes on every full show), the
    # body last seen and when it last changed: the stamp its change marker shows.
    revision: int = field(default=0, repr=False, compare=False, init=False)
    _seen_body: str | None = field(default=None, repr=False, compare=False, init=False)
    _changed_at: float | None = field(default=None, repr=False, compare=False, init=False)
    _change_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False, init=False)

    def __post_init__(self):
        if self.platform not in PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r} (one of {', '.join(PLATFORMS)})")
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"unknown fail mode {self.fail_mode!r} (one of {', '.join(FAIL_MODES)})")

    def body(self) -> str:
        return self.configuration(change=True)[0]

    def configuration(self, change: bool) -> tuple[str, float]:
        """The configuration body now and when it last changed (its last-change stamp).

        ``change``: a realistic changing device changes first, as it does before every full show.
        A stamp moves exactly when the body changes, by at least a second (what the stamp shows),
        so a client may compare stamps instead of configurations."""
        with self._change_lock:
            if self.realism is not None and self.config_file is None:
                profile = self.realism.profile(self.hostname)
                if not profile.changes:
                    return sized_body(self.platform, self.hostname, profile.config_lines, 0), BOOT_TIME - 7200
                if change:
                    self.revision += 1
                    self._changed_at = max(time.time(), (self._changed_at or 0) + 1)
                body = sized_body(self.platform, self.hostname, profile.config_lines, self.revision)
                return body, self._changed_at or BOOT_TIME - 7200
            body = load_body(self.platform, self.hostname, self.config_file)
            if body != self._seen_body:
                if self._seen_body is None:  # booted with it: a stamp of its own, before the simulator started
                    self._changed_at = BOOT_TIME - 7200 - int(unit_hash(self.hostname, body) * 30 * 86400)
                else:
                    self._changed_at = max(time.time(), self._changed_at + 1)
                self._seen_body = body
            return body, self._changed_at

    def show_config(self, change: bool = True) -> str:
        """What the device shows as its running configuration; ``change=False`` for a filtered look,
        which never changes a realistic changing device."""
        body, changed_at = self.configuration(change)
        return running_config(self.platform, self.hostname, body, changed_at=changed_at)


@dataclass
class Reply:
    text: str = ""
    close: bool = False  # the session ends after the text (exit, logout)
    is_config: bool = False  # the text is the configuration (where fail modes strike)
    unpaged: bool = False  # shown whole even with paging on (Junos "| no-more")


def uptime_text() -> str:
    seconds = int(time.time() - BOOT_TIME) + 3 * 86400
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} days, {hours} hours, {rest // 60} minutes, {rest % 60} seconds"


def resolve(tokens: list[str], commands: dict[tuple[str, ...], str]) -> tuple[str, str | int | None]:
    """Match abbreviated ``tokens`` against command word tuples, the way IOS-like CLIs do.

    Returns ("ok", handler), ("invalid", token index), ("ambiguous", token index) or ("incomplete", None).
    ``"<arg>"`` in a command tuple matches any one token.
    """
    candidates = list(commands)
    for index, token in enumerate(tokens):
        word = token.lower()
        matching = [c for c in candidates if len(c) > index and (c[index] == "<arg>" or c[index].startswith(word))]
        if not matching:
            return "invalid", index
        exact = [c for c in matching if c[index] in (word, "<arg>")]
        if exact:
            matching = exact
        elif len({c[index] for c in matching}) > 1:
            return "ambiguous", index
        candidates = matching
    complete = [c for c in candidates if len(c) == len(tokens)]
    if not complete:
        return "incomplete", None
    return "ok", commands[complete[0]]


def caret_at(tokens: list[str], index: int, offset: int) -> str:
    column = offset + len(" ".join(tokens[:index])) + (1 if index else 0)
    return " " * column + "^"


class Shell:
    """Base: subclasses set the prompt and command table."""

    def __init__(self, device: DeviceSpec, username: str):
        self.device = device
        self.username = username
        self.awaiting_secret = False  # the next line is a password: not echoed
        self.secret_tries = 0
        realism = device.realism
        # Lines per page (0: no paging) until the client sends its platform's "no paging" command.
        self.page_lines = realism.page_lines if realism and realism.paging and device.platform in MORE_PROMPTS else 0

    def greeting(self) -> str:
        realism = self.device.realism
        banner = motd(self.device.platform, self.device.hostname, self.username) if realism and realism.banners else ""
        return banner + "\n" + self.prompt()

    def set_page_lines(self, raw: str) -> None:
        realism = self.device.realism
        if raw.isdigit() and realism and realism.paging and self.device.platform in MORE_PROMPTS:
            self.page_lines = 0 if raw == "0" else max(2, int(raw))

    def prompt(self) -> str:
        raise NotImplementedError

    def handle(self, line: str) -> Reply:
        raise NotImplementedError

    def check_secret(self, given: str) -> bool:
        expected = self.device.secret or self.device.password
        return hmac.compare_digest(given.encode(), expected.encode())


class CiscoLikeShell(Shell):
    """cisco_ios and arista_eos: user EXEC ``R1>``, privileged ``R1#``, config ``R1(config)#``."""

    enable_needs_secret = True

    def __init__(self, device: DeviceSpec, username: str):
        super().__init__(device, username)
        self.privileged = False
        self.config_mode = False

    def prompt(self) -> str:
        host = self.device.hostname
        if self.config_mode:
            return f"{host}(config)#"
        return f"{host}#" if self.privileged else f"{host}>"

    def commands(self) -> dict[tuple[str, ...], str]:
        table = {
            ("enable",): "enable", ("disable",): "disable", ("exit",): "exit", ("logout",): "exit",
            ("quit",): "exit", ("terminal", "length", "<arg>"): "term_length",
            ("terminal", "pager", "<arg>"): "term_length",
            ("terminal", "width", "<arg>"): "term_width", ("show", "version"): "version",
            ("show", "clock"): "clock",
        }
        if self.privileged:
            table |= {("show", "running-config"): "running", ("show", "startup-config"): "startup",
                      ("configure", "terminal"): "configure"}
        return table

    def handle(self, line: str) -> Reply:
        if self.awaiting_secret:
            return self.finish_enable(line)
        command, _, pipe = line.partition("|")
        tokens = command.split()
        if not tokens:
            return Reply(self.prompt())
        if self.config_mode:
            return self.handle_config(tokens)
        status, found = resolve(tokens, self.commands())
        if status == "ok":
            handler = getattr(self, f"do_{found}")
            reply = handler(tokens, filtered=True) if pipe and found == "running" else handler(tokens)
            if reply.close or self.awaiting_secret:
                return reply
            if pipe and reply.text:
                reply.text = self.apply_pipe(reply.text, pipe.strip())
            reply.text += self.prompt()
            return reply
        return Reply(self.error(status, tokens, found) + self.prompt())

    def error(self, status: str, tokens: list[str], index) -> str:
        if status == "ambiguous":
            return f'% Ambiguous command:  "{" ".join(tokens)}"\n'
        if status == "incomplete":
            return "% Incomplete command.\n\n"
        return f"{caret_at(tokens, index, len(self.prompt()))}\n% Invalid input detected at '^' marker.\n\n"

    def apply_pipe(self, text: str, pipe: str) -> str:
        verb, _, pattern = pipe.partition(" ")
        lines = text.splitlines()
        try:
            regex = re.compile(pattern.strip())
        except re.error:
            return "% Invalid regular expression\n"
        if "include".startswith(verb) and verb:
            lines = [ln for ln in lines if regex.search(ln)]
        elif "exclude".startswith(verb) and verb:
            lines = [ln for ln in lines if not regex.search(ln)]
        elif "begin".startswith(verb) and verb:
            start = next((i for i, ln in enumerate(lines) if regex.search(ln)), len(lines))
            lines = lines[start:]
        else:
            return "% Invalid input detected at '^' marker.\n"
        return "\n".join(lines) + "\n"

    def handle_config(self, tokens: list[str]) -> Reply:
        if tokens[0].lower() in ("end", "\x1a") or (tokens[0].lower() == "exit"):
            self.config_mode = False
        return Reply(self.prompt())  # configuration lines are accepted and ignored

    def do_enable(self, tokens) -> Reply:
        if self.privileged:
            return Reply()
        if not self.enable_needs_secret:
            self.privileged = True
            return Reply()
        self.awaiting_secret = True
        return Reply("Password: ")

    def finish_enable(self, given: str) -> Reply:
        self.awaiting_secret = False
        if self.check_secret(given):
            self.privileged = True
            self.secret_tries = 0
            return Reply("\n" + self.prompt())
        self.secret_tries += 1
        if self.secret_tries < 3:
            self.awaiting_secret = True
            return Reply("\nPassword: ")
        self.secret_tries = 0
        return Reply("\n% Bad secrets\n\n" + self.prompt())

    def do_disable(self, tokens) -> Reply:
        self.privileged = False
        return Reply()

    def do_exit(self, tokens) -> Reply:
        return Reply("", close=True)

    def do_term_length(self, tokens) -> Reply:
        self.set_page_lines(tokens[-1])
        return Reply()

    def do_term_width(self, tokens) -> Reply:
        return Reply()

    def do_version(self, tokens) -> Reply:
        return Reply(f"Cisco IOS Software, IOSv Software (VIOS-ADVENTERPRISEK9-M), Version 15.9(3)M6\n"
                     f"{self.device.hostname} uptime is {uptime_text()}\n")

    def do_clock(self, tokens) -> Reply:
        return Reply(time.strftime("*%H:%M:%S.000 UTC %a %b %-d %Y\n", time.gmtime()))

    def do_running(self, tokens, filtered: bool = False) -> Reply:
        if filtered:  # a few matching lines (a change-marker check) come at command speed
            return Reply(self.device.show_config(change=False))
        return Reply(self.device.show_config(), is_config=True)

    def do_startup(self, tokens) -> Reply:
        return Reply(self.device.show_config())

    def do_configure(self, tokens) -> Reply:
        self.config_mode = True
        return Reply("Enter configuration commands, one per line.  End with CNTL/Z.\n")


class EosShell(CiscoLikeShell):
    # A default EOS account has no enable secret.
    enable_needs_secret = False

    def commands(self):
        table = super().commands()
        table[("show", "running-config")] = "running"  # present in both modes, refused unprivileged
        return table

    def error(self, status, tokens, index) -> str:
        if status == "ambiguous":
            return "% Ambiguous command\n"
        if status == "incomplete":
            return "% Incomplete command\n"
        return "% Invalid input\n"

    def do_term_length(self, tokens) -> Reply:
        self.set_page_lines(tokens[-1])
        return Reply("Pagination disabled.\n" if tokens[-1] == "0" else "")

    def do_term_width(self, tokens) -> Reply:
        return Reply(f"Width set to {tokens[-1]} columns.\n")

    def do_version(self, tokens) -> Reply:
        return Reply(f"Arista vEOS-lab\nSoftware image version: 4.31.2F\nUptime: {uptime_text()}\n")

    def do_running(self, tokens, filtered: bool = False) -> Reply:
        if not self.privileged:
            return Reply("% Invalid input (privileged mode required)\n")
        return super().do_running(tokens, filtered)


class JunosShell(Shell):
    """``user@R1> `` operational mode; ``root`` logs in to the FreeBSD shell and types ``cli``."""

    def __init__(self, device: DeviceSpec, username: str):
        super().__init__(device, username)
        self.in_unix_shell = username == "root"

    def prompt(self) -> str:
        if self.in_unix_shell:
            return f"root@{self.device.hostname}:RE:0% "
        return f"{self.username}@{self.device.hostname}> "

    def handle(self, line: str) -> Reply:
        words = line.split()
        if self.in_unix_shell:
            if words == ["cli"]:
                self.in_unix_shell = False
                return Reply("\n" + self.prompt())
            if words and words[0] == "exit":
                return Reply(close=True)
            return Reply((f"{words[0]}: Command not found.\n" if words else "") + self.prompt())
        if not words:
            return Reply("\n" + self.prompt())
        command, _, pipe = line.partition("|")
        words = command.split()
        head = " ".join(words)
        if head in ("exit", "quit"):
            return Reply(close=True)
        setters = {
            "set cli screen-width": lambda v: f"Screen width set to {v}\n",
            "set cli screen-length": lambda v: f"Screen length set to {v}\n",
        }
        for prefix, answer in setters.items():
            if head.startswith(prefix + " ") and len(words) == 4:
                if prefix.endswith("length"):
                    self.set_page_lines(words[3])
                return Reply(answer(words[3]) + "\n" + self.prompt())
        if head == "set cli complete-on-space off":
            return Reply("Disabling complete-on-space\n\n" + self.prompt())
        if head == "show version":
            return Reply(f"Hostname: {self.device.hostname}\nModel: vmx\nJunos: 21.4R3.15\n\n" + self.prompt())
        if head == "show system uptime":
            return Reply(f"System booted: {uptime_text()} ago\n\n" + self.prompt())
        if head == "show configuration":
            modifiers = [p.strip() for p in pipe.split("|")] if pipe else []
            matches = [m.partition(" ")[2].strip().strip('"') for m in modifiers if m.startswith("match ")]
            if any(m not in ("display set", "no-more") and not m.startswith("match ") for m in modifiers):
                return Reply("syntax error, expecting <command>.\n\n" + self.prompt())
            if matches:  # a few matching lines (a change-marker check) come at command speed
                try:
                    patterns = [re.compile(m) for m in matches]
                except re.error:
                    return Reply("error: invalid regular expression\n\n" + self.prompt())
                lines = [ln for ln in self.device.show_config(change=False).splitlines()
                         if all(p.search(ln) for p in patterns)]
                return Reply("".join(ln + "\n" for ln in lines) + "\n" + self.prompt(), unpaged="no-more" in modifiers)
            return Reply(self.device.show_config() + "\n" + self.prompt(), is_config=True,
                         unpaged="no-more" in modifiers)
        column = len(self.prompt()) + len(words[0])
        return Reply(" " * column + "^\nunknown command.\n\n" + self.prompt())


class LinuxShell(Shell):
    """A bash-like prompt: ``user@R1:~$`` (``#`` for root) with ``cat`` of a few files."""

    CONFIG_PATH = LINUX_CONFIG_PATH

    def prompt(self) -> str:
        mark = "#" if self.username == "root" else "$"
        return f"{self.username}@{self.device.hostname}:~{mark} "

    def handle(self, line: str) -> Reply:
        try:
            words = shlex.split(line)
        except ValueError:
            return Reply("-bash: syntax error: unexpected end of file\n" + self.prompt())
        if not words:
            return Reply(self.prompt())
        name, args = words[0], words[1:]
        if name in ("exit", "logout"):
            return Reply(close=True)
        if name == "cat":
            return self.cat(args)
        if name == "sha256sum":
            return self.sha256sum(args)
        simple = {
            "hostname": f"{self.device.hostname}\n",
            "whoami": f"{self.username}\n",
            "pwd": f"/home/{self.username}\n" if self.username != "root" else "/root\n",
            "uptime": f" up {uptime_text()},  1 user,  load average: 0.00, 0.01, 0.05\n",
            "true": "",
        }
        if name in simple:
            return Reply(simple[name] + self.prompt())
        if name == "echo":
            return Reply(" ".join(args) + "\n" + self.prompt())
        if name == "uname":
            text = f"Linux {self.device.hostname} 6.1.0-18-amd64 #1 SMP Debian x86_64 GNU/Linux\n" if args == ["-a"] else "Linux\n"
            return Reply(text + self.prompt())
        return Reply(f"-bash: {name}: command not found\n" + self.prompt())

    def read(self, path: str, change: bool) -> str | None:
        """A file's text, None if there is no such file; ``change`` as in DeviceSpec.show_config."""
        if path == self.CONFIG_PATH:
            return self.device.show_config(change)
        return {"/etc/hostname": f"{self.device.hostname}\n"}.get(path)

    def cat(self, paths: list[str]) -> Reply:
        out, is_config = [], False
        for path in paths:
            text = self.read(path, change=True)
            if text is None:
                out.append(f"cat: {path}: No such file or directory\n")
            else:
                out.append(text)
                is_config = is_config or path == self.CONFIG_PATH
        return Reply("".join(out) + self.prompt(), is_config=is_config)

    def sha256sum(self, paths: list[str]) -> Reply:
        """The change-marker check: digests come at command speed and never change a changing device."""
        out = []
        for path in paths:
            text = self.read(path, change=False)
            if text is None:
                out.append(f"sha256sum: {path}: No such file or directory\n")
            else:
                out.append(f"{hashlib.sha256(text.encode()).hexdigest()}  {path}\n")
        return Reply("".join(out) + self.prompt())


SHELLS: dict[str, type[Shell]] = {
    "cisco_ios": CiscoLikeShell,
    "arista_eos": EosShell,
    "juniper_junos": JunosShell,
    "linux": LinuxShell,
}


def open_shell(device: DeviceSpec, username: str) -> Shell:
    return SHELLS[device.platform](device, username)
