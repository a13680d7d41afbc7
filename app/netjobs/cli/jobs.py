"""Commands that start and follow jobs: submit and its shortcuts, status, wait, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from netjobs.cli.common import (
    EXIT_FAILED, EXIT_OK, celery_app, err, escape, fail, note, print_json, require_broker_and_backend, settings,
    short_time, warn,
)
from netjobs.cli.params import parse_names, parse_seconds, parse_task_args
from netjobs.errors import NotFoundError, ValidationError

POLL_INTERVAL = 0.2
HISTORY_POLL_INTERVAL = 1.0
READY = ("SUCCESS", "FAILURE", "REVOKED")

wait_option = click.option("--wait", "wait_", is_flag=True, help="Follow the job until it finishes.")
timeout_option = click.option("--timeout", type=str, default=None, metavar="S",
                              help="With --wait: give up waiting after S seconds (exit 1).")


# --- sending and following -------------------------------------------------------------------


def wait_seconds(text: str | None, option: str = "--timeout") -> float | None:
    return parse_seconds(text, option, allow_zero=False) if text is not None else None


def send(name: str, kwargs: dict, queue: str | None = None, countdown: float | None = None,
         wait: bool = False, wait_timeout: float | None = None, judge=None, priority: int | None = None) -> int:
    """Send a task (after checking its name, arguments and queue), print its id, maybe follow it."""
    from netjobs.services.jobs import submit_job

    app = celery_app()
    submitted = submit_job(app, name, kwargs, queue=queue, countdown=countdown, priority=priority)
    note(f"submitted {submitted.task} to queue {submitted.queue}: {submitted.task_id}")
    click.echo(submitted.task_id)
    if not wait:
        return EXIT_OK
    return follow(app, submitted.task_id, wait_timeout, judge=judge)


def _history_row(task_id: str):
    from netjobs.services.runs import get_run

    return get_run(task_id)


def follow(app, task_id: str, timeout: float | None = None, judge=None) -> int:
    """Poll the result (progress bar from PROGRESS meta) until the task is done; print the outcome.

    Falls back to job history when Redis no longer has the result, or the task was revoked
    before any worker saw it.
    """
    from celery.result import AsyncResult
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    result = AsyncResult(task_id, app=app)
    deadline = None if timeout is None else time.monotonic() + timeout
    next_history = 0.0
    final_state, outcome, history = None, None, None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err(), transient=True) as progress:
        bar = progress.add_task(f"{task_id[:8]} PENDING", total=None)
        while True:
            state = result.state
            if state in READY:
                final_state, outcome, history = state, result.info, None
                break
            if state == "PROGRESS" and isinstance(result.info, dict):
                meta = result.info
                total = meta.get("total")
                progress.update(bar, completed=meta.get("current") or 0,
                                total=total if isinstance(total, (int, float)) and total > 0 else None)
            progress.update(bar, description=f"{task_id[:8]} {state}")
            if state == "PENDING" and time.monotonic() >= next_history:
                next_history = time.monotonic() + HISTORY_POLL_INTERVAL
                history = _history_row(task_id)
                if history is not None and history.state in READY:
                    final_state = history.state
                    break
            if deadline is not None and time.monotonic() >= deadline:
                progress.stop()
                fail(f"task {task_id} is still {state} after {timeout:g}s (it keeps running; "
                     f"`netjobs wait {task_id}` to follow it again)", EXIT_FAILED)
            time.sleep(POLL_INTERVAL)
    return report_outcome(task_id, final_state, outcome, history, judge)


def report_outcome(task_id: str, state: str, outcome, history, judge) -> int:
    """``history`` is the job_runs row when the outcome comes from history instead of Redis."""
    if state == "SUCCESS":
        value = outcome if history is None else _summary_value(history.result_summary)
        print_json(value)
        code = (judge or summary_judge)(value)
        verdict = "[green]SUCCESS[/green]" if code == EXIT_OK else "[yellow]finished with problems[/yellow]"
        err().print(f"{verdict} {task_id}")
        return code
    if state == "FAILURE":
        error = (f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException)
                 else (history.error if history is not None else str(outcome)))
        err().print(f"[red]FAILURE[/red] {task_id}: {escape(error)}")
        return EXIT_FAILED
    reason = history.error if history is not None and history.error else "revoked"
    err().print(f"[red]REVOKED[/red] {task_id}: {escape(reason)}")
    return EXIT_FAILED


def _summary_value(text: str | None):
    from netjobs.services.jobs import summary_value

    return summary_value(text)


def summary_judge(value) -> int:
    """The default verdict on a job's summary: exit 1 when it reports anything failed, skipped or
    non-compliant (backup --all, compliance, sweeps), naming the devices."""
    if not isinstance(value, dict):
        return EXIT_OK
    problems = []
    failed = value.get("failed_devices") or [f.get("device") for f in value.get("failures") or []
                                             if isinstance(f, dict) and f.get("device")]
    if value.get("failed"):
        problems.append(f"{value['failed']} failed" + (f": {', '.join(map(str, failed[:20]))}" if failed else ""))
    if value.get("skipped"):
        skipped = value.get("skipped_devices") or []
        problems.append(f"{value['skipped']} skipped" + (f": {', '.join(map(str, skipped[:20]))}" if skipped else ""))
    for problem in problems:
        err().print(f"[yellow]{escape(problem)}[/yellow]")
    return EXIT_FAILED if problems else EXIT_OK


# --- commands --------------------------------------------------------------------------------


@click.command()
@click.argument("task_name", metavar="TASK")
@click.option("--arg", "args", multiple=True, metavar="K=V",
              help="Keyword argument; V is JSON when it parses (1, true, null, [..], {..}), else text.")
@click.option("--queue", default=None, help="Send to this queue instead of the routed one.")
@click.option("--countdown", default=None, metavar="S", help="Start no earlier than S seconds from now.")
@click.option("--priority", default=None, metavar="P",
              help="urgent, high, normal (the default) or low, or 0-9 with 0 the most urgent: "
                   "ahead of the jobs with a lower one waiting in the same queue.")
@wait_option
@timeout_option
def submit(task_name, args, queue, countdown, priority, wait_, timeout):
    """Send any netjobs task, e.g. `submit netjobs.diag.sleep --arg seconds=5 --wait`."""
    from netjobs.queues import parse_priority

    kwargs = parse_task_args(args)
    delay = parse_seconds(countdown, "--countdown") if countdown is not None else None
    raise SystemExit(send(task_name, kwargs, queue=queue, countdown=delay, wait=wait_,
                          wait_timeout=wait_seconds(timeout),
                          priority=parse_priority(priority) if priority is not None else None))


@click.command()
@click.argument("prefix", required=False)
@click.option("--ports", default=None, help="TCP ports, e.g. 22,443 or 8000-8010.")
@click.option("--timeout", "probe_timeout", default=None, metavar="S", help="Connect timeout per probe.")
@click.option("--devices", default=None, metavar="A,B", help="Sweep these inventory devices instead of a prefix.")
@click.option("--site", default=None, help="Sweep the devices of this site.")
@click.option("--tag", default=None, help="Sweep the devices with this tag.")
@click.option("--icmp", is_flag=True, help="Also ping (if the network workers may).")
@wait_option
@click.option("--wait-timeout", default=None, metavar="S", help="With --wait: give up after S seconds.")
def sweep(prefix, ports, probe_timeout, devices, site, tag, icmp, wait_, wait_timeout):
    """Reachability sweep of PREFIX (10.1.0.0/22), or of inventory devices."""
    from netjobs.services.sweep import build_request

    kwargs: dict = {"target": prefix, "devices": parse_names(devices, "device") if devices is not None else None,
                    "site": site, "tag": tag, "ports": ports, "icmp": icmp,
                    "timeout": parse_seconds(probe_timeout, "--timeout", allow_zero=False) if probe_timeout else None}
    kwargs = {k: v for k, v in kwargs.items() if v not in (None, False)}
    s = settings()
    # The worker checks again; whether ICMP is allowed is the network workers' setting, not ours.
    request = build_request(**kwargs, max_addresses=s.sweep_max_addresses, icmp_enabled=True)
    if request.network is not None:
        kwargs["target"] = str(request.network)
    if request.ports is not None and ports is not None:
        kwargs["ports"] = list(request.ports)
    raise SystemExit(send("netjobs.network.sweep", kwargs, wait=wait_,
                          wait_timeout=wait_seconds(wait_timeout, "--wait-timeout")))


@click.command()
@click.argument("device", required=False)
@click.option("--all", "all_", is_flag=True, help="Back up every enabled device (or those of --site/--tag).")
@click.option("--site", default=None)
@click.option("--tag", default=None)
@click.option("--now", is_flag=True, help="With DEVICE: ahead of every backup waiting in the queue (urgent priority).")
@click.option("--full", is_flag=True, help="Read the whole configuration even when the device's change marker "
                                           "says nothing changed.")
@wait_option
@timeout_option
def backup(device, all_, site, tag, now, full, wait_, timeout):
    """Back up DEVICE's configuration, or --all devices, into the config archive."""
    from netjobs.queues import PRIORITIES

    if bool(device) == all_:
        raise ValidationError("give a DEVICE or --all")
    if device and (site or tag):
        raise ValidationError("--site and --tag go with --all")
    if now and not device:
        raise ValidationError("--now goes with a DEVICE (a whole fleet cannot jump its own queue)")
    if device:
        from netjobs.services.devices import get_device

        get_device(device)  # an unknown name fails here, with exit 2, not later on a worker
        kwargs = {"device": device} | ({"full": True} if full else {})
        raise SystemExit(send("netjobs.backup.device", kwargs, wait=wait_,
                              wait_timeout=wait_seconds(timeout), priority=PRIORITIES["urgent"] if now else None))
    kwargs = {k: v for k, v in (("site", site), ("tag", tag), ("full", full)) if v}
    raise SystemExit(send("netjobs.backup.all", kwargs, wait=wait_, wait_timeout=wait_seconds(timeout)))


def _read_inventory(path: str) -> str:
    from netjobs.services.inventory import check_size

    file = Path(path)
    if not file.is_file():
        raise ValidationError(f"{path} does not exist or is not a file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except PermissionError:
        raise ValidationError(f"{path} is not readable") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text (offset {exc.start})") from None
    check_size(text, path)
    return text


def _print_import_summary(summary: dict) -> int:
    for problem in summary.get("errors") or []:
        err().print(f"[red]line {problem['line']}:[/red] {escape(problem['reason'])}")
    note(f"created {summary['created']}, updated {summary['updated']}, unchanged {summary['unchanged']}, "
         f"invalid {summary['invalid']}, pruned {summary['pruned']}")
    if summary.get("prune_skipped"):
        warn(f"prune skipped: {summary['prune_skipped']}")
    return EXIT_FAILED if summary["invalid"] else EXIT_OK


@click.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "yaml"]), default=None,
              help="Default: from the file name (.csv, .yml, .yaml).")
@click.option("--prune", is_flag=True, help="Also remove devices the file does not list.")
@click.option("--local", is_flag=True, help="Import here, directly into the database, without a worker.")
@wait_option
@timeout_option
def import_(file, fmt, prune, local, wait_, timeout):
    """Import devices from a CSV or YAML FILE; bad rows are reported with their line number."""
    from netjobs.services.inventory import detect_format, import_inventory

    settings()
    fmt = fmt or detect_format(file)
    text = _read_inventory(file)
    if local:
        summary = import_inventory(text, fmt, source=file, prune=prune)
        print_json(summary)
        raise SystemExit(_print_import_summary(summary))
    kwargs = {"content": text, "fmt": fmt, "source": Path(file).name, "prune": prune}
    raise SystemExit(send("netjobs.inventory.import_text", kwargs, wait=wait_, wait_timeout=wait_seconds(timeout),
                          judge=_import_judge))


def _import_judge(value) -> int:
    return _print_import_summary(value) if isinstance(value, dict) and "invalid" in value else EXIT_OK


@click.command()
@click.option("--device", "devices", multiple=True, help="Check only this device (repeatable).")
@wait_option
@timeout_option
def compliance(devices, wait_, timeout):
    """Check the latest config snapshots against the compliance rules."""
    kwargs = {"devices": list(devices)} if devices else {}
    raise SystemExit(send("netjobs.compliance.check", kwargs, wait=wait_, wait_timeout=wait_seconds(timeout)))


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
def status(task_id, as_json):
    """A job's state, progress and result (from Redis, else from job history)."""
    from netjobs.services.jobs import job_status

    app = celery_app()
    require_broker_and_backend()
    data = job_status(app, task_id)
    if data is None:
        raise NotFoundError(f"no task {task_id} is known (not in Redis results, not in job history)")
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if value is None:
            continue
        shown = short_time(value) if key.endswith("_at") else value
        if isinstance(shown, (dict, list)):
            shown = json.dumps(shown, default=str)
        table.add_row(f"[bold]{key}[/bold]", escape(shown))
    from netjobs.cli.common import out

    out().print(table)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--timeout", default=None, metavar="S", help="Give up after S seconds (exit 1).")
def wait(task_id, timeout):
    """Follow a job with a progress bar; exit 0 on success, 1 on failure or revoke."""
    seconds = wait_seconds(timeout)
    app = celery_app()
    require_broker_and_backend()
    raise SystemExit(follow(app, task_id, seconds))


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--terminate", is_flag=True, help="Also stop it if it is running (SIGTERM).")
def cancel(task_id, terminate):
    """Revoke a job: it will not start; with --terminate a running one is stopped too."""
    from netjobs.services import jobs as service

    app = celery_app()
    require_broker_and_backend()
    outcome = service.cancel_job(app, task_id, terminate=terminate)
    if outcome.outcome == service.ALREADY_FINISHED:
        fail(outcome.detail, EXIT_FAILED)
    if outcome.outcome == service.REVOKED_UNKNOWN:
        warn(f"task {task_id} is not known yet; revoking it anyway")
    if outcome.outcome == service.STILL_RUNNING:
        warn(f"task {task_id} is running ({outcome.state}); it will finish unless you add --terminate")
        return
    note(f"revoked {task_id}" + (" (terminated with SIGTERM)" if outcome.outcome == service.TERMINATED else ""))


COMMANDS = (submit, sweep, backup, import_, compliance, status, wait, cancel)
