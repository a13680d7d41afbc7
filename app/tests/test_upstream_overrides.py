"""The upstream internals netjobs builds on, pinned.

netjobs.redis_backend and netjobs.redis_transport override or call private methods of Celery and
kombu for a measured gain (bench/README.md, "Private methods"), and netjobs.devsim tunes a private
attribute of paramiko. requirements.lock pins those packages to exact versions; these tests fail
when the installed version or the source of one of those methods differs from what the overrides
were written against, so that an upgrade forces a review instead of a silent change of behaviour.
After reviewing an upstream change, update the digest here and the version in the lock together.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from importlib.metadata import version
from pathlib import Path

import paramiko.transport
import pytest
from celery.backends import redis as celery_redis
from kombu.transport import redis as kombu_redis

from netjobs import redis_backend, redis_transport
from netjobs.devsim import server as devsim_server

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"

# (what netjobs relies on, the upstream object, sha256 of its source, first 16 hex digits)
UPSTREAM = [
    ("redis_backend.RedisBackend._store_result replaces it",
     celery_redis.RedisBackend._store_result, "c0214af4c66e2999"),
    ("redis_backend.RedisBackend._store_result calls it",
     celery_redis.RedisBackend._get_result_meta, "11e2894927939e70"),
    ("redis_backend.RedisBackend.on_task_call replaces it",
     celery_redis.RedisBackend.on_task_call, "e05185cfafbadc38"),
    ("redis_transport.Channel.conn_or_acquire replaces it",
     kombu_redis.Channel.conn_or_acquire, "25883caca6c4121e"),
    ("redis_transport.Channel.conn_or_acquire calls it",
     kombu_redis.Channel._create_client, "dae92bc4075dafb9"),
]


def _digest(obj) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


@pytest.mark.parametrize("package", ["celery", "kombu", "paramiko"])
def test_the_installed_version_is_the_one_the_lock_pins(package):
    pinned = re.search(rf"^{package}==(\S+)", LOCK.read_text(), re.MULTILINE)
    assert pinned, f"requirements.lock does not pin {package} to an exact version"
    assert version(package) == pinned.group(1)


@pytest.mark.parametrize("what, upstream, digest", UPSTREAM, ids=[u[1].__qualname__ for u in UPSTREAM])
def test_the_upstream_method_is_the_one_the_override_was_written_against(what, upstream, digest):
    assert _digest(upstream) == digest, (
        f"{upstream.__module__}.{upstream.__qualname__} changed upstream ({what}): review netjobs' code "
        f"against the new source, then update the digest here")


def test_the_overrides_are_where_the_digests_say():
    # The subclasses still override what the digests above cover (a rename would skip the review).
    assert "_store_result" in vars(redis_backend.RedisBackend)
    assert "on_task_call" in vars(redis_backend.RedisBackend)
    assert "conn_or_acquire" in vars(redis_transport.Channel)
    assert celery_redis.RedisBackend._MAX_STR_VALUE_SIZE == 512 * 1024 * 1024


def test_paramiko_reads_the_attribute_the_simulator_tunes():
    source = inspect.getsource(paramiko.transport.Transport.__init__)
    assert "self.sock.settimeout(self._active_check_timeout)" in source
    assert paramiko.transport.Transport._active_check_timeout == 0.1
    assert devsim_server._Transport._active_check_timeout == 1.0
