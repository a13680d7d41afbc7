"""What the receiver saw: counters in this process, pushed to Redis for the exporter, and log lines
that say each kind of dropped message at most once per interval."""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("netjobs.syslog")

REDIS_KEY = "netjobs:metrics:syslog"  # field -> count since the first receiver started (HINCRBY)
LOG_INTERVAL = 60.0


class Counters:
    def __init__(self):
        self.totals: Counter[str] = Counter()
        self._unpushed: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def count(self, name: str, amount: int = 1) -> None:
        self.totals[name] += amount
        self._unpushed[name] += amount

    def drop(self, name: str, detail: str) -> None:
        """Count a dropped message and log it, rate-limited per kind."""
        self.count(name)
        now = time.monotonic()
        if now - self._last_logged.get(name, -LOG_INTERVAL) < LOG_INTERVAL:
            self._suppressed[name] += 1
            return
        self._last_logged[name] = now
        more = self._suppressed.pop(name, 0)
        log.warning("dropped (%s): %s%s", name, detail,
                    f" (and {more} more since the last such line)" if more else "")

    def take_unpushed(self) -> Counter[str]:
        unpushed, self._unpushed = self._unpushed, Counter()
        return unpushed

    def give_back(self, unpushed: Counter[str]) -> None:
        self._unpushed.update(unpushed)


def push(client, counts: Counter[str]) -> None:
    """Add ``counts`` to the Redis hash (blocking: run it in a thread)."""
    if not counts:
        return
    with client.pipeline(transaction=False) as pipe:
        for name, amount in counts.items():
            pipe.hincrby(REDIS_KEY, name, amount)
        pipe.execute()
