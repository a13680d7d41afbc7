"""Reachability sweep: which addresses answer, and which TCP ports are open on them.

Targets are a prefix (IPv4/IPv6 CIDR or one address) or a selection of inventory devices.

Result model. One probe is one TCP connect to (address, port), or one ICMP echo (port None):

    state        meaning                                              the host answered?
    open         the TCP handshake completed                          yes
    closed       connection refused: the host sent a RST              yes
    filtered     no answer before the timeout                         no
    unreachable  the network refused (EHOSTUNREACH, ENETUNREACH, ...) no
    error        a local problem (out of files or ports)              unknown
    up / down    ICMP echo reply / none                               yes / no

An address is *reachable* when any of its probes answered (open, closed or up). A stored row's
``reachable`` column is the probe's own verdict: the port is open, or the echo came back.

What is stored in ``reachability_results`` (``sweep_id`` is the Celery task id):

* device targets: every probe, so "device X was down at 10:15" stays on record;
* prefix targets: open ports and ICMP replies only, unless ``store_all`` — a /16 would otherwise add
  65,536 × ports rows of "nobody there" per run.

Writing is idempotent per sweep id: under an advisory lock, a run replaces the rows of an earlier run
with the same id (a redelivered task), so a sweep's rows are those of its last complete run.

Speed. Probes run on one asyncio loop with a bounded pool of worker coroutines pulling from a shared
iterator (no task object per address). Sockets are created non-blocking and connected with
``connect_ex``; when the answer is already there (refusals on loopback and on-link hosts usually
are), the probe finishes without touching the event loop, otherwise the worker waits for
writability with a timeout. Open connections are closed with SO_LINGER 0 (a RST, no TIME_WAIT).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import re
import resource
import shutil
import socket
import struct
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from netjobs.db.engine import session_scope
from netjobs.db.models import Device, ReachabilityResult
from netjobs.errors import PermanentError, ValidationError
from netjobs.services.devices import select_devices

OPEN, CLOSED, FILTERED, UNREACHABLE, ERROR = "open", "closed", "filtered", "unreachable", "error"
UP, DOWN = "up", "down"
TCP_STATES = (OPEN, CLOSED, FILTERED, UNREACHABLE, ERROR)
_TCP_ANSWERED = frozenset({OPEN, CLOSED})

DEFAULT_PREFIX_PORTS: tuple[int, ...] = (22, 80, 443)
MAX_PORTS = 1024
PROBES_PER_ADDRESS_LIMIT = 16  # addresses × ports may not exceed this many times the address limit
TIMEOUT_RANGE = (0.05, 30.0)
CONCURRENCY_RANGE = (1, 20000)
OPEN_LIST_LIMIT = 100  # open ports / down devices listed in the summary
_RESOLVER_THREADS = 16
_FD_RESERVE = 128  # descriptors left for the database, Redis, logging, fping

ProgressCallback = Callable[[int, int], None]


# --- parsing and validation ------------------------------------------------------------------------

_PORT_ITEM = re.compile(r"^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$")


def _port_number(raw: str, spec: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValidationError(f"port {value} in {spec!r} is out of range (1-65535)")
    return value


def _port_item(item: object) -> Iterable[int]:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValidationError(f"ports must be numbers or text like '22,443,8000-8010', got {item!r}")
    if isinstance(item, int):
        if not 1 <= item <= 65535:
            raise ValidationError(f"port {item} is out of range (1-65535)")
        return (item,)
    ports: list[int] = []
    for part in item.split(","):
        if not part.strip():
            continue
        match = _PORT_ITEM.match(part)
        if not match:
            raise ValidationError(f"bad port {part.strip()!r} in {item!r} (use e.g. '22,443,8000-8010')")
        low = _port_number(match.group(1), item)
        high = _port_number(match.group(2), item) if match.group(2) else low
        if high < low:
            raise ValidationError(f"port range {part.strip()!r} runs backwards")
        if high - low >= MAX_PORTS:
            raise ValidationError(f"port range {part.strip()!r} has more than {MAX_PORTS} ports")
        ports.extend(range(low, high + 1))
    return ports


def parse_ports(value: object, allow_empty: bool = False) -> tuple[int, ...]:
    """Ports from ``22``, ``"22,443,8000-8010"`` or a list of either; sorted, without repeats."""
    items = value if isinstance(value, (list, tuple)) else [value]
    ports: set[int] = set()
    for item in items:
        ports.update(_port_item(item))
        if len(ports) > MAX_PORTS:
            raise ValidationError(f"at most {MAX_PORTS} ports per sweep")
    if not ports and not allow_empty:
        raise ValidationError(f"no ports given in {value!r}")
    return tuple(sorted(ports))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefix(value: object, max_addresses: int) -> Network:
    """A CIDR prefix or a single address. Host bits are allowed (10.1.2.3/24 means 10.1.2.0/24)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"target must be a prefix like 192.0.2.0/24 or an address, got {value!r}")
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValidationError(f"target {text!r} is not an IPv4/IPv6 prefix or address") from None
    if network.num_addresses > max_addresses:
        raise ValidationError(
            f"prefix {network} has {network.num_addresses} addresses; the limit is {max_addresses} "
            "(NETJOBS_SWEEP_MAX_ADDRESSES)"
        )
    return network


def _host_range(network: Network) -> range:
    """Integer addresses to probe: IPv4 prefixes up to /30 skip the network and broadcast address."""
    first = int(network.network_address)
    last = int(network.broadcast_address)
    if network.version == 4 and network.prefixlen <= 30:
        return range(first + 1, last)
    return range(first, last + 1)


def prefix_size(network: Network) -> int:
    return len(_host_range(network))


def prefix_addresses(network: Network) -> Iterator[str]:
    """The addresses of ``network`` as text, generated lazily."""
    if network.version == 4:
        ntoa = socket.inet_ntoa
        return (ntoa(n.to_bytes(4, "big")) for n in _host_range(network))
    return (socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big")) for n in _host_range(network))


def _number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValidationError(f"{name} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _device_names(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError(f"devices must be a list of device names, got {value!r}")
    return list(dict.fromkeys(v.strip() for v in value))


@dataclass(frozen=True)
class SweepRequest:
    """Validated sweep arguments. Exactly one of ``network`` or a device selection is set."""

    network: Network | None
    devices: list[str] | None
    site: str | None
    tag: str | None
    ports: tuple[int, ...] | None  # None: each device's own management port
    timeout: float
    concurrency: int
    icmp: bool
    store_all: bool

    @property
    def by_devices(self) -> bool:
        return self.network is None


def build_request(*, target=None, devices=None, site=None, tag=None, ports=None, timeout=1.0, icmp=False,
                  concurrency=None, store_all=False, inventory=False, max_addresses: int = 65536,
                  default_concurrency: int = 1024, icmp_enabled: bool = False,
                  time_limit: float | None = None) -> SweepRequest:
    """Check task/CLI arguments; every problem is a ValidationError naming the argument.

    ``inventory=True`` selects every enabled device (further narrowed by ``site``/``tag``). A prefix
    sweep that could outlast ``time_limit`` if nothing answered is refused up front.
    """
    names, site, tag = _device_names(devices), _optional_text(site, "site"), _optional_text(tag, "tag")
    selecting = inventory or names is not None or site is not None or tag is not None
    if (target is None) == (not selecting):
        raise ValidationError("give either a target prefix/address or a device selection (devices, site, tag)"
                              if target is None else "give a target prefix or a device selection, not both")
    if not isinstance(icmp, bool):
        raise ValidationError(f"icmp must be true or false, got {icmp!r}")
    if not isinstance(store_all, bool):
        raise ValidationError(f"store_all must be true or false, got {store_all!r}")
    if icmp and not icmp_enabled:
        raise ValidationError("ICMP probes are disabled here: set NETJOBS_ICMP_ENABLED=true on network workers "
                              "that have CAP_NET_RAW")
    network = None if target is None else parse_prefix(target, max_addresses)
    if ports is None:
        port_list = None if selecting else DEFAULT_PREFIX_PORTS
    else:
        port_list = parse_ports(ports, allow_empty=icmp)
    if network is not None and port_list is not None:
        limit = max_addresses * PROBES_PER_ADDRESS_LIMIT
        if prefix_size(network) * len(port_list) > limit:
            raise ValidationError(f"{prefix_size(network)} addresses × {len(port_list)} ports is more than "
                                  f"{limit} probes; sweep fewer ports or a smaller prefix")
    timeout = _number(timeout, "timeout", *TIMEOUT_RANGE)
    if concurrency is None:
        concurrency = default_concurrency
    concurrency = int(_number(concurrency, "concurrency", *CONCURRENCY_RANGE))
    if network is not None and port_list and time_limit is not None:
        worst = prefix_size(network) * len(port_list) * timeout / concurrency
        if worst > time_limit:
            raise ValidationError(
                f"{prefix_size(network)} addresses × {len(port_list)} ports with a {timeout:g} s timeout at "
                f"concurrency {concurrency} can take {worst:.0f} s, more than the task time limit "
                f"({time_limit:g} s): lower the timeout, raise the concurrency or split the prefix")
    return SweepRequest(network, names, site, tag, port_list, timeout, concurrency, icmp, store_all)


# --- probing ---------------------------------------------------------------------------------------


class Target:
    """One address to probe, on some ports; ``owners`` maps a port to the devices behind it."""

    __slots__ = ("address", "family", "ports", "owners")

    def __init__(self, address: str, ports: Sequence[int], owners: dict[int, tuple[int, ...]] | None = None):
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.ports = tuple(ports)
        self.owners = owners


@dataclass
class ProbeOutcome:
    """Counters of one sweep, plus the probe results selected by ``keep``."""

    addresses: int = 0
    probes: int = 0
    reachable: int = 0
    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TCP_STATES, 0))
    results: list[tuple[Target, int | None, str, float | None, str | None]] = field(default_factory=list)
    duration: float = 0.0


_TIMED_OUT = -1
_STATE_OF_ERRNO = {
    0: OPEN,
    errno.ECONNREFUSED: CLOSED,
    _TIMED_OUT: FILTERED,
    errno.ETIMEDOUT: FILTERED,
    errno.EADDRNOTAVAIL: ERROR,
    errno.EMFILE: ERROR,
    errno.ENFILE: ERROR,
    errno.ENOBUFS: ERROR,
    errno.ENOMEM: ERROR,
}
_LINGER_RESET = struct.pack("ii", 1, 0)
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_NOT_REUSABLE = frozenset({errno.EINVAL, errno.EISCONN, errno.EALREADY, errno.ECONNABORTED, errno.EBADF})
_YIELD_EVERY = 64  # probes answered without waiting, before a worker lets the loop run


def _error_text(code: int) -> str | None:
    if code in (0, errno.ECONNREFUSED):
        return None
    if code == _TIMED_OUT:
        return "no answer before the timeout"
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    return soft


def _settle(waiter: asyncio.Future, value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class _TcpProber:
    """A pool of worker coroutines connecting to (address, port) pairs drawn from one iterator."""

    def __init__(self, targets: Iterable[Target], total: int, *, timeout: float, concurrency: int,
                 keep: Callable[[Target, str], bool], progress: ProgressCallback | None,
                 answered_elsewhere: frozenset[str], outcome: ProbeOutcome):
        self.timeout = timeout
        self.concurrency = concurrency
        self.keep = keep
        self.progress = progress
        self.answered_elsewhere = answered_elsewhere
        self.outcome = outcome
        self.total = total
        self.done = 0
        self.progress_step = max(1, total // 50)
        self.next_report = self.progress_step
        # In-flight targets: [probes left, answered so far]; at most `concurrency` entries.
        self.inflight: dict[Target, list] = {}
        self.work = self._work_items(targets)

    def _work_items(self, targets: Iterable[Target]) -> Iterator[tuple[Target, int]]:
        for target in targets:
            answered = target.address in self.answered_elsewhere
            if not target.ports:  # ICMP only
                self._complete(answered)
                continue
            self.inflight[target] = [len(target.ports), answered]
            for port in target.ports:
                yield target, port

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            for _ in range(self.concurrency):
                group.create_task(self._worker(loop))

    async def _worker(self, loop: asyncio.AbstractEventLoop) -> None:
        # A socket whose connect was refused is back in the CLOSE state and Linux lets it connect
        # again: keeping it for the next probe saves a socket() and a close() per refusal.
        spare: dict[int, socket.socket] = {}
        without_waiting = 0
        clock = time.perf_counter
        try:
            for target, port in self.work:
                started = clock()
                sock = spare.pop(target.family, None)
                try:
                    sock, code = self._connect(sock, target.family, (target.address, port))
                    if code == errno.EINPROGRESS:
                        # The answer is often here already (refusals on loopback and on-link hosts).
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if code == 0:
                            code = await self._wait_connected(loop, sock, started)
                            without_waiting = 0
                except OSError as exc:  # out of descriptors, or an address the kernel rejects
                    code = exc.errno or errno.EINVAL
                except BaseException:  # cancelled (revoke, time limit) while waiting
                    if sock is not None:
                        sock.close()
                    raise
                if sock is not None:
                    if code == errno.ECONNREFUSED:
                        spare[target.family] = sock
                    else:
                        if code == 0:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                        sock.close()
                self._record(target, port, code, (clock() - started) * 1000.0)
                without_waiting += 1
                if without_waiting >= _YIELD_EVERY:
                    without_waiting = 0
                    await asyncio.sleep(0)
        finally:
            for sock in spare.values():
                sock.close()

    @staticmethod
    def _connect(sock: socket.socket | None, family: int, address: tuple) -> tuple[socket.socket, int]:
        """Start a connect on ``sock`` (a refused one, reused) or on a new socket."""
        if sock is not None:
            code = sock.connect_ex(address)
            if code == errno.ECONNABORTED:  # the first connect after a failure only resets the socket
                code = sock.connect_ex(address)
            if code not in _NOT_REUSABLE:
                return sock, code
            sock.close()  # a kernel that does not allow reconnecting: start afresh
        sock = socket.socket(family, _NONBLOCKING_STREAM)
        return sock, sock.connect_ex(address)

    async def _wait_connected(self, loop, sock: socket.socket, started: float) -> int:
        fd = sock.fileno()
        waiter = loop.create_future()
        loop.add_writer(fd, _settle, waiter, True)
        timer = loop.call_at(loop.time() + self.timeout - (time.perf_counter() - started), _settle, waiter, False)
        try:
            writable = await waiter
        finally:
            loop.remove_writer(fd)
            timer.cancel()
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else _TIMED_OUT

    def _record(self, target: Target, port: int, code: int, rtt: float | None) -> None:
        state = _STATE_OF_ERRNO.get(code, UNREACHABLE)
        outcome = self.outcome
        outcome.probes += 1
        outcome.states[state] += 1
        answered = state in _TCP_ANSWERED
        if self.keep(target, state):
            outcome.results.append((target, port, state, round(rtt, 3) if answered and rtt is not None else None,
                                    _error_text(code)))
        entry = self.inflight[target]
        if answered:
            entry[1] = True
        entry[0] -= 1
        if entry[0] == 0:
            del self.inflight[target]
            self._complete(entry[1])

    def _complete(self, answered: bool) -> None:
        self.outcome.reachable += answered
        self.done += 1
        if self.progress is not None and (self.done >= self.next_report or self.done == self.total):
            self.next_report = self.done + self.progress_step
            self.progress(self.done, self.total)


# --- ICMP ------------------------------------------------------------------------------------------

_FPING_LINE = re.compile(r"^(\S+)\s+:\s+(\S+)\s*$")
_PING_TIME = re.compile(r"time[=<]([\d.]+)\s*ms")
_NO_CAPABILITY = ("not permitted", "permission denied", "can't create socket", "must run as root")


def _capability_error(tool: str, message: str) -> PermanentError:
    return PermanentError(f"ICMP probes failed: {tool} cannot send echo requests on this worker "
                          f"(needs CAP_NET_RAW or net.ipv4.ping_group_range): {message.strip()[:200]}")


async def _icmp_fping(fping: str, addresses: list[str], timeout: float) -> dict[str, float | None]:
    process = await asyncio.create_subprocess_exec(
        fping, "-C", "1", "-q", "-r", "0", "-i", "1", "-t", str(max(1, int(timeout * 1000))),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate("\n".join(addresses).encode() + b"\n")
    text = stderr.decode(errors="replace")
    replies: dict[str, float | None] = {}
    for line in text.splitlines():
        match = _FPING_LINE.match(line)
        if match:
            rtt = match.group(2)
            replies[match.group(1)] = None if rtt == "-" else float(rtt)
    # fping exits 1 when some target did not answer; 3 and 4 are usage and system-call failures.
    if process.returncode not in (0, 1) or (not replies and addresses):
        if any(marker in text.lower() for marker in _NO_CAPABILITY):
            raise _capability_error("fping", text)
        raise PermanentError(f"fping failed (exit {process.returncode}): {text.strip()[:200]}")
    return replies


async def _icmp_ping(ping: str, addresses: list[str], timeout: float, concurrency: int) -> dict[str, float | None]:
    limit = asyncio.Semaphore(min(concurrency, 64))
    wait = str(max(1, round(timeout)))

    async def one(address: str) -> tuple[str, float | None]:
        async with limit:
            process = await asyncio.create_subprocess_exec(
                ping, "-n", "-c", "1", "-W", wait, address,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await process.communicate()
        if process.returncode == 0:
            match = _PING_TIME.search(stdout.decode(errors="replace"))
            return address, float(match.group(1)) if match else 0.0
        message = stderr.decode(errors="replace")
        if process.returncode not in (1,) and any(m in message.lower() for m in _NO_CAPABILITY):
            raise _capability_error("ping", message)
        return address, None

    return dict(await asyncio.gather(*(one(a) for a in addresses)))


async def icmp_probe(addresses: list[str], timeout: float, concurrency: int) -> dict[str, float | None]:
    """Echo each address once: {address: rtt in ms, or None when nothing came back}.

    Uses ``fping`` (one process for every address) when installed, else one ``ping`` per address.
    """
    if not addresses:
        return {}
    fping = shutil.which("fping")
    if fping:
        replies = await _icmp_fping(fping, addresses, timeout)
    else:
        ping = shutil.which("ping")
        if not ping:
            raise PermanentError("ICMP probes need fping or ping installed on the network worker")
        replies = await _icmp_ping(ping, addresses, timeout, concurrency)
    return {address: replies.get(address) for address in addresses}


# --- running a sweep -------------------------------------------------------------------------------


def keep_answers(target: Target, state: str) -> bool:
    """The default storage policy: device probes always, prefix probes when a port is open."""
    return target.owners is not None or state == OPEN


def keep_everything(target: Target, state: str) -> bool:
    return True


async def probe_targets(targets: Iterable[Target], total: int, *, timeout: float, concurrency: int,
                        icmp_addresses: list[str] | None = None,
                        keep: Callable[[Target, str], bool] = keep_answers,
                        progress: ProgressCallback | None = None) -> tuple[ProbeOutcome, dict[str, float | None]]:
    """Probe ``total`` targets (ICMP first when ``icmp_addresses`` is given, then TCP).

    Returns the outcome (counters and the kept TCP results) and the ICMP replies.
    """
    outcome = ProbeOutcome(addresses=total)
    started = time.perf_counter()
    raise_open_files_limit(concurrency + _FD_RESERVE)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        concurrency = max(1, min(concurrency, soft - _FD_RESERVE))
    replies: dict[str, float | None] = {}
    if icmp_addresses:
        replies = await icmp_probe(icmp_addresses, timeout, concurrency)
        outcome.states[UP] = sum(rtt is not None for rtt in replies.values())
        outcome.states[DOWN] = len(replies) - outcome.states[UP]
    answered_elsewhere = frozenset(a for a, rtt in replies.items() if rtt is not None)
    prober = _TcpProber(targets, total, timeout=timeout, concurrency=concurrency, keep=keep, progress=progress,
                        answered_elsewhere=answered_elsewhere, outcome=outcome)
    await prober.run()
    outcome.duration = time.perf_counter() - started
    return outcome, replies


def prefix_targets(network: Network, ports: Sequence[int]) -> Iterator[Target]:
    ports = tuple(ports)
    return (Target(address, ports) for address in prefix_addresses(network))


def _resolve(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return infos[0][4][0] if infos else None


@dataclass
class DeviceTargets:
    targets: list[Target]
    unresolved: list[dict]  # devices whose management name did not resolve


def device_targets(devices: list[dict], ports: tuple[int, ...] | None) -> DeviceTargets:
    """One Target per distinct address; each (address, port) remembers the devices behind it."""
    by_address: dict[str, dict[int, list[int]]] = {}
    unresolved = []
    with ThreadPoolExecutor(max_workers=_RESOLVER_THREADS) as pool:  # names resolve in parallel
        resolved = list(pool.map(_resolve, [d["address"] for d in devices]))
    for device, address in zip(devices, resolved):
        if address is None:
            unresolved.append(device)
            continue
        device["probed_address"] = address
        for port in ports if ports is not None else (device["port"],):
            by_address.setdefault(address, {}).setdefault(port, []).append(device["id"])
    targets = [Target(address, sorted(owners), {p: tuple(ids) for p, ids in owners.items()})
               for address, owners in by_address.items()]
    return DeviceTargets(targets, unresolved)


def _select_devices(request: SweepRequest) -> list[dict]:
    chosen = select_devices(names=request.devices, site=request.site, tag=request.tag)
    if not chosen:
        return []
    with session_scope() as session:
        ids = dict(session.execute(select(Device.name, Device.id).where(Device.name.in_([d["name"] for d in chosen]))).all())
    return [dict(d, id=ids[d["name"]]) for d in chosen if d["name"] in ids]


# --- storing ---------------------------------------------------------------------------------------

_INSERT_CHUNK = 5000


def store_results(sweep_id: str, rows: list[dict]) -> int:
    """Replace the rows of ``sweep_id`` with ``rows`` in one transaction; returns the rows written."""
    with session_scope() as session:
        # Two deliveries of the same task may overlap (visibility timeout): one writer at a time.
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("netjobs.sweep:" + sweep_id))))
        session.execute(delete(ReachabilityResult).where(ReachabilityResult.sweep_id == sweep_id))
        device_ids = {r["device_id"] for r in rows if r["device_id"] is not None}
        if device_ids:  # a device removed while we probed: keep its rows, unlinked
            existing = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))))
            for row in rows:
                if row["device_id"] is not None and row["device_id"] not in existing:
                    row["device_id"] = None
        statement = insert(ReachabilityResult).on_conflict_do_nothing(
            constraint="uq_reachability_sweep_target")
        for start in range(0, len(rows), _INSERT_CHUNK):
            session.execute(statement, rows[start:start + _INSERT_CHUNK])
    return len(rows)


def _rows(sweep_id: str, outcome: ProbeOutcome, replies: dict[str, float | None], owners_of_address: dict,
          store_all: bool) -> list[dict]:
    rows = []
    for target, port, state, rtt, error in outcome.results:
        device_id = target.owners[port][0] if target.owners else None
        rows.append(dict(sweep_id=sweep_id, address=target.address, port=port, method="tcp",
                         reachable=state == OPEN, state=state, rtt_ms=rtt, error=error, device_id=device_id))
    for address, rtt in replies.items():
        device_id = owners_of_address.get(address)
        if rtt is None and device_id is None and not store_all:
            continue
        rows.append(dict(sweep_id=sweep_id, address=address, port=None, method="icmp", reachable=rtt is not None,
                         state=UP if rtt is not None else DOWN, rtt_ms=rtt,
                         error=None if rtt is not None else "no echo reply", device_id=device_id))
    return rows


def run_sweep(request: SweepRequest, sweep_id: str | None = None,
              progress: ProgressCallback | None = None) -> dict:
    """Probe, store and summarize one sweep. ``sweep_id`` defaults to a new UUID."""
    sweep_id = sweep_id or str(uuid.uuid4())
    started = time.perf_counter()
    keep = keep_everything if request.store_all else keep_answers
    unresolved: list[dict] = []
    devices: list[dict] = []
    if request.by_devices:
        devices = _select_devices(request)
        selection = device_targets(devices, request.ports)
        targets: Iterable[Target] = selection.targets
        unresolved = selection.unresolved
        total = len(selection.targets)
        addresses = [t.address for t in selection.targets]
        owners_of_address = {t.address: next(iter(t.owners.values()))[0] for t in selection.targets}
    else:
        assert request.network is not None and request.ports is not None
        total = prefix_size(request.network)
        targets = prefix_targets(request.network, request.ports)
        addresses = list(prefix_addresses(request.network)) if request.icmp else []
        owners_of_address = {}
    outcome, replies = asyncio.run(probe_targets(
        targets, total, timeout=request.timeout, concurrency=request.concurrency,
        icmp_addresses=addresses if request.icmp else None, keep=keep, progress=progress,
    ))
    rows = _rows(sweep_id, outcome, replies, owners_of_address, request.store_all)
    for device in unresolved:
        for port in request.ports if request.ports is not None else (device["port"],):
            rows.append(dict(sweep_id=sweep_id, address=device["address"][:64], port=port, method="tcp",
                             reachable=False, state=UNREACHABLE, rtt_ms=None,
                             error=f"cannot resolve {device['address'][:200]}", device_id=device["id"]))
    stored = store_results(sweep_id, rows)
    duration = time.perf_counter() - started
    summary = {
        "sweep_id": sweep_id,
        "target": str(request.network) if request.network is not None else "devices",
        "ports": list(request.ports) if request.ports is not None else None,
        "addresses": outcome.addresses + len(unresolved),
        "probes": outcome.probes,
        "reachable": outcome.reachable,
        "open": outcome.states[OPEN],
        "states": {k: v for k, v in outcome.states.items() if v},
        "stored": stored,
        "duration_s": round(duration, 3),
        "addresses_per_s": round(outcome.addresses / outcome.duration, 1) if outcome.duration else None,
        "probes_per_s": round(outcome.probes / outcome.duration, 1) if outcome.duration else None,
        "open_ports": [f"{_bracket(t.address)}:{p}" for t, p, s, *_ in outcome.results if s == OPEN][:OPEN_LIST_LIMIT],
    }
    if request.by_devices:
        summary["devices"] = _device_summary(devices, outcome, replies)
    return summary


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _device_summary(devices: list[dict], outcome: ProbeOutcome, replies: dict[str, float | None]) -> dict:
    """A device is up when one of its ports is open or it answered an echo."""
    up_ids: set[int] = set()
    for target, port, state, *_ in outcome.results:
        if state == OPEN and target.owners:
            up_ids.update(target.owners[port])
    for device in devices:
        if replies.get(device.get("probed_address", "")) is not None:
            up_ids.add(device["id"])
    down = [d["name"] for d in devices if d["id"] not in up_ids]
    return {"total": len(devices), "up": len(devices) - len(down), "down": down[:OPEN_LIST_LIMIT]}
