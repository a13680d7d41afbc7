"""Every Redis connection netjobs opens itself (not Celery's, kombu's or RedBeat's) is made here, so
the URL forms and TLS apply to all of them alike; :func:`tls_options` gives Celery, kombu and
RedBeat the same TLS settings (netjobs.celery_settings)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from netjobs.config import Settings, get_settings


@dataclass(frozen=True)
class SentinelURL:
    """A ``sentinel://...;sentinel://...`` URL taken apart. The credentials are those of the Redis
    ACL user, which the Sentinels also require (the redis role creates it on both)."""

    nodes: list[tuple[str, int]]
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> "SentinelURL":
        parts = [urlsplit(node.strip()) for node in url.split(";") if node.strip()]
        first = parts[0]
        return cls(nodes=[(p.hostname, p.port or 26379) for p in parts],
                   db=int(first.path.strip("/") or 0),
                   username=unquote(first.username) if first.username else None,
                   password=unquote(first.password) if first.password else None)

    @property
    def credentials(self) -> dict:
        return {k: v for k, v in (("username", self.username), ("password", self.password)) if v}


def tls_options(settings: Settings) -> dict:
    """redis-py's keyword arguments for verified TLS (empty when no Redis URL uses rediss://)."""
    if not settings.redis_tls_ca_file:
        return {}
    options = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": settings.redis_tls_ca_file,
               "ssl_check_hostname": True}
    if settings.redis_tls_cert_file:
        options.update(ssl_certfile=settings.redis_tls_cert_file, ssl_keyfile=settings.redis_tls_key_file)
    return options


def sentinel_kwargs(settings: Settings, parsed: SentinelURL) -> dict:
    """redis-py's keyword arguments for the connections to the Sentinels themselves: the ACL user's
    credentials and, with a CA set, verified TLS (Sentinels and servers then all serve TLS)."""
    options = tls_options(settings)
    return {**parsed.credentials, **({"ssl": True, **options} if options else {})}


def redis_py_url(url: str) -> str:
    """kombu's ``redis+socket://PATH?virtual_host=N`` as redis-py's ``unix://PATH?db=N``."""
    if not url.startswith("redis+socket://"):
        return url
    path, _, query = url[len("redis+socket://"):].partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    db = params.pop("virtual_host", None) or params.pop("db", None)
    return f"unix://{path}" + (f"?db={db}" if db else "")


def redis_from_url(url: str | None = None, settings: Settings | None = None, **kwargs):
    """A redis-py client for ``url`` (default: the broker) with netjobs' TLS settings."""
    import redis

    settings = settings or get_settings()
    url = url or settings.broker_url
    if url.startswith("sentinel://"):
        from redis.sentinel import Sentinel

        parsed = SentinelURL.parse(url)
        timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
        sentinel = Sentinel(parsed.nodes, sentinel_kwargs={**timeouts, **sentinel_kwargs(settings, parsed)})
        tls = {"ssl": True, **tls_options(settings)} if settings.redis_tls_ca_file else {}
        return sentinel.master_for(settings.redis_sentinel_master, db=parsed.db, **parsed.credentials, **tls,
                                   **kwargs)
    if url.startswith("rediss://"):
        kwargs = {**tls_options(settings), **kwargs}
    return redis.Redis.from_url(redis_py_url(url), **kwargs)
