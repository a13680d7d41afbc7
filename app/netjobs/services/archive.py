"""The config archive: every device's configuration history, one archive for the whole fleet.

PostgreSQL is the authoritative store. A configuration is stored once per distinct content in
``config_contents`` (keyed by the SHA-256 of its normalized, redacted text, so an unchanged
configuration costs one row in ``config_snapshots`` and nothing more); each backup adds a snapshot
row pointing at its content, with the lines added and removed against the device's previous one.
Every host reads the same archive, whichever host backed a device up.

Git is a derived, read-only view for operators' own tools (as with Oxidized or RANCID):
:func:`export_git` appends one commit per changed snapshot, in snapshot order, with the snapshot's
time as the commit time and a fixed identity, so the same snapshots always give the same commit
ids on every host. ``config_snapshots.git_commit`` records them.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from netjobs.db.engine import session_scope
from netjobs.db.models import ConfigContent, ConfigSnapshot, Device
from netjobs.errors import NotFoundError, ValidationError
from netjobs.services.gitrepo import GitError, device_filename, git, repo_lock

log = logging.getLogger(__name__)

EXPORT_IDENTITY = "netjobs <netjobs@config-archive>"
SNAPSHOT_TRAILER = "Netjobs-Snapshot-Id"
# Only snapshots older than this are exported: a snapshot row becomes visible when its transaction
# commits, which can be after a later row's; in practice a few milliseconds.
EXPORT_SETTLE = timedelta(seconds=60)
EXPORT_BATCH = 2000  # commits per fast-import run (and transaction)
EXPORT_FETCH = 20  # rows fetched from PostgreSQL at a time while streaming them to git
_HEX = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class StoredSnapshot:
    snapshot_id: int
    changed: bool
    lines_added: int | None
    lines_removed: int | None
    full_read: bool = True


def line_changes(old: str | None, new: str) -> tuple[int | None, int | None]:
    """Lines added and removed from ``old`` to ``new`` (None, None when ``old`` is unknown)."""
    if old is None:
        return None, None
    added = removed = 0
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def _earlier_snapshot(session, device_id: int, task_id: str | None, digest: str) -> StoredSnapshot | None:
    """The snapshot this task already wrote with this content (a redelivered task), if any."""
    if task_id is None:
        return None
    earlier = session.execute(
        select(ConfigSnapshot.id, ConfigSnapshot.changed, ConfigSnapshot.lines_added,
               ConfigSnapshot.lines_removed, ConfigSnapshot.full_read)
        .where(ConfigSnapshot.device_id == device_id, ConfigSnapshot.task_id == task_id,
               ConfigSnapshot.content_hash == digest)
    ).first()
    return StoredSnapshot(*earlier) if earlier is not None else None


def store_snapshot(device_id: int, content: str, digest: str, task_id: str | None,
                   changed_by: str | None = None, change_marker: str | None = None) -> StoredSnapshot:
    """Record one backup of a device. Safe to repeat: the same task id returns its first snapshot.

    ``changed_by`` (the user a device's syslog message named) is kept on the row written, changed or
    not: a change that left the configuration as it was (or that an earlier backup already caught)
    still says who touched the device. ``change_marker``: what the device's change marker said
    before the configuration was read (see :func:`store_unchanged_by_marker`).

    The device row is locked for the transaction, so two backups of one device (a redelivery racing
    the original, or two operators) decide "changed" one after the other.
    """
    with session_scope() as session:
        session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
        earlier = _earlier_snapshot(session, device_id, task_id, digest)
        if earlier is not None:
            return earlier
        previous = session.execute(
            select(ConfigSnapshot.content_hash, ConfigContent.content)
            .outerjoin(ConfigContent, ConfigContent.content_hash == ConfigSnapshot.content_hash)
            .where(ConfigSnapshot.device_id == device_id)
            .order_by(ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc()).limit(1)
        ).first()
        changed = previous is None or previous.content_hash != digest
        if changed:
            session.execute(
                insert(ConfigContent)
                .values(content_hash=digest, content=content, lines=len(content.splitlines()))
                .on_conflict_do_nothing(index_elements=[ConfigContent.content_hash])
            )
            added, removed = line_changes(previous.content if previous is not None else "", content)
        else:
            added, removed = 0, 0
        snapshot_id = session.scalar(
            insert(ConfigSnapshot)
            .values(device_id=device_id, content_hash=digest, changed=changed, task_id=task_id,
                    lines_added=added, lines_removed=removed, changed_by=_column_text(changed_by, 255),
                    change_marker=change_marker, full_read=True)
            .returning(ConfigSnapshot.id)
        )
        return StoredSnapshot(snapshot_id, changed, added, removed)


def store_unchanged_by_marker(device_id: int, change_marker: str, task_id: str | None,
                              full_read_max_age: timedelta) -> tuple[StoredSnapshot, str] | None:
    """Record a backup whose configuration was not read, if the device's change marker allows it.

    It does when ``change_marker`` equals the marker of the device's newest snapshot and the
    device's last full read is younger than ``full_read_max_age`` (by the database's clock, the same
    for every host). The row then repeats the newest content (changed false, full_read false), so
    everything reading the last backup sees this one. Returns the snapshot and its content hash, or
    None: read the configuration in full.

    Decided and written under the device-row lock of :func:`store_snapshot`: a full read committed by
    another host meanwhile is the newest snapshot here, and a marker read before it no longer
    matches. Safe to repeat: the same task id returns its first snapshot.
    """
    with session_scope() as session:
        session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
        newest = session.execute(
            select(ConfigSnapshot.content_hash, ConfigSnapshot.change_marker)
            .where(ConfigSnapshot.device_id == device_id)
            .order_by(ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc()).limit(1)
        ).first()
        if newest is None:
            return None
        earlier = _earlier_snapshot(session, device_id, task_id, newest.content_hash)
        if earlier is not None:
            return earlier, newest.content_hash
        if newest.change_marker != change_marker:
            return None
        last_full_read = session.scalar(
            select(ConfigSnapshot.collected_at)
            .where(ConfigSnapshot.device_id == device_id, ConfigSnapshot.full_read.is_(True))
            .order_by(ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc()).limit(1)
        )
        if last_full_read is None or session.scalar(select(func.now() - last_full_read)) >= full_read_max_age:
            return None
        snapshot_id = session.scalar(
            insert(ConfigSnapshot)
            .values(device_id=device_id, content_hash=newest.content_hash, changed=False, task_id=task_id,
                    lines_added=0, lines_removed=0, change_marker=change_marker, full_read=False)
            .returning(ConfigSnapshot.id)
        )
        return StoredSnapshot(snapshot_id, False, 0, 0, full_read=False), newest.content_hash


def _column_text(value: str | None, width: int) -> str | None:
    return value[:width] if value else None


# --- history -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """A snapshot of a device's configuration. ``revision`` is the snapshot id."""

    revision: int
    device: str
    collected_at: datetime
    content_hash: str
    changed: bool
    lines_added: int | None
    lines_removed: int | None
    git_commit: str | None
    task_id: str | None
    changed_by: str | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["collected_at"] = self.collected_at.isoformat()
        return data


def _device_id(session, name: str) -> int:
    device_id = session.scalar(select(Device.id).where(Device.name == name))
    if device_id is None:
        raise NotFoundError(f"unknown device {name!r} (see `netjobs devices list`)")
    return device_id


def _revision_query(device_id: int):
    return (
        select(ConfigSnapshot.id, Device.name, ConfigSnapshot.collected_at, ConfigSnapshot.content_hash,
               ConfigSnapshot.changed, ConfigSnapshot.lines_added, ConfigSnapshot.lines_removed,
               ConfigSnapshot.git_commit, ConfigSnapshot.task_id, ConfigSnapshot.changed_by)
        .join(Device, Device.id == ConfigSnapshot.device_id)
        .where(ConfigSnapshot.device_id == device_id)
    )


def config_log(device: str, limit: int = 50, include_unchanged: bool = False) -> list[Revision]:
    """The device's revisions, newest first: each change (and with ``include_unchanged`` every backup)."""
    with session_scope() as session:
        query = _revision_query(_device_id(session, device))
        if not include_unchanged:
            # The first snapshot of a device counts as a change.
            query = query.where(ConfigSnapshot.changed.is_(True))
        rows = session.execute(query.order_by(ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc())
                               .limit(limit)).all()
    return [Revision(*row) for row in rows]


def parse_when(text_value: str) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise), or None if ``text_value`` is not one."""
    try:
        when = datetime.fromisoformat(text_value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if len(text_value) <= 10:  # a plain date means the end of that day
        when += timedelta(days=1) - timedelta(microseconds=1)
    return when


def resolve(device: str, rev: str | None = None) -> Revision:
    """The revision ``rev`` of ``device``: a snapshot id, a content hash or git commit prefix (7+
    hex digits), a date or date-time (the last snapshot at or before it), or None for the latest."""
    with session_scope() as session:
        query = _revision_query(_device_id(session, device))
        newest = (ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc())
        if rev is None:
            row = session.execute(query.order_by(*newest).limit(1)).first()
            if row is None:
                raise NotFoundError(f"device {device!r} has no configuration in the archive yet")
            return Revision(*row)
        rev = rev.strip()
        if rev.isdigit():
            row = session.execute(query.where(ConfigSnapshot.id == int(rev))).first()
        elif _HEX.match(rev.lower()):
            prefix = rev.lower() + "%"
            row = session.execute(query.where(ConfigSnapshot.content_hash.like(prefix)
                                              | ConfigSnapshot.git_commit.like(prefix))
                                  .order_by(*newest).limit(1)).first()
        elif (when := parse_when(rev)) is not None:
            row = session.execute(query.where(ConfigSnapshot.collected_at <= when).order_by(*newest).limit(1)).first()
            if row is None:
                raise NotFoundError(f"device {device!r} has no configuration from {rev} or before")
        else:
            raise ValidationError(f"invalid revision {rev!r}: use a revision number from `netjobs configs log`, "
                                  "a hash prefix (7+ hex digits) or a date (2026-11-30 or 2026-11-30T14:00)")
        if row is None:
            raise NotFoundError(f"device {device!r} has no revision {rev!r} (see `netjobs configs log {device}`)")
        return Revision(*row)


def content_of(revision: Revision) -> str:
    with session_scope() as session:
        content = session.scalar(select(ConfigContent.content)
                                 .where(ConfigContent.content_hash == revision.content_hash))
    if content is None:
        raise NotFoundError(f"revision {revision.revision} of {revision.device} predates the central archive; "
                            "its content is only in the git repository of the host that backed it up")
    return content


def previous_change(revision: Revision) -> Revision | None:
    """The revision whose content ``revision`` replaced (None for the first)."""
    with session_scope() as session:
        device_id = _device_id(session, revision.device)
        row = session.execute(
            _revision_query(device_id)
            .where(ConfigSnapshot.content_hash != revision.content_hash,
                   (ConfigSnapshot.collected_at < revision.collected_at))
            .order_by(ConfigSnapshot.collected_at.desc(), ConfigSnapshot.id.desc()).limit(1)
        ).first()
    return Revision(*row) if row is not None else None


def diff(device: str, rev1: str | None = None, rev2: str | None = None) -> tuple[Revision | None, Revision, list[str]]:
    """Unified diff lines from ``rev1`` to ``rev2``. No revisions: the last change. One: it against
    the latest."""
    new = resolve(device, rev2)
    if rev1 is None:
        old = previous_change(new)
    else:
        old = resolve(device, rev1)
    old_text = content_of(old) if old is not None else ""
    new_text = content_of(new)
    label_old = f"{device}@{old.revision}" if old is not None else "/dev/null"
    lines = list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), label_old,
                                      f"{device}@{new.revision}", lineterm=""))
    return old, new, lines


def changed_since(since: datetime) -> list[dict]:
    """Devices whose configuration changed since ``since``: changes and lines added/removed."""
    query = text("""
        SELECT d.name AS device, count(*) AS changes, COALESCE(sum(s.lines_added), 0) AS lines_added,
               COALESCE(sum(s.lines_removed), 0) AS lines_removed, max(s.collected_at) AS last_change
        FROM config_snapshots s JOIN devices d ON d.id = s.device_id
        WHERE s.changed AND s.collected_at >= :since
        GROUP BY d.name ORDER BY d.name
    """)
    with session_scope() as session:
        rows = session.execute(query, {"since": since}).mappings().all()
    return [{**row, "last_change": row["last_change"].isoformat()} for row in rows]


def latest_contents(device_ids: list[int]) -> dict[int, tuple[int, str | None]]:
    """Device id -> (latest snapshot id, its content or None when it predates the archive)."""
    query = text("""
        SELECT DISTINCT ON (s.device_id) s.device_id, s.id, c.content
        FROM config_snapshots s LEFT JOIN config_contents c ON c.content_hash = s.content_hash
        WHERE s.device_id = ANY(:ids)
        ORDER BY s.device_id, s.collected_at DESC, s.id DESC
    """)
    with session_scope() as session:
        return {row.device_id: (row.id, row.content) for row in session.execute(query, {"ids": device_ids})}


# --- the git view --------------------------------------------------------------------------------


def _last_exported(repo: Path) -> int:
    result = git(repo, "log", "-1", "--format=%B", check=False)
    match = re.search(rf"^{SNAPSHOT_TRAILER}: (\d+)$", result.stdout, re.M) if result.returncode == 0 else None
    return int(match.group(1)) if match else 0


def _ensure_repo(repo: Path) -> None:
    if not (repo / ".git").is_dir():
        git(repo, "init", "-q", "-b", "main")
    # Operators browse it; nothing but the exporter commits to it.
    git(repo, "config", "receive.denyCurrentBranch", "refuse")


def clear_stale_locks(repo: Path) -> list[str]:
    """Remove git lock files left by a git process that died (a crash, a power loss).

    Every git command netjobs runs in the repository holds :func:`repo_lock`, which the kernel
    releases when its holder dies; the caller holds it now, so no live netjobs process owns them.
    """
    removed = []
    for lock in stale_locks(repo):
        lock.unlink()
        removed.append(str(lock.relative_to(repo)))
        log.warning("config archive: removed %s, left behind by a git process that died", lock)
    return removed


def stale_locks(repo: Path) -> list[Path]:
    git_dir = repo / ".git"
    candidates = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "packed-refs.lock"]
    if (git_dir / "refs").is_dir():
        candidates += list((git_dir / "refs").rglob("*.lock"))
    return [lock for lock in candidates if lock.is_file()]


def git_view_problems(repo: Path) -> list[str] | None:
    """What is wrong with the git view at ``repo`` (None: there is none on this host)."""
    if not (repo / ".git").is_dir():
        return None
    problems = []
    locks = stale_locks(repo)
    if locks:
        problems.append(f"git lock files {', '.join(str(p.relative_to(repo)) for p in locks)} "
                        "(cleared by the next export if no git process owns them)")
    check = git(repo, "fsck", "--connectivity-only", "--no-progress", check=False)
    if check.returncode != 0:
        problems.append(f"git fsck failed: {(check.stderr or check.stdout).strip().splitlines()[0]}; move the "
                        "repository aside and run `netjobs configs export` to rebuild it from the archive")
    return problems


def export_git(repo: Path, now: datetime | None = None) -> dict:
    """Append the changes archived since the last export to the git view at ``repo``.

    Returns {"exported": N, "head": sha}. Only one export runs per repository at a time (flock).
    """
    now = now or datetime.now(timezone.utc)
    exported = 0
    with repo_lock(repo):
        _ensure_repo(repo)
        clear_stale_locks(repo)
        while True:
            after = _last_exported(repo)
            with session_scope() as session:
                # A server-side cursor, each row written to git as it comes: holding a batch of whole
                # configurations took several times its size, and every backup worker exports on
                # start (a 2,000-row batch put a fresh one past its 384 MiB limit).
                rows = session.execute(text("""
                    SELECT s.id, d.name, s.collected_at, s.task_id, c.content
                    FROM config_snapshots s JOIN devices d ON d.id = s.device_id
                    JOIN config_contents c ON c.content_hash = s.content_hash
                    WHERE s.changed AND s.id > :after AND s.collected_at < :settled
                    ORDER BY s.id LIMIT :limit
                """), {"after": after, "settled": now - EXPORT_SETTLE, "limit": EXPORT_BATCH},
                    execution_options={"yield_per": EXPORT_FETCH})
                commits = _fast_import(repo, rows)
            if not commits:
                break
            with session_scope() as session:
                for snapshot_id, sha in commits.items():
                    session.execute(update(ConfigSnapshot).where(ConfigSnapshot.id == snapshot_id)
                                    .values(git_commit=sha))
            exported += len(commits)
        head = git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).stdout.strip() or None
        if head and exported:
            git(repo, "reset", "-q", "--hard", "HEAD")  # the working tree follows, for those who look there
    return {"exported": exported, "head": head}


def _fast_import(repo: Path, rows) -> dict[int, str]:
    """One commit per row through `git fast-import`, written as the rows come; returns snapshot id ->
    commit id (empty, and no git run, when there are no rows)."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return {}
    has_head = git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0
    marks = repo / ".git" / "netjobs-export-marks"
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet", f"--export-marks={marks}"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
                                env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
        try:
            for index, row in enumerate(itertools.chain([first], rows)):
                snapshot_id, device, collected_at, task_id, content = row
                message = f"{device}: configuration changed\n\n{SNAPSHOT_TRAILER}: {snapshot_id}\n"
                if task_id:
                    message += f"Netjobs-Task-Id: {task_id}\n"
                stamp = int(collected_at.timestamp())
                data = content.encode()
                msg = message.encode()
                proc.stdin.write(f"commit refs/heads/main\nmark :{snapshot_id}\n"
                                 f"committer {EXPORT_IDENTITY} {stamp} +0000\n".encode())
                proc.stdin.write(f"data {len(msg)}\n".encode() + msg)
                if index == 0 and has_head:
                    proc.stdin.write(b"from refs/heads/main^0\n")
                proc.stdin.write(f"M 100644 inline {device_filename(device)}\ndata {len(data)}\n".encode())
                proc.stdin.write(data)
                proc.stdin.write(b"\n")
            proc.stdin.close()
        except BrokenPipeError:  # git stopped reading: its exit status and message below say why
            with contextlib.suppress(OSError):
                proc.stdin.close()
        except BaseException:
            proc.kill()  # a batch cut short is not committed: fast-import updates the branch at the end only
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
            raise
        if proc.wait() != 0:
            errors.seek(0)
            raise GitError(f"git fast-import failed in {repo}: {errors.read().decode(errors='replace').strip()}")
    commits = {}
    for line in marks.read_text().splitlines():
        mark, sha = line.split()
        commits[int(mark[1:])] = sha
    marks.unlink()
    return commits
