"""The gate of upgrade.yml and rollback.yml: what in `netjobs doctor --json` stops the next host.

Every failing check stops it (doctor counts warnings too), except, when allow_newer_schema is set
(rollback.yml), "database migrated" for a schema *newer* than the running release: after a
rollback the previous release runs on the schema the newer release migrated to (expand/contract,
docs/deploy.md), and its doctor reports a revision it does not know. A revision the release knows
(an unmigrated database) still stops the gate.
"""

from __future__ import annotations

import re

_MIGRATION_FILE = re.compile(r"^([0-9A-Za-z]+)_\w*\.py$")
_MIGRATED = re.compile(r"^at revision (?P<current>\S+), head is (?P<head>\S+)")


def netjobs_doctor_gate(report, known_revisions=(), allow_newer_schema=False):
    """The problems (one line each) that keep the gate closed; [] when the host may pass."""
    if not isinstance(report, dict) or not isinstance(report.get("checks"), list):
        return ["netjobs doctor --json gave no checks"]
    known = {str(revision) for revision in known_revisions}
    problems = []
    for check in report["checks"]:
        if check.get("ok"):
            continue
        if allow_newer_schema and check.get("name") == "database migrated":
            match = _MIGRATED.match(str(check.get("detail", "")))
            if match and match.group("current") not in known:
                continue
        problems.append(f"{check.get('name')}: {check.get('detail')}")
    return problems


def netjobs_migration_revisions(paths):
    """Revision ids of migration files named REVISION_slug.py (netjobs' convention)."""
    names = (str(path).rsplit("/", 1)[-1] for path in paths)
    return sorted({match.group(1) for match in map(_MIGRATION_FILE.match, names) if match})


class FilterModule:
    def filters(self):
        return {
            "netjobs_doctor_gate": netjobs_doctor_gate,
            "netjobs_migration_revisions": netjobs_migration_revisions,
        }
