"""`netjobs devices add|list|remove`: the inventory, one device at a time."""

from __future__ import annotations

import click
from netjobs.cli.common import EXIT_FAILED, err, escape, new_table, note, out, print_json, settings


@click.group()
def devices():
    """The device inventory (bulk changes: `netjobs import FILE`)."""


@devices.command(name="add")
@click.argument("name")
@click.argument("address")
@click.option("--platform", required=True, help="cisco_ios, arista_eos, juniper_junos, linux, ...")
@click.option("--port", default="22", show_default=True, help="SSH port.")
@click.option("--site", default=None)
@click.option("--tag", "tags", multiple=True, help="Repeatable.")
@click.option("--credentials-ref", default="default", show_default=True,
              help="Which credentials from NETJOBS_DEVICE_CREDENTIALS_FILE.")
@click.option("--disabled", is_flag=True, help="Add it disabled (not swept, not backed up).")
@click.option("--json", "as_json", is_flag=True)
def devices_add(name, address, platform, port, site, tags, credentials_ref, disabled, as_json):
    """Add device NAME at ADDRESS."""
    from netjobs.services.devices import add_device

    settings()
    device = add_device(name, address, platform, port=port, site=site, tags=tuple(tags),
                        credentials_ref=credentials_ref, enabled=not disabled)
    if as_json:
        print_json(device)
    else:
        note(f"added {device['name']} ({device['address']}, {device['platform']})")


@devices.command(name="list")
@click.option("--site", default=None)
@click.option("--tag", default=None)
@click.option("--enabled/--disabled", "enabled", default=None, help="Only enabled (or disabled) devices.")
@click.option("--json", "as_json", is_flag=True)
def devices_list(site, tag, enabled, as_json):
    """List devices."""
    from netjobs.services.devices import list_devices

    settings()
    rows = list_devices(site=site, tag=tag, enabled=enabled)
    if as_json:
        print_json(rows)
        return
    table = new_table(f"devices ({len(rows)})", ("name", "address", "port", "platform", "site", "tags", "enabled",
                                                 "credentials"), no_wrap=("name", "address"))
    for d in rows:
        table.add_row(escape(d["name"]), escape(d["address"]), str(d["port"]), d["platform"], escape(d["site"] or ""),
                      escape(", ".join(d["tags"])), "yes" if d["enabled"] else "[red]no[/red]",
                      escape(d["credentials_ref"]))
    out().print(table)


@devices.command(name="remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
def devices_remove(name, yes):
    """Remove a device (its snapshots and results go with it)."""
    from netjobs.services.devices import get_device, remove_device

    settings()
    get_device(name)
    if not yes and not click.confirm(f"remove device {name} with its snapshots and results?", default=False, err=True):
        err().print("not removed")
        raise SystemExit(EXIT_FAILED)
    remove_device(name)
    note(f"removed {name}")


COMMANDS = (devices,)
