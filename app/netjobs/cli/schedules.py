"""`netjobs schedule ...`: beat entries in RedBeat, changed while beat runs."""

from __future__ import annotations

import json

import click
from netjobs.cli.common import (
    celery_app, check_queue, check_task_kwargs, escape, new_table, note, out, print_json, resolve_task, short_time,
    warn,
)
from netjobs.cli.params import parse_task_args


@click.group()
def schedule():
    """Beat schedules (RedBeat): list, add, remove, enable, disable — no restart needed."""


@schedule.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def schedule_list(as_json):
    """Every entry with its next run (default entries included)."""
    from netjobs.services.schedules import list_schedules

    views = list_schedules(celery_app())
    if as_json:
        print_json(views)
        return
    table = new_table(f"schedules ({len(views)})", ("name", "task", "when", "enabled", "next run", "last run",
                                                    "arguments", "origin"), no_wrap=("name", "next run", "last run"))
    for view in views:
        arguments = " ".join(f"{k}={json.dumps(v)}" for k, v in view.kwargs.items())
        if view.args:
            arguments = (json.dumps(view.args) + " " + arguments).strip()
        origin = "default" if view.static else "runtime"
        if not view.installed:
            origin += " (beat not started yet)"
        table.add_row(
            escape(view.name), escape(view.task), escape(view.schedule),
            "[green]yes[/green]" if view.enabled else "[red]no[/red]",
            short_time(view.next_run), short_time(view.last_run),
            escape(arguments), origin,
        )
    out().print(table)


@schedule.command(name="add")
@click.argument("name")
@click.argument("task_name", metavar="TASK")
@click.option("--every", default=None, help="Interval: 30s, 5m, 1h, 2d, 1h30m.")
@click.option("--cron", default=None, help="Cron expression: '*/5 * * * *' (beat's timezone), or @daily etc.")
@click.option("--arg", "args", multiple=True, metavar="K=V", help="Keyword argument (as for submit).")
@click.option("--queue", default=None, help="Send to this queue instead of the routed one.")
@click.option("--expires", default=None, metavar="S",
              help="Drop a run that has not started S seconds (or 5m, 1h) after it was sent.")
@click.option("--replace", is_flag=True, help="Replace an existing entry of that name.")
@click.option("--json", "as_json", is_flag=True)
def schedule_add(name, task_name, every, cron, args, queue, expires, replace, as_json):
    """Add a schedule NAME running TASK --every INTERVAL or --cron EXPR."""
    from netjobs.services.schedules import add_schedule, parse_interval, parse_schedule_spec, validate_name

    validate_name(name)
    kwargs = parse_task_args(args)
    app = celery_app()
    sched = parse_schedule_spec(every=every, cron=cron, app=app)
    task = resolve_task(app, task_name)
    check_task_kwargs(task, kwargs)
    check_queue(queue)
    expires_s = parse_interval(expires) if expires is not None else None
    view = add_schedule(app, name, task.name, sched, kwargs=kwargs, queue=queue, expires=expires_s, replace=replace)
    if as_json:
        print_json(view)
        return
    note(f"schedule {view.name}: {view.task} {view.schedule}; next run {short_time(view.next_run)}")


@schedule.command(name="remove")
@click.argument("name")
def schedule_remove(name):
    """Remove a run-time schedule."""
    from netjobs.services.schedules import remove_schedule

    remove_schedule(celery_app(), name)
    note(f"removed schedule {name}")


def _set_enabled(name: str, enabled: bool) -> None:
    from netjobs.services.schedules import set_enabled

    view = set_enabled(celery_app(), name, enabled)
    note(f"schedule {name} {'enabled' if enabled else 'disabled'}")
    if view.static and not enabled:
        warn(f"{name} is a default entry: beat restores it as enabled when it restarts")


@schedule.command(name="enable")
@click.argument("name")
def schedule_enable(name):
    """Enable a schedule."""
    _set_enabled(name, True)


@schedule.command(name="disable")
@click.argument("name")
def schedule_disable(name):
    """Disable a schedule (it stays listed; `enable` brings it back)."""
    _set_enabled(name, False)


COMMANDS = (schedule,)
