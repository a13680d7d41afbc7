"""Who is acting: the person or schedule behind a job or a change, for job history and the audit log.

Actors are ``cli:USER`` (the person who ran `netjobs`, also behind sudo or runuser), ``api:USER``
(the owner of an API token) and ``beat:SCHEDULE``. A job carries its actor in a message header,
set at publish time; tasks a job publishes (a fan-out's members, a chord's callback) inherit it.
"""

from __future__ import annotations

import getpass
import os
import pwd
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from celery import signals

HEADER = "netjobs_submitted_by"
_UNSET_LOGINUID = 4294967295
_actor: ContextVar[str | None] = ContextVar("netjobs_actor", default=None)


def login_user() -> str:
    """The person at the keyboard: sudo's caller, else the user the session logged in as (the
    kernel keeps it across su and runuser), else this process's user."""
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != "root":
        return sudo_user
    try:
        uid = int(open("/proc/self/loginuid").read().strip())
        if uid != _UNSET_LOGINUID:
            return pwd.getpwuid(uid).pw_name
    except (OSError, ValueError, KeyError):
        pass
    return sudo_user or getpass.getuser()


def cli_actor() -> str:
    return f"cli:{login_user()}"


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str | None:
    """The actor set with :func:`acting_as`, else the one of the task running in this thread."""
    actor = _actor.get()
    if actor:
        return actor
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    return getattr(request, HEADER, None) if request is not None else None


@signals.before_task_publish.connect
def _stamp_actor(headers=None, **_):
    if headers is not None and not headers.get(HEADER):
        actor = current_actor()
        if actor:
            headers[HEADER] = actor
