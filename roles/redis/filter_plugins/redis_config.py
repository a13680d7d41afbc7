"""Filters of the redis role: render redis.conf values safely, and tell which changes of redis.conf
the running server can take with CONFIG SET and which need a restart.

Plain Python without Ansible imports, so that app/tests can load this file by path and test it.
"""

import re
import shlex

# Directives that CONFIG SET changes on a running Redis 7.0 (Debian 12) and 8.0 (Debian 13) alike.
# Anything not listed (unixsocket, aclfile, dir, databases, logfile, appendfilename, ...) is
# immutable or protected at run time, or unknown to this role: a change restarts the server.
LIVE_DIRECTIVES = frozenset({
    "bind", "port", "protected-mode", "timeout", "tcp-keepalive", "maxclients", "loglevel",
    "acllog-max-len", "maxmemory", "maxmemory-policy", "maxmemory-samples", "maxmemory-clients",
    "save", "stop-writes-on-bgsave-error", "rdbcompression",
    "rdb-save-incremental-fsync", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
    "auto-aof-rewrite-percentage", "auto-aof-rewrite-min-size", "aof-load-truncated",
    "aof-use-rdb-preamble", "aof-rewrite-incremental-fsync", "aof-timestamp-enabled",
    "slowlog-log-slower-than", "slowlog-max-len", "latency-monitor-threshold", "latency-tracking",
    "hz", "dynamic-hz", "activerehashing", "lazyfree-lazy-eviction", "lazyfree-lazy-expire",
    "lazyfree-lazy-server-del", "lazyfree-lazy-user-del", "lazyfree-lazy-user-flush",
    "notify-keyspace-events", "client-output-buffer-limit", "client-query-buffer-limit",
    "proto-max-bulk-len", "busy-reply-threshold", "lua-time-limit", "tracking-table-max-keys",
    "hash-max-listpack-entries", "hash-max-listpack-value", "list-max-listpack-size",
    "list-compress-depth", "set-max-intset-entries", "set-max-listpack-entries",
    "set-max-listpack-value", "zset-max-listpack-entries", "zset-max-listpack-value",
    "stream-node-max-bytes", "stream-node-max-entries", "activedefrag",
    "masteruser", "masterauth", "replica-announce-ip", "min-replicas-to-write", "min-replicas-max-lag",
})

# A value redis.conf takes as it is; anything else is written as one double-quoted argument.
_BARE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@%+,=-]+$")


class RedisConfigError(ValueError):
    """A value that cannot be written into redis.conf."""


def redis_conf_value(value):
    """One redis.conf argument: booleans as yes/no, plain words bare, anything else quoted.

    Inside double quotes Redis reads backslash escapes, so backslashes and quotes are escaped.
    Line breaks and other control characters would start a new directive: they are refused.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, (dict, list, tuple, set)):
        raise RedisConfigError(f"a redis.conf value must be a string, a number or a boolean, got {value!r}")
    text = str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise RedisConfigError(f"a redis.conf value must not contain control characters, got {text!r}")
    if _BARE_VALUE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _directives(text):
    """{name: [value, ...]} of a redis.conf text; a value is the line's arguments joined by spaces."""
    directives = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:  # unbalanced quotes: compare the raw words
            words = line.split()
        if not words:
            continue
        directives.setdefault(words[0].lower(), []).append(" ".join(words[1:]))
    return directives


def redis_conf_changes(old_text, new_text, applied=()):
    """What it takes to move a running server from old_text to new_text.

    ``applied``: directives whose new value the running server has already (``replicaof`` in the
    Sentinel layout, where the role writes what the server is), left out of both lists.

    Returns {"live": [[name, value], ...], "restart": [name, ...]}: the changed directives that
    CONFIG SET applies, and those that need a restart (immutable, unknown, repeated, or removed,
    since removing a line restores a default CONFIG SET cannot name). Each list is sorted by name.
    An empty old_text (no file yet) needs nothing: the server is started with new_text anyway.
    """
    old, new = _directives(old_text), _directives(new_text)
    if not old:
        return {"live": [], "restart": []}
    live, restart = [], []
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name) or name in applied:
            continue
        if name in LIVE_DIRECTIVES and len(new.get(name, [])) == 1 and len(old.get(name, [])) <= 1:
            live.append([name, new[name][0]])
        else:
            restart.append(name)
    return {"live": live, "restart": restart}


def _replies(redis_cli_output):
    """redis-cli's lines after the AUTH reply ("OK"), stripped."""
    lines = [line.strip() for line in (redis_cli_output or "").splitlines()]
    return lines[1:] if lines and lines[0] == "OK" else []


def redis_replicaof(role_output, configured_before, initial_primary, port):
    """The ``replicaof`` value ("HOST PORT", or "" for a primary) redis.conf should hold.

    ``role_output``: redis-cli's output of ``AUTH ...`` then ``ROLE`` on this server. Once the
    server runs in the Sentinel layout (``configured_before``), the Sentinels decide who is the
    primary and the role follows what the server says it is now; on the first deployment (or when
    the server does not answer) ``initial_primary`` ("" on the primary itself) decides.
    """
    replies = _replies(role_output)
    if configured_before and replies:
        if replies[0] == "master":
            return ""
        if replies[0] == "slave" and len(replies) >= 3 and replies[2].isdigit():
            return f"{replies[1]} {replies[2]}"
    return f"{initial_primary} {port}" if initial_primary else ""


# Settings of a monitored primary that SENTINEL SET changes at run time (Sentinel rewrites its own
# file, so the role applies them live instead of rewriting it).
SENTINEL_SETTINGS = ("quorum", "down-after-milliseconds", "failover-timeout")


def redis_sentinel_changes(master_output, wanted):
    """[[name, value], ...] for SENTINEL SET: the settings in ``wanted`` ({name: value}) that
    differ from redis-cli's output of ``AUTH ...`` then ``SENTINEL MASTER NAME`` (field and value
    on alternate lines). An unreadable output changes nothing: the caller checks the reply."""
    replies = _replies(master_output)
    current = dict(zip(replies[0::2], replies[1::2]))
    if not current:
        return []
    return [[name, str(wanted[name])] for name in SENTINEL_SETTINGS
            if name in wanted and current.get(name) != str(wanted[name])]


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "redis_conf_value": redis_conf_value,
            "redis_conf_changes": redis_conf_changes,
            "redis_replicaof": redis_replicaof,
            "redis_sentinel_changes": redis_sentinel_changes,
        }
