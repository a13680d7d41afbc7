"""netjobs-exporter: Prometheus metrics of queues, workers, beat, task outcomes and the network jobs.

Run as ``netjobs-exporter`` (or ``python -m netjobs.exporter``) with /etc/netjobs/netjobs.env loaded;
it serves /metrics on NETJOBS_EXPORTER_LISTEN (loopback by default), with basic auth when
NETJOBS_EXPORTER_BASIC_AUTH_FILE is set. What each metric means: the HELP lines, and
docs/deploy.md "Metrics and alerts".
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import CollectorRegistry

    from netjobs.config import ConfigError, get_settings
    from netjobs.exporter.auth import BasicAuth, load_users
    from netjobs.exporter.collector import NetjobsCollector
    from netjobs.exporter.server import serve

    try:
        settings = get_settings()
        auth = BasicAuth(load_users(settings.exporter_basic_auth_file)) if settings.exporter_basic_auth_file else None
    except ConfigError as exc:
        print(f"netjobs-exporter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    registry = CollectorRegistry()
    registry.register(NetjobsCollector(settings))
    host, port = settings.exporter_listen
    logging.getLogger(__name__).info("netjobs-exporter: serving /metrics on %s:%d%s", host, port,
                                     " with basic auth" if auth else "")
    try:
        serve(registry, host, port, auth)
    except OSError as exc:
        print(f"netjobs-exporter: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
