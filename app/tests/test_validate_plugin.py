"""The cross-host rules of playbooks/action_plugins/netjobs_validate.py, without Ansible running."""

from __future__ import annotations

import copy
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "playbooks" / "action_plugins" / "netjobs_validate.py"
_spec = importlib.util.spec_from_file_location("netjobs_validate", PLUGIN)
nv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nv)

GROUPS = {
    "redis": ["data"],
    "postgresql": ["data"],
    "netjobs_workers": ["w1", "w2"],
    "netjobs_beat": ["w1", "w2"],
    "netjobs_flower": ["w1"],
}
WHEELS = [
    "celery-5.7.0-py3-none-any.whl",
    "psycopg2_binary-2.9.13-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "psycopg2_binary-2.9.13-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl",
]


def app_values(**overrides):
    values = {
        "netjobs_app_redis_host": "10.0.0.11",
        "netjobs_app_redis_port": 6379,
        "netjobs_app_redis_username": "netjobs",
        "netjobs_app_database_host": "10.0.0.11",
        "netjobs_app_database_port": 5432,
        "netjobs_app_database_name": "netjobs",
        "netjobs_app_database_username": "netjobs",
        "netjobs_app_extra_queues": [],
        "netjobs_app_wheelhouse_archive": "/build/wheelhouse.tar",
        "netjobs_app_python": "/usr/bin/python3",
        "netjobs_processes_workers": [
            {"name": "default", "queues": ["default", "network"]},
            {"name": "backup", "queues": ["backup", "heavy"]},
        ],
        "netjobs_processes_flower_address": "127.0.0.1",
        "netjobs_processes_flower_management_address": "",
    }
    values.update(overrides)
    return values


def valid_views():
    python = {"version": "3.11", "machine": "x86_64", "glibc": "2.36"}
    return {
        "data": {
            "address": "10.0.0.11",
            "values": {
                "redis_port": 6379,
                "redis_bind": ["127.0.0.1", "-::1", "10.0.0.11"],
                "redis_app_user": "netjobs",
                "postgresql_port": 5432,
                "postgresql_listen_addresses": ["localhost", "10.0.0.11"],
                "postgresql_hba_clients": ["10.0.0.12/32", "10.0.0.13/32"],
                "postgresql_netjobs_db": "netjobs",
                "postgresql_netjobs_user": "netjobs",
            },
        },
        "w1": {"address": "10.0.0.12", "values": app_values(), "python": dict(python)},
        "w2": {"address": "10.0.0.13", "values": app_values(), "python": dict(python)},
    }


SECRETS = {
    ("data", "redis_app_password"): "app-secret-123",
    ("data", "postgresql_netjobs_password"): "db-secret-1234",
    ("w1", "netjobs_app_redis_password"): "app-secret-123",
    ("w1", "netjobs_app_database_password"): "db-secret-1234",
    ("w2", "netjobs_app_redis_password"): "app-secret-123",
    ("w2", "netjobs_app_database_password"): "db-secret-1234",
}


def run(views=None, groups=None, secrets=None, wheels=None):
    secrets = dict(SECRETS if secrets is None else secrets)

    def secret(host, name):
        value = secrets.get((host, name))
        if isinstance(value, LookupError):
            raise value
        return value

    return nv.report(
        valid_views() if views is None else views,
        GROUPS if groups is None else groups,
        secret,
        names_of=lambda archive: WHEELS if wheels is None else wheels,
    )


def test_a_valid_inventory_has_no_problem():
    assert run() == []


def test_all_in_one_hosts_on_loopback_are_valid():
    views = {"aio": valid_views()["data"]}
    views["aio"]["values"].update(
        app_values(netjobs_app_redis_host="127.0.0.1", netjobs_app_database_host="127.0.0.1")
    )
    views["aio"]["python"] = {"version": "3.11", "machine": "x86_64", "glibc": "2.36"}
    groups = {name: ["aio"] for name in GROUPS}
    secrets = {("aio", name): value for (_, name), value in SECRETS.items()}
    assert run(views, groups, secrets) == []


def test_role_failures_come_first_with_the_host():
    views = valid_views()
    views["w2"]["role_failures"] = ["netjobs_processes_workers: worker group default: concurrency must be at least 1, got 0"]
    problems = run(views)
    assert problems[0] == "w2: netjobs_processes_workers: worker group default: concurrency must be at least 1, got 0"
    # Its workers are unknown now: no queue is reported as unconsumed because of it.
    assert not any("consumes queue" in p for p in problems)


def test_empty_groups_are_named():
    groups = dict(GROUPS, netjobs_beat=[])
    assert "inventory: group netjobs_beat has no host: no schedule would ever fire" in run(groups=groups)


def test_a_queue_nobody_consumes():
    views = valid_views()
    for host in ("w1", "w2"):
        views[host]["values"]["netjobs_processes_workers"] = [{"name": "default", "queues": ["default", "network", "backup"]}]
    problems = run(views)
    assert problems == [
        "netjobs_workers: no worker group consumes queue 'heavy' (netjobs_processes_workers on w1, w2): its tasks would wait forever"
    ]


def test_extra_queues_must_be_consumed_and_routed_alike():
    views = valid_views()
    views["w1"]["values"]["netjobs_app_extra_queues"] = ["reports"]
    problems = run(views)
    assert "w2: netjobs_app_extra_queues is [], but ['reports'] on w1: every netjobs host must route the same queues" in problems
    assert any("consumes queue 'reports'" in p for p in problems)


@pytest.mark.parametrize("address", ["10.0.0.300", "redis host", "", "-x.example"])
def test_a_bad_address(address):
    views = valid_views()
    views["w2"]["values"]["netjobs_app_database_host"] = address
    assert run(views) == [f"w2: netjobs_app_database_host must be an IP address or a host name, got '{address}'"]


def test_an_address_of_no_data_host():
    views = valid_views()
    views["w1"]["values"]["netjobs_app_redis_host"] = "10.0.0.99"
    (problem,) = run(views)
    assert problem.startswith("w1: netjobs_app_redis_host is '10.0.0.99', which is no host of group redis")
    assert "data (10.0.0.11)" in problem


def test_loopback_only_on_the_data_host_itself():
    views = valid_views()
    views["w1"]["values"]["netjobs_app_redis_host"] = "127.0.0.1"
    (problem,) = run(views)
    assert "loopback works only on a host of that group" in problem


def test_the_data_host_must_listen_where_the_app_connects():
    views = valid_views()
    views["data"]["values"]["redis_bind"] = ["127.0.0.1"]
    views["data"]["values"]["postgresql_listen_addresses"] = ["localhost"]
    problems = run(views)
    assert "w1: netjobs_app_redis_host is '10.0.0.11', but data does not listen there (redis_bind: 127.0.0.1)" in problems
    assert any(p.startswith("w2: netjobs_app_database_host is '10.0.0.11', but data does not listen there") for p in problems)
    views["data"]["values"]["postgresql_listen_addresses"] = ["*"]
    views["data"]["values"]["redis_bind"] = ["0.0.0.0"]
    assert run(views) == []


def test_pg_hba_must_admit_each_app_host():
    views = valid_views()
    views["data"]["values"]["postgresql_hba_clients"] = ["10.0.0.12/32"]
    assert run(views) == [
        "w2: its address 10.0.0.13 is in no CIDR of postgresql_hba_clients on data (10.0.0.12/32): PostgreSQL would refuse it"
    ]


def test_ports_and_users_must_match_the_data_host():
    views = valid_views()
    views["w1"]["values"].update(netjobs_app_redis_port=6380, netjobs_app_database_username="app")
    assert sorted(run(views)) == [
        "w1: netjobs_app_database_username is 'app', but postgresql_netjobs_user on data is 'netjobs'",
        "w1: netjobs_app_redis_port is 6380, but redis_port on data is 6379",
    ]


def test_secrets_empty_or_different_never_show_their_value():
    secrets = dict(SECRETS)
    secrets[("w1", "netjobs_app_redis_password")] = ""
    secrets[("w2", "netjobs_app_database_password")] = "another-secret-99"
    problems = run(secrets=secrets)
    assert problems == [
        "w1: netjobs_app_redis_password is empty",
        "w2: netjobs_app_database_password differs from postgresql_netjobs_password on data: "
        "the app could not log in to PostgreSQL",
    ]
    assert not any(value in problem for value in secrets.values() if value for problem in problems)


def test_a_database_password_rotation_accepts_any_listed_login():
    # Mid-rotation: w1 already uses the new login, w2 still the app's role; both are listed.
    secrets = dict(SECRETS)
    secrets[("data", "postgresql_netjobs_logins")] = {"netjobs": "db-secret-1234", "netjobs_b": "db-secret-new-5678"}
    secrets[("w1", "netjobs_app_database_password")] = "db-secret-new-5678"
    views = valid_views()
    views["w1"]["values"]["netjobs_app_database_username"] = "netjobs_b"
    assert run(views, secrets=secrets) == []


def test_a_database_login_not_listed_or_with_another_password_is_refused():
    secrets = dict(SECRETS)
    secrets[("data", "postgresql_netjobs_logins")] = {"netjobs_b": "db-secret-new-5678"}
    secrets[("w2", "netjobs_app_database_password")] = "db-secret-other-999"
    views = valid_views()
    views["w2"]["values"]["netjobs_app_database_username"] = "netjobs_b"
    problems = run(views, secrets=secrets)
    assert problems == [
        "w1: netjobs_app_database_username is 'netjobs', which is not in postgresql_netjobs_logins on data "
        "(netjobs_b): the app could not log in to PostgreSQL",
        "w2: netjobs_app_database_password differs from the password of 'netjobs_b' in postgresql_netjobs_logins "
        "on data: the app could not log in to PostgreSQL",
    ]
    assert not any("secret" in problem for problem in problems)


def tls_views(app_tls: bool, server_tls: bool, **app_overrides):
    views = valid_views()
    views["data"]["values"].update(redis_tls=server_tls, postgresql_ssl=server_tls)
    for host in ("w1", "w2"):
        views[host]["values"].update(netjobs_app_redis_tls=app_tls, netjobs_app_database_tls=app_tls, **app_overrides)
    return views


def test_tls_between_hosts_is_valid():
    assert run(tls_views(True, True)) == []


def test_clear_text_between_hosts_is_refused_unless_allowed():
    problems = run(tls_views(False, False))
    assert len(problems) == 4
    assert problems[0] == (
        "w1: netjobs_app_redis_tls is false, but Redis runs on another host (data): passwords and jobs would cross "
        "the network in clear text; set netjobs_app_redis_tls (and redis_tls on data) to true, or "
        "netjobs_allow_plaintext: true to accept that"
    )
    assert run(tls_views(False, False, netjobs_allow_plaintext=True)) == []


def test_tls_on_one_end_only_is_refused():
    assert sorted(run(tls_views(True, False)))[:2] == [
        "w1: netjobs_app_database_tls is true, but postgresql_ssl is false on data: PostgreSQL would refuse TLS",
        "w1: netjobs_app_redis_tls is true, but redis_tls is false on data: Redis would refuse TLS",
    ]


def test_a_rotation_still_checks_tls_and_addresses():
    secrets = dict(SECRETS)
    secrets[("data", "postgresql_netjobs_logins")] = {"netjobs": "db-secret-1234"}
    views = tls_views(False, False)
    views["data"]["values"]["postgresql_hba_clients"] = ["10.0.0.12/32"]
    problems = run(views, secrets=secrets)
    assert any(p.startswith("w2: its address 10.0.0.13 is in no CIDR of postgresql_hba_clients") for p in problems)
    assert any(p.startswith("w2: netjobs_app_database_tls is false, but PostgreSQL runs on another host") for p in problems)


def test_a_secret_that_cannot_be_evaluated():
    secrets = dict(SECRETS)
    secrets[("w1", "netjobs_app_redis_password")] = LookupError("'vault_redis_app_password' is undefined")
    assert run(secrets=secrets) == [
        "w1: netjobs_app_redis_password cannot be evaluated: 'vault_redis_app_password' is undefined"
    ]


def test_undefined_settings_are_reported_per_variable():
    views = valid_views()
    views["w2"]["undefined"] = {"netjobs_app_redis_host": "'netjobs_data_host' is undefined"}
    del views["w2"]["values"]["netjobs_app_redis_host"]
    assert run(views) == ["w2: netjobs_app_redis_host cannot be evaluated: 'netjobs_data_host' is undefined"]


def test_flower_addresses_must_be_ip_addresses():
    views = valid_views()
    views["w1"]["values"]["netjobs_processes_flower_management_address"] = "10.0.0.1234"
    assert run(views) == [
        "w1: netjobs_processes_flower_management_address must be an IP address (Flower binds it), got '10.0.0.1234'"
    ]


def test_hosts_left_out_by_limit_do_not_count_as_problems():
    views = valid_views()
    views["w2"] = {"address": "10.0.0.13"}
    assert run(views) == []


def test_a_wheelhouse_for_another_python():
    views = valid_views()
    views["w1"]["python"]["version"] = "3.12"
    (problem,) = run(views)
    assert problem.startswith("w1: the wheelhouse netjobs_app_wheelhouse_archive (/build/wheelhouse.tar) does not fit netjobs_app_python")
    assert "psycopg2-binary has no wheel for Python 3.12 (only cp311-cp311, cp313-cp313)" in problem
    # abi3 wheels serve later Pythons, pure ones every Python 3.
    assert "cryptography" not in problem and "celery" not in problem


def test_an_interpreter_that_does_not_run():
    views = valid_views()
    views["w2"]["python"] = {"error": "No such file or directory"}
    assert run(views) == ["w2: netjobs_app_python (/usr/bin/python3) does not run: No such file or directory"]


@pytest.mark.parametrize(
    ("wheel", "python", "machine", "glibc", "fits"),
    [
        ("x-1-py3-none-any.whl", "3.11", "x86_64", "2.36", True),
        ("x-1-py2.py3-none-any.whl", "3.13", "aarch64", None, True),
        ("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "3.11", "x86_64", "2.36", True),
        ("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "3.13", "x86_64", "2.36", False),
        ("x-1-cp39-abi3-manylinux_2_34_x86_64.whl", "3.11", "x86_64", "2.36", True),
        ("x-1-cp39-abi3-manylinux_2_34_x86_64.whl", "3.11", "x86_64", "2.31", False),
        ("x-1-cp312-abi3-manylinux_2_17_x86_64.whl", "3.11", "x86_64", "2.36", False),
        ("x-1-cp311-cp311-manylinux2014_aarch64.whl", "3.11", "x86_64", "2.36", False),
        ("x-1-cp311-cp311-manylinux1_x86_64.manylinux_2_5_x86_64.whl", "3.11", "x86_64", "2.36", True),
    ],
)
def test_wheel_tags(wheel, python, machine, glibc, fits):
    assert (nv.wheel_problems([wheel], python, machine, glibc) == []) is fits


def test_wheel_names_reads_the_tar(tmp_path):
    archive = tmp_path / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ["./celery-5.7.0-py3-none-any.whl", "./requirements.txt"]:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    assert nv.wheel_names(str(archive)) == ["celery-5.7.0-py3-none-any.whl"]


@pytest.mark.parametrize(
    ("result", "messages"),
    [
        ({"failed": True, "msg": "Validation of arguments failed:\na\nb", "argument_errors": ["a", "b"]}, ["a", "b"]),
        (
            {
                "failed": True,
                "msg": "One or more items failed",
                "results": [{"failed": False, "msg": "fine"}, {"failed": True, "msg": "redis_app_password must be at least 12 characters"}],
            },
            ["redis_app_password must be at least 12 characters"],
        ),
        ({"failed": True, "msg": "redis_maxmemory_policy is 'allkeys-lru'"}, ["redis_maxmemory_policy is 'allkeys-lru'"]),
    ],
)
def test_failure_messages(result, messages):
    assert nv.failure_messages(copy.deepcopy(result)) == messages


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10.0.0.1", True), ("::1", True), ("db.example.net", True), ("db_1", False), ("10.0.0.256", False), ("", False), (None, False)],
)
def test_is_address(value, expected):
    assert nv.is_address(value) is expected


def test_an_undefined_vault_variable_is_reported_once_naming_the_setting():
    views = valid_views()
    views["w1"]["role_failures"] = ["Task failed: 'vault_flower' is undefined"]
    views["w1"]["undefined"] = {"netjobs_processes_flower_password": "'vault_flower' is undefined"}
    assert run(views) == ["w1: netjobs_processes_flower_password cannot be evaluated: 'vault_flower' is undefined"]


def test_a_port_that_is_no_number_is_left_to_the_argument_spec():
    views = valid_views()
    views["w1"]["values"]["netjobs_app_redis_port"] = "many"
    assert run(views) == []


# --- the Sentinel layout --------------------------------------------------------------------------

SENTINEL_GROUPS = {**GROUPS, "redis": ["data", "w1", "w2"]}


def sentinel_views(**redis_overrides):
    views = tls_views(True, True)
    for host, address in (("data", "10.0.0.11"), ("w1", "10.0.0.12"), ("w2", "10.0.0.13")):
        redis = {**views["data"]["values"], "redis_bind": ["127.0.0.1", address], "redis_sentinel": True,
                 "redis_address": address, "redis_primary": "10.0.0.11", "redis_sentinel_port": 26379,
                 "redis_sentinel_quorum": 2, "redis_sentinel_min_replicas_to_write": 1,
                 **redis_overrides.get(host, {})}
        views[host]["values"] = {**views[host]["values"], **redis}
    for host in ("w1", "w2"):
        views[host]["values"].update(netjobs_app_redis_host="", netjobs_app_redis_sentinels=[
            "10.0.0.11", "10.0.0.12", "10.0.0.13"], netjobs_app_redis_sentinel_port=26379)
    return views


def sentinel_secrets(overrides=None):
    secrets = dict(SECRETS)
    for host in ("data", "w1", "w2"):
        secrets.update({(host, "redis_app_password"): "app-secret-123", (host, "redis_replication_password"):
                        "repl-secret-123", (host, "redis_sentinel_password"): "sent-secret-123"})
    secrets.update(overrides or {})
    return secrets


def test_a_sentinel_layout_on_three_hosts_is_valid():
    assert run(sentinel_views(), SENTINEL_GROUPS, sentinel_secrets()) == []


def test_a_sentinel_layout_needs_three_hosts_a_majority_quorum_and_one_first_primary():
    views = sentinel_views(w2={"redis_sentinel_quorum": 1, "redis_primary": "10.0.0.99"},
                           w1={"redis_sentinel_min_replicas_to_write": 2})
    problems = run(views, SENTINEL_GROUPS, sentinel_secrets())
    assert "w1: redis_sentinel_min_replicas_to_write is 2, but with 3 Redis hosts it must be 0 to 1: after the " \
           "loss of one host the new primary must still have that many replicas, or it refuses every write" in problems
    assert "w2: redis_sentinel_quorum is 1, but with 3 Sentinels it must be a majority (2 to 3): a smaller one " \
           "lets a minority fail over, a larger one never can" in problems
    assert any(p.startswith("w2: redis_primary is '10.0.0.99', which is the redis_address of no Sentinel host")
               for p in problems)
    assert any(p.startswith("inventory: redis_primary differs between the redis hosts") for p in problems)

    two = sentinel_views()
    two["w2"]["values"]["redis_sentinel"] = False
    problems = run(two, SENTINEL_GROUPS, sentinel_secrets())
    assert any(p.startswith("w2: redis_sentinel is false, but it is true on data, w1") for p in problems)
    assert any(p.startswith("inventory: redis_sentinel needs three hosts in group redis or more, it has 2")
               for p in problems)


def test_the_app_must_list_every_sentinel_with_their_port_and_tls():
    views = sentinel_views()
    views["w1"]["values"].update(netjobs_app_redis_sentinels=["10.0.0.11", "10.0.0.12"])
    views["w2"]["values"].update(netjobs_app_redis_sentinels=["10.0.0.11", "10.0.0.50"],
                                 netjobs_app_redis_sentinel_port=26380, netjobs_app_redis_tls=False)
    problems = run(views, SENTINEL_GROUPS, sentinel_secrets())
    assert "w1: netjobs_app_redis_sentinels leaves out 10.0.0.13: list every Sentinel, so that the app finds the " \
           "primary while any one of them is down" in problems
    assert any(p.startswith("w2: netjobs_app_redis_sentinels lists '10.0.0.50', which is the redis_address of no")
               for p in problems)
    assert "w2: netjobs_app_redis_sentinel_port is 26380, but redis_sentinel_port on data is 26379" in problems
    assert any(p.startswith("w2: netjobs_app_redis_tls is false, but redis_tls is true on data") for p in problems)


def test_sentinel_layout_secrets_must_match_and_never_show():
    secrets = sentinel_secrets({("w2", "redis_replication_password"): "other-secret-99",
                                ("w1", "netjobs_app_redis_password"): "wrong-secret-99"})
    problems = run(sentinel_views(), SENTINEL_GROUPS, secrets)
    assert "w2: redis_replication_password differs from redis_replication_password on data: the servers and " \
           "Sentinels could not log in to each other" in problems
    assert "w1: netjobs_app_redis_password differs from redis_app_password on data: the workers could not log in " \
           "to Redis or its Sentinels" in problems
    assert not any("secret-99" in p for p in problems)
