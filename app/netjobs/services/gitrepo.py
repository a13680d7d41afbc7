"""The configuration-backup git repository: one file per device, a commit per real change.

Several worker processes commit at once, so every change to the repository happens under an
exclusive ``flock`` on the repository directory. Commits carry the task id as a trailer: a
redelivered task that already committed finds its own commit instead of reporting "unchanged".
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TASK_TRAILER = "Netjobs-Task-Id"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class GitError(RuntimeError):
    """A git command failed; the message has git's own words."""


@dataclass(frozen=True)
class CommitOutcome:
    commit: str
    changed: bool


def identity() -> tuple[str, str]:
    return "netjobs", f"netjobs@{socket.gethostname()}"


def _git_env() -> dict[str, str]:
    name, email = identity()
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email,
        "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
    }  # fmt: skip


def git(repo: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                            env=_git_env())
    if check and result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {(result.stderr or result.stdout).strip()}")
    return result


def device_filename(device_name: str) -> str:
    """The file holding a device's configuration: a safe, stable name."""
    safe = _SAFE_NAME.sub("_", device_name).lstrip(".") or "_"
    return f"{safe}.cfg"


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Exclusive lock over the whole repository, across processes (flock on the directory)."""
    repo.mkdir(parents=True, exist_ok=True)
    fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _ensure_initialized(repo: Path) -> None:
    """Make ``repo`` a git repository with netjobs' identity (caller holds the lock)."""
    if (repo / ".git").is_dir():
        return
    git(repo, "init", "-q", "-b", "main")
    name, email = identity()
    git(repo, "config", "user.name", name)
    git(repo, "config", "user.email", email)


def ensure_repo(repo: Path) -> None:
    with repo_lock(repo):
        _ensure_initialized(repo)


def _write_atomically(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _last_commit_of(repo: Path, filename: str) -> tuple[str, str] | None:
    """(sha, message) of the last commit that touched ``filename``."""
    result = git(repo, "log", "-1", "--format=%H%x00%B", "--", filename, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return None
    sha, _, message = result.stdout.partition("\x00")
    return sha.strip(), message


def commit_file(repo: Path, filename: str, content: str, message: str, task_id: str | None) -> CommitOutcome:
    """Store ``content`` as ``filename`` and commit it if it differs from the committed version.

    Unchanged content returns the commit that last changed the file, with ``changed=False`` -
    unless that commit was made by ``task_id`` itself (a redelivered task), which returns it as
    ``changed=True`` without committing again.
    """
    with repo_lock(repo):
        _ensure_initialized(repo)
        _write_atomically(repo / filename, content)
        git(repo, "add", "--", filename)
        body = f"{message}\n\n{TASK_TRAILER}: {task_id}\n" if task_id else f"{message}\n"
        # `commit -- path` commits only this file; with no difference it exits 1 and commits nothing.
        result = git(repo, "commit", "-q", "--no-verify", "-F", "-", "--", filename, stdin=body, check=False)
        if result.returncode == 0:
            return CommitOutcome(_head(repo), changed=True)
        if git(repo, "diff", "--cached", "--quiet", "--", filename, check=False).returncode != 0:
            raise GitError(f"git commit failed in {repo}: {(result.stderr or result.stdout).strip()}")
        last = _last_commit_of(repo, filename)
        if last is None:
            raise GitError(f"{filename} is unchanged but was never committed in {repo}")
        sha, last_message = last
        own = task_id is not None and f"{TASK_TRAILER}: {task_id}" in last_message
        return CommitOutcome(sha, changed=own)


def _head(repo: Path) -> str:
    """The commit HEAD points to; read from the ref file, saving a `git rev-parse` under the lock."""
    head = (repo / ".git" / "HEAD").read_text().strip()
    if head.startswith("ref: "):
        ref = repo / ".git" / head[5:]
        if ref.is_file():
            return ref.read_text().strip()
        return git(repo, "rev-parse", "HEAD").stdout.strip()
    return head


def read_file_at(repo: Path, filename: str, commit: str = "HEAD") -> str:
    """The content of ``filename`` at ``commit`` (for compliance checks and diffs)."""
    return git(repo, "show", f"{commit}:{filename}").stdout
