"""Filters of the monitoring role: the netjobs alert rules with operator overrides of `for:`, and the
scrape targets of the netjobs hosts.

Plain Python without Ansible imports, so that app/tests can load this file by path and test it
(app/tests/test_monitoring_role_filters.py).
"""

import copy
import re

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class MonitoringError(ValueError):
    """Input the role cannot turn into a Prometheus configuration."""


def monitoring_rules(rules, for_overrides=None):
    """``rules`` (a parsed Prometheus rule file) with the ``for:`` of the alerts named in
    ``for_overrides`` ({alert: duration}) replaced. An override naming no alert of the file, or a
    duration Prometheus would refuse, is an error, so a typo never goes unnoticed."""
    result = copy.deepcopy(rules)
    overrides = dict(for_overrides or {})
    seen = set()
    for group in result.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            if name in overrides:
                duration = str(overrides[name])
                if not _DURATION.match(duration):
                    raise MonitoringError(f"for: of {name}: {duration!r} is not a Prometheus duration (30s, 5m, 1h)")
                rule["for"] = duration
                seen.add(name)
    unknown = sorted(set(overrides) - seen)
    if unknown:
        raise MonitoringError(f"no alert named {', '.join(unknown)} in the rules")
    return result


def monitoring_targets(hosts, hostvars, port, address_vars=("ansible_host",)):
    """``ADDRESS:PORT`` of each host (the first of its ``address_vars`` that is set and not empty,
    else its inventory name), in order, without duplicates. IPv6 addresses get brackets."""
    if isinstance(address_vars, str):
        address_vars = [address_vars]
    targets = []
    for host in hosts or []:
        values = hostvars[host] if host in hostvars else {}
        address = next((str(values[var]) for var in address_vars if var in values and values[var]), str(host))
        if ":" in address and not address.startswith("["):
            address = f"[{address}]"
        target = f"{address}:{int(port)}"
        if target not in targets:
            targets.append(target)
    return targets


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "monitoring_rules": monitoring_rules,
            "monitoring_targets": monitoring_targets,
        }
