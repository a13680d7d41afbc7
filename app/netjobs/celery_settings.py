"""Celery settings derived from netjobs Settings (a pure function, no side effects)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from netjobs.config import Settings
from netjobs.queues import DEFAULT_PRIORITY, PRIORITY_STEPS, QueueTimeLimits, declare_queues, route_task
from netjobs.redis_clients import SentinelURL, sentinel_kwargs, tls_options
from netjobs.schedule import default_schedule


def without_credentials(url: str) -> tuple[str, dict]:
    """``url`` without user and password, and those as redis-py keyword arguments."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    credentials = {k: unquote(v) for k, v in (("username", parts.username), ("password", parts.password)) if v}
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host)), credentials


def tls_settings(s: Settings) -> dict:
    """Verified TLS for each of Celery's, kombu's and RedBeat's Redis connections that uses rediss://,
    or sentinel:// with a CA set (then the servers the Sentinels name are reached over TLS too)."""
    options = tls_options(s)
    settings = {}
    for key, url in (("broker_use_ssl", s.broker_url), ("redis_backend_use_ssl", s.result_backend_url),
                     ("redbeat_redis_use_ssl", s.redbeat_url)):
        if url.startswith("rediss://") or (options and url.startswith("sentinel://")):
            settings[key] = dict(options)
    return settings


def sentinel_settings(s: Settings, transport: dict) -> dict:
    """Redis Sentinel for each connection whose URL is sentinel:// (kombu, Celery's results, RedBeat)."""
    settings = {}
    for key, url, extra in (("broker_transport_options", s.broker_url, {"priority_steps": list(PRIORITY_STEPS)}),
                            ("result_backend_transport_options", s.result_backend_url, {})):
        if url.startswith("sentinel://"):
            parsed = SentinelURL.parse(url)
            settings[key] = {**transport, **extra, "master_name": s.redis_sentinel_master,
                             "sentinel_kwargs": sentinel_kwargs(s, parsed)}
    if s.redbeat_url.startswith("sentinel://"):
        parsed = SentinelURL.parse(s.redbeat_url)
        settings["redbeat_redis_url"] = "redis-sentinel://"
        settings["redbeat_redis_options"] = {
            "sentinels": parsed.nodes, "service_name": s.redis_sentinel_master, "db": parsed.db,
            "socket_timeout": 10, **parsed.credentials, "sentinel_kwargs": sentinel_kwargs(s, parsed)}
    return settings


def celery_settings(s: Settings) -> dict:
    redbeat_url, redbeat_credentials = without_credentials(s.redbeat_url)
    transport = {
        # kombu#337: must exceed the longest hard time limit, or long tasks run twice.
        "visibility_timeout": s.visibility_timeout,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": s.broker_url,
        # Same Redis protocol, fewer round trips per task (see the modules; bench/README.md). Not for
        # Flower (NETJOBS_BROKER_TRANSPORT=kombu): its Broker page reads queues only through a URI
        # whose scheme is redis, which kombu gives for its own transport only.
        **({} if s.broker_url.startswith("sentinel://") or s.broker_transport == "kombu"
           else {"broker_transport": "netjobs.redis_transport:Transport"}),
        "result_backend": s.result_backend_url,
        # Celery's loader maps redis:// result URLs to this class (see netjobs.redis_backend).
        "override_backends": {**{scheme: "netjobs.redis_backend:RedisBackend" for scheme in ("redis", "rediss")},
                              "sentinel": "netjobs.redis_backend:SentinelBackend"},
        "broker_transport_options": {**transport, "priority_steps": list(PRIORITY_STEPS)},
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_heartbeat": 0,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "timezone": s.timezone,
        "enable_utc": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_soft_time_limit": s.task_soft_time_limit,
        "task_time_limit": s.task_time_limit,
        "task_annotations": (QueueTimeLimits(s),),
        "result_expires": s.result_expires,
        "result_extended": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        # job_runs records every publish; a task-sent event per task would double the producer's cost.
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts_level": s.log_level,
        "task_queues": declare_queues(s),
        "task_default_queue": "default",
        "task_default_priority": DEFAULT_PRIORITY,
        "task_default_exchange": "default",
        "task_default_routing_key": "default",
        "task_routes": (route_task,),
        "task_create_missing_queues": False,
        "beat_scheduler": "netjobs.beat:Scheduler",
        "beat_max_loop_interval": s.beat_max_interval,
        "beat_schedule": default_schedule(s),
        # The credentials go into the options, whose "password" Celery masks wherever it shows its
        # configuration (`celery inspect conf`, Flower); a URL under this key it would show in clear.
        "redbeat_redis_url": redbeat_url,
        "redbeat_key_prefix": s.redbeat_key_prefix,
        # Explicit, or RedBeat falls back to the broker's transport options and logs a warning.
        "redbeat_redis_options": {"socket_keepalive": True, "health_check_interval": 25, **redbeat_credentials},
        # Only one beat may act: its lock must outlive the longest sleep between ticks.
        "redbeat_lock_timeout": s.redbeat_lock_timeout,
        "redbeat_lock_key": f"{s.redbeat_key_prefix}lock",
        **tls_settings(s),
        **sentinel_settings(s, transport),
    }

