"""netjobs_validate: the rules of a netjobs inventory that span hosts (docs/deploy.md, "Validation").

playbooks/validate.yml runs it in two stages, after each role's own checks (argument specs and
preflight tasks) ran on every host with `include_role ... public: true`:

  stage: view    on every host: read this host's effective settings (inventory, role defaults)
                 and record which of them cannot even be evaluated. Secrets are not copied.
  stage: report  once: combine the views with the roles' failures recorded by the play, apply the
                 rules that span hosts, and fail with one line per problem, "HOST: VARIABLE ...".

The rules themselves are plain functions (`cross_host_problems`, `wheel_problems`,
`failure_messages`), unit-tested in app/tests/test_validate_plugin.py without Ansible running.
"""

from __future__ import annotations

import ipaddress
import re
import tarfile
from typing import Any, Callable, Iterable, Mapping

BUILTIN_QUEUES = ("default", "backup", "network", "heavy")
NETJOBS_GROUPS = ("netjobs_workers", "netjobs_beat", "netjobs_flower")
# Groups site.yml deploys; each needs a host (netjobs_flower may stay empty: Flower is optional).
REQUIRED_GROUPS = {
    "redis": "nothing would run the broker",
    "postgresql": "nothing would run the database",
    "netjobs_workers": "no task would ever run",
    "netjobs_beat": "no schedule would ever fire",
}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}

# Settings each stage reads, by the group whose hosts use them. Secrets are listed apart: the view
# only says whether they are set; report compares them through hostvars.
VIEW_VARS = {
    "redis": ("redis_port", "redis_bind", "redis_app_user", "redis_tls", "redis_sentinel", "redis_address",
              "redis_primary", "redis_sentinel_port", "redis_sentinel_quorum", "redis_sentinel_min_replicas_to_write"),
    "postgresql": (
        "postgresql_port",
        "postgresql_listen_addresses",
        "postgresql_hba_clients",
        "postgresql_netjobs_db",
        "postgresql_netjobs_user",
        "postgresql_ssl",
    ),
    "netjobs": (
        "netjobs_app_redis_host",
        "netjobs_app_redis_port",
        "netjobs_app_redis_sentinels",
        "netjobs_app_redis_sentinel_port",
        "netjobs_app_redis_username",
        "netjobs_app_database_host",
        "netjobs_app_database_port",
        "netjobs_app_database_name",
        "netjobs_app_database_username",
        "netjobs_app_extra_queues",
        "netjobs_app_wheelhouse_archive",
        "netjobs_app_python",
        "netjobs_processes_workers",
        "netjobs_processes_flower_address",
        "netjobs_processes_flower_management_address",
        "netjobs_app_redis_tls",
        "netjobs_app_database_tls",
        "netjobs_allow_plaintext",
    ),
}
SECRET_VARS = {
    "redis": ("redis_app_password", "redis_monitor_password", "redis_admin_password", "redis_replication_password",
              "redis_sentinel_password"),
    "postgresql": ("postgresql_netjobs_password", "postgresql_netjobs_logins"),
    "netjobs": ("netjobs_app_redis_password", "netjobs_app_database_password", "netjobs_processes_flower_password"),
}

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# name-version(-build)?-python-abi-platform.whl (PEP 427); tags may be compressed with dots.
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-[0-9][^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


# --- small predicates ---------------------------------------------------------------------------


def is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def is_address(value: Any) -> bool:
    """An IP address or a DNS host name (what the app may connect to)."""
    if not isinstance(value, str) or not value:
        return False
    if is_ip(value):
        return True
    # A dotted quad that is not an IP (10.0.0.300) is a typo, not a host name.
    if re.fullmatch(r"[0-9.]+", value):
        return False
    return bool(_HOSTNAME.match(value))


def is_loopback(value: Any) -> bool:
    if str(value).lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(value)).is_loopback
    except ValueError:
        return False


def _int(value: Any) -> int | None:
    """A port as a number; None when it is not one (the role's argument spec says so)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _listens_on(listen: Iterable[Any], address: str, wildcards: Iterable[str]) -> bool:
    """Whether a listen list (redis_bind, postgresql_listen_addresses) covers `address`."""
    entries = {str(entry).lstrip("-") for entry in listen or []}
    if entries & set(wildcards):
        return True
    if is_loopback(address):
        return any(is_loopback(entry) for entry in entries)
    return address in entries


def _in_cidrs(address: str, cidrs: Iterable[Any]) -> bool:
    for cidr in cidrs or []:
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(str(cidr), strict=False):
                return True
        except ValueError:
            continue
    return False


# --- results of the roles' own checks ------------------------------------------------------------


def failure_messages(result: Mapping[str, Any]) -> list[str]:
    """One message per problem from a failed task result (argument specs, looped or plain assert)."""
    if result.get("argument_errors"):
        return [str(error).strip() for error in result["argument_errors"]]
    items = [item for item in result.get("results") or [] if isinstance(item, Mapping) and item.get("failed")]
    if items:
        return [str(item.get("msg", "")).strip() for item in items if item.get("msg")]
    message = str(result.get("msg") or "").strip()
    return [message] if message else []


# --- the wheelhouse and the hosts' interpreter ---------------------------------------------------


def wheel_names(archive: str) -> list[str]:
    """Wheel file names in a wheelhouse tar, read from the headers only."""
    with tarfile.open(archive) as tar:
        return sorted(name.rsplit("/", 1)[-1] for name in tar.getnames() if name.endswith(".whl"))


def _wheel_fits_python(py_tags: list[str], abi_tags: list[str], version: tuple[int, int]) -> bool:
    for py in py_tags:
        generic = re.fullmatch(r"py(\d)(\d*)", py)
        if generic and int(generic.group(1)) == version[0]:
            return True
        specific = re.fullmatch(r"cp(\d)(\d+)", py)
        if not specific:
            continue
        tagged = (int(specific.group(1)), int(specific.group(2)))
        # abi3 wheels run on their version and later; cpXY-cpXY only on that version.
        if "abi3" in abi_tags and tagged[0] == version[0] and tagged <= version:
            return True
        if tagged == version:
            return True
    return False


def _wheel_fits_platform(plat_tags: list[str], machine: str, glibc: tuple[int, int] | None) -> bool:
    for plat in plat_tags:
        if plat == "any":
            return True
        arch_ok = plat.endswith("_" + machine)
        if not arch_ok:
            continue
        needed = None
        match = _MANYLINUX.match(plat)
        if match:
            needed = (int(match.group(1)), int(match.group(2)))
        else:
            needed = _LEGACY_MANYLINUX.get(plat[: -len(machine) - 1])
        if needed is None or glibc is None or glibc >= needed:
            return True
    return False


def wheel_problems(names: Iterable[str], python: str, machine: str, glibc: str | None = None) -> list[str]:
    """Projects of which no wheel could be installed on a host with this interpreter.

    A wheelhouse may serve several Pythons (one wheel per project and Python): a project is fine
    when one of its wheels fits. python: "3.11"; machine: "x86_64"; glibc: "2.36" or None.
    """
    version = tuple(int(part) for part in python.split(".")[:2])
    libc = tuple(int(part) for part in glibc.split(".")[:2]) if glibc else None
    wheels: dict[str, list[re.Match[str]]] = {}
    for name in names:
        match = _WHEEL.match(name)
        if match:
            wheels.setdefault(match["name"].lower().replace("_", "-"), []).append(match)
    problems = []
    for project, matches in sorted(wheels.items()):
        python_ok = [m for m in matches if _wheel_fits_python(m["py"].split("."), m["abi"].split("."), version)]
        if not python_ok:
            tags = ", ".join(sorted({f"{m['py']}-{m['abi']}" for m in matches}))
            problems.append(f"{project} has no wheel for Python {python} (only {tags})")
        elif not any(_wheel_fits_platform(m["plat"].split("."), machine, libc) for m in python_ok):
            plats = ", ".join(sorted({m["plat"] for m in python_ok}))
            problems.append(f"{project} has no wheel for {machine} with glibc {glibc or '?'} (only {plats})")
    return problems


# --- the rules that span hosts -------------------------------------------------------------------

SecretLookup = Callable[[str, str], Any]


def _target(
    host: str, address: Any, group: str, groups: Mapping[str, list[str]], views: Mapping[str, Mapping[str, Any]]
) -> str | None:
    """The host of `group` that `address`, used by `host`, points at."""
    members = groups.get(group) or []
    if is_loopback(address):
        return host if host in members else None
    for member in members:
        if address in (member, (views.get(member) or {}).get("address")):
            return member
    return None


def _secret_problems(
    host: str, name: str, target: str, target_name: str, secret: SecretLookup, why: str
) -> list[str]:
    try:
        value = secret(host, name)
    except LookupError as error:
        return [f"{host}: {name} cannot be evaluated: {error}"]
    if value is None:
        return []  # missing: the role's argument spec already says so
    if str(value) == "":
        return [f"{host}: {name} is empty"]
    try:
        expected = secret(target, target_name)
    except LookupError:
        return []  # reported on the target itself
    if expected is not None and str(expected) != "" and str(value) != str(expected):
        return [f"{host}: {name} differs from {target_name} on {target}: {why}"]
    return []


def _service_problems(
    host: str,
    view: Mapping[str, Any],
    views: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, list[str]],
    secret: SecretLookup,
    kind: str,
) -> list[str]:
    """netjobs_app's Redis or database settings on `host` against the host that runs that service."""
    values = view.get("values") or {}
    if kind == "redis" and values.get("netjobs_app_redis_sentinels"):
        return _sentinel_client_problems(host, values, views, groups, secret)
    if kind == "redis":
        group, prefix, port_var, user_pairs = "redis", "netjobs_app_redis", "redis_port", [("netjobs_app_redis_username", "redis_app_user")]
        listen_var, wildcards = "redis_bind", ("0.0.0.0", "*", "::")
        secret_pair = ("netjobs_app_redis_password", "redis_app_password", "the workers could not log in to Redis")
    else:
        group, prefix, port_var = "postgresql", "netjobs_app_database", "postgresql_port"
        user_pairs = [("netjobs_app_database_name", "postgresql_netjobs_db"), ("netjobs_app_database_username", "postgresql_netjobs_user")]
        listen_var, wildcards = "postgresql_listen_addresses", ("*", "0.0.0.0", "::")
        secret_pair = ("netjobs_app_database_password", "postgresql_netjobs_password", "the app could not log in to PostgreSQL")
    host_var = prefix + "_host"
    address = values.get(host_var)
    if address is None:
        return []  # missing or not evaluable: reported elsewhere
    if not is_address(address):
        return [f"{host}: {host_var} must be an IP address or a host name, got '{address}'"]
    target = _target(host, address, group, groups, views)
    if target is None:
        names = ", ".join(
            f"{member} ({(views.get(member) or {}).get('address')})" for member in groups.get(group) or []
        ) or "none"
        loopback = " (loopback works only on a host of that group)" if is_loopback(address) else ""
        return [f"{host}: {host_var} is '{address}', which is no host of group {group}{loopback}; hosts of {group}: {names}"]
    problems = []
    target_values = (views.get(target) or {}).get("values") or {}
    port, target_port = _int(values.get(prefix + "_port")), _int(target_values.get(port_var))
    if port is not None and target_port is not None and port != target_port:
        problems.append(f"{host}: {prefix}_port is {port}, but {port_var} on {target} is {target_port}")
    logins = _database_logins(target, secret) if kind == "postgresql" else None
    if logins:
        # A password rotation: the app may log in as any listed login, with that login's password.
        user_pairs = [pair for pair in user_pairs if pair[0] != "netjobs_app_database_username"]
    for mine, theirs in user_pairs:
        if values.get(mine) is not None and target_values.get(theirs) is not None and values[mine] != target_values[theirs]:
            problems.append(f"{host}: {mine} is '{values[mine]}', but {theirs} on {target} is '{target_values[theirs]}'")
    listen = target_values.get(listen_var)
    if listen is not None and not _listens_on(listen, str(address), wildcards):
        problems.append(
            f"{host}: {host_var} is '{address}', but {target} does not listen there ({listen_var}: {', '.join(map(str, listen))})"
        )
    if kind == "postgresql" and target != host and not is_loopback(address):
        own = (views.get(host) or {}).get("address")
        clients = target_values.get("postgresql_hba_clients")
        if clients is not None and own and is_ip(own) and not _in_cidrs(own, clients):
            problems.append(
                f"{host}: its address {own} is in no CIDR of postgresql_hba_clients on {target} "
                f"({', '.join(map(str, clients)) or 'empty'}): PostgreSQL would refuse it"
            )
    problems += _tls_problems(host, values, target, target_values, kind, address)
    if logins:
        return problems + _login_problems(host, values.get("netjobs_app_database_username"), target, logins, secret)
    problems += _secret_problems(host, secret_pair[0], target, secret_pair[1], secret, secret_pair[2])
    return problems


def _sentinel_hosts(views: Mapping[str, Mapping[str, Any]], groups: Mapping[str, list[str]]) -> dict[str, Mapping[str, Any]]:
    """{host: its settings} of the redis hosts that run a Sentinel (redis_sentinel)."""
    return {
        member: (views.get(member) or {}).get("values") or {}
        for member in groups.get("redis") or []
        if _flag(((views.get(member) or {}).get("values") or {}).get("redis_sentinel"))
    }


def _sentinel_client_problems(
    host: str, values: Mapping[str, Any], views: Mapping[str, Mapping[str, Any]], groups: Mapping[str, list[str]],
    secret: SecretLookup,
) -> list[str]:
    """netjobs_app_redis_sentinels on `host` against the redis hosts that run Sentinels."""
    sentinels = values.get("netjobs_app_redis_sentinels") or []
    by_address = {str(v.get("redis_address")): member for member, v in _sentinel_hosts(views, groups).items()}
    problems = []
    for address in sentinels:
        target = by_address.get(str(address))
        if target is None:
            known = ", ".join(f"{member} ({address})" for address, member in sorted(by_address.items())) or "none"
            problems.append(
                f"{host}: netjobs_app_redis_sentinels lists '{address}', which is the redis_address of no redis host "
                f"with redis_sentinel; Sentinels: {known}"
            )
            continue
        target_values = _sentinel_hosts(views, groups)[target]
        port, target_port = _int(values.get("netjobs_app_redis_sentinel_port")), _int(target_values.get("redis_sentinel_port"))
        if port is not None and target_port is not None and port != target_port:
            problems.append(f"{host}: netjobs_app_redis_sentinel_port is {port}, but redis_sentinel_port on {target} is {target_port}")
        problems += _tls_problems(host, values, target, target_values, "redis", address)
    if len(set(map(str, sentinels))) < len(by_address) and not problems:
        missing = sorted(set(by_address) - set(map(str, sentinels)))
        problems.append(
            f"{host}: netjobs_app_redis_sentinels leaves out {', '.join(missing)}: list every Sentinel, so that the "
            "app finds the primary while any one of them is down"
        )
    if by_address:
        first = sorted(by_address.values())[0]
        problems += _secret_problems(host, "netjobs_app_redis_password", first, "redis_app_password", secret,
                                     "the workers could not log in to Redis or its Sentinels")
    return problems


def _sentinel_layout_problems(
    views: Mapping[str, Mapping[str, Any]], groups: Mapping[str, list[str]], secret: SecretLookup
) -> list[str]:
    """The Sentinel layout as a whole: on every redis host or none, three or more, one first primary."""
    sentinel_hosts = _sentinel_hosts(views, groups)
    if not sentinel_hosts:
        return []
    redis_hosts = [member for member in groups.get("redis") or [] if "values" in (views.get(member) or {})]
    problems = [
        f"{member}: redis_sentinel is false, but it is true on {', '.join(sorted(sentinel_hosts))}: every host of "
        "group redis runs a server and a Sentinel in that layout"
        for member in redis_hosts if member not in sentinel_hosts
    ]
    count = len(sentinel_hosts)
    if count < 3:
        problems.append(
            f"inventory: redis_sentinel needs three hosts in group redis or more, it has {count}: with fewer, no "
            "majority of Sentinels is left when one host is lost (docs/deploy.md, \"Sentinel\")"
        )
    addresses = {member: str(values.get("redis_address") or "") for member, values in sentinel_hosts.items()}
    for member, values in sorted(sentinel_hosts.items()):
        quorum = _int(values.get("redis_sentinel_quorum"))
        if quorum is not None and not count // 2 < quorum <= count:
            problems.append(
                f"{member}: redis_sentinel_quorum is {quorum}, but with {count} Sentinels it must be a majority "
                f"({count // 2 + 1} to {count}): a smaller one lets a minority fail over, a larger one never can"
            )
        min_replicas = _int(values.get("redis_sentinel_min_replicas_to_write"))
        if min_replicas is not None and not 0 <= min_replicas <= count - 2:
            problems.append(
                f"{member}: redis_sentinel_min_replicas_to_write is {min_replicas}, but with {count} Redis hosts it must be "
                f"0 to {count - 2}: after the loss of one host the new primary must still have that many replicas, "
                f"or it refuses every write"
            )
        address = addresses[member]
        if address and not is_ip(address):
            problems.append(f"{member}: redis_address must be an IP address (announced to replicas and Sentinels), got '{address}'")
        elif address and values.get("redis_bind") is not None and not _listens_on(values["redis_bind"], address, ("0.0.0.0", "*", "::")):
            problems.append(f"{member}: redis_address is '{address}', but redis_bind does not include it")
        primary = str(values.get("redis_primary") or "")
        if primary and primary not in addresses.values():
            problems.append(
                f"{member}: redis_primary is '{primary}', which is the redis_address of no Sentinel host "
                f"({', '.join(f'{m} ({a})' for m, a in sorted(addresses.items()))})"
            )
    primaries = {str(values.get("redis_primary") or "") for values in sentinel_hosts.values()}
    if len(primaries) > 1:
        problems.append(f"inventory: redis_primary differs between the redis hosts ({', '.join(sorted(primaries))}): name one first primary")
    first = sorted(sentinel_hosts)[0]
    for member in sorted(sentinel_hosts)[1:]:
        for name in ("redis_replication_password", "redis_sentinel_password", "redis_app_password"):
            problems += _secret_problems(member, name, first, name, secret, "the servers and Sentinels could not log in to each other")
    return problems


def _flag(value: Any) -> bool | None:
    """A boolean setting as True/False; None when it is not set (or not one)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return None


def _tls_problems(
    host: str, values: Mapping[str, Any], target: str, target_values: Mapping[str, Any], kind: str, address: Any
) -> list[str]:
    """TLS on both ends of a connection, and on by default between hosts (docs/deploy.md, "TLS").

    A layout is multi-host for a service when an app host reaches it on another host: then the
    connection carries passwords and jobs over the network and must use TLS, unless the operator
    sets netjobs_allow_plaintext: true. Unset flags (a view without them) are not judged.
    """
    if kind == "redis":
        mine_var, theirs_var, what = "netjobs_app_redis_tls", "redis_tls", "Redis"
    else:
        mine_var, theirs_var, what = "netjobs_app_database_tls", "postgresql_ssl", "PostgreSQL"
    mine, theirs = _flag(values.get(mine_var)), _flag(target_values.get(theirs_var))
    problems = []
    if mine is True and theirs is False:
        problems.append(f"{host}: {mine_var} is true, but {theirs_var} is false on {target}: {what} would refuse TLS")
    elif mine is False and theirs is True and (kind == "redis" or (target != host and not is_loopback(address))):
        problems.append(
            f"{host}: {mine_var} is false, but {theirs_var} is true on {target}: {what} accepts only TLS from {host}"
        )
    elif mine is False and target != host and not is_loopback(address) and not _flag(values.get("netjobs_allow_plaintext")):
        problems.append(
            f"{host}: {mine_var} is false, but {what} runs on another host ({target}): passwords and jobs would cross "
            f"the network in clear text; set {mine_var} (and {theirs_var} on {target}) to true, or "
            f"netjobs_allow_plaintext: true to accept that"
        )
    return problems


def _database_logins(target: str, secret: SecretLookup) -> dict[str, Any] | None:
    """postgresql_netjobs_logins on the database host, None when unset, empty or not evaluable."""
    try:
        logins = secret(target, "postgresql_netjobs_logins")
    except LookupError:
        return None
    return dict(logins) if isinstance(logins, Mapping) and logins else None


def _login_problems(host: str, username: Any, target: str, logins: Mapping[str, Any], secret: SecretLookup) -> list[str]:
    if username is None:
        return []
    if username not in logins:
        return [
            f"{host}: netjobs_app_database_username is '{username}', which is not in postgresql_netjobs_logins on "
            f"{target} ({', '.join(sorted(map(str, logins)))}): the app could not log in to PostgreSQL"
        ]
    try:
        password = secret(host, "netjobs_app_database_password")
    except LookupError as error:
        return [f"{host}: netjobs_app_database_password cannot be evaluated: {error}"]
    if password is None:
        return []
    if str(password) == "":
        return [f"{host}: netjobs_app_database_password is empty"]
    if str(password) != str(logins[username]):
        return [
            f"{host}: netjobs_app_database_password differs from the password of '{username}' in "
            f"postgresql_netjobs_logins on {target}: the app could not log in to PostgreSQL"
        ]
    return []


def _app_hosts(views: Mapping[str, Mapping[str, Any]], groups: Mapping[str, list[str]]) -> list[str]:
    """Hosts running netjobs code that this run looked at (not those left out by --limit)."""
    return [
        host
        for host, view in views.items()
        if "values" in view and any(host in (groups.get(group) or []) for group in NETJOBS_GROUPS)
    ]


def cross_host_problems(
    views: Mapping[str, Mapping[str, Any]], groups: Mapping[str, list[str]], secret: SecretLookup
) -> list[str]:
    """Every problem of an inventory that no single role can see, one line each.

    views: per host, what stage `view` recorded: address, values (settings), undefined
    ({variable: error}). groups: group name -> hosts. secret(host, name): a secret's value,
    None when not set, LookupError when it cannot be evaluated.
    """
    problems: list[str] = []
    for group, why in REQUIRED_GROUPS.items():
        if not groups.get(group):
            problems.append(f"inventory: group {group} has no host: {why}")
    for host, view in views.items():
        for name, error in sorted((view.get("undefined") or {}).items()):
            problems.append(f"{host}: {name} cannot be evaluated: {error}")

    problems += _sentinel_layout_problems(views, groups, secret)
    app_hosts = _app_hosts(views, groups)
    for host in app_hosts:
        view = views[host]
        problems += _service_problems(host, view, views, groups, secret, "redis")
        problems += _service_problems(host, view, views, groups, secret, "postgresql")
        values = view.get("values") or {}
        for name in ("netjobs_processes_flower_address", "netjobs_processes_flower_management_address"):
            value = values.get(name)
            if value not in (None, "") and not is_ip(value):
                problems.append(f"{host}: {name} must be an IP address (Flower binds it), got '{value}'")

    # Routing is by name on every host: each must know the same extra queues.
    routed = {host: sorted(views[host].get("values", {}).get("netjobs_app_extra_queues") or []) for host in app_hosts}
    if routed:
        reference_host = app_hosts[0]
        for host in app_hosts[1:]:
            if routed[host] != routed[reference_host]:
                problems.append(
                    f"{host}: netjobs_app_extra_queues is {routed[host]}, but {routed[reference_host]} on "
                    f"{reference_host}: every netjobs host must route the same queues"
                )

    # Every queue needs a consumer somewhere, or its tasks wait forever.
    worker_hosts = list(groups.get("netjobs_workers") or [])
    consumed: set[str] = set()
    known = True
    for host in worker_hosts:
        if "values" not in (views.get(host) or {}) or views[host].get("role_failures"):
            known = False  # left out by --limit, or refused by a role: its workers are unknown
            continue
        workers = (views[host].get("values") or {}).get("netjobs_processes_workers")
        if not isinstance(workers, list):
            known = False  # not evaluable here: reported already
            continue
        for worker in workers:
            if isinstance(worker, Mapping):
                consumed.update(worker.get("queues") or [])
                consumed.update(worker.get("extra_queues") or [])
    if worker_hosts and known:
        wanted = list(BUILTIN_QUEUES) + sorted({q for host in app_hosts for q in routed.get(host, [])})
        for queue in wanted:
            if queue not in consumed:
                problems.append(
                    f"netjobs_workers: no worker group consumes queue '{queue}' (netjobs_processes_workers on "
                    f"{', '.join(worker_hosts)}): its tasks would wait forever"
                )
    return problems


def python_problems(host: str, view: Mapping[str, Any], names_of: Callable[[str], list[str]]) -> list[str]:
    """The wheelhouse against the interpreter netjobs_app builds the venv from, on one host."""
    values = view.get("values") or {}
    python = view.get("python") or {}
    archive = values.get("netjobs_app_wheelhouse_archive")
    interpreter = values.get("netjobs_app_python")
    if python.get("error"):
        return [f"{host}: netjobs_app_python ({interpreter}) does not run: {python['error']}"]
    if not archive or not python.get("version"):
        return []
    try:
        names = names_of(archive)
    except (OSError, tarfile.TarError):
        return []  # a missing wheelhouse is netjobs_app's own check
    bad = wheel_problems(names, python["version"], python.get("machine", "x86_64"), python.get("glibc"))
    if not bad:
        return []
    more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
    return [
        f"{host}: the wheelhouse netjobs_app_wheelhouse_archive ({archive}) does not fit netjobs_app_python "
        f"({interpreter}: Python {python['version']}, {python.get('machine')}): {'; '.join(bad[:2])}{more}"
    ]


def report(
    views: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, list[str]],
    secret: SecretLookup,
    names_of: Callable[[str], list[str]] = wheel_names,
) -> list[str]:
    """Everything wrong with the inventory: the roles' own failures first, then the cross-host rules."""
    problems: list[str] = []
    for host, view in views.items():
        undefined = list((view.get("undefined") or {}).values())
        for message in view.get("role_failures") or []:
            message = message.removeprefix("Task failed: ")
            # A role that stopped on an undefined variable names only that variable; the view's
            # line below names the setting that refers to it.
            if not any(error and error in message for error in undefined):
                problems.append(f"{host}: {message}")
    problems += cross_host_problems(views, groups, secret)
    cache: dict[str, list[str]] = {}

    def cached(archive: str) -> list[str]:
        if archive not in cache:
            cache[archive] = names_of(archive)
        return cache[archive]

    for host in _app_hosts(views, groups):
        problems += python_problems(host, views[host], cached)
    return list(dict.fromkeys(problems))  # a message reported twice is one problem


# --- the Ansible action ---------------------------------------------------------------------------

try:
    from ansible.errors import AnsibleError
    from ansible.plugins.action import ActionBase
except ImportError:  # the rules above are importable without Ansible (unit tests)
    ActionBase = object  # type: ignore[assignment,misc]
    AnsibleError = Exception  # type: ignore[assignment,misc]


def _plain(value: Any) -> Any:
    """Templated values as plain lists, dicts and scalars (they go into a registered result)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    return str(value)


def _roles_of(group_names: Iterable[str]) -> list[str]:
    names = set(group_names)
    kinds = [kind for kind in ("redis", "postgresql") if kind in names]
    if names & set(NETJOBS_GROUPS):
        kinds.append("netjobs")
    return kinds


class ActionModule(ActionBase):  # type: ignore[misc,valid-type]
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("stage", "failures", "python", "hosts"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        stage = self._task.args.get("stage")
        if stage == "view":
            result["view"] = self._view(task_vars)
        elif stage == "report":
            problems = self._report(task_vars)
            result["problems"] = problems
            if problems:
                result["failed"] = True
                result["msg"] = (
                    f"{len(problems)} problem(s) in the inventory; no host was changed:\n" + "\n".join(problems)
                )
            else:
                result["msg"] = f"{len(self._task.args.get('hosts') or [])} hosts checked, no problem"
        else:
            result["failed"] = True
            result["msg"] = "stage must be view or report"
        result["changed"] = False
        return result

    def _template(self, task_vars: Mapping[str, Any], name: str) -> Any:
        return _plain(self._templar.template(task_vars[name]))

    def _view(self, task_vars: Mapping[str, Any]) -> dict[str, Any]:
        kinds = _roles_of(task_vars.get("group_names") or [])
        values, undefined, secrets = {}, {}, {}
        for kind in kinds:
            for name in VIEW_VARS[kind]:
                if name not in task_vars:
                    continue  # missing: the role's argument spec says so
                try:
                    values[name] = self._template(task_vars, name)
                except AnsibleError as error:
                    undefined[name] = str(error).splitlines()[0]
            for name in SECRET_VARS[kind]:
                if name not in task_vars:
                    continue
                try:
                    secrets[name] = "empty" if self._templar.template(task_vars[name]) in ("", None) else "set"
                except AnsibleError as error:
                    undefined[name] = str(error).splitlines()[0]
        address = task_vars.get("ansible_host", task_vars.get("inventory_hostname"))
        try:
            address = str(self._templar.template(address))
        except AnsibleError:
            address = str(task_vars.get("inventory_hostname"))
        failures = []
        for failure in self._task.args.get("failures") or []:
            failures += failure_messages(failure)
        python = {}
        probe = self._task.args.get("python") or {}
        if probe and not probe.get("skipped"):
            if probe.get("rc") == 0:
                version, machine, glibc = (str(probe.get("stdout", "")).split() + ["", "", ""])[:3]
                python = {"version": version, "machine": machine, "glibc": glibc if glibc not in ("", "-") else None}
            else:
                python = {"error": (str(probe.get("stderr") or probe.get("msg") or "").strip().splitlines() or ["?"])[-1]}
        return {
            "address": address,
            "values": values,
            "undefined": undefined,
            "secrets": secrets,
            "role_failures": list(dict.fromkeys(failures)),
            "python": python,
        }

    def _report(self, task_vars: Mapping[str, Any]) -> list[str]:
        hostvars = task_vars["hostvars"]
        hosts = list(self._task.args.get("hosts") or [])
        views = {}
        unchecked = []
        for host in hosts:
            registered = hostvars[host].get("__netjobs_validate_view") or {}
            if "view" in registered:
                views[host] = registered["view"]
            else:
                unchecked.append(f"{host}: could not be checked (unreachable, or a check failed unexpectedly: see above)")
        all_groups = task_vars.get("groups") or {}
        groups = {name: list(all_groups.get(name) or []) for name in list(REQUIRED_GROUPS) + list(NETJOBS_GROUPS)}
        # Hosts left out by --limit: only their address, so that others can still point at them.
        for host in {member for members in groups.values() for member in members} - set(views):
            try:
                views[host] = {"address": str(hostvars[host].get("ansible_host", host))}
            except AnsibleError:
                views[host] = {"address": host}

        def secret(host: str, name: str) -> Any:
            state = ((views.get(host) or {}).get("secrets") or {}).get(name)
            if state is None:
                return None
            if state == "empty":
                return ""
            try:
                return hostvars[host][name]
            except (AnsibleError, KeyError) as error:
                raise LookupError(str(error).splitlines()[0]) from None

        return unchecked + report(views, groups, secret)
