"""The netjobs_processes role's filter plugin (roles/netjobs_processes/filter_plugins/netjobs_processes.py),
loaded by path: the expansion of the role's settings into a host's processes, and the choice of
which processes a run restarts. `make check-rendered` checks the rendering of the same structures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "roles/netjobs_processes/filter_plugins/netjobs_processes.py"

_spec = importlib.util.spec_from_file_location("netjobs_processes_filters", PLUGIN)
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

APP_ENV = {
    "NETJOBS_BROKER_URL": "redis://netjobs:pw@10.0.0.1:6379/0",
    "NETJOBS_RESULT_BACKEND_URL": "redis://netjobs:pw@10.0.0.1:6379/0",
    "NETJOBS_REDBEAT_URL": "redis://netjobs:pw@10.0.0.1:6379/0",
    "NETJOBS_REDIS_TLS_CA_FILE": "/etc/netjobs/ca.pem",
    "NETJOBS_DATABASE_URL": "postgresql+psycopg2://netjobs:dbpw@10.0.0.1:5432/netjobs",
    "NETJOBS_DEVICE_USERNAME": "backup",
    "NETJOBS_DEVICE_PASSWORD": "device-secret",
    "NETJOBS_DEVICE_KEY_FILE": "",
    "NETJOBS_COMPLIANCE_RULES": "/etc/netjobs/compliance.yml",
    "NETJOBS_BACKUP_REPO": "/var/lib/netjobs/config-backups",
    "NETJOBS_TASK_TIME_LIMIT": 600,
    "NETJOBS_VISIBILITY_TIMEOUT": 7200,
    "NETJOBS_LOG_LEVEL": "INFO",
}


def spec(**overrides):
    base = {
        "config_dir": "/etc/netjobs",
        "workers": [
            {"name": "default", "queues": ["default"], "concurrency": 2},
            {"name": "network", "queues": ["network"]},
            {"name": "heavy", "queues": ["heavy"], "extra_queues": ["reports"], "pool": "solo",
             "max_tasks_per_child": 5, "max_memory_per_child": 1024},
        ],
        "worker_max_tasks_per_child": 1000,
        "worker_max_memory_per_child": 524288,
        "task_time_limit": "600",  # Ansible may hand over numbers as strings
        "task_soft_time_limit": 540,
        "heavy_time_limit": 3600,
        "heavy_soft_time_limit": "3300",
        "stop_grace": 30,
        "icmp_enabled": False,
        "beat_enabled": True,
        "flower": {"enabled": True, "address": "127.0.0.1", "port": 5555, "username": "admin",
                   "password": "flower-pw", "state_dir": "/var/lib/netjobs/flower",
                   "state_save_interval": 60000, "max_tasks": 10000, "purge_offline_workers": 3600,
                   "certfile": "", "keyfile": ""},
        "exporter": {"enabled": True, "address": "127.0.0.1", "port": 9808, "basic_auth_file": "",
                     "cache_seconds": 10},
        "syslog": {"enabled": True, "address": "0.0.0.0", "port": 514, "debounce_seconds": 120,
                   "device_refresh_seconds": 60},
        "api": {"enabled": False, "address": "127.0.0.1", "port": 8470},
        "app_environment": APP_ENV,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def by_name(processes):
    return {process["name"]: process for process in processes}


def test_filters_are_registered_for_ansible():
    assert set(filters.FilterModule().filters()) == {
        "netjobs_processes", "netjobs_processes_restart_names", "netjobs_processes_is_loopback",
        "netjobs_processes_worker_checks"}


def test_processes_come_in_a_stable_order():
    names = [process["name"] for process in filters.processes(spec())]
    assert names == ["worker-default", "worker-network", "worker-heavy", "beat", "flower", "exporter", "syslog"]


def test_workers_get_their_queues_limits_and_stop_timeout():
    workers = by_name(filters.processes(spec()))
    default, heavy = workers["worker-default"], workers["worker-heavy"]
    assert default["unit"] == "netjobs-worker@default.service"
    assert default["env_file"] == "/etc/netjobs/worker-default.env"
    assert default["environment"] == {
        "NETJOBS_WORKER_QUEUES": "default", "NETJOBS_WORKER_HOSTNAME": "default@%h",
        "NETJOBS_WORKER_POOL": "prefork", "NETJOBS_WORKER_CONCURRENCY": 2,
        "NETJOBS_WORKER_MAX_TASKS_PER_CHILD": 1000, "NETJOBS_WORKER_MAX_MEMORY_PER_CHILD": 524288,
        "NETJOBS_WORKER_TIME_LIMIT": 600, "NETJOBS_WORKER_SOFT_TIME_LIMIT": 540,
    }
    assert default["stop_timeout"] == 630
    assert heavy["environment"]["NETJOBS_WORKER_QUEUES"] == "heavy,reports"
    assert heavy["environment"]["NETJOBS_WORKER_POOL"] == "solo"
    assert heavy["environment"]["NETJOBS_WORKER_MAX_TASKS_PER_CHILD"] == 5
    assert heavy["environment"]["NETJOBS_WORKER_TIME_LIMIT"] == 3600
    assert heavy["environment"]["NETJOBS_WORKER_SOFT_TIME_LIMIT"] == 3300
    assert heavy["stop_timeout"] == 3630
    assert workers["worker-network"]["environment"]["NETJOBS_WORKER_CONCURRENCY"] == 2


@pytest.mark.parametrize("icmp", [True, "true", "yes"])
def test_only_the_network_worker_gets_raw_sockets_for_icmp(icmp):
    processes = by_name(filters.processes(spec(icmp_enabled=icmp)))
    assert processes["worker-network"]["capabilities"] == ["CAP_NET_RAW"]
    assert processes["worker-network"]["supervisor_capabilities"] == ["CAP_NET_RAW"]
    assert all(not p["capabilities"] for name, p in processes.items() if name != "worker-network")


def test_nothing_but_workers_when_the_rest_is_off():
    processes = filters.processes(spec(beat_enabled="false", flower={"enabled": False},
                                       exporter={"enabled": False}, syslog={"enabled": False}))
    assert [p["kind"] for p in processes] == ["worker"] * 3
    assert filters.processes(spec(workers=[], beat_enabled=False, flower={"enabled": False},
                                  exporter={"enabled": False}, syslog={"enabled": False})) == []


def test_beat_keeps_netjobs_env_only():
    beat = by_name(filters.processes(spec()))["beat"]
    assert (beat["unit"], beat["env_file"], beat["environment"], beat["stop_timeout"]) == \
        ("netjobs-beat.service", "", {}, 30)


def test_flower_gets_the_broker_and_its_own_settings_but_no_secret_beyond_them():
    flower = by_name(filters.processes(spec()))["flower"]
    env = flower["environment"]
    assert flower["env_file"] == "/etc/netjobs/flower.env"
    assert env["NETJOBS_BROKER_URL"] == APP_ENV["NETJOBS_BROKER_URL"]
    assert env["NETJOBS_REDIS_TLS_CA_FILE"] == "/etc/netjobs/ca.pem"
    assert env["FLOWER_BASIC_AUTH"] == "admin:flower-pw"
    assert env["FLOWER_DB"] == "/var/lib/netjobs/flower/flower.db"
    for key in ("NETJOBS_DEVICE_PASSWORD", "NETJOBS_DEVICE_USERNAME", "NETJOBS_COMPLIANCE_RULES", "NETJOBS_BACKUP_REPO"):
        assert key not in env
    # No database URL (netjobs.config asks for it only where it is used), and kombu's own transport,
    # whose redis:// URI Flower's Broker page reads.
    assert "NETJOBS_DATABASE_URL" not in env
    assert env["NETJOBS_BROKER_TRANSPORT"] == "kombu"
    assert "dbpw" not in str(env)
    assert "FLOWER_CERTFILE" not in env


def test_flower_https_takes_both_paths_or_neither():
    env = by_name(filters.processes(spec(flower={"certfile": "/etc/ssl/flower.pem",
                                                  "keyfile": "/etc/ssl/private/flower.key"})))["flower"]["environment"]
    assert (env["FLOWER_CERTFILE"], env["FLOWER_KEYFILE"]) == ("/etc/ssl/flower.pem", "/etc/ssl/private/flower.key")
    with pytest.raises(filters.ProcessesError, match="both"):
        filters.processes(spec(flower={"certfile": "/etc/ssl/flower.pem"}))


def test_exporter_gets_redis_and_database_but_no_device_credentials():
    exporter = by_name(filters.processes(spec()))["exporter"]
    env = exporter["environment"]
    assert (exporter["unit"], exporter["env_file"], exporter["socket"]) == \
        ("netjobs-exporter.service", "/etc/netjobs/exporter.env", "")
    assert env["NETJOBS_DATABASE_URL"] == APP_ENV["NETJOBS_DATABASE_URL"]
    assert env["NETJOBS_BROKER_URL"] == APP_ENV["NETJOBS_BROKER_URL"]
    assert env["NETJOBS_EXPORTER_LISTEN"] == "127.0.0.1:9808"
    assert env["NETJOBS_EXPORTER_BASIC_AUTH_FILE"] == ""
    assert "NETJOBS_DEVICE_PASSWORD" not in env and "NETJOBS_DEVICE_USERNAME" not in env
    assert exporter["capabilities"] == exporter["supervisor_capabilities"] == []


def test_exporter_beyond_loopback_needs_basic_auth():
    with pytest.raises(filters.ProcessesError, match="basic-auth"):
        filters.processes(spec(exporter={"address": "10.0.0.5"}))
    exporter = by_name(filters.processes(spec(exporter={"address": "2001:db8::5", "port": "9900",
                                                        "basic_auth_file": "/etc/netjobs/exporter-users"})))["exporter"]
    assert exporter["environment"]["NETJOBS_EXPORTER_LISTEN"] == "[2001:db8::5]:9900"
    assert exporter["listen"] == "[2001:db8::5]:9900"


def test_syslog_is_socket_activated_under_systemd_and_binds_itself_under_supervisor():
    syslog = by_name(filters.processes(spec()))["syslog"]
    assert syslog["socket"] == "netjobs-syslog.socket"
    assert syslog["listen"] == "0.0.0.0:514"
    assert syslog["capabilities"] == []
    assert syslog["supervisor_capabilities"] == ["CAP_NET_BIND_SERVICE"]
    env = syslog["environment"]
    assert env["NETJOBS_SYSLOG_LISTEN"] == "0.0.0.0:514"
    assert env["NETJOBS_DATABASE_URL"] == APP_ENV["NETJOBS_DATABASE_URL"]
    assert "NETJOBS_DEVICE_PASSWORD" not in env
    high = by_name(filters.processes(spec(syslog={"port": 5514})))["syslog"]
    assert high["supervisor_capabilities"] == []


def test_api_is_off_by_default_and_gets_its_listen_address():
    assert "api" not in by_name(filters.processes(spec()))
    api = by_name(filters.processes(spec(api={"enabled": True})))["api"]
    assert (api["unit"], api["env_file"]) == ("netjobs-api.service", "/etc/netjobs/api.env")
    assert api["environment"]["NETJOBS_API_LISTEN"] == "127.0.0.1:8470"
    assert "NETJOBS_DEVICE_PASSWORD" not in api["environment"]
    assert "NETJOBS_API_TLS_CERT_FILE" not in api["environment"]


def test_api_serves_loopback_and_the_management_address_over_https():
    api = by_name(filters.processes(spec(api={"enabled": True, "address": "127.0.0.1", "port": 8470,
                                              "management_address": "10.0.0.5",
                                              "certfile": "/etc/netjobs/tls/server.crt",
                                              "keyfile": "/etc/netjobs/tls/server.key"})))["api"]
    assert api["environment"]["NETJOBS_API_LISTEN"] == "127.0.0.1:8470,10.0.0.5:8470"
    assert (api["environment"]["NETJOBS_API_TLS_CERT_FILE"], api["environment"]["NETJOBS_API_TLS_KEY_FILE"]) == (
        "/etc/netjobs/tls/server.crt", "/etc/netjobs/tls/server.key")
    with pytest.raises(filters.ProcessesError, match="both a certificate and a key"):
        filters.processes(spec(api={"enabled": True, "address": "::1", "port": 8470, "certfile": "/c"}))


def test_without_netjobs_env_the_processes_still_expand():
    processes = by_name(filters.processes(spec(app_environment=None)))
    assert processes["exporter"]["environment"]["NETJOBS_EXPORTER_LISTEN"] == "127.0.0.1:9808"


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("[::1]", True), ("10.0.0.1", False), ("0.0.0.0", False),
    ("host.example", False),
])
def test_is_loopback(address, loopback):
    assert filters.is_loopback(address) is loopback


# --- what a run restarts ------------------------------------------------------------------------

INSTANCES = filters.processes(spec())


def env_result(name, changed):
    return {"changed": changed, "__process": by_name(INSTANCES)[name]}


def unit_result(kind, changed):
    return {"changed": changed, "__kind_item": {"key": kind, "value": {}}}


def test_nothing_changed_restarts_nothing():
    assert filters.restart_names(INSTANCES) == []
    assert filters.restart_names(INSTANCES, False, [env_result("flower", False)], [], [unit_result("worker", False)]) == []


def test_restart_all_names_every_process_once():
    names = filters.restart_names(INSTANCES, True, [env_result("flower", True)], [], [unit_result("worker", True)])
    assert names == [p["name"] for p in INSTANCES]
    assert filters.restart_names(INSTANCES, "True") == [p["name"] for p in INSTANCES]


def test_a_changed_env_file_or_drop_in_restarts_that_process_only():
    names = filters.restart_names(INSTANCES, False,
                                  env_results=[env_result("worker-heavy", True), env_result("flower", False)],
                                  dropin_results=[env_result("worker-default", True), env_result("worker-heavy", True)])
    assert names == ["worker-heavy", "worker-default"]


def test_a_changed_unit_restarts_every_process_of_its_kind():
    names = filters.restart_names(INSTANCES, False, unit_results=[unit_result("worker", True), unit_result("beat", False)])
    assert names == ["worker-default", "worker-network", "worker-heavy"]


def test_kinds_restart_their_processes():
    assert filters.restart_names(INSTANCES, False, kinds=["syslog", "exporter"]) == ["syslog", "exporter"]
    assert filters.restart_names(INSTANCES, False, kinds=["api"]) == []


# --- the preflight checks of the worker groups ----------------------------------------------------

def failed(checks):
    return [(check["worker"], check["what"], check["message"]) for check in checks if not check["ok"]]


def test_good_worker_groups_pass_every_check():
    checks = filters.worker_checks(spec()["workers"], 1000, 524288, ["reports"])
    assert len(checks) == 6 * 3
    assert failed(checks) == []


def test_each_bad_value_is_named_with_its_group():
    workers = [
        {"name": "-bad", "queues": []},
        {"name": "ok", "queues": ["default"], "concurrency": 0, "max_tasks_per_child": "x",
         "max_memory_per_child": 0, "extra_queues": ["reports", "audit", "audit"]},
    ]
    assert failed(filters.worker_checks(workers, 1000, 524288, [])) == [
        ("-bad", "name", "the name must be 1 to 32 letters, digits, '-' or '_'"),
        ("-bad", "queues", "it consumes no queue"),
        ("ok", "concurrency", "concurrency must be at least 1, got 0"),
        ("ok", "max_tasks_per_child", "max_tasks_per_child must be at least 1, got x"),
        ("ok", "max_memory_per_child", "max_memory_per_child must be at least 1 (KiB), got 0"),
        ("ok", "extra_queues", "extra queue(s) reports, audit not in netjobs_app_extra_queues (none configured)"),
    ]


def test_group_defaults_apply_to_the_limits():
    assert failed(filters.worker_checks([{"name": "a", "queues": ["default"]}], 0, 1, [])) == [
        ("a", "max_tasks_per_child", "max_tasks_per_child must be at least 1, got 0")]
    assert "name" in {c["what"] for c in filters.worker_checks([{"name": "x" * 33, "queues": ["heavy"]}], 1, 1, [])
                      if not c["ok"]}
