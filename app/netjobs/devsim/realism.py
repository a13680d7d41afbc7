"""Opt-in realism for simulated devices: latency, banners, paging, big configs, bad devices.

A :class:`Realism` is shared by a fleet; :meth:`Realism.profile` turns it into one device's fixed
traits (slow, flaky, unreachable, changing, config size) from a hash of the seed and hostname, so the
same seed gives the same fleet on every run. Per-session randomness (latencies, whether a flaky
device fails this time) comes from :meth:`Realism.session_rng`, seeded by seed, hostname and the
device's session number: deterministic for a given order of sessions.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

DISTRIBUTIONS = ("uniform", "triangular", "lognormal")
KINDS = ("normal", "slow", "flaky", "unreachable")


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Latency:
    """Seconds a device takes to answer, drawn from ``distribution`` and always within [low, high]."""

    low: float
    high: float
    distribution: str = "uniform"

    def __post_init__(self):
        if not 0 <= self.low <= self.high:
            raise ValueError(f"latency bounds must satisfy 0 <= low <= high, got {self.low}-{self.high}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r} (one of {', '.join(DISTRIBUTIONS)})")

    @classmethod
    def parse(cls, raw: str, distribution: str = "uniform") -> Latency:
        """``"0.2-1.5"`` or ``"0.5"`` (a fixed delay)."""
        low, _, high = raw.partition("-")
        return cls(float(low), float(high or low), distribution)

    def draw(self, rng: random.Random) -> float:
        if self.high == self.low:
            return self.low
        if self.distribution == "triangular":
            # Most answers come quickly, a tail is slow: the mode sits at a quarter of the range.
            return rng.triangular(self.low, self.high, self.low + (self.high - self.low) / 4)
        if self.distribution == "lognormal":
            # Median at the geometric middle, the bounds about two sigma away, clamped to them.
            low = max(self.low, 1e-3)
            mu = (math.log(low) + math.log(self.high)) / 2
            sigma = (math.log(self.high) - math.log(low)) / 4
            return min(self.high, max(self.low, rng.lognormvariate(mu, sigma)))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class DeviceProfile:
    kind: str  # one of KINDS
    changes: bool  # the configuration differs on every show
    config_lines: int  # lines of the shown configuration
    unreachable_how: str = "closed"  # "closed": connection refused; "silent": accepted, never answered


@dataclass(frozen=True)
class Realism:
    seed: int = 0
    login: Latency = Latency(0.2, 1.5)  # password check to shell prompt
    command: Latency = Latency(0.03, 0.15)  # any other command, including an empty line
    config: Latency = Latency(0.5, 3.0)  # the running configuration, spread over its output
    config_lines: tuple[int, int] = (1000, 5000)
    change_share: float = 0.0  # devices whose configuration changes on every show
    slow_share: float = 0.0
    slow_factor: float = 5.0  # latency multiplier of slow devices
    flaky_share: float = 0.0
    flaky_rate: float = 0.5  # share of a flaky device's sessions that fail
    unreachable_share: float = 0.0
    banners: bool = True
    paging: bool = True  # page long output until the client turns paging off
    page_lines: int = 24
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        shares = (self.change_share, self.slow_share, self.flaky_share, self.unreachable_share, self.flaky_rate)
        if any(not 0 <= s <= 1 for s in shares):
            raise ValueError("shares and rates must be between 0 and 1")
        if self.slow_share + self.flaky_share + self.unreachable_share > 1:
            raise ValueError("slow, flaky and unreachable shares add up to more than 1")
        low, high = self.config_lines
        if not 1 <= low <= high:
            raise ValueError(f"config lines must satisfy 1 <= low <= high, got {low}-{high}")
        if self.slow_factor < 1 or self.page_lines < 2:
            raise ValueError("slow factor must be >= 1 and page lines >= 2")

    def profile(self, hostname: str) -> DeviceProfile:
        cached = self._cache.get(hostname)
        if cached is not None:
            return cached
        draw = unit_hash(self.seed, hostname, "kind")
        kind = "normal"
        for name, share in (("unreachable", self.unreachable_share), ("flaky", self.flaky_share),
                            ("slow", self.slow_share)):
            if draw < share:
                kind = name
                break
            draw -= share
        low, high = self.config_lines
        lines = low + int(unit_hash(self.seed, hostname, "lines") * (high - low + 1))
        profile = DeviceProfile(
            kind=kind, changes=unit_hash(self.seed, hostname, "changes") < self.change_share, config_lines=lines,
            unreachable_how="silent" if unit_hash(self.seed, hostname, "how") < 0.5 else "closed")
        self._cache[hostname] = profile
        return profile

    def session_rng(self, hostname: str, session: int) -> random.Random:
        return random.Random(f"{self.seed}/{hostname}/{session}")

    def factor(self, hostname: str) -> float:
        return self.slow_factor if self.profile(hostname).kind == "slow" else 1.0


@dataclass
class SessionPlan:
    """What one session of one device will do: its latencies and whether (and how) it fails."""

    login_delay: float = 0.0
    failure: str | None = None  # None, "refuse-auth" or "drop-output"
    rng: random.Random | None = None
    factor: float = 1.0
    realism: Realism | None = None

    @classmethod
    def for_session(cls, realism: Realism | None, hostname: str, session: int) -> SessionPlan:
        if realism is None:
            return cls()
        rng = realism.session_rng(hostname, session)
        factor = realism.factor(hostname)
        failure = None
        if realism.profile(hostname).kind == "flaky" and rng.random() < realism.flaky_rate:
            failure = "refuse-auth" if rng.random() < 0.5 else "drop-output"
        return cls(login_delay=realism.login.draw(rng) * factor, failure=failure, rng=rng, factor=factor,
                   realism=realism)

    def command_delay(self) -> float:
        return self.realism.command.draw(self.rng) * self.factor if self.realism else 0.0

    def config_delay(self) -> float:
        return self.realism.config.draw(self.rng) * self.factor if self.realism else 0.0


# --- login banners (before authentication) and messages of the day (after) -------------------


def login_banner(platform: str, hostname: str) -> str:
    """The SSH banner shown before the password prompt ('banner login'), or ''."""
    if platform in ("cisco_ios", "arista_eos"):
        return ("\n**************************************************************\n"
                "* Authorized access only. Activity on this device is logged. *\n"
                f"* {hostname:<58} *\n"
                "**************************************************************\n\n")
    if platform == "juniper_junos":
        return "WARNING: Unauthorized access to this system is prohibited and will be prosecuted.\n\n"
    return ""


def motd(platform: str, hostname: str, username: str) -> str:
    """What the device prints between login and the first prompt."""
    source = f"10.213.{int(unit_hash(hostname, 'src') * 250) + 1}.{int(unit_hash(hostname, 'srch') * 250) + 1}"
    if platform == "cisco_ios":
        return (f"\n{hostname} - core network, change window Sun 02:00-05:00 UTC.\n"
                "Contact noc@lab.example.net before making changes.\n\n")
    if platform == "arista_eos":
        return f"Last login: Tue Mar  4 02:11:09 2025 from {source}\n\n"
    if platform == "juniper_junos":
        return (f"Last login: Tue Mar  4 02:11:09 2025 from {source}\n"
                "--- JUNOS 21.4R3.15 Kernel 64-bit  JNPR-12.1-20230313.5d1e6f8_buil\n")
    return (f"Linux {hostname} 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64\n\n"
            "The programs included with the Debian GNU/Linux system are free software;\n"
            "the exact distribution terms for each program are described in the\n"
            "individual files in /usr/share/doc/*/copyright.\n\n"
            f"Last login: Tue Mar  4 02:11:09 2025 from {source}\n")


# Shown when a page is full, and what erases it once the user pressed a key.
MORE_PROMPTS: dict[str, tuple[str, str]] = {
    "cisco_ios": (" --More-- ", "\b" * 10 + " " * 10 + "\b" * 10),
    "arista_eos": (" --More-- ", "\b" * 10 + " " * 10 + "\b" * 10),
    "juniper_junos": ("---(more)---", "\r" + " " * 12 + "\r"),
}
