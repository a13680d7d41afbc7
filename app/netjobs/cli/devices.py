"""`netjobs devices add|list|remove|trust|hostkeys`: the inventory, one device at a time, and SSH host keys."""

from __future__ import annotations

import click
from netjobs.cli.common import EXIT_FAILED, err, escape, fail, new_table, note, out, print_json, settings, short_time


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


@devices.command(name="trust")
@click.argument("name")
@click.option("--replace", is_flag=True, help="Accept a key different from the trusted one (after a hardware swap).")
@click.option("--json", "as_json", is_flag=True)
def devices_trust(name, replace, as_json):
    """Trust the SSH host key device NAME presents now (backups accept no other).

    Check the fingerprint shown against the device's console. A different key already trusted is
    refused (exit 1) unless --replace.
    """
    from netjobs.errors import TransientError
    from netjobs.services.hostkeys import trust

    settings()
    try:
        outcome = trust(name, replace=replace)
    except TransientError as exc:
        fail(f"cannot reach device {name}: {exc}")
    if as_json:
        print_json(outcome)
        return
    key = outcome.key
    if outcome.action == "already trusted":
        note(f"{outcome.device}: already trusted: {key.fingerprint} ({key.key_type}), "
             f"by {key.trusted_by} at {short_time(key.trusted_at)}")
    elif outcome.action == "replaced":
        note(f"{outcome.device}: replaced {outcome.previous.fingerprint} ({outcome.previous.key_type}) "
             f"with {key.fingerprint} ({key.key_type}), trusted by {key.trusted_by}")
    else:
        note(f"{outcome.device}: stored {key.fingerprint} ({key.key_type}), trusted by {key.trusted_by}")


@devices.command(name="hostkeys")
@click.option("--json", "as_json", is_flag=True)
def devices_hostkeys(as_json):
    """The SSH host key trusted for each device ("-": none yet, see `netjobs devices trust`)."""
    from netjobs.services.hostkeys import list_host_keys

    settings()
    rows = list_host_keys()
    if as_json:
        print_json(rows)
        return
    table = new_table(f"host keys ({sum(1 for r in rows if r['fingerprint'])} of {len(rows)} devices)",
                      ("device", "address", "key type", "fingerprint", "trusted at", "trusted by"),
                      no_wrap=("device", "fingerprint"))
    for r in rows:
        table.add_row(escape(r["device"]), escape(f"{r['address']}:{r['port']}"), r["key_type"] or "-",
                      r["fingerprint"] or "[yellow]-[/yellow]", short_time(r["trusted_at"]),
                      escape(r["trusted_by"] or "-"))
    out().print(table)


COMMANDS = (devices,)
