"""The HTTP side: /metrics (prometheus-client's WSGI app) behind optional basic auth, one thread per request."""

from __future__ import annotations

import socket
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from netjobs.exporter.auth import BasicAuth


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature is wsgiref's
        pass  # Prometheus scrapes every few seconds: no access log on stderr


def application(registry, auth: BasicAuth | None):
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        if auth is not None and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                 ("WWW-Authenticate", 'Basic realm="netjobs-exporter"')])
            return [b"authentication required\n"]
        if environ.get("PATH_INFO") == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"netjobs-exporter: the metrics are at /metrics\n"]

    return app


def serve(registry, host: str, port: int, auth: BasicAuth | None) -> None:
    server_class = _IPv6Server if ":" in host else _Server
    with make_server(host, port, application(registry, auth), server_class, _QuietHandler) as server:
        server.serve_forever()
