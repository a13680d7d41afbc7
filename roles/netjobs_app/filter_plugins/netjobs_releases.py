"""Filters for netjobs releases: /opt/netjobs/releases/VERSION, `current` and `previous` links.

A release is named by the netjobs version in the wheelhouse manifest (wheelhouse.json, written by
`make wheelhouse`) and a short content id, the start of the wheelhouse tar's sha256: a rebuild
with new code is a new release even when the version did not change, and a byte-identical
rebuild is the same release.
"""

from __future__ import annotations

import re

RELEASE_ID_LENGTH = 12
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ReleaseError(ValueError):
    pass


def netjobs_release_name(manifest, checksum):
    """VERSION-ID of the wheelhouse whose manifest and sha256 are given."""
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise ReleaseError("the wheelhouse has no wheelhouse.json of format 1; rebuild it with `make wheelhouse`")
    version = str(manifest.get("netjobs_version", ""))
    if not _VERSION.match(version):
        raise ReleaseError(f"wheelhouse.json: netjobs_version {version!r} is not a version")
    if not _SHA256.match(str(checksum)):
        raise ReleaseError(f"not a sha256 checksum: {checksum!r}")
    return f"{version}-{checksum[:RELEASE_ID_LENGTH]}"


def netjobs_releases_to_prune(found, keep, protected):
    """Paths of the release directories to remove.

    found: the `files` of ansible.builtin.find over the releases directory (path, mtime).
    keep: how many releases to keep, the newest first. protected: release names never removed
    whatever their age (current, previous, the one being installed, the one the processes run).
    """
    keep = int(keep)
    if keep < 2:
        raise ReleaseError(f"keep must be at least 2 (current and previous), got {keep}")
    protected = {name for name in protected if name}
    newest_first = sorted(found, key=lambda item: (float(item["mtime"]), item["path"]), reverse=True)
    kept = 0
    prune = []
    for item in newest_first:
        name = item["path"].rstrip("/").rsplit("/", 1)[-1]
        if name in protected:
            kept += 1
        elif kept < keep:
            kept += 1
        else:
            prune.append(item["path"])
    return sorted(prune)


class FilterModule:
    def filters(self):
        return {
            "netjobs_release_name": netjobs_release_name,
            "netjobs_releases_to_prune": netjobs_releases_to_prune,
        }
