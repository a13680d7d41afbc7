"""``python -m netjobs.syslog``: the syslog receiver (see netjobs.syslog)."""

from __future__ import annotations

import asyncio
import logging
import sys


def main() -> int:
    from netjobs.config import ConfigError, get_settings
    from netjobs.syslog.server import serve
    from netjobs.syslog.sockets import SocketError

    try:
        settings = get_settings()
    except ConfigError as exc:
        print(f"netjobs-syslog: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except SocketError as exc:
        print(f"netjobs-syslog: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
