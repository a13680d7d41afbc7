"""SSH host keys: a backup logs in only to a device presenting the trusted key (real SSH to
simulated devices, real PostgreSQL, and a real worker for the dead letters).

The session's services run with NETJOBS_SSH_HOST_KEY_POLICY=trust-on-first-use (see service_env);
every test here names its policy.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import paramiko
import pytest
from sqlalchemy import text

from netjobs.errors import PermanentError, is_transient
from netjobs.services.backup import backup_device
from tests.conftest import wait_until
from tests.support.cli import assert_one_error_line, invoke
from tests.support.devices import add_device_row, sim_lab  # noqa: F401 - fixture
from tests.support.servers import celery_worker, free_port, redis_server


def ssh_fingerprint(key: paramiko.PKey) -> str:
    """What `ssh-keygen -l` prints for a key, computed here independently of netjobs."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def with_policy(policy: str):
    from netjobs.config import get_settings

    return replace(get_settings(), ssh_host_key_policy=policy)


def stored_keys(engine, device_id: int) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT key_type, public_key, fingerprint, trusted_by, trusted_at "
                                 "FROM device_host_keys WHERE device_id = :d"), {"d": device_id}).all()


def snapshot_count(engine, device_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM config_snapshots WHERE device_id = :d"),
                            {"d": device_id}).scalar_one()


def dead_letter(engine, task_id: str):
    def row():
        with engine.connect() as conn:
            return conn.execute(text("SELECT error, retries, args FROM dead_letters WHERE task_id = :t"),
                                {"t": task_id}).first()

    return wait_until(row, 30, message="dead letter")


@pytest.fixture(scope="module")
def strict_app(netjobs_env):
    """A producer for a worker of its own (own Redis) that runs with the strict policy."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings

    with redis_server() as own_redis:
        env = {**netjobs_env, "NETJOBS_BROKER_URL": own_redis.url, "NETJOBS_SSH_HOST_KEY_POLICY": "strict"}
        app = Celery("hostkeys-test-client")
        app.conf.update(celery_settings(load_settings(env)))
        with celery_worker(env, queues="backup", concurrency=1, hostname="strict-hostkeys@localhost"):
            yield app
        app.close()


STRICT, TOFU = "strict", "trust-on-first-use"


@pytest.fixture
def db(db):
    """conftest's `db`, leaving no archived configuration behind: it does not empty config_contents,
    and other modules count its rows."""
    yield db
    with db.begin() as conn:
        conn.execute(text("TRUNCATE config_contents, config_snapshots CASCADE"))


def test_strict_first_contact_is_refused_with_the_presented_fingerprint(db, sim_lab, strict_app):
    device = sim_lab.device("cisco_ios")
    device_id = add_device_row(db, device)
    presented = ssh_fingerprint(sim_lab.fleet.host_key)

    with pytest.raises(PermanentError) as caught:
        backup_device(device.name, task_id="t-first", settings=with_policy(STRICT))
    message = str(caught.value)
    assert presented in message and f"netjobs devices trust {device.name}" in message, message
    assert not is_transient(caught.value)
    assert stored_keys(db, device_id) == [] and snapshot_count(db, device_id) == 0

    result = strict_app.send_task("netjobs.backup.device", args=[device.name])
    with pytest.raises(Exception, match="no trusted SSH host key"):
        result.get(timeout=60)
    letter = dead_letter(db, result.id)
    assert presented in letter.error and f"netjobs devices trust {device.name}" in letter.error
    assert letter.retries == 0 and letter.args == [device.name]  # permanent: not retried
    assert stored_keys(db, device_id) == [] and snapshot_count(db, device_id) == 0


def test_trust_then_a_strict_backup_works(db, sim_lab, monkeypatch):
    monkeypatch.setenv("SUDO_USER", "alice")  # `sudo netjobs devices trust ...`
    user = "alice"
    device = sim_lab.device("arista_eos")
    device_id = add_device_row(db, device)
    key = sim_lab.fleet.host_key
    presented = ssh_fingerprint(key)

    trusted = invoke("devices", "trust", device.name)
    assert trusted.exit_code == 0, trusted.stderr
    assert presented in trusted.stderr and "stored" in trusted.stderr
    rows = stored_keys(db, device_id)
    assert [(r.key_type, r.public_key, r.fingerprint, r.trusted_by) for r in rows] == \
        [(key.get_name(), key.get_base64(), presented, user)]

    assert backup_device(device.name, task_id="t-1", settings=with_policy(STRICT)).status == "changed"
    assert snapshot_count(db, device_id) == 1

    again = invoke("devices", "trust", device.name, "--json")
    assert again.exit_code == 0 and again.json()["action"] == "already trusted"
    assert stored_keys(db, device_id) == rows  # not even trusted_at moved
    listing = invoke("devices", "hostkeys", "--json")
    assert listing.exit_code == 0
    assert [(r["device"], r["fingerprint"], r["trusted_by"]) for r in listing.json()] == [(device.name, presented, user)]
    table = invoke("devices", "hostkeys")
    assert table.exit_code == 0 and presented in table.stdout and "1 of 1 devices" in table.stdout


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_fingerprints_are_the_ones_ssh_keygen_shows(tmp_path):
    from netjobs.services.hostkeys import fingerprint

    key = paramiko.ECDSAKey.generate()
    (tmp_path / "key.pub").write_text(f"{key.get_name()} {key.get_base64()}\n")
    shown = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "key.pub")],
                           capture_output=True, text=True, check=True).stdout
    assert fingerprint(key) == ssh_fingerprint(key) and shown.split()[1] == fingerprint(key)


def test_trust_on_first_use_stores_the_key_once(db, sim_lab):
    device = sim_lab.device("juniper_junos")
    device_id = add_device_row(db, device)
    presented = ssh_fingerprint(sim_lab.fleet.host_key)

    backup_device(device.name, task_id="t-1", settings=with_policy(TOFU))
    first = stored_keys(db, device_id)
    assert [(r.fingerprint, r.trusted_by) for r in first] == [(presented, TOFU)]
    backup_device(device.name, task_id="t-2", settings=with_policy(TOFU))
    assert stored_keys(db, device_id) == first  # same row, same trusted_at
    backup_device(device.name, task_id="t-3", settings=with_policy(STRICT))  # trusted now, for either policy
    assert snapshot_count(db, device_id) == 3


def test_a_changed_key_is_refused_until_trust_replace(db, sim_lab, strict_app):
    device = sim_lab.device("cisco_ios")
    device_id = add_device_row(db, device)
    old = ssh_fingerprint(sim_lab.fleet.host_key)
    assert invoke("devices", "trust", device.name).exit_code == 0
    backup_device(device.name, task_id="t-before", settings=with_policy(STRICT))

    device.spec.host_key = paramiko.ECDSAKey.generate()  # the device was swapped (or someone is in the path)
    new = ssh_fingerprint(device.spec.host_key)
    for policy in (STRICT, TOFU):
        with pytest.raises(PermanentError) as caught:
            backup_device(device.name, task_id=f"t-{policy}", settings=with_policy(policy))
        message = str(caught.value)
        assert old in message and new in message and f"netjobs devices trust {device.name} --replace" in message
        assert not is_transient(caught.value)
    assert snapshot_count(db, device_id) == 1

    result = strict_app.send_task("netjobs.backup.device", args=[device.name])
    with pytest.raises(Exception, match="host key changed"):
        result.get(timeout=60)
    letter = dead_letter(db, result.id)
    assert old in letter.error and new in letter.error and letter.retries == 0

    refused = invoke("devices", "trust", device.name)
    assert_one_error_line(refused, 1, old, new, "--replace")
    assert [r.fingerprint for r in stored_keys(db, device_id)] == [old]

    replaced = invoke("devices", "trust", device.name, "--replace")
    assert replaced.exit_code == 0, replaced.stderr
    assert old in replaced.stderr and new in replaced.stderr and "replaced" in replaced.stderr
    assert [r.fingerprint for r in stored_keys(db, device_id)] == [new]
    backup_device(device.name, task_id="t-after", settings=with_policy(STRICT))
    assert snapshot_count(db, device_id) == 2

    # Another key type counts as a change too (paramiko asks for the trusted type first).
    device.spec.host_key = paramiko.ECDSAKey.generate(bits=384)
    with pytest.raises(PermanentError, match="host key changed") as caught:
        backup_device(device.name, task_id="t-other-type", settings=with_policy(STRICT))
    assert new in str(caught.value) and ssh_fingerprint(device.spec.host_key) in str(caught.value)


def test_concurrent_first_contacts_store_one_key(db, sim_lab):
    device = sim_lab.device("linux")
    device_id = add_device_row(db, device)
    start = threading.Barrier(6)

    def backup(index: int):
        start.wait()
        return backup_device(device.name, task_id=f"t-{index}", settings=with_policy(TOFU)).status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(backup, range(6)))
    assert len(statuses) == 6 and set(statuses) <= {"changed", "unchanged"}  # every one got through
    assert [r.fingerprint for r in stored_keys(db, device_id)] == [ssh_fingerprint(sim_lab.fleet.host_key)]


@dataclass(frozen=True)
class Route:
    """One device (one id) reached at another address: what a man in the middle looks like."""

    id: int
    name: str
    host: str
    port: int


def test_concurrent_first_contacts_seeing_different_keys_store_only_one(db, sim_lab):
    from netjobs.services.hostkeys import HostKeyChangedError, first_contact

    real = sim_lab.device("cisco_ios")
    fake = sim_lab.device("cisco_ios")
    fake.spec.host_key = paramiko.ECDSAKey.generate()
    device_id = add_device_row(db, real)
    routes = [Route(device_id, real.name, "127.0.0.1", real.port), Route(device_id, real.name, "127.0.0.1", fake.port)]
    fingerprints = {ssh_fingerprint(sim_lab.fleet.host_key), ssh_fingerprint(fake.spec.host_key)}

    for _ in range(5):
        with db.begin() as conn:
            conn.execute(text("DELETE FROM device_host_keys WHERE device_id = :d"), {"d": device_id})
        start = threading.Barrier(len(routes))

        def contact(route):
            start.wait()
            try:
                return first_contact(route, TOFU, 5.0).fingerprint
            except HostKeyChangedError as exc:
                return exc

        with ThreadPoolExecutor(len(routes)) as pool:
            outcomes = list(pool.map(contact, routes))
        stored = [r.fingerprint for r in stored_keys(db, device_id)]
        assert len(stored) == 1 and stored[0] in fingerprints
        winners = [o for o in outcomes if isinstance(o, str)]
        losers = [o for o in outcomes if isinstance(o, HostKeyChangedError)]
        assert winners == stored and len(losers) == 1
        assert losers[0].trusted.fingerprint == stored[0] and losers[0].presented.fingerprint != stored[0]


def test_trust_names_unknown_and_unreachable_devices(db):
    assert_one_error_line(invoke("devices", "trust", "ghost"), 2, "unknown device 'ghost'")
    add_device_row(db, name="nobody-home", port=free_port())
    assert_one_error_line(invoke("devices", "trust", "nobody-home"), 1, "cannot reach device nobody-home",
                          "cannot connect")


def test_known_hosts_entries_use_the_name_paramiko_looks_up():
    from netjobs.services.hostkeys import known_hosts_name

    assert known_hosts_name("10.0.0.1", 22) == "10.0.0.1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert known_hosts_name("2001:db8::1", 830) == "[2001:db8::1]:830"
