"""Workers and queues, as `netjobs workers` and `netjobs queues` show them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from netjobs.api import auth
from netjobs.api.deps import celery, plain
from netjobs.services.tokens import TokenUser

router = APIRouter(tags=["workers and queues"])

TIMEOUT = Query(2.0, ge=0.1, le=10, description="seconds to wait for workers to answer")


@router.get("/workers", summary="Workers that answer, with their queues and what they run")
def workers(timeout: float = TIMEOUT, user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.services.health import workers_answering

    return plain(list(workers_answering(celery(), timeout).values()))


@router.get("/queues", summary="Length and consumers of every configured queue")
def queues(timeout: float = TIMEOUT, user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.config import get_settings
    from netjobs.services.health import queue_consumers, queue_lengths, redis_client

    names = get_settings().queues
    client = redis_client()
    try:
        lengths = queue_lengths(client, names)
    finally:
        client.close()
    consumers = queue_consumers(celery(), timeout)
    return [{"queue": q, "length": int(lengths.get(q) or 0), "consumers": sorted(consumers.get(q) or [])}
            for q in names]
