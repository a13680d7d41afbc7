"""Tasks of the backup family: one device, all devices (fan-out with a chord) and its summary.

``netjobs.backup.all`` replaces itself with ``chord(device tasks, summarize)``; the chord's body
takes over the task id, so waiting on the id of ``backup.all`` returns the summary.

A failed header task would break a chord, so in fan-out mode a device task that fails for good
(permanent error, or retries used up) records its dead letter and *returns* a failure record;
one broken device never fails the whole run.
"""

from __future__ import annotations

from billiard.einfo import ExceptionInfo
from celery import chord

from netjobs.celery_app import app
from netjobs.config import get_settings
from netjobs.errors import ValidationError, is_transient
from netjobs.history import FAILED_MEMBER_STATUS
from netjobs.services.backup import backup_device, select_devices, summarize_results
from netjobs.tasks.base import NetjobsTask

PROGRESS_TTL = 86400


def _progress_key(run_id: str) -> str:
    return f"netjobs:backup:progress:{run_id}"


def _optional_text(name: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string or omitted, got {value!r}")
    return value


@app.task(base=NetjobsTask, bind=True, name="netjobs.backup.device")
def device(self, device: str, run_id: str | None = None, changed_by: str | None = None, full: bool = False) -> dict:
    """Back up one device: {"device", "status": "changed"|"unchanged", "commit", "snapshot_id", "full_read"}.

    ``run_id`` is set by ``backup.all``: failures then come back as {"status": "failed", "error"}, and
    job history records the device's run as FAILURE. ``changed_by`` is set by the syslog receiver
    (netjobs.syslog): the user the device's configuration-change message named, kept with the snapshot.
    ``full``: read the whole configuration even when the device's change marker says it is unchanged.
    """
    changed_by = _optional_text("changed_by", changed_by)
    if not isinstance(full, bool):
        raise ValidationError(f"full must be true or false, got {full!r}")
    try:
        result = backup_device(device, task_id=self.request.id, changed_by=changed_by, full=full).as_dict()
    except Exception as exc:
        if run_id is None or _will_retry(self, exc):
            raise
        # Final failure inside a fan-out: keep the dead letter (requeued as a plain backup).
        self.on_failure(exc, self.request.id, (device,), {}, ExceptionInfo())
        retries = self.request.retries or 0
        result = {"device": device, "status": FAILED_MEMBER_STATUS,
                  "error": f"{exc}" + (f" (after {retries} retries)" if retries else "")}
    if run_id is not None:
        _report_progress(self, run_id)
    return result


def _will_retry(task: NetjobsTask, exc: BaseException) -> bool:
    """Whether NetjobsTask will retry ``exc`` (same rule as its __call__)."""
    return is_transient(exc) and task.request.called_directly is False and \
        (task.request.retries or 0) < get_settings().max_retries


def _report_progress(task: NetjobsTask, run_id: str) -> None:
    # Runs before this header task stores its result, hence before the chord body can finish
    # the run: a PROGRESS state never overwrites the summary.
    client = task.app.backend.client
    done = client.hincrby(_progress_key(run_id), "done", 1)
    total = int(client.hget(_progress_key(run_id), "total") or 0)
    task.update_state(task_id=run_id, state="PROGRESS", meta={"current": done, "total": total})


@app.task(base=NetjobsTask, bind=True, name="netjobs.backup.all")
def backup_all(self, site: str | None = None, tag: str | None = None, full: bool = False):
    """Back up every enabled device (optionally of one site / with one tag); returns the summary.

    ``full``: every device reads its whole configuration (no change-marker check)."""
    site = _optional_text("site", site)
    tag = _optional_text("tag", tag)
    if not isinstance(full, bool):
        raise ValidationError(f"full must be true or false, got {full!r}")
    names = select_devices(site=site, tag=tag)
    if not names:
        return summarize_results([]) | {"site": site, "tag": tag}
    run_id = self.request.id
    client = self.app.backend.client
    client.hset(_progress_key(run_id), mapping={"total": len(names), "done": 0})
    client.expire(_progress_key(run_id), PROGRESS_TTL)
    self.progress(0, len(names))
    # Only a full run says so: the device tasks of a plain one keep their usual arguments.
    header = [device.s(name, run_id=run_id, **({"full": True} if full else {})) for name in names]
    return self.replace(chord(header, summarize.s(site=site, tag=tag, run_id=run_id)))


@app.task(base=NetjobsTask, bind=True, name="netjobs.backup.summarize")
def summarize(self, results: list, site: str | None = None, tag: str | None = None,
              run_id: str | None = None) -> dict:
    """Chord body of ``backup.all``: {"devices", "backed_up", "unchanged", "failed", "failures"}."""
    if run_id is not None:
        self.app.backend.client.delete(_progress_key(run_id))
    return summarize_results(list(results or [])) | {"site": site, "tag": tag}


@app.task(base=NetjobsTask, name="netjobs.backup.export_archive")
def export_archive() -> dict:
    """Bring the git view of the host whose worker takes it up to date (NETJOBS_BACKUP_REPO).

    Every backup host also does this on its own every 10 minutes (netjobs.archive_host)."""
    from netjobs.services.archive import export_git

    return export_git(get_settings().backup_repo)
