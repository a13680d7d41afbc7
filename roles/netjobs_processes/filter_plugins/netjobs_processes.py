"""Filters of the netjobs_processes role: expand the role's settings into the list of processes
of a host (one definition for systemd units, supervisor programs and the reference copies), and
choose which of them a run must restart.

Plain Python without Ansible imports, so that app/tests can load this file by path and test it
(app/tests/test_processes_filters.py).
"""

import fnmatch
import ipaddress
import re

BUILTIN_QUEUES = ("default", "backup", "network", "heavy")

# What each process takes from netjobs.env (netjobs_app), by name or shell-style pattern. Nothing
# else reaches it: no device credentials outside the workers, no database URL where none is used.
# The Redis settings include TLS and Sentinel; the time limits and the visibility timeout are
# checked against each other by netjobs.config, so whoever loads the Celery settings gets all.
_REDIS_KEYS = (
    "NETJOBS_BROKER_URL", "NETJOBS_RESULT_BACKEND_URL", "NETJOBS_REDBEAT_URL",
    "NETJOBS_REDIS_*", "NETJOBS_REDBEAT_KEY_PREFIX",
)
_CELERY_KEYS = _REDIS_KEYS + (
    "NETJOBS_TIMEZONE", "NETJOBS_EXTRA_QUEUES", "NETJOBS_VISIBILITY_TIMEOUT", "NETJOBS_RESULT_EXPIRES",
    "NETJOBS_TASK_TIME_LIMIT", "NETJOBS_TASK_SOFT_TIME_LIMIT",
    "NETJOBS_HEAVY_TIME_LIMIT", "NETJOBS_HEAVY_SOFT_TIME_LIMIT",
    "NETJOBS_BEAT_MAX_INTERVAL", "NETJOBS_REDBEAT_LOCK_TIMEOUT",
    "NETJOBS_WORKER_LEASE_SECONDS", "NETJOBS_MAX_REDELIVERIES",
    "NETJOBS_MAX_RETRIES", "NETJOBS_RETRY_BACKOFF", "NETJOBS_RETRY_BACKOFF_MAX",
    "NETJOBS_LOG_LEVEL",
)
APP_ENVIRONMENT_KEYS = {
    # Flower reads the broker (and, through Celery's settings, results and RedBeat) only.
    "flower": _CELERY_KEYS,
    # Queues, leases, beat lock and counters in Redis; history, devices, snapshots in PostgreSQL.
    "exporter": _CELERY_KEYS + ("NETJOBS_DATABASE_URL", "NETJOBS_HISTORY_ENABLED", "NETJOBS_BACKLOG_THRESHOLD"),
    # The device map from PostgreSQL; backups submitted through the broker; counters in Redis.
    "syslog": _CELERY_KEYS + ("NETJOBS_DATABASE_URL", "NETJOBS_HISTORY_ENABLED"),
    # Jobs through the broker; tokens, history, devices and the archive in PostgreSQL.
    "api": _CELERY_KEYS + ("NETJOBS_DATABASE_URL", "NETJOBS_HISTORY_ENABLED", "NETJOBS_BACKLOG_THRESHOLD",
                           "NETJOBS_API_*"),
}


class ProcessesError(ValueError):
    """Settings that cannot make a process."""


def app_environment_subset(environment, patterns):
    """The entries of ``environment`` whose name matches one of ``patterns`` (fnmatch)."""
    return {key: value for key, value in (environment or {}).items()
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)}


def listen_address(address, port):
    """``IP:PORT``, or ``[IPV6]:PORT``, as systemd and netjobs.config take it."""
    address = str(address)
    if ":" in address and not address.startswith("["):
        address = "[" + address + "]"
    return f"{address}:{int(port)}"


def is_loopback(address):
    """Whether ``address`` (an IP address, optionally in brackets) is a loopback address."""
    try:
        return ipaddress.ip_address(str(address).strip("[]")).is_loopback
    except ValueError:
        return False


def _worker(worker, spec):
    heavy = "heavy" in worker["queues"]
    hard = int(spec["heavy_time_limit"] if heavy else spec["task_time_limit"])
    soft = int(spec["heavy_soft_time_limit"] if heavy else spec["task_soft_time_limit"])
    raw = _bool(spec.get("icmp_enabled")) and "network" in worker["queues"]
    name = worker["name"]
    return {
        "kind": "worker",
        "instance": name,
        "name": "worker-" + name,
        "unit": "netjobs-worker@" + name + ".service",
        "env_file": spec["config_dir"] + "/worker-" + name + ".env",
        "environment": {
            "NETJOBS_WORKER_QUEUES": ",".join(list(worker["queues"]) + list(worker.get("extra_queues") or [])),
            "NETJOBS_WORKER_HOSTNAME": name + "@%h",
            "NETJOBS_WORKER_POOL": worker.get("pool", "prefork"),
            "NETJOBS_WORKER_CONCURRENCY": worker.get("concurrency", 2),
            "NETJOBS_WORKER_MAX_TASKS_PER_CHILD": worker.get("max_tasks_per_child", spec["worker_max_tasks_per_child"]),
            "NETJOBS_WORKER_MAX_MEMORY_PER_CHILD": worker.get("max_memory_per_child", spec["worker_max_memory_per_child"]),
            "NETJOBS_WORKER_TIME_LIMIT": hard,
            "NETJOBS_WORKER_SOFT_TIME_LIMIT": soft,
        },
        "stop_timeout": hard + int(spec["stop_grace"]),
        "capabilities": ["CAP_NET_RAW"] if raw else [],
    }


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def processes(spec):
    """The netjobs processes of one host, in a stable order: workers (in the given order), beat,
    Flower, exporter, syslog receiver, API. Each is a dict: kind, instance, name (supervisor
    program), unit (systemd), env_file (empty: none), environment (written to env_file),
    stop_timeout, capabilities (systemd), supervisor_capabilities, socket (its systemd socket
    unit, or empty), listen (IP:PORT, or empty).

    Flower, the exporter, the syslog receiver and the API get only the entries of netjobs.env
    (``app_environment``) they read (APP_ENVIRONMENT_KEYS), in their own env file.

    ``spec`` holds the role's settings (vars/main.yml: __netjobs_processes_spec).
    """
    result = [_worker(worker, spec) for worker in spec.get("workers") or []]
    if _bool(spec.get("beat_enabled")):
        result.append({"kind": "beat", "instance": "", "name": "beat", "unit": "netjobs-beat.service",
                       "env_file": "", "environment": {}, "stop_timeout": 30, "capabilities": []})
    flower = spec.get("flower") or {}
    if _bool(flower.get("enabled")):
        environment = app_environment_subset(spec.get("app_environment"), APP_ENVIRONMENT_KEYS["flower"])
        # kombu's own Redis transport: Flower's Broker page lists the queues only for a redis:// URI.
        environment["NETJOBS_BROKER_TRANSPORT"] = "kombu"
        environment.update({
            "FLOWER_ADDRESS": flower["address"],
            "FLOWER_PORT": flower["port"],
            "FLOWER_BASIC_AUTH": f"{flower['username']}:{flower['password']}",
            "FLOWER_PERSISTENT": "true",
            "FLOWER_DB": flower["state_dir"] + "/flower.db",
            "FLOWER_STATE_SAVE_INTERVAL": flower["state_save_interval"],
            "FLOWER_MAX_TASKS": flower["max_tasks"],
            "FLOWER_PURGE_OFFLINE_WORKERS": flower["purge_offline_workers"],
        })
        if bool(flower.get("certfile")) != bool(flower.get("keyfile")):
            raise ProcessesError("Flower's HTTPS needs both a certificate and a key file, or neither")
        if flower.get("certfile"):
            environment["FLOWER_CERTFILE"] = flower["certfile"]
            environment["FLOWER_KEYFILE"] = flower["keyfile"]
        result.append(_single("flower", spec, environment))
    exporter = spec.get("exporter") or {}
    if _bool(exporter.get("enabled")):
        listen = listen_address(exporter["address"], exporter["port"])
        if not is_loopback(exporter["address"]) and not exporter.get("basic_auth_file"):
            raise ProcessesError(f"the exporter listens on {listen}, beyond loopback, without a basic-auth users file")
        environment = app_environment_subset(spec.get("app_environment"), APP_ENVIRONMENT_KEYS["exporter"])
        environment.update({
            "NETJOBS_EXPORTER_LISTEN": listen,
            "NETJOBS_EXPORTER_BASIC_AUTH_FILE": exporter.get("basic_auth_file") or "",
            "NETJOBS_EXPORTER_CACHE_SECONDS": exporter["cache_seconds"],
        })
        result.append(_single("exporter", spec, environment, listen=listen))
    syslog = spec.get("syslog") or {}
    if _bool(syslog.get("enabled")):
        listen = listen_address(syslog["address"], syslog["port"])
        environment = app_environment_subset(spec.get("app_environment"), APP_ENVIRONMENT_KEYS["syslog"])
        environment.update({
            # Under systemd the receiver takes the sockets of netjobs-syslog.socket and ignores this;
            # under supervisor it binds this address itself.
            "NETJOBS_SYSLOG_LISTEN": listen,
            "NETJOBS_SYSLOG_DEBOUNCE_SECONDS": syslog["debounce_seconds"],
            "NETJOBS_SYSLOG_DEVICE_REFRESH_SECONDS": syslog["device_refresh_seconds"],
        })
        # systemd binds the port (socket activation): the process has no capability. supervisor has no
        # socket activation: the program alone gets CAP_NET_BIND_SERVICE for a port below 1024.
        privileged = int(syslog["port"]) < 1024
        result.append(_single("syslog", spec, environment, listen=listen, socket="netjobs-syslog.socket",
                              supervisor_capabilities=["CAP_NET_BIND_SERVICE"] if privileged else []))
    api = spec.get("api") or {}
    if _bool(api.get("enabled")):
        addresses = [api["address"]] + ([api["management_address"]] if api.get("management_address") else [])
        listen = ",".join(listen_address(address, api["port"]) for address in addresses)
        environment = app_environment_subset(spec.get("app_environment"), APP_ENVIRONMENT_KEYS["api"])
        environment["NETJOBS_API_LISTEN"] = listen
        if bool(api.get("certfile")) != bool(api.get("keyfile")):
            raise ProcessesError("the API's HTTPS needs both a certificate and a key file, or neither")
        if api.get("certfile"):
            environment["NETJOBS_API_TLS_CERT_FILE"] = api["certfile"]
            environment["NETJOBS_API_TLS_KEY_FILE"] = api["keyfile"]
        result.append(_single("api", spec, environment, listen=listen))
    for process in result:
        process.setdefault("supervisor_capabilities", list(process["capabilities"]))
        process.setdefault("socket", "")
        process.setdefault("listen", "")
    return result


def _single(kind, spec, environment, **extra):
    """A process of a kind with exactly one instance per host, with its own env file."""
    process = {"kind": kind, "instance": "", "name": kind, "unit": f"netjobs-{kind}.service",
               "env_file": f"{spec['config_dir']}/{kind}.env", "environment": environment,
               "stop_timeout": 30, "capabilities": []}
    process.update(extra)
    return process


def restart_names(instances, restart_all=False, env_results=None, dropin_results=None, unit_results=None,
                  kinds=None):
    """Names of the processes a run must restart, without duplicates, in the order found.

    All of them when ``restart_all`` (the code or netjobs.env changed, or a restart is still due);
    else each process whose env file or drop-in changed (results of loops over ``__process``) and
    every process of a kind whose unit changed (results of a loop over ``__kind_item``), and of each
    kind in ``kinds`` (what else they read changed: a socket unit, a users file).
    """
    names = []
    if _bool(restart_all):
        names.extend(process["name"] for process in instances)
    for result in list(env_results or []) + list(dropin_results or []):
        if result.get("changed"):
            names.append(result["__process"]["name"])
    for result in unit_results or []:
        if result.get("changed"):
            kind = result["__kind_item"]["key"]
            names.extend(process["name"] for process in instances if process["kind"] == kind)
    for kind in kinds or []:
        names.extend(process["name"] for process in instances if process["kind"] == kind)
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def _int_or_zero(value):
    """Jinja's `| int`: a value that is not a number counts as 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def worker_checks(workers, max_tasks_per_child, max_memory_per_child, extra_queues=None):
    """The range and cross-reference checks of each worker group, one dict per rule:
    {worker, what, ok, message}. tasks/preflight.yml asserts them (argument_specs has checked the
    types and the built-in queue names already)."""
    known = list(extra_queues or [])
    checks = []
    for worker in workers or []:
        name = str(worker.get("name", ""))
        queues = list(worker.get("queues") or []) + list(worker.get("extra_queues") or [])
        concurrency = worker.get("concurrency", 2)
        max_tasks = worker.get("max_tasks_per_child", max_tasks_per_child)
        max_memory = worker.get("max_memory_per_child", max_memory_per_child)
        unknown = []
        for queue in worker.get("extra_queues") or []:
            if queue not in known and queue not in unknown:
                unknown.append(queue)
        checks.extend([
            {"worker": name, "what": "name", "ok": bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", name)),
             "message": "the name must be 1 to 32 letters, digits, '-' or '_'"},
            {"worker": name, "what": "queues", "ok": len(queues) > 0, "message": "it consumes no queue"},
            {"worker": name, "what": "concurrency", "ok": _int_or_zero(concurrency) >= 1,
             "message": f"concurrency must be at least 1, got {concurrency}"},
            {"worker": name, "what": "max_tasks_per_child", "ok": _int_or_zero(max_tasks) >= 1,
             "message": f"max_tasks_per_child must be at least 1, got {max_tasks}"},
            {"worker": name, "what": "max_memory_per_child", "ok": _int_or_zero(max_memory) >= 1,
             "message": f"max_memory_per_child must be at least 1 (KiB), got {max_memory}"},
            {"worker": name, "what": "extra_queues", "ok": not unknown,
             "message": f"extra queue(s) {', '.join(unknown)} not in netjobs_app_extra_queues "
                        f"({', '.join(known) or 'none configured'})"},
        ])
    return checks


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "netjobs_processes": processes,
            "netjobs_processes_restart_names": restart_names,
            "netjobs_processes_is_loopback": is_loopback,
            "netjobs_processes_worker_checks": worker_checks,
        }
