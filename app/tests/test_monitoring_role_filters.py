"""The monitoring role's filter plugin (roles/monitoring/filter_plugins/monitoring.py), loaded by path:
`for:` overrides of the shipped alert rules, and the scrape targets of the inventory's hosts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "roles/monitoring/filter_plugins/monitoring.py"
RULES = REPO / "monitoring/prometheus/netjobs.rules.yml"

_spec = importlib.util.spec_from_file_location("monitoring_role_filters", PLUGIN)
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)


def shipped_rules():
    return yaml.safe_load(RULES.read_text())


def alerts(rules):
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def test_filters_are_registered_for_ansible():
    assert set(filters.FilterModule().filters()) == {"monitoring_rules", "monitoring_targets"}


def test_without_overrides_the_rules_are_unchanged():
    assert filters.monitoring_rules(shipped_rules()) == shipped_rules()
    assert filters.monitoring_rules(shipped_rules(), {}) == shipped_rules()


def test_an_override_changes_only_its_alert_and_not_the_input():
    rules = shipped_rules()
    changed = filters.monitoring_rules(rules, {"NetjobsDeadLettersPresent": "5s"})
    assert alerts(changed)["NetjobsDeadLettersPresent"]["for"] == "5s"
    assert alerts(rules)["NetjobsDeadLettersPresent"]["for"] == "1m"
    before, after = alerts(rules), alerts(changed)
    assert {name for name in before if before[name] != after[name]} == {"NetjobsDeadLettersPresent"}


def test_an_unknown_alert_or_a_bad_duration_fails():
    with pytest.raises(filters.MonitoringError, match="NetjobsNoSuchAlert"):
        filters.monitoring_rules(shipped_rules(), {"NetjobsNoSuchAlert": "5s"})
    with pytest.raises(filters.MonitoringError, match="not a Prometheus duration"):
        filters.monitoring_rules(shipped_rules(), {"NetjobsDeadLettersPresent": "5 seconds"})


def test_targets_take_the_first_address_set_and_fall_back_to_the_name():
    hostvars = {
        "a": {"netjobs_processes_exporter_address": "10.0.0.5", "ansible_host": "192.0.2.1"},
        "b": {"netjobs_processes_exporter_address": "", "ansible_host": "192.0.2.2"},
        "c": {},
        "d": {"ansible_host": "2001:db8::4"},
    }
    targets = filters.monitoring_targets(["a", "b", "c", "d", "a"], hostvars, "9808",
                                         ["netjobs_processes_exporter_address", "ansible_host"])
    assert targets == ["10.0.0.5:9808", "192.0.2.2:9808", "c:9808", "[2001:db8::4]:9808"]
    assert filters.monitoring_targets(["a"], hostvars, 9100) == ["192.0.2.1:9100"]
    assert filters.monitoring_targets([], hostvars, 9100) == []
