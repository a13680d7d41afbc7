"""The wheelhouse lock check (tools/deploy/wheel_lock.py) and the release filters of netjobs_app."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wheel_lock = load("wheel_lock", ROOT / "tools/deploy/wheel_lock.py")
releases = load("netjobs_releases", ROOT / "roles/netjobs_app/filter_plugins/netjobs_releases.py")

HEADER = wheel_lock.HEADER.format(pythons=" ".join(wheel_lock.PYTHONS), platform=wheel_lock.PLATFORM)
H1, H2 = "a" * 64, "b" * 64


def write(tmp_path, deps, lock_lines, header=HEADER):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[project]\nname = 'x'\ndependencies = [" + ", ".join(json.dumps(d) for d in deps) + "]\n")
    lock = tmp_path / "requirements.lock"
    lock.write_text("\n".join([header, *lock_lines]) + "\n")
    return pyproject, lock


PINS = [f"{name}==1.0 --hash=sha256:{H1}" for name in ("kombu", "redis", "celery-redbeat")]


def test_the_repository_lock_agrees_with_pyproject():
    assert wheel_lock.check(ROOT / "pyproject.toml", ROOT / "requirements.lock") == []


def test_the_repository_lock_has_cp311_and_cp313_hashes_for_compiled_wheels():
    packages, header = wheel_lock.parse_lock((ROOT / "requirements.lock").read_text())
    assert header == {"pythons": "3.11 3.13", "platform": "manylinux_2_36_x86_64"}
    for name in ("psycopg2-binary", "cffi", "pyyaml", "sqlalchemy", "markupsafe"):
        assert len(packages[name][1]) == 2, name


def test_a_lock_that_agrees_passes(tmp_path):
    pyproject, lock = write(tmp_path, ["celery[redis]>=5.5,<6", "PyYAML>=6"],
                            [f"celery==5.7.0 \\\n    --hash=sha256:{H1}", f"pyyaml==6.0.4 --hash=sha256:{H1} --hash=sha256:{H2}", *PINS])
    assert wheel_lock.check(pyproject, lock) == []
    packages, _ = wheel_lock.parse_lock(lock.read_text())
    assert packages["pyyaml"] == ("6.0.4", [H1, H2])
    assert packages["celery"] == ("5.7.0", [H1])


def test_a_version_outside_the_range_fails(tmp_path):
    pyproject, lock = write(tmp_path, ["celery>=5.8,<6"], [f"celery==5.7.0 --hash=sha256:{H1}", *PINS])
    assert wheel_lock.check(pyproject, lock) == ["celery: locked 5.7.0, pyproject.toml wants <6,>=5.8"]


def test_a_dependency_missing_from_the_lock_fails(tmp_path):
    pyproject, lock = write(tmp_path, ["celery>=5.5", "alembic>=1.13"], [f"celery==5.7.0 --hash=sha256:{H1}", *PINS])
    assert wheel_lock.check(pyproject, lock) == [f"alembic: in pyproject.toml (alembic>=1.13) but not in {lock}"]


def test_a_package_without_hash_and_a_missing_pin_fail(tmp_path):
    pyproject, lock = write(tmp_path, ["celery>=5.5"], ["celery==5.7.0", f"kombu==5.7.0 --hash=sha256:{H1}"])
    assert wheel_lock.check(pyproject, lock) == [
        f"redis: must be pinned in {lock}",
        f"celery-redbeat: must be pinned in {lock}",
        f"celery==5.7.0: no --hash=sha256 in {lock}",
    ]


def test_a_lock_for_other_interpreters_fails(tmp_path):
    pyproject, lock = write(tmp_path, ["celery>=5.5"], [f"celery==5.7.0 --hash=sha256:{H1}", *PINS],
                            header="# targets: python 3.11; platform manylinux_2_36_x86_64")
    problems = wheel_lock.check(pyproject, lock)
    assert len(problems) == 1 and "not python 3.11 3.13" in problems[0]


def test_a_range_instead_of_a_pin_is_refused(tmp_path):
    with pytest.raises(wheel_lock.LockError, match="not an exact pin"):
        wheel_lock.parse_lock("celery>=5.5 --hash=sha256:" + H1)


def test_the_manifest_names_the_pythons_and_the_netjobs_version(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(HEADER + f"\ncelery==5.7.0 --hash=sha256:{H1}\n")
    (tmp_path / "netjobs-0.2.0-py3-none-any.whl").write_bytes(b"")
    manifest = wheel_lock.manifest(lock, tmp_path)
    assert manifest["pythons"] == ["3.11", "3.13"]
    assert manifest["platform"] == "manylinux_2_36_x86_64"
    assert manifest["netjobs_version"] == "0.2.0"
    assert manifest["packages"] == {"celery": "5.7.0"}
    assert manifest["format"] == 1 and len(manifest["lock_sha256"]) == 64


def test_a_release_is_named_by_version_and_content():
    name = releases.netjobs_release_name({"format": 1, "netjobs_version": "0.1.0"}, "0123456789abcdef" * 4)
    assert name == "0.1.0-0123456789ab"


@pytest.mark.parametrize("manifest, checksum, message", [
    ({}, "0" * 64, "no wheelhouse.json"),
    ({"format": 1, "netjobs_version": "../x"}, "0" * 64, "not a version"),
    ({"format": 1, "netjobs_version": "1.0"}, "xyz", "not a sha256"),
])
def test_a_bad_manifest_or_checksum_is_refused(manifest, checksum, message):
    with pytest.raises(releases.ReleaseError, match=message):
        releases.netjobs_release_name(manifest, checksum)


def found(*names_oldest_first):
    return [{"path": f"/opt/netjobs/releases/{name}", "mtime": float(i)} for i, name in enumerate(names_oldest_first)]


def test_prune_keeps_the_newest_and_every_protected_release():
    releases_found = found("a", "b", "c", "d", "e")
    # e is being installed, d is current, a is what the processes still run.
    assert releases.netjobs_releases_to_prune(releases_found, 2, ["e", "d", "", "a"]) == [
        "/opt/netjobs/releases/b", "/opt/netjobs/releases/c"]
    assert releases.netjobs_releases_to_prune(releases_found, 3, ["e"]) == [
        "/opt/netjobs/releases/a", "/opt/netjobs/releases/b"]
    assert releases.netjobs_releases_to_prune(found("a", "b"), 2, []) == []


def test_prune_refuses_to_keep_fewer_than_two():
    with pytest.raises(releases.ReleaseError, match="at least 2"):
        releases.netjobs_releases_to_prune(found("a"), 1, [])


gate = load("netjobs_gate", ROOT / "playbooks/filter_plugins/netjobs_gate.py")


def report(*checks):
    return {"ok": all(ok for _, ok, _ in checks),
            "checks": [{"name": n, "ok": ok, "detail": d, "severity": "error"} for n, ok, d in checks]}


NEWER = ("database migrated", False, "at revision 0004, head is 0003: run `netjobs db upgrade`")


def test_the_gate_opens_only_when_every_check_passes():
    assert gate.netjobs_doctor_gate(report(("broker reachable", True, "ok"))) == []
    assert gate.netjobs_doctor_gate(report(("queue default consumed", False, "no consumer"))) == [
        "queue default consumed: no consumer"]
    assert gate.netjobs_doctor_gate("not json") == ["netjobs doctor --json gave no checks"]


def test_after_a_rollback_a_newer_schema_passes_but_an_unmigrated_one_does_not():
    known = ["0001", "0002", "0003"]
    assert gate.netjobs_doctor_gate(report(NEWER), known, allow_newer_schema=True) == []
    assert gate.netjobs_doctor_gate(report(NEWER), known) == [f"{NEWER[0]}: {NEWER[2]}"]
    behind = ("database migrated", False, "at revision 0002, head is 0003: run `netjobs db upgrade`")
    assert gate.netjobs_doctor_gate(report(behind), known, allow_newer_schema=True) == [f"{behind[0]}: {behind[2]}"]


def test_migration_revisions_come_from_the_file_names():
    files = ["/v/0001_initial_schema.py", "/v/0003_config_archive.py", "/v/__init__.py", "/v/README"]
    assert gate.netjobs_migration_revisions(files) == ["0001", "0003"]
