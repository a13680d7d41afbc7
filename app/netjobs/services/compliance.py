"""Compliance: check each device's latest config snapshot against rules from a YAML file.

The rules file format is documented in ``netjobs/data/compliance-example.yml``. Each device's
latest configuration is read from the central archive (netjobs.services.archive), so every host
checks every device, whichever host backed it up.

Results are stored per (run, device, rule); running again with the same ``run_id`` (a redelivered
task) overwrites that run's rows instead of adding more.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml
from sqlalchemy import text

from netjobs.config import get_settings
from netjobs.db.engine import session_scope
from netjobs.errors import ValidationError
from netjobs.platforms import SUPPORTED_PLATFORMS
from netjobs.services.devices import select_devices
from netjobs.services.archive import latest_contents

RULE_KINDS = ("require", "forbid", "regex", "forbid_regex")
FILTERS = ("platforms", "sites", "tags")
RULE_KEYS = ("name", "description", *FILTERS, *RULE_KINDS)
MAX_RULES_BYTES = 1024 * 1024
MAX_FAILURES_IN_SUMMARY = 100
DEVICE_BATCH = 200
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,254}$")


class RulesFileError(ValidationError):
    """The rules file is missing or invalid; ``problems`` lists (line, reason) for each mistake."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}:{line}: {reason}" if line else f"{source}: {reason}" for line, reason in problems]
        super().__init__("invalid compliance rules\n" + "\n".join(lines))


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    kind: str  # one of RULE_KINDS
    patterns: tuple[str, ...]
    platforms: frozenset[str] | None = None
    sites: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    line: int = 0

    def applies_to(self, device: dict) -> bool:
        return ((self.platforms is None or device["platform"] in self.platforms)
                and (self.sites is None or device.get("site") in self.sites)
                and (self.tags is None or not self.tags.isdisjoint(device.get("tags") or ())))

    def check(self, content: str) -> tuple[bool, str]:
        """(passed, detail) for one config."""
        lines = content.splitlines()
        if self.kind == "require":
            present = {line.strip() for line in lines}
            missing = [p for p in self.patterns if p not in present]
            if missing:
                return False, "missing: " + ", ".join(repr(p) for p in missing)
            return True, f"all {len(self.patterns)} required line(s) present"
        if self.kind == "forbid":
            forbidden = set(self.patterns)
            found = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip() in forbidden]
            if found:
                return False, "present: " + ", ".join(f"{text!r} (line {n})" for n, text in found)
            return True, f"none of {len(self.patterns)} forbidden line(s) present"
        if self.kind == "regex":
            unmatched = [p for p in self.patterns if re.search(p, content, re.MULTILINE) is None]
            if unmatched:
                return False, "no line matches: " + ", ".join(repr(p) for p in unmatched)
            return True, f"all {len(self.patterns)} pattern(s) match"
        found = []
        for pattern in self.patterns:
            match = re.search(pattern, content, re.MULTILINE)
            if match is not None:
                number = content.count("\n", 0, match.start()) + 1
                found.append(f"{pattern!r} matches line {number}: {lines[number - 1].strip()!r}")
        if found:
            return False, "; ".join(found)
        return True, f"none of {len(self.patterns)} forbidden pattern(s) match"


# --- the rules file --------------------------------------------------------------------------------


def _string_list(value: object, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"{what} must be a string or a non-empty list of strings")
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise ValueError(f"{what} must contain only non-empty strings")
    return tuple(item.strip() if what in ("require", "forbid") else item for item in items)


def _parse_rule(item: object, node, problems: list[tuple[int, str]], seen: dict[str, int]) -> Rule | None:
    line = node.start_mark.line + 1
    if not isinstance(item, dict):
        problems.append((line, f"a rule must be a mapping with keys {', '.join(RULE_KEYS)}"))
        return None
    key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k.value, str)}
    name = item.get("name")
    name = name.strip() if isinstance(name, str) else name
    label = f"rule {name!r}" if isinstance(name, str) else "rule"
    before = len(problems)

    def problem(key: str | None, reason: str) -> None:
        problems.append((key_lines.get(key, line), f"{label}: {reason}"))

    for key in item:
        if key not in RULE_KEYS:
            problem(key, f"unknown key {key!r} (known: {', '.join(RULE_KEYS)})")
    if not isinstance(name, str) or not _RULE_NAME.match(name):
        problem("name", "needs a name (letters, digits, space . _ : / -; at most 255 characters)")
    elif name in seen:
        problem("name", f"name used twice (first on line {seen[name]})")
    else:
        seen[name] = line
    description = item.get("description", "")
    if not isinstance(description, str):
        problem("description", "description must be text")
    kinds = [k for k in RULE_KINDS if k in item]
    if len(kinds) != 1:
        problem(None, f"needs exactly one of {', '.join(RULE_KINDS)}, has {', '.join(kinds) or 'none'}")
        return None
    kind = kinds[0]
    patterns: tuple[str, ...] = ()
    try:
        patterns = _string_list(item[kind], kind)
    except ValueError as exc:
        problem(kind, str(exc))
    if kind in ("regex", "forbid_regex"):
        for pattern in patterns:
            try:
                re.compile(pattern, re.MULTILINE)
            except re.error as exc:
                problem(kind, f"pattern {pattern!r} does not compile: {exc}")
    filters: dict[str, frozenset[str] | None] = {}
    for key in FILTERS:
        if key not in item:
            filters[key] = None
            continue
        try:
            filters[key] = frozenset(_string_list(item[key], key))
        except ValueError as exc:
            problem(key, str(exc))
    unknown_platforms = sorted((filters.get("platforms") or frozenset()) - set(SUPPORTED_PLATFORMS))
    if unknown_platforms:
        problem("platforms", f"unknown platform(s) {', '.join(unknown_platforms)} "
                             f"(supported: {', '.join(SUPPORTED_PLATFORMS)})")
    if len(problems) > before:
        return None
    return Rule(name=name, description=description.strip(), kind=kind, patterns=patterns, line=line,
                **filters)


def parse_rules(content: str, source: str = "<rules>") -> list[Rule]:
    """Rules from YAML text: a list of rules, or a mapping whose only key is ``rules``."""
    try:
        root = yaml.compose(content, Loader=yaml.SafeLoader)
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RulesFileError(source, [(mark.line + 1 if mark else 0,
                                       f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]) from None
    if root is None or data is None:
        raise RulesFileError(source, [(0, "the file is empty: it needs a list of rules under 'rules:'")])
    seq_node = root
    if isinstance(data, dict):
        if set(data) != {"rules"}:
            raise RulesFileError(source, [(1, "expected a mapping with only the key 'rules' (or a list of rules)")])
        seq_node = next(v for k, v in root.value if k.value == "rules")
        data = data["rules"]
    if not isinstance(data, list):
        raise RulesFileError(source, [(seq_node.start_mark.line + 1, "rules must be a list of mappings")])
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    rules = [_parse_rule(item, node, problems, seen) for node, item in zip(seq_node.value, data)]
    if problems:
        raise RulesFileError(source, sorted(problems, key=lambda p: p[0]))
    return [r for r in rules if r is not None]


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Rules from ``path`` (default: NETJOBS_COMPLIANCE_RULES). Raises RulesFileError."""
    path = Path(path) if path is not None else get_settings().compliance_rules
    try:
        size = path.stat().st_size
        if size > MAX_RULES_BYTES:
            raise RulesFileError(str(path), [(0, f"{size} bytes; the limit is {MAX_RULES_BYTES}")])
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RulesFileError(str(path), [(0, "does not exist (set NETJOBS_COMPLIANCE_RULES)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError(str(path), [(0, f"cannot be read: {exc}")]) from None
    return parse_rules(content, str(path))


DEVICE_IDS_SQL = text("SELECT name, id FROM devices WHERE name = ANY(:names)")

UPSERT_RESULT_SQL = text("""
INSERT INTO compliance_results (run_id, device_id, snapshot_id, rule, passed, detail)
VALUES (:run_id, :device_id, :snapshot_id, :rule, :passed, :detail)
ON CONFLICT (run_id, device_id, rule) DO UPDATE SET
    snapshot_id = EXCLUDED.snapshot_id, passed = EXCLUDED.passed, detail = EXCLUDED.detail, checked_at = now()
""")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_compliance(devices=None, rules_path=None, run_id=None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Check the latest archived configuration of each selected enabled device against every rule
    that applies.

    Devices with no configuration in the archive are skipped and listed. Returns a JSON-friendly
    summary.
    """
    rules = load_rules(rules_path)
    run_id = run_id or uuid.uuid4().hex
    if not isinstance(run_id, str) or len(run_id) > 64:
        raise ValidationError("run_id must be a string of at most 64 characters")
    selected = select_devices(names=devices)
    summary = {"run_id": run_id, "devices": len(selected), "rules": len(rules), "checked": 0, "passed": 0,
               "failed": 0, "skipped": 0, "failed_devices": [], "skipped_devices": [], "failures": []}
    done = 0
    for batch in _batches(selected, DEVICE_BATCH):
        _check_batch(batch, rules, run_id, summary)
        done += len(batch)
        if progress is not None:
            progress(done, len(selected))
    return summary


def _check_batch(batch: list[dict], rules: list[Rule], run_id: str, summary: dict) -> None:
    names = [d["name"] for d in batch]
    with session_scope() as session:
        ids = dict(session.execute(DEVICE_IDS_SQL, {"names": names}).all())
    latest = latest_contents(list(ids.values()))
    results = []
    for device in batch:
        device_id = ids.get(device["name"])
        snapshot_id, content = latest.get(device_id, (None, None))
        if content is None:
            summary["skipped"] += 1
            summary["skipped_devices"].append(device["name"])
            continue
        summary["checked"] += 1
        device_failed = False
        for rule in rules:
            if not rule.applies_to(device):
                continue
            passed, detail = rule.check(content)
            results.append({"run_id": run_id, "device_id": device_id, "snapshot_id": snapshot_id,
                            "rule": rule.name, "passed": passed, "detail": detail})
            summary["passed" if passed else "failed"] += 1
            if not passed:
                device_failed = True
                if len(summary["failures"]) < MAX_FAILURES_IN_SUMMARY:
                    summary["failures"].append({"device": device["name"], "rule": rule.name, "detail": detail})
        if device_failed:
            summary["failed_devices"].append(device["name"])
    if results:
        with session_scope() as session:
            session.execute(UPSERT_RESULT_SQL, results)


def latest_results(device: str | None = None, run_id: str | None = None) -> list[dict]:
    """Stored results of one run (default: the newest run), for the CLI."""
    query = """
        SELECT r.run_id, d.name AS device, r.rule, r.passed, r.detail, r.checked_at
        FROM compliance_results r JOIN devices d ON d.id = r.device_id
        WHERE r.run_id = COALESCE(:run_id, (SELECT run_id FROM compliance_results ORDER BY checked_at DESC, id DESC
                                            LIMIT 1))
          AND (CAST(:device AS text) IS NULL OR d.name = :device)
        ORDER BY d.name, r.rule
    """
    with session_scope() as session:
        rows = session.execute(text(query), {"run_id": run_id, "device": device}).mappings()
        return [{**row, "checked_at": row["checked_at"].isoformat()} for row in rows]
