"""Backup and restore helpers: `netjobs schedule export|import` and `netjobs db known REV`.

playbooks/backup.yml saves the run-time schedules and the operator's overrides of default entries
as JSON (beside the RDB snapshot, which holds them too but also every queued message, result and
lease of the old hosts); playbooks/restore.yml loads that JSON into the new Redis. Default entries
are not exported: every beat writes them at start-up, and applies the overrides when it does.
"""

from __future__ import annotations

import json
import sys

import click

from netjobs.cli.common import celery_app, note, settings
from netjobs.cli.ops import db
from netjobs.cli.schedules import schedule
from netjobs.errors import ValidationError

FORMAT = "netjobs-schedules/1"


def export_schedules(app) -> dict:
    """Run-time entries as RedBeat stores them (definition and meta JSON), plus the overrides."""
    from netjobs.beat import overrides_key
    from netjobs.services.schedules import _redis, static_names

    client = _redis(app)
    conf = app.redbeat_conf
    statics = static_names(app)
    entries = []
    for key in client.zrange(conf.schedule_key, 0, -1):
        name = key[len(conf.key_prefix):] if key.startswith(conf.key_prefix) else key
        if name in statics:
            continue
        definition, meta = client.hmget(key, "definition", "meta")
        if definition is None:
            continue
        entries.append({"name": name, "definition": json.loads(definition),
                        "meta": json.loads(meta) if meta else None})
    overrides = {name: json.loads(value) for name, value in
                 client.hgetall(overrides_key(conf.key_prefix)).items()}
    return {"format": FORMAT, "entries": sorted(entries, key=lambda e: e["name"]), "overrides": overrides}


def import_schedules(app, data: dict) -> tuple[int, int]:
    """Store the exported entries (replacing same-named ones) and merge the overrides.

    The stored last-run time is kept, so an entry that was due while the platform was down runs
    once at the next beat tick, as after any beat outage."""
    from redbeat.decoder import RedBeatJSONEncoder

    from netjobs.beat import overrides_key
    from netjobs.services.schedules import _entry_class, _redis, static_names, validate_name

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValidationError(f"not a schedule export (expected format {FORMAT!r})")
    client = _redis(app)
    conf = app.redbeat_conf
    statics = static_names(app)
    entry_cls = _entry_class()
    entries = data.get("entries") or []
    for item in entries:
        validate_name(item.get("name", ""))
        if item["name"] in statics:
            raise ValidationError(f"{item['name']!r} is a default schedule entry; the export must not contain it")
    for item in entries:
        key = entry_cls.generate_key(app, item["name"])
        mapping = {"definition": json.dumps(item["definition"], cls=RedBeatJSONEncoder)}
        if item.get("meta"):
            mapping["meta"] = json.dumps(item["meta"], cls=RedBeatJSONEncoder)
        client.delete(key)
        client.hset(key, mapping=mapping)
        entry = entry_cls.from_key(key, app=app)
        # Where beat looks for due entries; the score is the next due time.
        client.zadd(conf.schedule_key, {key: entry.score})
    overrides = data.get("overrides") or {}
    if overrides:
        client.hset(overrides_key(conf.key_prefix), mapping={k: json.dumps(v) for k, v in overrides.items()})
    return len(entries), len(overrides)


@schedule.command(name="export")
def schedule_export():
    """Print the run-time schedules and the overrides of default entries as JSON (for backups)."""
    json.dump(export_schedules(celery_app()), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


@schedule.command(name="import")
@click.argument("source", type=click.File("r"))
def schedule_import(source):
    """Load a `schedule export` file (or - for stdin): entries of the same name are replaced."""
    try:
        data = json.load(source)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{source.name}: not JSON: {exc}") from None
    entries, overrides = import_schedules(celery_app(), data)
    note(f"imported {entries} schedule(s) and {overrides} override(s)")


@db.command(name="known")
@click.argument("revision")
def db_known(revision):
    """Exit 0 if REVISION is this release's head or one it can upgrade from, 1 if not (a newer release)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from netjobs.db.migrate import alembic_config

    settings()
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    click.echo(f"revision {revision}: {'known' if known else 'unknown'} (head {script.get_current_head()})")
    raise SystemExit(0 if known else 1)


COMMANDS = ()
