"""`netjobs configs`: the config archive's history, contents and diffs (netjobs.services.archive)."""

from __future__ import annotations

import sys

import click

from netjobs.cli.common import escape, new_table, out, print_json, settings, short_time


@click.group()
def configs():
    """Configuration history of the devices (the central archive)."""


def _lines(added, removed) -> str:
    return "?" if added is None else f"+{added} -{removed}"


@configs.command(name="log")
@click.argument("device")
@click.option("--all", "include_unchanged", is_flag=True, help="Every backup, not only the changes.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def configs_log(device, include_unchanged, limit, as_json):
    """Revisions of DEVICE's configuration, newest first."""
    from netjobs.services.archive import config_log

    settings()
    revisions = config_log(device, limit=limit, include_unchanged=include_unchanged)
    if as_json:
        print_json([r.as_dict() for r in revisions])
        return
    table = new_table(f"{device}: {len(revisions)} revisions",
                      ("rev", "collected", "lines", "hash", "git", "changed by", "task"),
                      no_wrap=("rev", "collected", "hash"))
    for r in revisions:
        table.add_row(str(r.revision), short_time(r.collected_at),
                      _lines(r.lines_added, r.lines_removed) if r.changed else "unchanged",
                      r.content_hash[:12], (r.git_commit or "")[:12], escape(r.changed_by or ""),
                      escape(r.task_id or ""))
    out().print(table)


@configs.command(name="show")
@click.argument("device")
@click.option("--at", "rev", default=None, metavar="REV|DATE",
              help="A revision from `configs log`, a hash prefix, or a date/time (the last one at or before it).")
def configs_show(device, rev):
    """DEVICE's configuration as archived (the latest, or the one at REV or DATE)."""
    from netjobs.services.archive import content_of, resolve

    settings()
    click.echo(content_of(resolve(device, rev)), nl=False)


@configs.command(name="diff")
@click.argument("device")
@click.argument("rev1", required=False)
@click.argument("rev2", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--color/--no-color", default=None, help="Default: on a terminal.")
def configs_diff(device, rev1, rev2, as_json, color):
    """Unified diff of DEVICE's configuration: the last change; REV1 to the latest; or REV1 to REV2."""
    from netjobs.services.archive import diff

    settings()
    old, new, lines = diff(device, rev1, rev2)
    if as_json:
        print_json({"device": device, "from": old.as_dict() if old else None, "to": new.as_dict(), "diff": lines})
        return
    colored = sys.stdout.isatty() if color is None else color
    for line in lines:
        style = None
        if line.startswith(("+++", "---")):
            style = {"bold": True}
        elif line.startswith("+"):
            style = {"fg": "green"}
        elif line.startswith("-"):
            style = {"fg": "red"}
        elif line.startswith("@@"):
            style = {"fg": "cyan"}
        click.echo(click.style(line, **style) if colored and style else line, color=colored)


@configs.command(name="changed")
@click.option("--since", default="1d", show_default=True, help="30m, 1h, 2d, 1w or an ISO time.")
@click.option("--json", "as_json", is_flag=True)
def configs_changed(since, as_json):
    """Devices whose configuration changed since then, with the lines added and removed."""
    from netjobs.services.archive import changed_since
    from netjobs.services.runs import parse_since

    settings()
    rows = changed_since(parse_since(since))
    if as_json:
        print_json(rows)
        return
    table = new_table(f"configurations changed since {since} ({len(rows)} devices)",
                      ("device", "changes", "lines", "last change"), no_wrap=("device",))
    for row in rows:
        table.add_row(escape(row["device"]), str(row["changes"]), _lines(row["lines_added"], row["lines_removed"]),
                      short_time(row["last_change"]))
    out().print(table)


@configs.command(name="export")
@click.option("--repo", default=None, metavar="DIR", help="Default: NETJOBS_BACKUP_REPO.")
@click.option("--json", "as_json", is_flag=True)
def configs_export(repo, as_json):
    """Bring the git view of the archive up to date (operators clone it with their own tools)."""
    from pathlib import Path

    from netjobs.services.archive import export_git

    target = Path(repo) if repo else settings().backup_repo
    result = export_git(target)
    if as_json:
        print_json(result | {"repo": str(target)})
        return
    out().print(f"{target}: {result['exported']} new commits, head {result['head'] or '(empty)'}")


COMMANDS = (configs,)
