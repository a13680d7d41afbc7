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


def _listener(address: str, port: int, backlog: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(backlog)
    return listener


@contextlib.contextmanager
def _listening(addresses: Sequence[str], port: int | None, backlog: int, queued: int) -> Iterator[int]:
    """Listeners on ``port`` at every address, each with ``queued`` connections never accepted."""
    port = port or free_port(addresses[0])
    with contextlib.ExitStack() as stack:
        for address in addresses:
            stack.enter_context(_listener(address, port, backlog))
            for _ in range(queued):
                client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK))
                code = client.connect_ex((address, port))
                assert code in (0, errno.EINPROGRESS), code
        yield port


def open_ports(addresses: Sequence[str], port: int | None = None):
    """Listen on ``port`` (default: a free one) on every address; yields the port."""
    return _listening(addresses, port, backlog=128, queued=0)


def filtered_ports(addresses: Sequence[str], port: int | None = None):
    """A port where connects time out: a backlog-0 listener with a full accept queue drops SYNs."""
    return _listening(addresses, port, backlog=0, queued=3)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
