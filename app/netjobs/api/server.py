"""Run the API under uvicorn: `netjobs-api` / `python -m netjobs.api`.

Listens on every address of NETJOBS_API_LISTEN (default 127.0.0.1:8470), over HTTPS with
NETJOBS_API_TLS_CERT_FILE and NETJOBS_API_TLS_KEY_FILE, serves under NETJOBS_API_ROOT_PATH when a
proxy adds a path, and trusts X-Forwarded-For only from NETJOBS_API_FORWARDED_ALLOW_IPS. The access
log never shows a token: tokens travel in a header uvicorn does not log, and anything that looks like
one in a logged request line (a token pasted into a URL) is replaced by ``nj_<redacted>``.
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys

TOKEN_LIKE = re.compile(r"nj_[A-Za-z0-9_-]{8,}")
REDACTED = "nj_<redacted>"


def redact(value):
    return TOKEN_LIKE.sub(REDACTED, value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Replaces anything that looks like an API token in a log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) for k, v in record.args.items()}
        return True


def log_config(level: str) -> dict:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactTokens}},
        "formatters": {
            "plain": {"format": fmt},
            "access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
                       "fmt": '%(asctime)s access %(client_addr)s "%(request_line)s" %(status_code)s'},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain",
                        "filters": ["redact"]},
            "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "access",
                       "filters": ["redact"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "netjobs": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netjobs-api", description="The netjobs HTTP API (settings: NETJOBS_API_*).")
    parser.add_argument("--check", action="store_true", help="check the settings and exit")
    args = parser.parse_args(argv)

    from netjobs.config import ConfigError, get_settings

    try:
        settings = get_settings()
    except ConfigError as exc:
        print(f"netjobs-api: configuration error: {exc}", file=sys.stderr)
        return 2
    where = ", ".join(f"{'https' if settings.api_tls_cert_file else 'http'}://{_authority(host, port)}"
                      f"{settings.api_root_path or ''}" for host, port in settings.api_listen)
    if args.check:
        print(f"netjobs-api: settings ok; would listen on {where}")
        return 0

    import uvicorn

    from netjobs.api.app import create_app

    try:
        sockets = [_bound_socket(host, port) for host, port in settings.api_listen]
    except OSError as exc:
        print(f"netjobs-api: cannot listen on {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        create_app(), root_path=settings.api_root_path,
        proxy_headers=bool(settings.api_forwarded_allow_ips),
        forwarded_allow_ips=",".join(settings.api_forwarded_allow_ips) or None,
        ssl_certfile=settings.api_tls_cert_file or None, ssl_keyfile=settings.api_tls_key_file or None,
        log_config=log_config(settings.log_level), access_log=True, server_header=False,
        timeout_graceful_shutdown=10,
    )
    # uvicorn binds one host itself; the sockets of every address are passed to it instead.
    uvicorn.Server(config).run(sockets=sockets)
    return 0


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        exc.filename = _authority(host, port)
        raise
    sock.set_inheritable(True)
    return sock
