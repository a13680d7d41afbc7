"""Getting the listening sockets: from systemd (socket activation) or by binding them here.

Socket activation (``sd_listen_fds``): systemd binds UDP and TCP 514 and starts the receiver with
the sockets as fds 3, 4, ... and ``LISTEN_FDS``/``LISTEN_PID`` set, so the process needs no
capability to use a privileged port.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3
UDP_RECEIVE_BUFFER = 4 << 20  # bursts from many devices at once; the kernel caps it at rmem_max


class SocketError(RuntimeError):
    pass


def sockets_from_systemd(environ=os.environ) -> list[socket.socket]:
    """The sockets systemd passed to this process (none when it passed none, or to another process).

    Like ``sd_listen_fds(1)``, the variables are removed so that child processes do not take them."""
    count, pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if not count or pid != str(os.getpid()):
        return []
    if not count.isdigit() or int(count) < 1:
        raise SocketError(f"LISTEN_FDS={count!r} is not a positive number")
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise SocketError(f"fd {fd} from systemd is not a socket: {exc}") from None
        os.set_inheritable(fd, False)
        if sock.type not in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            raise SocketError(f"fd {fd} from systemd is neither a datagram nor a stream socket")
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """UDP and TCP sockets bound to ``host:port`` (NETJOBS_SYSLOG_LISTEN)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        except OSError:
            pass
        udp.bind((host, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(512)
    except OSError as exc:
        udp.close()
        tcp.close()
        raise SocketError(f"cannot listen on {host}:{port} (NETJOBS_SYSLOG_LISTEN): {exc.strerror or exc}") from None
    for sock in (udp, tcp):
        sock.setblocking(False)
    return [udp, tcp]


def describe(sock: socket.socket) -> str:
    kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    address = sock.getsockname()
    return f"{kind} {address[0]}:{address[1]}" if isinstance(address, tuple) else f"{kind} {address}"
