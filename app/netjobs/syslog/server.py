"""The receiver: asyncio protocols for UDP and TCP, and the loop that debounces and submits.

Everything that blocks (reading the inventory, publishing a backup, pushing counters to Redis)
runs in its own single thread, so a slow database or an unreachable Redis never stops the
receiving; each of them is retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from netjobs.config import Settings
from netjobs.syslog.changes import ChangeDetector
from netjobs.syslog.counters import LOG_INTERVAL, Counters, push
from netjobs.syslog.debounce import Burst, Debouncer
from netjobs.syslog.devices import DeviceDirectory, load_directory
from netjobs.syslog.frames import StreamFramer
from netjobs.syslog.messages import MalformedMessage, parse
from netjobs.syslog.sockets import bind_sockets, describe, sockets_from_systemd
from netjobs.syslog.submit import RetryQueue, WaitingSubmit, send_backup

log = logging.getLogger("netjobs.syslog")

PUSH_INTERVAL = 1.0  # counters to Redis
INVENTORY_RETRY = 5.0  # while the inventory could not be read at all
SHUTDOWN_SUBMIT_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 2000


class Receiver:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.max_bytes = settings.syslog_max_line_bytes
        self.detector = ChangeDetector(settings.syslog_linux_pattern)
        self.directory = DeviceDirectory()
        self.debouncer = Debouncer(settings.syslog_debounce_seconds)
        self.retries = RetryQueue()
        self.counters = Counters()
        self.tcp_connections = 0
        self._submit_pool = ThreadPoolExecutor(1, thread_name_prefix="syslog-submit")
        self._inventory_pool = ThreadPoolExecutor(1, thread_name_prefix="syslog-inventory")
        self._redis_pool = ThreadPoolExecutor(1, thread_name_prefix="syslog-counters")
        self._redis = None
        self._in_flight: set[asyncio.Future] = set()

    # --- the hot path ----------------------------------------------------------------------------

    def receive(self, data: bytes, source: str, truncated: bool = False) -> None:
        counters = self.counters
        counters.count("received")
        if truncated or len(data) > self.max_bytes:
            counters.count("truncated")
            data = data[: self.max_bytes]
        try:
            message = parse(data)
        except MalformedMessage as exc:
            counters.drop("malformed", f"from {source}: {exc}")
            return
        change = self.detector.detect(message.text)
        if change is None:
            counters.count("not_a_change")
            return
        counters.count("config_changes")
        device, how = self.directory.lookup(source, message.hostname)
        if device is None:
            sender = f"{change.event} from {source} (hostname {message.hostname or '-'})"
            if how == "ambiguous":
                counters.drop("ambiguous_sender", f"{sender}: several devices have this address and the "
                                                  "hostname names none of them")
            elif self.directory.loaded:
                counters.drop("unknown_sender", f"{sender} matches no device in the inventory")
            else:
                counters.drop("inventory_unavailable", f"{sender}: the inventory could not be read yet")
            return
        if not device.enabled:
            counters.drop("device_disabled", f"{change.event} from {device.name}, which is disabled")
            return
        if self.debouncer.change(device.name, change.user, time.monotonic()):
            log.info("configuration change on %s (%s, by %s, matched by %s): backup after %gs without changes",
                     device.name, change.event, change.user or "an unnamed user", how,
                     self.settings.syslog_debounce_seconds)

    # --- the loop ----------------------------------------------------------------------------------

    async def run(self, sockets: list[socket.socket], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for sock in sockets:
            if sock.type == socket.SOCK_DGRAM:
                transport, _ = await loop.create_datagram_endpoint(lambda: DatagramReceiver(self), sock=sock)
                transports.append(transport)
            else:
                server = await loop.create_server(lambda: StreamReceiver(self), sock=sock)
                transports.append(server)
        await self._refresh_inventory()
        log.info("listening on %s; %d devices in the inventory; debounce %gs",
                 ", ".join(describe(s) for s in sockets), len(self.directory), self.settings.syslog_debounce_seconds)
        tick = min(0.5, self.settings.syslog_debounce_seconds / 10)
        next_refresh = time.monotonic() + (self.settings.syslog_device_refresh_seconds if self.directory.loaded
                                           else INVENTORY_RETRY)
        next_push = next_log = time.monotonic()
        logged = dict(self.counters.totals)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), tick)
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            for burst in self.debouncer.due(now):
                self._submit(burst)
            for waiting in self.retries.due(now):
                self._submit(waiting.burst, waiting)
            if now >= next_refresh:
                await self._refresh_inventory()
                next_refresh = now + (self.settings.syslog_device_refresh_seconds if self.directory.loaded
                                      else INVENTORY_RETRY)
            if now >= next_push:
                self._push_counters()
                next_push = now + PUSH_INTERVAL
            if now >= next_log and dict(self.counters.totals) != logged:
                logged = dict(self.counters.totals)
                log.info("counts: %s", ", ".join(f"{k}={v}" for k, v in sorted(logged.items())))
                next_log = now + LOG_INTERVAL
        for transport in transports:
            transport.close()
        await self._drain()

    async def _drain(self) -> None:
        """At shutdown: submit every burst still waiting rather than lose it."""
        for burst in self.debouncer.take_all():
            self._submit(burst)
        for waiting in self.retries.due(float("inf")):
            self._submit(waiting.burst, waiting)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=SHUTDOWN_SUBMIT_TIMEOUT)
        if len(self.retries):
            log.error("shutting down with %d backups Redis did not take: %s", len(self.retries),
                      ", ".join(w.burst.device for w in self.retries.due(float("inf"))))
        self._push_counters()
        log.info("stopped; counts: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.counters.totals.items())))
        for pool in (self._submit_pool, self._inventory_pool, self._redis_pool):
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, burst: Burst, waiting: WaitingSubmit | None = None) -> None:
        if waiting is None and self.retries.has(burst.device):
            self.retries.add(burst, time.monotonic())  # joins the burst already waiting for Redis
            return
        future = asyncio.get_running_loop().run_in_executor(self._submit_pool, send_backup, burst)
        self._in_flight.add(future)

        def done(fut: asyncio.Future) -> None:
            self._in_flight.discard(fut)
            now = time.monotonic()
            exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
            if exc is None:
                self.counters.count("backups_submitted")
                log.info("backup of %s submitted (task %s; %d changes, by %s)", burst.device, fut.result(),
                         burst.changes, burst.changed_by or "an unnamed user")
                return
            self.counters.count("submit_failed")
            kept = self.retries.failed_again(waiting, now) if waiting is not None else self.retries.add(burst, now)
            if kept:
                self.counters.drop("submit_failed_will_retry",
                                   f"backup of {burst.device} not submitted ({exc}); trying again")
            else:
                self.counters.drop("backups_given_up", f"backup of {burst.device} not submitted ({exc}); "
                                                       "giving up on it")

        future.add_done_callback(done)

    async def _refresh_inventory(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            directory = await loop.run_in_executor(self._inventory_pool, load_directory)
        except Exception as exc:  # noqa: BLE001 - any database failure: keep the map we have
            self.counters.drop("inventory_refresh_failed", f"cannot read the inventory: {exc}")
            return
        if not self.directory.loaded or len(directory) != len(self.directory):
            log.info("inventory: %d devices", len(directory))
        self.directory = directory

    def _push_counters(self) -> None:
        counts = self.counters.take_unpushed()
        if not counts:
            return
        future = asyncio.get_running_loop().run_in_executor(self._redis_pool, self._push_blocking, counts)

        def done(fut: asyncio.Future) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.counters.give_back(counts)

        future.add_done_callback(done)

    def _push_blocking(self, counts) -> None:
        if self._redis is None:
            from netjobs.redis_clients import redis_from_url

            self._redis = redis_from_url(self.settings.broker_url, settings=self.settings,
                                         socket_timeout=2, socket_connect_timeout=2)
        push(self._redis, counts)


class DatagramReceiver(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.receiver.receive(data.rstrip(b"\r\n\x00"), addr[0])
        except Exception as exc:  # noqa: BLE001 - one message never stops the receiver
            self.receiver.counters.drop("errors", f"from {addr[0]}: {type(exc).__name__}: {exc}")

    def error_received(self, exc: Exception) -> None:
        self.receiver.counters.drop("socket_errors", str(exc))


class StreamReceiver(asyncio.Protocol):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        self.framer = StreamFramer(receiver.max_bytes)
        self.source = "?"
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.source = peer[0] if isinstance(peer, tuple) else str(peer)
        self.receiver.tcp_connections += 1
        if self.receiver.tcp_connections > MAX_TCP_CONNECTIONS:
            self.receiver.counters.drop("tcp_refused", f"from {self.source}: over {MAX_TCP_CONNECTIONS} connections")
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self._handle(self.framer.feed(data))

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self.receiver.tcp_connections -= 1
        self._handle(self.framer.close())

    def _handle(self, frames) -> None:
        receiver = self.receiver
        for frame in frames:
            try:
                if frame.malformed:
                    receiver.counters.count("received")
                    receiver.counters.drop("malformed", f"from {self.source}: broken TCP frame")
                    continue
                receiver.receive(frame.data, self.source, frame.truncated)
            except Exception as exc:  # noqa: BLE001 - one message never stops the receiver
                receiver.counters.drop("errors", f"from {self.source}: {type(exc).__name__}: {exc}")


def open_sockets(settings: Settings) -> tuple[list[socket.socket], str]:
    activated = sockets_from_systemd()
    if activated:
        return activated, "systemd"
    return bind_sockets(*settings.syslog_listen), "NETJOBS_SYSLOG_LISTEN"


async def serve(settings: Settings) -> None:
    sockets, origin = open_sockets(settings)
    log.info("sockets from %s", origin)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Receiver(settings).run(sockets, stop)
