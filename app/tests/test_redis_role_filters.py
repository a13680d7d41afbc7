"""The redis role's filter plugin (roles/redis/filter_plugins/redis_config.py), loaded by path.

The pure functions are tested directly; the list of directives the role applies with CONFIG SET,
and the quoting of redis_extra_settings, are also checked against a real redis-server.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import REDIS_SERVER, _stop, free_port, redis_server, wait_for_port

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "roles/redis/filter_plugins/redis_config.py"
TEMPLATE = REPO / "roles/redis/templates/etc/redis/redis.conf.j2"
ROLE_VARS = REPO / "roles/redis/vars/main.yml"

_spec = importlib.util.spec_from_file_location("redis_role_filters", PLUGIN)
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

# Written by the role's template; none of them can change at run time (or they are protected).
TEMPLATE_RESTART_ONLY = [
    "tcp-backlog", "unixsocket", "unixsocketperm", "pidfile", "logfile", "databases",
    "always-show-logo", "set-proc-title", "aclfile", "dir", "dbfilename", "appendfilename",
    "appenddirname",
]

BASE_CONF = """# Ansible managed
bind 127.0.0.1 -::1
port 6379
unixsocket /run/redis/redis-server.sock
logfile ""
maxmemory 128mb
save 3600 1 300 100
appendonly yes
"""


def test_filters_are_registered_for_ansible():
    assert set(filters.FilterModule().filters()) == {"redis_conf_value", "redis_conf_changes", "redis_replicaof",
                                                     "redis_sentinel_changes"}


@pytest.mark.parametrize(("value", "rendered"), [
    (True, "yes"),
    (False, "no"),
    (20, "20"),
    ("allkeys-lru", "allkeys-lru"),
    ("512mb", "512mb"),
    ("", '""'),
    ("pubsub 64mb 16mb 60", '"pubsub 64mb 16mb 60"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
])
def test_values_are_one_argument(value, rendered):
    assert filters.redis_conf_value(value) == rendered


@pytest.mark.parametrize("value", ["one\nmaxmemory-policy allkeys-lru", "cr\rhere", "nul\x00", {"a": 1}, [1], None])
def test_values_that_could_inject_a_directive_or_are_not_scalars_are_refused(value):
    with pytest.raises(filters.RedisConfigError):
        filters.redis_conf_value(value)


def test_an_unchanged_file_needs_nothing_even_when_comments_change():
    new = BASE_CONF.replace("# Ansible managed", "# Ansible managed, new header") + "\n# a comment\n"
    assert filters.redis_conf_changes(BASE_CONF, new) == {"live": [], "restart": []}


def test_no_file_yet_needs_nothing():
    assert filters.redis_conf_changes("", BASE_CONF) == {"live": [], "restart": []}


def test_settings_config_set_can_change_are_applied_live():
    new = BASE_CONF.replace("maxmemory 128mb", "maxmemory 256mb").replace("save 3600 1 300 100", 'save ""')
    new += "hz 20\n"
    assert filters.redis_conf_changes(BASE_CONF, new) == {
        "live": [["hz", "20"], ["maxmemory", "256mb"], ["save", ""]],
        "restart": [],
    }


def test_an_immutable_setting_needs_a_restart():
    new = BASE_CONF.replace("/run/redis/redis-server.sock", "/run/redis/other.sock").replace("128mb", "64mb")
    assert filters.redis_conf_changes(BASE_CONF, new) == {"live": [["maxmemory", "64mb"]], "restart": ["unixsocket"]}


def test_unknown_removed_and_repeated_directives_need_a_restart():
    old = BASE_CONF + "rename-command FLUSHALL \"\"\nhz 20\n"
    new = BASE_CONF + "rename-command FLUSHALL \"\"\nrename-command FLUSHDB \"\"\nlatency-tracking no\n"
    plan = filters.redis_conf_changes(old, new)
    assert plan == {"live": [["latency-tracking", "no"]], "restart": ["hz", "rename-command"]}


def test_quoted_values_compare_by_their_meaning():
    old = BASE_CONF + 'client-output-buffer-limit "pubsub 32mb 8mb 60"\n'
    new = BASE_CONF + "client-output-buffer-limit pubsub 64mb 16mb 60\n"
    assert filters.redis_conf_changes(old, new)["live"] == [["client-output-buffer-limit", "pubsub 64mb 16mb 60"]]
    assert filters.redis_conf_changes(old, old.replace('"pubsub 32mb 8mb 60"', "pubsub 32mb 8mb 60")) == {
        "live": [], "restart": []}


def test_role_refuses_extra_settings_for_every_directive_its_template_writes():
    import yaml

    managed = set(yaml.safe_load(ROLE_VARS.read_text())["__redis_managed_directives"])
    written = {line.split()[0] for line in TEMPLATE.read_text().splitlines()
               if re.match(r"^[a-z]", line)}
    assert written and written <= managed


# --------------------------------------------------------------------------- against redis-server

def _cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def redis_port():
    with redis_server() as server:
        yield server.port


def test_every_live_directive_this_redis_knows_takes_config_set(redis_port):
    known = refused = 0
    for name in sorted(filters.LIVE_DIRECTIVES):
        current = _cli(redis_port, "CONFIG", "GET", name).splitlines()
        if not current or current[0] != name:  # newer than this Redis (set-max-listpack-* came with 7.2)
            assert name.startswith("set-max-listpack-"), name
            continue
        known += 1
        value = current[1] if len(current) > 1 else ""
        reply = _cli(redis_port, "CONFIG", "SET", name, value).strip()
        refused += reply != "OK"
        assert reply == "OK", f"CONFIG SET {name} {value!r}: {reply}"
    assert known >= len(filters.LIVE_DIRECTIVES) - 2 and refused == 0


@pytest.mark.parametrize("name", TEMPLATE_RESTART_ONLY)
def test_directives_left_to_a_restart_are_refused_by_config_set(redis_port, name):
    assert name not in filters.LIVE_DIRECTIVES
    current = _cli(redis_port, "CONFIG", "GET", name).splitlines()
    value = current[1] if len(current) > 1 else "x"
    assert _cli(redis_port, "CONFIG", "SET", name, value).startswith("ERR")


def _role_output(port, *commands):
    """What the role's redis-cli call prints: the reply to its first command ("OK"), then the rest."""
    script = "SELECT 0\n" + "".join(f"{command}\n" for command in commands)
    return subprocess.run(["redis-cli", "-p", str(port)], input=script, capture_output=True, text=True,
                          check=True).stdout


def test_the_role_follows_the_role_a_running_server_has_and_uses_the_first_primary_only_at_first():
    with redis_server() as primary, redis_server() as replica:
        _cli(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
        as_primary, as_replica = _role_output(primary.port, "ROLE"), _role_output(replica.port, "ROLE")
    # Once in the layout, what the server is now wins over the inventory's first primary.
    assert filters.redis_replicaof(as_primary, True, "10.0.0.9", 6379) == ""
    assert filters.redis_replicaof(as_replica, True, "", 6379) == f"127.0.0.1 {primary.port}"
    # First deployment: Debian's fresh server says "master"; the inventory decides.
    assert filters.redis_replicaof(as_primary, False, "10.0.0.9", 6379) == "10.0.0.9 6379"
    assert filters.redis_replicaof(as_primary, False, "", 6379) == ""
    # No answer (stopped, refused AUTH): the inventory decides.
    assert filters.redis_replicaof("", True, "10.0.0.9", 6380) == "10.0.0.9 6380"
    assert filters.redis_replicaof("(error) WRONGPASS\nmaster", True, "10.0.0.9", 6380) == "10.0.0.9 6380"


def test_sentinel_settings_that_differ_are_set_and_nothing_else():
    output = "OK\nname\nnetjobs\nquorum\n2\ndown-after-milliseconds\n30000\nfailover-timeout\n60000\n"
    wanted = {"quorum": 2, "down-after-milliseconds": 5000, "failover-timeout": 60000}
    assert filters.redis_sentinel_changes(output, wanted) == [["down-after-milliseconds", "5000"]]
    assert filters.redis_sentinel_changes(output, {**wanted, "down-after-milliseconds": 30000}) == []
    assert filters.redis_sentinel_changes("(error) ERR No such master with that name", wanted) == []


def test_rendered_extra_settings_are_read_back_unchanged(tmp_path):
    settings = {
        "hz": 20,
        "lazyfree-lazy-user-del": True,
        "client-output-buffer-limit": "pubsub 64mb 16mb 60",
        "syslog-ident": 'net"jobs \\ redis',
    }
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\ndir {tmp_path}\n"
                    + "".join(f"{name} {filters.redis_conf_value(value)}\n" for name, value in settings.items()))
    proc = subprocess.Popen([REDIS_SERVER, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        read = {name: _cli(port, "CONFIG", "GET", name).splitlines()[1] for name in settings}
    finally:
        _stop(proc)
    assert read == {
        "hz": "20",
        "lazyfree-lazy-user-del": "yes",
        # Redis keeps the other classes: only pubsub was set.
        "client-output-buffer-limit": "normal 0 0 0 slave 268435456 67108864 60 pubsub 67108864 16777216 60",
        "syslog-ident": 'net"jobs \\ redis',
    }


def test_a_replicaof_the_server_already_has_needs_no_restart():
    old = BASE_CONF + "replicaof 10.0.0.11 6379\n"
    assert filters.redis_conf_changes(old, BASE_CONF, ["replicaof"]) == {"live": [], "restart": []}
    assert filters.redis_conf_changes(old, BASE_CONF) == {"live": [], "restart": ["replicaof"]}
