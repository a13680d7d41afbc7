#!/usr/bin/env python3
"""The wheelhouse lock: every wheel the hosts install, with its exact version and sha256.

    wheel_lock.py lock  --pyproject pyproject.toml --lock requirements.lock [--extra REQ]...
    wheel_lock.py check --pyproject pyproject.toml --lock requirements.lock
    wheel_lock.py download --lock requirements.lock --dest DIR
    wheel_lock.py manifest --lock requirements.lock --wheelhouse DIR --out FILE

`lock` resolves pyproject's [project].dependencies (plus --extra requirements) once per target
interpreter (PYTHONS, each as CPython on PLATFORM) with `pip download --only-binary=:all:`, requires
every target to pick the same version of each package, and writes a pip requirements file in
hash-checking mode: one `name==version` per package with the sha256 of every wheel file the
targets need (a pure wheel has one hash, a compiled one one per interpreter). The header names
the targets. `pip download --require-hashes -r LOCK` then fetches exactly these files.

`download` fetches exactly the locked files for every target the lock names, in hash-checking
mode (`pip download --require-hashes --no-deps`): what `make wheelhouse` puts into the wheelhouse.

`check` (cheap, offline) fails when the lock and pyproject disagree: a dependency without a
locked version, a locked version outside the dependency's range, a package without a hash, a
package that must be pinned (PINNED) missing, or a lock written for other targets.

`manifest` writes wheelhouse.json, which says which interpreters a wheelhouse serves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

# The hosts' interpreters: Debian 12 (3.11) and Debian 13 (3.13), x86_64, glibc >= 2.36 (Debian 12).
PYTHONS = ("3.11", "3.13")
PLATFORM = "manylinux_2_36_x86_64"
# The app overrides internals of these, so an upgrade of any of them is a decision (make lock).
# pip does not expand a manylinux_2_X --platform to the older tags a host of that glibc also runs.
PLATFORM_TAGS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
]
PINNED = ("celery", "kombu", "redis", "celery-redbeat")
HEADER = "# targets: python {pythons}; platform {platform}"


class LockError(Exception):
    pass


def pyproject_requirements(pyproject: Path) -> list[Requirement]:
    data = tomllib.loads(pyproject.read_text())
    return [Requirement(spec) for spec in data["project"]["dependencies"]]


def parse_lock(text: str) -> tuple[dict[str, tuple[str, list[str]]], dict[str, str]]:
    """{canonical name: (version, [sha256...])} and the header fields of a lock file."""
    packages: dict[str, tuple[str, list[str]]] = {}
    header: dict[str, str] = {}
    match = re.search(r"^# targets: python (?P<pythons>[\d. ]+); platform (?P<platform>\S+)$", text, re.M)
    if match:
        header = match.groupdict()
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        name, sep, version = parts[0].partition("==")
        if not sep:
            raise LockError(f"not an exact pin: {parts[0]}")
        hashes = [p.removeprefix("--hash=sha256:") for p in parts[1:] if p.startswith("--hash=sha256:")]
        packages[canonicalize_name(name)] = (version, hashes)
    return packages, header


def check(pyproject: Path, lock: Path) -> list[str]:
    """Every disagreement between pyproject's dependency ranges and the lock, one line each."""
    if not lock.exists():
        return [f"{lock}: missing; run `make lock`"]
    packages, header = parse_lock(lock.read_text())
    problems = []
    if header != {"pythons": " ".join(PYTHONS), "platform": PLATFORM}:
        problems.append(
            f"{lock}: written for {header or 'unknown targets'}, not python {' '.join(PYTHONS)} on {PLATFORM}"
        )
    for req in pyproject_requirements(pyproject):
        name = canonicalize_name(req.name)
        if name not in packages:
            problems.append(f"{req.name}: in pyproject.toml ({req}) but not in {lock}")
        elif not req.specifier.contains(Version(packages[name][0]), prereleases=True):
            problems.append(f"{req.name}: locked {packages[name][0]}, pyproject.toml wants {req.specifier}")
    for name in PINNED:
        if name not in packages:
            problems.append(f"{name}: must be pinned in {lock}")
    for name, (version, hashes) in sorted(packages.items()):
        if not hashes:
            problems.append(f"{name}=={version}: no --hash=sha256 in {lock}")
    return problems


def pip_download(python: str, dest: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", *(f"--platform={tag}" for tag in PLATFORM_TAGS), "--implementation", "cp",
         "--python-version", python, "--abi", "cp" + python.replace(".", ""), "--dest", str(dest), *args],
        check=True,
    )


def download(requirements: list[str], python: str, dest: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as reqfile:
        reqfile.write("\n".join(requirements) + "\n")
        reqfile.flush()
        pip_download(python, dest, "-r", reqfile.name)


def download_locked(lock_path: Path, dest: Path) -> None:
    """The locked wheels of every target interpreter the lock names, verified against its hashes."""
    packages, header = parse_lock(lock_path.read_text())
    if not header:
        raise LockError(f"{lock_path}: no '# targets:' line; regenerate it with `make lock`")
    for python in header["pythons"].split():
        pip_download(python, dest, "--require-hashes", "--no-deps", "-r", str(lock_path))
    found = wheels_by_package(dest)
    for name, (version, _) in packages.items():
        if found.get(name, ("",))[0] != version:
            raise LockError(f"{name}=={version}: not downloaded into {dest}")


def wheels_by_package(directory: Path) -> dict[str, tuple[str, list[Path]]]:
    found: dict[str, tuple[str, list[Path]]] = {}
    for wheel in sorted(directory.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        previous = found.get(name)
        if previous and previous[0] != str(version):
            raise LockError(f"{name}: two versions downloaded ({previous[0]}, {version})")
        found[name] = (str(version), (previous[1] if previous else []) + [wheel])
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_lock(per_python: dict[str, dict[str, tuple[str, list[Path]]]], inputs: list[str]) -> str:
    names = sorted(set().union(*per_python.values()))
    lines = [
        "# The wheelhouse lock: every wheel the hosts install, exact version and sha256 of each file.",
        "# Written by `make lock` (tools/deploy/wheel_lock.py); `make wheelhouse` builds from it only.",
        HEADER.format(pythons=" ".join(PYTHONS), platform=PLATFORM),
        "# inputs: " + "; ".join(inputs),
    ]
    for name in names:
        versions = {py: found[name][0] for py, found in per_python.items() if name in found}
        if len(set(versions.values())) != 1 or len(versions) != len(per_python):
            raise LockError(f"{name}: the targets disagree ({versions}); pin it in pyproject.toml")
        files = sorted({wheel.name: wheel for found in per_python.values() for wheel in found[name][1]}.values())
        hashes = sorted({sha256(wheel) for wheel in files})
        lines.append(f"{name}=={next(iter(versions.values()))} \\")
        lines.extend(f"    --hash=sha256:{digest}" + (" \\" if i < len(hashes) - 1 else "")
                     for i, digest in enumerate(hashes))
    return "\n".join(lines) + "\n"


def lock(pyproject: Path, lock_path: Path, extras: list[str]) -> None:
    inputs = [str(req) for req in pyproject_requirements(pyproject)] + extras
    with tempfile.TemporaryDirectory(prefix="netjobs-lock-") as tmp:
        per_python = {}
        for python in PYTHONS:
            dest = Path(tmp) / python
            download(inputs, python, dest)
            per_python[python] = wheels_by_package(dest)
        text = render_lock(per_python, inputs)
    lock_path.write_text(text)
    problems = check(pyproject, lock_path)
    if problems:
        raise LockError("\n".join(problems))
    print(f"{lock_path}: {len(parse_lock(text)[0])} packages for python {', '.join(PYTHONS)} on {PLATFORM}")


def manifest(lock_path: Path, wheelhouse: Path) -> dict:
    """What wheelhouse.json holds: the interpreters and platform served, netjobs' version, the lock."""
    packages, header = parse_lock(lock_path.read_text())
    netjobs = [parse_wheel_filename(w.name) for w in wheelhouse.glob("netjobs-*.whl")]
    if len(netjobs) != 1:
        raise LockError(f"{wheelhouse}: expected one netjobs wheel, found {len(netjobs)}")
    return {
        "format": 1,
        "netjobs_version": str(netjobs[0][1]),
        "pythons": header["pythons"].split(),
        "platform": header["platform"],
        "lock_sha256": sha256(lock_path),
        "packages": {name: version for name, (version, _) in sorted(packages.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("lock", "check"):
        p = sub.add_parser(command)
        p.add_argument("--pyproject", type=Path, required=True)
        p.add_argument("--lock", type=Path, required=True)
        p.add_argument("--extra", action="append", default=[])
    p = sub.add_parser("download")
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True)
    p = sub.add_parser("manifest")
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--wheelhouse", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            lock(args.pyproject, args.lock, args.extra)
        elif args.command == "check":
            problems = check(args.pyproject, args.lock)
            for problem in problems:
                print(f"check-lock: {problem}", file=sys.stderr)
            if problems:
                print("check-lock: the lock and pyproject.toml disagree; run `make lock`", file=sys.stderr)
                return 1
            print(f"check-lock: {args.lock} agrees with {args.pyproject}")
        elif args.command == "download":
            download_locked(args.lock, args.dest)
        else:
            args.out.write_text(json.dumps(manifest(args.lock, args.wheelhouse), indent=2, sort_keys=True) + "\n")
    except LockError as error:
        print(f"wheel_lock: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
