"""Who did what, and who may: the audit log and API tokens."""

from __future__ import annotations

import json

import click
from netjobs.cli.common import err, escape, new_table, note, out, print_json, settings, short_time


@click.command()
@click.option("--since", default=None, help="30m, 1h, 2d, 1w or an ISO time.")
@click.option("--by", default=None, help="A user (alice: CLI or API), cli:USER, api:USER or beat:SCHEDULE.")
@click.option("--action", default=None, help="schedule.add, device.*, token.revoke, ... (* matches anything).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def audit(since, by, action, limit, as_json):
    """Changes to schedules, devices, host keys, dead letters and API tokens: who, what, when."""
    from netjobs.services.audit import entries
    from netjobs.services.runs import parse_since

    settings()
    rows = entries(since=parse_since(since) if since else None, by=by, action=action, limit=limit)
    if as_json:
        print_json(rows)
        return
    table = new_table(f"audit log ({len(rows)})", ("when", "who", "action", "target", "details"),
                      no_wrap=("when", "who", "action"))
    for row in rows:
        table.add_row(short_time(row["at"]), escape(row["actor"]), row["action"], escape(row["target"] or ""),
                      escape(json.dumps(row["details"], sort_keys=True) if row["details"] else ""))
    out().print(table)


@click.group()
def tokens():
    """API tokens: create (shown once), list, revoke."""


@tokens.command(name="create")
@click.argument("name")
@click.option("--user", "username", required=True, help="Whose token: the API records jobs as api:USER.")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True,
              help="viewer reads; operator also submits, cancels and requeues jobs and changes schedules; "
                   "admin also manages devices and tokens.")
@click.option("--expires", default=None, help="Lifetime: 30d, 12w, ... (default: until revoked).")
@click.option("--json", "as_json", is_flag=True)
def tokens_create(name, username, role, expires, as_json):
    """Create a token NAME for a user; prints the token once (only its hash is stored)."""
    from netjobs.services.schedules import parse_interval
    from netjobs.services.tokens import create_token

    settings()
    token, view = create_token(name, username, role, parse_interval(expires) if expires else None)
    if as_json:
        print_json({"token": token, **view.as_dict()})
        return
    note(f"token {escape(name)} for {escape(username)} ({role})"
         + (f", expires {short_time(view.expires_at)}" if view.expires_at else "")
         + ": store it now, it is not shown again")
    click.echo(token)


@tokens.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(as_json):
    """Tokens with owner, role, last use and state (never the tokens themselves)."""
    from netjobs.services.tokens import list_tokens

    settings()
    views = list_tokens()
    if as_json:
        print_json([v.as_dict() for v in views])
        return
    table = new_table(f"API tokens ({len(views)})", ("name", "user", "role", "created", "by", "last used", "state"),
                      no_wrap=("name",))
    for v in views:
        state = "revoked" if v.revoked_at else ("expired" if not v.active else "active")
        table.add_row(escape(v.name), escape(v.username), v.role, short_time(v.created_at), escape(v.created_by),
                      short_time(v.last_used_at) if v.last_used_at else "never", state)
    out().print(table)


@tokens.command(name="revoke")
@click.argument("name")
def tokens_revoke(name):
    """Revoke token NAME at once (kept in the list as revoked)."""
    from netjobs.services.tokens import revoke_token

    settings()
    revoke_token(name)
    err().print(f"token {escape(name)} revoked")


COMMANDS = (audit, tokens)
