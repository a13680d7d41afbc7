"""Operations commands: workers, queues, doctor, db."""

from __future__ import annotations

import click
from netjobs.cli.common import EXIT_FAILED, EXIT_OK, celery_app, escape, new_table, note, out, print_json, settings

inspect_timeout = click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.1, 60),
                               help="Seconds to wait for workers to answer.")


@click.command()
@inspect_timeout
@click.option("--json", "as_json", is_flag=True)
def workers(timeout, as_json):
    """Workers that answer, with their queues and what they are running."""
    from netjobs.services.health import workers_answering

    rows = list(workers_answering(celery_app(), timeout).values())
    if as_json:
        print_json(rows)
        return
    table = new_table(f"workers ({len(rows)})", ("worker", "queues", "active", "pool", "processed"),
                      no_wrap=("worker",))
    for w in rows:
        table.add_row(escape(w["name"]), escape(", ".join(w.get("queues") or [])), str(w.get("active", "-")),
                      escape(str(w.get("pool", "-"))), str(w.get("processed", "-")))
    out().print(table)
    if not rows:
        raise SystemExit(EXIT_FAILED)


@click.command()
@inspect_timeout
@click.option("--json", "as_json", is_flag=True)
def queues(timeout, as_json):
    """Length and consumers of every configured queue."""
    from netjobs.services.health import queue_consumers, queue_lengths, redis_client

    app = celery_app()
    names = settings().queues
    lengths = queue_lengths(redis_client(), names)
    consumers = queue_consumers(app, timeout)
    rows = [{"queue": q, "length": int(lengths.get(q) or 0), "consumers": sorted(consumers.get(q) or [])}
            for q in names]
    if as_json:
        print_json(rows)
        return
    table = new_table("queues", ("queue", "waiting", "consumers"))
    for row in rows:
        who = ", ".join(row["consumers"]) or "[red]none[/red]"
        table.add_row(row["queue"], str(row["length"]), who if not row["consumers"] else escape(who))
    out().print(table)


@click.command()
@inspect_timeout
@click.option("--json", "as_json", is_flag=True)
def doctor(timeout, as_json):
    """Check broker, Redis settings, database, consumers, beat lock, backlogs, dead letters."""
    from netjobs.services.doctor import ERROR, healthy, run_checks

    checks = run_checks(celery_app(), settings(), timeout)
    if as_json:
        print_json({"ok": healthy(checks), "checks": checks})
    else:
        console = out()
        for check in checks:
            if check.ok:
                mark = "[green]ok  [/green]"
            else:
                mark = "[red]FAIL[/red]" if check.severity == ERROR else "[yellow]WARN[/yellow]"
            console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
        failed = [c for c in checks if not c.ok]
        console.print(f"{len(failed)} problem(s)" if failed else "[green]all checks passed[/green]")
    raise SystemExit(EXIT_OK if healthy(checks) else EXIT_FAILED)


@click.group()
def db():
    """The database schema."""


@db.command(name="upgrade")
def db_upgrade():
    """Apply the migrations up to head (safe to run again)."""
    from netjobs.db.migrate import current_revision, head_revision, upgrade

    settings()
    before = current_revision()
    upgrade()
    after = current_revision()
    note(f"database at revision {after} (head {head_revision()})"
         + ("" if before == after else f", upgraded from {before or 'empty'}"))


@db.command(name="current")
@click.option("--json", "as_json", is_flag=True)
def db_current(as_json):
    """The schema revision, and whether it is the newest; exit 1 if not."""
    from netjobs.db.migrate import current_revision, head_revision

    settings()
    current, head = current_revision(), head_revision()
    if as_json:
        print_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        click.echo(f"current {current or 'none'}, head {head}")
    raise SystemExit(EXIT_OK if current == head else EXIT_FAILED)


COMMANDS = (workers, queues, doctor, db)
