"""Loopback listeners for sweep tests: open, closed and filtered (SYNs dropped) TCP ports.

Everything binds to loopback addresses only: tests must never send traffic anywhere else.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Iterator, Sequence


def free_port(address: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def open_ports(addresses: Sequence[str], port: int | None = None) -> Iterator[int]:
    """Listen on ``port`` (default: a free one) on every address; yields the port."""
    port = port or free_port(addresses[0])
    listeners = []
    try:
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(128)
            listeners.append(listener)
        yield port
    finally:
        for listener in listeners:
            listener.close()


@contextlib.contextmanager
def filtered_ports(addresses: Sequence[str], port: int | None = None) -> Iterator[int]:
    """A port where connects time out: a listener whose accept queue is full drops further SYNs."""
    port = port or free_port(addresses[0])
    sockets = []
    try:
        for address in addresses:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((address, port))
            listener.listen(0)
            sockets.append(listener)
            for _ in range(3):  # fill the queue of a backlog-0 listener; never accepted
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                code = client.connect_ex((address, port))
                assert code in (0, errno.EINPROGRESS), code
                sockets.append(client)
        yield port
    finally:
        for sock in sockets:
            sock.close()


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
