"""kombu's Redis transport with one redis-py client object per channel.

kombu (``Channel.conn_or_acquire``) builds a new ``redis.Redis`` for every publish, ack, event and
QoS update. Each construction copies redis-py's ~170 response callbacks into a case-insensitive
dict (redis/redis-py#3624): tens of microseconds, several times per task, in the producer and in
the worker's main process. A client is only a thin wrapper around the channel's connection pool
(which does the real connection handling, per command, thread-safely), so reusing one is
equivalent. Selected with the Celery setting ``broker_transport``; URLs stay ``redis://``.
"""

from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        shared = self._shared_client
        # The pool is replaced after a connection error: follow it.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
