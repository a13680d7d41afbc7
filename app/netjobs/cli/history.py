"""Commands over stored history: runs (job_runs) and dlq (dead_letters)."""

from __future__ import annotations

import json

import click
from netjobs.cli.common import (
    EXIT_FAILED, celery_app, err, escape, new_table, note, out, print_json, settings, short_time,
)

STATE_COLORS = {"SUCCESS": "green", "FAILURE": "red", "REVOKED": "magenta", "RETRY": "yellow", "STARTED": "cyan"}


def _state(state: str) -> str:
    color = STATE_COLORS.get(state)
    return f"[{color}]{state}[/{color}]" if color else state


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _clip(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return escape(text if len(text) <= width else text[: width - 1] + "…")


@click.command()
@click.option("--task", default=None, help="Task name, short name (ping) or pattern (netjobs.backup.*).")
@click.option("--state", default=None, help="PUBLISHED, STARTED, RETRY, SUCCESS, FAILURE or REVOKED.")
@click.option("--since", default=None, help="30m, 1h, 2d, 1w or an ISO time.")
@click.option("--by", default=None, help="Who submitted: a user (alice: CLI or API), cli:USER, api:USER or beat:SCHEDULE.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def runs(task, state, since, by, limit, as_json):
    """Job history from job_runs, newest first."""
    from netjobs.services.runs import list_runs, normalize_state, parse_since

    settings()
    when = parse_since(since) if since else None
    rows = list_runs(task=task, state=normalize_state(state) if state else None, since=when, limit=limit, by=by)
    if as_json:
        print_json(rows)
        return
    table = new_table(f"job runs ({len(rows)})", ("when", "task", "state", "queue", "worker", "took", "by", "id",
                                                   "result / error"), no_wrap=("when", "id", "state"))
    for run in rows:
        table.add_row(short_time(run.started_at or run.published_at or run.state_at), escape(run.task_name or "?"),
                      _state(run.state), run.queue or "", escape(run.worker or ""), _duration(run.duration_ms),
                      escape(run.submitted_by or ""), run.task_id, _clip(run.error or run.result_summary))
    out().print(table)


@click.group()
def dlq():
    """Dead letters: tasks that failed for good."""


@dlq.command(name="list")
@click.option("--all", "include_requeued", is_flag=True, help="Include those already requeued.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def dlq_list(include_requeued, limit, as_json):
    """List dead letters, newest first."""
    from netjobs.services.deadletters import list_dead_letters

    settings()
    letters = list_dead_letters(limit=limit, include_requeued=include_requeued)
    if as_json:
        print_json(letters)
        return
    table = new_table(f"dead letters ({len(letters)})",
                      ("id", "failed", "task", "queue", "retries", "error", "requeued as"), no_wrap=("id", "failed"))
    for letter in letters:
        table.add_row(str(letter.id), short_time(letter.failed_at), escape(letter.task_name), letter.queue or "",
                      str(letter.retries), _clip(letter.error), letter.requeued_task_id or "")
    out().print(table)


@dlq.command(name="show")
@click.argument("letter_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True)
def dlq_show(letter_id, as_json):
    """One dead letter with its arguments and traceback."""
    from netjobs.services.deadletters import get_dead_letter

    settings()
    letter = get_dead_letter(letter_id)
    if as_json:
        print_json(letter)
        return
    console = out()
    for field in ("id", "task_id", "task_name", "queue", "retries", "failed_at", "requeued_at", "requeued_task_id"):
        value = getattr(letter, field)
        console.print(f"[bold]{field}:[/bold] {escape(short_time(value) if field.endswith('_at') else value)}")
    console.print(f"[bold]args:[/bold] {escape(json.dumps(letter.args))}")
    console.print(f"[bold]kwargs:[/bold] {escape(json.dumps(letter.kwargs))}")
    console.print(f"[bold]error:[/bold] [red]{escape(letter.error)}[/red]")
    if letter.traceback:
        console.print("[bold]traceback:[/bold]")
        console.print(escape(letter.traceback.rstrip()))


@dlq.command(name="requeue")
@click.argument("letter_id", metavar="ID", type=int)
def dlq_requeue(letter_id):
    """Send the task again with its original arguments; prints the new task id."""
    from netjobs.services.deadletters import requeue_dead_letter

    app = celery_app()
    new_id = requeue_dead_letter(letter_id, app.send_task)
    note(f"requeued dead letter {letter_id}")
    click.echo(new_id)


@dlq.command(name="discard")
@click.argument("letter_id", metavar="ID", type=int)
@click.option("--yes", is_flag=True, help="Do not ask.")
def dlq_discard(letter_id, yes):
    """Delete a dead letter for good."""
    from netjobs.services.deadletters import discard_dead_letter, get_dead_letter

    settings()
    letter = get_dead_letter(letter_id)
    if not yes and not click.confirm(f"discard dead letter {letter_id} ({letter.task_name}: {letter.error[:80]})?",
                                     default=False, err=True):
        err().print("not discarded")
        raise SystemExit(EXIT_FAILED)
    discard_dead_letter(letter_id)
    note(f"discarded dead letter {letter_id}")


COMMANDS = (runs, dlq)
