"""Compliance rules, the rules file, and checks of real snapshots in the central archive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from netjobs.services.compliance import Rule, RulesFileError, parse_rules

CONFIG_GOOD = """\
hostname r1
ip ssh version 2
ntp server 192.0.2.10
ntp server 192.0.2.11
logging host 192.0.2.50
line vty 0 4
 transport input ssh
"""
CONFIG_BAD = """\
hostname r2
ntp server 192.0.2.10
snmp-server community public RO
line vty 0 4
 transport input telnet
"""

RULES = """\
rules:
  - name: ntp
    description: both NTP servers
    platforms: [cisco_ios, arista_eos]
    require: [ntp server 192.0.2.10, ntp server 192.0.2.11]
  - name: no-telnet
    forbid: transport input telnet
  - name: ssh-v2
    platforms: cisco_ios
    regex: '^ip ssh version 2$'
  - name: no-public-snmp
    forbid_regex: ['^snmp-server community (public|private)\\b']
  - name: dc1-core-logging
    sites: dc1
    tags: [core]
    require: logging host 192.0.2.50
"""


# --- rules, no database -----------------------------------------------------------------------------


def test_each_rule_kind_passes_and_fails_with_a_clear_detail():
    rules = {r.name: r for r in parse_rules(RULES)}
    assert [r.kind for r in rules.values()] == ["require", "forbid", "regex", "forbid_regex", "require"]
    assert rules["ntp"].check(CONFIG_GOOD) == (True, "all 2 required line(s) present")
    assert rules["ntp"].check(CONFIG_BAD) == (False, "missing: 'ntp server 192.0.2.11'")
    assert rules["no-telnet"].check(CONFIG_GOOD) == (True, "none of 1 forbidden line(s) present")
    assert rules["no-telnet"].check(CONFIG_BAD) == (False, "present: 'transport input telnet' (line 5)")
    assert rules["ssh-v2"].check(CONFIG_GOOD) == (True, "all 1 pattern(s) match")
    assert rules["ssh-v2"].check(CONFIG_BAD) == (False, "no line matches: '^ip ssh version 2$'")
    assert rules["no-public-snmp"].check(CONFIG_GOOD) == (True, "none of 1 forbidden pattern(s) match")
    assert rules["no-public-snmp"].check(CONFIG_BAD) == (
        False, "'^snmp-server community (public|private)\\\\b' matches line 3: 'snmp-server community public RO'"
    )


def test_filters_choose_the_devices_a_rule_applies_to():
    rules = {r.name: r for r in parse_rules(RULES)}
    ios_dc1_core = {"platform": "cisco_ios", "site": "dc1", "tags": ["core", "edge"]}
    eos_dc2 = {"platform": "arista_eos", "site": "dc2", "tags": ["core"]}
    linux_dc1 = {"platform": "linux", "site": "dc1", "tags": []}
    assert [n for n, r in rules.items() if r.applies_to(ios_dc1_core)] == list(rules)
    assert [n for n, r in rules.items() if r.applies_to(eos_dc2)] == ["ntp", "no-telnet", "no-public-snmp"]
    assert [n for n, r in rules.items() if r.applies_to(linux_dc1)] == ["no-telnet", "no-public-snmp"]


def test_bad_rules_file_lists_every_mistake_with_its_line():
    content = """\
rules:
  - name: ok
    require: a
  - name: ok
    forbid: b
  - name: two-kinds
    require: a
    forbid: b
  - name: bad-regex
    regex: ['ok', 'ab(']
  - description: no name
    requir: x
    regex: x
  - name: bad-filter
    platforms: [cisco_ios, vax]
    sites: []
    forbid: []
  - just text
"""
    with pytest.raises(RulesFileError) as caught:
        parse_rules(content, "rules.yml")
    assert caught.value.problems == [
        (4, "rule 'ok': name used twice (first on line 2)"),
        (6, "rule 'two-kinds': needs exactly one of require, forbid, regex, forbid_regex, has require, forbid"),
        (10, "rule 'bad-regex': pattern 'ab(' does not compile: missing ), unterminated subpattern at position 2"),
        (11, "rule: needs a name (letters, digits, space . _ : / -; at most 255 characters)"),
        (12, "rule: unknown key 'requir' (known: name, description, platforms, sites, tags, require, forbid, "
             "regex, forbid_regex)"),
        (15, "rule 'bad-filter': unknown platform(s) vax (supported: cisco_ios, cisco_nxos, arista_eos, "
             "juniper_junos, linux)"),
        (16, "rule 'bad-filter': sites must be a string or a non-empty list of strings"),
        (17, "rule 'bad-filter': forbid must be a string or a non-empty list of strings"),
        (18, "a rule must be a mapping with keys name, description, platforms, sites, tags, require, forbid, "
             "regex, forbid_regex"),
    ]
    assert str(caught.value).startswith("invalid compliance rules\nrules.yml:4: rule 'ok': name used twice")


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", (0, "the file is empty: it needs a list of rules under 'rules:'")),
        ("rules: [\n", (2, "not valid YAML: expected the node content, but found '<stream end>'")),
        ("checks:\n  - name: x\n", (1, "expected a mapping with only the key 'rules' (or a list of rules)")),
        ("rules: yes\n", (1, "rules must be a list of mappings")),
    ],
)
def test_rules_file_structure_errors(content, problem):
    with pytest.raises(RulesFileError) as caught:
        parse_rules(content, "r.yml")
    assert caught.value.problems == [problem]


def test_missing_rules_file_is_a_clear_error(tmp_path):
    from netjobs.services.compliance import load_rules

    with pytest.raises(RulesFileError, match=r"nope.yml: does not exist \(set NETJOBS_COMPLIANCE_RULES\)"):
        load_rules(tmp_path / "nope.yml")


def test_shipped_example_rules_are_valid():
    import netjobs

    example = Path(netjobs.__file__).parent / "data" / "compliance-example.yml"
    from netjobs.services.compliance import load_rules

    rules = load_rules(example)
    assert {r.kind for r in rules} == {"require", "forbid", "regex", "forbid_regex"}
    assert all(isinstance(r, Rule) and r.description for r in rules)


rule_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.sampled_from(["a(", "^x$", "cisco_ios"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "description", "platforms", "sites", "tags", "require", "forbid", "regex",
                         "forbid_regex", "other"]), children, max_size=5),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(rule_values, st.fixed_dictionaries({"rules": st.lists(rule_values, max_size=4)})))
def test_any_rules_document_gives_rules_or_line_numbered_problems(document):
    content = yaml.safe_dump(document)
    last_line = content.count("\n") + 1
    try:
        rules = parse_rules(content)
    except RulesFileError as exc:
        assert exc.problems and all(0 <= line <= last_line and reason for line, reason in exc.problems)
    else:
        assert all(r.kind in ("require", "forbid", "regex", "forbid_regex") and r.patterns for r in rules)
        assert all(r.check("ip ssh version 2\n")[1] for r in rules)


# --- against snapshots in the archive -------------------------------------------------------------


def add_snapshot(engine, device: str, content: str, age_minutes: int = 0, task_id: str | None = None) -> int:
    """Archive ``content`` as the device's snapshot, then backdate it by ``age_minutes``."""
    from netjobs.services.archive import store_snapshot
    from netjobs.services.backup import content_hash

    with engine.connect() as conn:
        device_id = conn.execute(text("SELECT id FROM devices WHERE name = :d"), {"d": device}).scalar_one()
    snapshot_id = store_snapshot(device_id, content, content_hash(content), task_id).snapshot_id
    with engine.begin() as conn:
        conn.execute(text("UPDATE config_snapshots SET collected_at = :at WHERE id = :id"),
                     {"at": datetime.now(timezone.utc) - timedelta(minutes=age_minutes), "id": snapshot_id})
    return snapshot_id


def stored_results(engine, run_id: str) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.name, r.rule, r.passed, r.snapshot_id FROM compliance_results r JOIN devices d ON d.id = r.device_id "
            "WHERE r.run_id = :run ORDER BY d.name, r.rule"), {"run": run_id}).all()
    return {(name, rule): (passed, snapshot) for name, rule, passed, snapshot in rows}


@pytest.fixture
def fleet(db, tmp_path):
    """r1 good (fixed after a bad backup), r2 bad with an unchanged re-backup, r3 never backed up."""
    from netjobs.services.devices import add_device

    add_device("r1", "10.0.0.1", "cisco_ios", site="dc1", tags=["core"])
    add_device("r2", "10.0.0.2", "arista_eos", site="dc2")
    add_device("r3", "10.0.0.3", "linux")
    add_device("off", "10.0.0.4", "linux", enabled=False)
    add_snapshot(db, "r1", CONFIG_BAD, age_minutes=60)
    r1_new = add_snapshot(db, "r1", CONFIG_GOOD, age_minutes=30)
    add_snapshot(db, "r2", CONFIG_BAD, age_minutes=30)
    r2_unchanged = add_snapshot(db, "r2", CONFIG_BAD)  # an unchanged backup: a snapshot, no new content
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    return {"rules": rules, "snapshots": {"r1": r1_new, "r2": r2_unchanged}}


def test_run_checks_latest_snapshots_and_stores_results_once_per_run(fleet, db):
    from netjobs.services.compliance import latest_results, run_compliance

    summary = run_compliance(rules_path=fleet["rules"], run_id="run-1")
    assert {k: v for k, v in summary.items() if k != "failures"} == {
        "run_id": "run-1", "devices": 3, "rules": 5, "checked": 2, "passed": 5, "failed": 3, "skipped": 1,
        "failed_devices": ["r2"], "skipped_devices": ["r3"],
    }
    assert [(f["device"], f["rule"]) for f in summary["failures"]] == [
        ("r2", "ntp"), ("r2", "no-telnet"), ("r2", "no-public-snmp")]
    r1, r2 = fleet["snapshots"]["r1"], fleet["snapshots"]["r2"]
    expected = {
        ("r1", "dc1-core-logging"): (True, r1), ("r1", "no-public-snmp"): (True, r1), ("r1", "no-telnet"): (True, r1),
        ("r1", "ntp"): (True, r1), ("r1", "ssh-v2"): (True, r1),
        ("r2", "no-public-snmp"): (False, r2), ("r2", "no-telnet"): (False, r2), ("r2", "ntp"): (False, r2),
    }
    assert stored_results(db, "run-1") == expected
    # The same run again (a redelivered task) rewrites its rows instead of adding more.
    assert run_compliance(rules_path=fleet["rules"], run_id="run-1")["failed"] == 3
    assert stored_results(db, "run-1") == expected
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM compliance_results")).scalar() == len(expected)
    shown = latest_results(device="r2")
    assert [(r["rule"], r["passed"]) for r in shown] == [("no-public-snmp", False), ("no-telnet", False), ("ntp", False)]


def test_run_on_named_devices_and_unknown_names(fleet, db):
    from netjobs.errors import NotFoundError
    from netjobs.services.compliance import run_compliance

    summary = run_compliance(devices=["r1"], rules_path=fleet["rules"], run_id="run-2")
    assert (summary["devices"], summary["checked"], summary["passed"], summary["failed"]) == (1, 1, 5, 0)
    with pytest.raises(NotFoundError, match="unknown device: r9"):
        run_compliance(devices=["r1", "r9"], rules_path=fleet["rules"])


def test_check_task_on_the_real_worker(worker, db, celery_app):
    """Uses the session's NETJOBS_COMPLIANCE_RULES and the central archive, as the deployed task does."""
    from netjobs.config import get_settings
    from netjobs.services.devices import add_device

    settings = get_settings()
    add_device("cmp-r1", "10.0.1.1", "cisco_ios", site="dc1", tags=["core"])
    add_snapshot(db, "cmp-r1", CONFIG_BAD, task_id="backup-task-1")
    settings.compliance_rules.unlink(missing_ok=True)

    missing = celery_app.send_task("netjobs.compliance.check")
    with pytest.raises(Exception, match="does not exist"):
        missing.get(timeout=60)

    settings.compliance_rules.write_text(RULES)
    try:
        result = celery_app.send_task("netjobs.compliance.check", kwargs={"devices": ["cmp-r1"]})
        summary = result.get(timeout=60)
    finally:
        settings.compliance_rules.unlink()
    assert summary["run_id"] == result.id
    assert (summary["checked"], summary["passed"], summary["failed"]) == (1, 0, 5)
    assert {rule: passed for (_, rule), (passed, _) in stored_results(db, result.id).items()} == {
        "dc1-core-logging": False, "no-public-snmp": False, "no-telnet": False, "ntp": False, "ssh-v2": False,
    }
