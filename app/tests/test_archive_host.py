"""Each backup host checks that it can write the config archive; doctor names the hosts that cannot."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.support.cli import run_netjobs
from tests.support.devices import add_device_row
from tests.support.servers import celery_worker, redis_server
from tests.test_archive import archive_content

CHECK = "config archive writable from backup hosts"


def archive_check(env) -> dict:
    result = run_netjobs("doctor", "--json", "--timeout", "1", env=env)
    return next(c for c in result.json()["checks"] if c["name"] == CHECK)


def read_only_database(url: str) -> str:
    """The same database, in sessions that refuse every write (as on a hot standby)."""
    return url + ("&" if "?" in url else "?") + "options=-c%20default_transaction_read_only%3Don"


@pytest.mark.slow
def test_doctor_names_each_backup_host_that_cannot_write_the_archive(db, netjobs_env, tmp_path):
    not_a_directory = tmp_path / "host-b-state"
    not_a_directory.write_text("a file where the state directory should be\n")
    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url}
        hosts = {
            "backup@host-a": {**env, "NETJOBS_BACKUP_REPO": str(tmp_path / "host-a" / "config-backups")},
            "backup@host-b": {**env, "NETJOBS_BACKUP_REPO": str(not_a_directory / "config-backups")},
            "backup@host-c": {**env, "NETJOBS_BACKUP_REPO": str(tmp_path / "host-c" / "config-backups"),
                              "NETJOBS_DATABASE_URL": read_only_database(env["NETJOBS_DATABASE_URL"])},
        }
        with celery_worker(hosts["backup@host-a"], queues="backup", pool="threads", concurrency=1,
                           hostname="backup@host-a"):
            healthy = archive_check(env)
            with celery_worker(hosts["backup@host-b"], queues="backup", pool="threads", concurrency=1,
                               hostname="backup@host-b"), \
                    celery_worker(hosts["backup@host-c"], queues="backup", pool="threads", concurrency=1,
                                  hostname="backup@host-c"):
                broken = archive_check(env)
            # A backup worker with no fresh answer fails the check too.
            import redis

            redis.Redis.from_url(own_redis.url).delete("netjobs:archive-probe:backup@host-a")
            silent = archive_check(env)

    assert healthy["ok"], healthy
    assert "backup@host-a" in healthy["detail"]
    assert not broken["ok"], broken
    detail = broken["detail"]
    assert "backup@host-a" not in detail  # the healthy host is not blamed
    assert f"backup@host-b: git view {not_a_directory / 'config-backups'} is not writable" in detail
    assert "backup@host-c: this host's database sessions are read-only" in detail
    assert not silent["ok"] and "backup@host-a sent no answer" in silent["detail"], silent


@pytest.mark.slow
def test_a_backup_worker_keeps_its_hosts_git_view_current(db, netjobs_env, tmp_path):
    add_device_row(db, name="edge-9", platform="cisco_ios")
    archive_content(db, "edge-9", "hostname edge-9\n", age_minutes=5, task_id="t-edge-9")
    repo = tmp_path / "host-a" / "config-backups"
    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_BACKUP_REPO": str(repo)}
        with celery_worker(env, queues="backup", pool="threads", concurrency=1, hostname="backup@host-a") as w:
            wait_until(lambda: (repo / "edge-9.cfg").is_file(), timeout=30,
                       message=f"the worker to export to its git view; log:\n{w.log()[-2000:]}")
    assert (repo / "edge-9.cfg").read_text() == "hostname edge-9\n"
