"""Git plumbing for the archive's git view (netjobs.services.archive): file names, commands, lock."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class GitError(RuntimeError):
    """A git command failed; the message has git's own words."""


def git(repo: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if check and result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {(result.stderr or result.stdout).strip()}")
    return result


def device_filename(device_name: str) -> str:
    """The file holding a device's configuration: a safe, stable name."""
    safe = _SAFE_NAME.sub("_", device_name).lstrip(".") or "_"
    return f"{safe}.cfg"


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Exclusive lock over the whole repository, across processes (flock on the directory).

    The kernel drops a flock when its holder dies, so a crash never leaves this lock behind."""
    repo.mkdir(parents=True, exist_ok=True)
    fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Explicitly: a child forked meanwhile shares this descriptor, so closing ours alone
            # would leave the lock held until that child exits.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
