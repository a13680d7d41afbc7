"""Small pieces the routers share: the Celery app, JSON-ready values, acting as the token's user."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from netjobs.services.tokens import TokenUser


def celery():
    """The Celery app, imported on first use (it reads the settings; it connects to nothing yet)."""
    from netjobs.celery_app import app

    return app


def plain(value):
    from netjobs.cli.common import plain as to_plain

    return to_plain(value)


@contextmanager
def acting(user: TokenUser) -> Iterator[None]:
    """Jobs submitted and changes made inside are recorded as ``api:USER`` (netjobs.actor)."""
    from netjobs.actor import acting_as

    with acting_as(user.actor):
        yield


def page(items: list, limit: int, offset: int) -> dict:
    """``items`` holds up to offset + limit + 1 rows, newest first: one page of them."""
    window = items[offset:offset + limit]
    more = len(items) > offset + limit
    return {"items": plain(window), "limit": limit, "offset": offset, "next_offset": offset + limit if more else None}


def checked_task(app, task_name: str, kwargs: dict, queue: str | None):
    """The task a request names, after the CLI's checks of its kwargs and queue, each failure a
    422 naming its body field. Used by job submission and schedule creation alike."""
    from netjobs.api.errors import invalid
    from netjobs.services.jobs import check_queue, check_task_kwargs, resolve_task

    with invalid("body.task"):
        task = resolve_task(app, task_name)
    with invalid("body.kwargs"):
        check_task_kwargs(task, kwargs)
    with invalid("body.queue"):
        check_queue(queue)
    return task
