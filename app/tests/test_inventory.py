"""Device services and inventory import (CSV, YAML) against the real database and worker."""

from __future__ import annotations

import csv
import io
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from netjobs.errors import NotFoundError, ValidationError
from netjobs.platforms import SUPPORTED_PLATFORMS
from netjobs.services.devices import DeviceSpec
from netjobs.services.inventory import detect_format, parse_inventory

GOOD_AND_BAD_CSV = """\
# lab inventory
name,address,platform,port,site,tags,enabled
r1,10.0.0.1,cisco_ios,22,dc1,core;edge,true

r2,not an address,cisco_ios
r3,10.0.0.3,ios,70000
sw4,sw4.example.net,ARISTA_EOS,,dc2,access|access,no
sw5,10.0.0.5,linux,22,dc2,,maybe
"r6,10.0.0.6,linux
dup,10.0.0.7,linux
dup,10.0.0.8,linux
fw9,2001:db8::9,juniper_junos,830,dc1,,,extra
 , 10.0.0.10 ,linux
"""

EXPECTED_ERRORS = [
    {"line": 5, "reason": "address 'not an address' is neither an IP address nor a DNS hostname"},
    {"line": 6, "reason": "platform 'ios' is not supported (supported: cisco_ios, cisco_nxos, arista_eos, "
                          "juniper_junos, linux); port must be a number from 1 to 65535, got 70000"},
    {"line": 8, "reason": "enabled must be true or false, got 'maybe'"},
    {"line": 9, "reason": "malformed CSV: unexpected end of data"},
    {"line": 10, "reason": "duplicate name 'dup' (also on line 11); none of these rows imported"},
    {"line": 11, "reason": "duplicate name 'dup' (also on line 10); none of these rows imported"},
    {"line": 12, "reason": "8 fields but the header has 7 columns"},
    {"line": 13, "reason": "name is empty"},
]


def device_rows(engine):
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, mgmt_address, port, platform, site, tags, enabled, credentials_ref, "
                                 "updated_at FROM devices ORDER BY name")).mappings()
        return {r["name"]: dict(r) for r in rows}


# --- parsing, no database ---------------------------------------------------------------------------


def test_csv_bad_rows_are_reported_with_line_and_reason():
    result = parse_inventory(GOOD_AND_BAD_CSV, "csv", "lab.csv")
    assert result.errors == EXPECTED_ERRORS
    assert result.devices == [
        DeviceSpec("r1", "10.0.0.1", "cisco_ios", 22, "dc1", ("core", "edge"), True, "default"),
        DeviceSpec("sw4", "sw4.example.net", "arista_eos", 22, "dc2", ("access",), False, "default"),
    ]
    assert result.lines == {"r1": 3, "sw4": 7}


@pytest.mark.parametrize(
    "content, error",
    [
        ("", {"line": 1, "reason": "no header line: expected columns name,address,platform,port,site,tags,"
                                   "enabled,credentials_ref"}),
        ("# only a comment\n\n", {"line": 1, "reason": "no header line: expected columns name,address,platform,"
                                                      "port,site,tags,enabled,credentials_ref"}),
        ("\nname,adress,platform,colour\nr1,10.0.0.1,linux,red\n",
         {"line": 2, "reason": "header: unknown columns 'adress', 'colour' (known: name, address, platform, port, "
                               "site, tags, enabled, credentials_ref); required column address missing; "
                               "no rows imported"}),
        ("name,address,platform,name\n", {"line": 1, "reason": "header: column 'name' appear twice; "
                                                               "no rows imported"}),
    ],
)
def test_csv_header_problems_import_nothing(content, error):
    result = parse_inventory(content, "csv")
    assert result.errors == [error]
    assert result.devices == []


def test_yaml_items_are_validated_with_their_line_numbers():
    content = """\
# YAML inventory
devices:
  - name: r1
    address: 10.0.0.1
    platform: cisco_ios
    tags: [core, edge]
    site: 7
  - name: r2
    address: 10.0.0.2
    platform: cisco_ios
    colour: red
  - just a string
  - {name: r4, address: 10.0.0.4, platform: linux, enabled: false, port: "2222"}
  - name: r5
    name: r6
    address: 10.0.0.6
    platform: linux
"""
    result = parse_inventory(content, "yaml")
    assert result.errors == [
        {"line": 8, "reason": "unknown field 'colour'"},
        {"line": 12, "reason": "a device must be a mapping with keys name, address, platform, port, site, tags, "
                               "enabled, credentials_ref, got str"},
        {"line": 14, "reason": "key 'name' given twice"},
    ]
    assert result.devices == [
        DeviceSpec("r1", "10.0.0.1", "cisco_ios", 22, "7", ("core", "edge")),
        DeviceSpec("r4", "10.0.0.4", "linux", 2222, None, (), False),
    ]
    assert result.lines == {"r1": 3, "r4": 13}


@pytest.mark.parametrize(
    "content, error",
    [
        ("devices: [\n  {name: r1\n", "not valid YAML"),
        ("routers:\n  - name: r1\n", "expected a list of devices, or a mapping with only the key 'devices'"),
        ("devices: r1\n", "devices must be a list of mappings"),
    ],
)
def test_yaml_structure_errors(content, error):
    result = parse_inventory(content, "yaml")
    assert len(result.errors) == 1 and error in result.errors[0]["reason"]
    assert result.devices == []


def test_format_comes_from_the_file_name():
    assert detect_format("/x/lab.CSV") == "csv"
    assert detect_format("lab.yml") == detect_format("lab.yaml") == "yaml"
    with pytest.raises(ValidationError, match="use a .csv, .yml or .yaml file"):
        detect_format("lab.txt")
    with pytest.raises(ValidationError, match="unknown inventory format"):
        parse_inventory("", "xlsx")


# --- hypothesis: CSV rows -----------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits


def word(first: str, rest: str, max_size: int):
    """Text whose first character is from ``first`` and the others from ``rest``."""
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(rest, max_size=max_size - 1))


names = word(ALNUM, ALNUM + "._-", 30)
hostnames = st.lists(word(string.ascii_lowercase, string.ascii_lowercase + string.digits, 10), min_size=1,
                     max_size=4).map(".".join)
addresses = st.one_of(st.ip_addresses().map(str), hostnames)
tags = st.lists(word(ALNUM, ALNUM + "._:/-", 10), max_size=4)
specs = st.builds(
    DeviceSpec,
    name=names,
    address=addresses,
    platform=st.sampled_from(SUPPORTED_PLATFORMS),
    port=st.integers(1, 65535),
    site=st.one_of(st.none(), st.text(ALNUM + " ,;\"'-", min_size=1, max_size=20)
                   .map(str.strip).filter(bool)),
    tags=tags.map(lambda t: tuple(sorted(set(t)))),
    enabled=st.booleans(),
    credentials_ref=word(ALNUM, ALNUM + "._-", 20),
)


def render_csv(rows: list[DeviceSpec], separator: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "address", "platform", "port", "site", "tags", "enabled", "credentials_ref"])
    for spec in rows:
        writer.writerow([spec.name, spec.address, spec.platform, spec.port, spec.site or "",
                         separator.join(spec.tags), str(spec.enabled).lower(), spec.credentials_ref])
    return out.getvalue()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(specs, max_size=8, unique_by=lambda s: s.name), separator=st.sampled_from([";", "|"]))
def test_csv_rows_round_trip(rows, separator):
    result = parse_inventory(render_csv(rows, separator), "csv")
    assert result.errors == []
    assert result.devices == rows
    assert result.lines == {s.name: n for n, s in enumerate(rows, start=2)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_text_gives_rows_or_line_numbered_errors(content):
    content = "name,address,platform\n" + content
    result = parse_inventory(content, "csv")
    last_line = content.count("\n") + 1
    assert all(isinstance(e["reason"], str) and e["reason"] and 2 <= e["line"] <= last_line for e in result.errors)
    assert set(result.lines.values()) <= set(range(2, last_line + 1))
    assert len(result.lines) == len(result.devices)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "address", "platform", "port", "site", "tags", "enabled", "colour"]), children,
        max_size=6),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(yaml_values, st.fixed_dictionaries({"devices": yaml_values})))
def test_any_yaml_gives_devices_or_line_numbered_errors(document):
    import yaml

    content = yaml.safe_dump(document)
    result = parse_inventory(content, "yaml")
    last_line = content.count("\n") + 1
    assert all(1 <= e["line"] <= last_line and e["reason"] for e in result.errors)
    assert sorted(result.lines) == sorted(d.name for d in result.devices)


@settings(deadline=None)
@given(st.ip_addresses())
def test_every_ip_address_is_accepted_in_canonical_form(address):
    from netjobs.services.devices import parse_address

    assert parse_address(f" {address.exploded} ") == str(address)


# --- the devices table ------------------------------------------------------------------------------


def test_add_list_get_select_remove_devices(db):
    from netjobs.services.devices import add_device, get_device, list_devices, remove_device, select_devices

    added = add_device("r1", "10.0.0.1", "cisco_ios", site="dc1", tags=["edge", "core"])
    assert added == {"name": "r1", "address": "10.0.0.1", "port": 22, "platform": "cisco_ios", "site": "dc1",
                     "tags": ["core", "edge"], "enabled": True, "credentials_ref": "default"}
    add_device("r2", "r2.example.net", "arista_eos", port=2222, site="dc2", tags=["core"], enabled=False)
    add_device("r3", "2001:db8::3", "linux", site="dc1", credentials_ref="lab")
    assert get_device("r1") == added
    assert [d["name"] for d in list_devices()] == ["r1", "r2", "r3"]
    assert [d["name"] for d in list_devices(site="dc1")] == ["r1", "r3"]
    assert [d["name"] for d in list_devices(tag="core")] == ["r1", "r2"]
    assert [d["name"] for d in list_devices(enabled=False)] == ["r2"]
    assert [d["name"] for d in select_devices()] == ["r1", "r3"]
    assert [d["name"] for d in select_devices(enabled_only=False, tag="core")] == ["r1", "r2"]
    assert [d["name"] for d in select_devices(names=["r3", "r2"])] == ["r3"]
    with pytest.raises(NotFoundError, match="unknown devices: nope, gone"):
        select_devices(names=["r1", "nope", "gone"])
    with pytest.raises(ValidationError, match="'r1' already exists"):
        add_device("r1", "10.0.0.9", "linux")
    remove_device("r2")
    with pytest.raises(NotFoundError, match="no device named 'r2'"):
        remove_device("r2")
    with pytest.raises(NotFoundError, match="no device named 'r2'"):
        get_device("r2")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"platform": "cisco"}, "platform 'cisco' is not supported"),
        ({"address": "10.0.0.256"}, "address '10.0.0.256' is neither an IP address nor a DNS hostname"),
        ({"address": "-bad-.example"}, "neither an IP address nor a DNS hostname"),
        ({"name": "../etc/passwd"}, "name '../etc/passwd' is invalid"),
        ({"port": 0}, "port must be a number from 1 to 65535, got 0"),
        ({"tags": ["ok", "not ok"]}, "tag 'not ok' is invalid"),
        ({"credentials_ref": "a b"}, "credentials_ref 'a b' is invalid"),
        ({"enabled": "perhaps"}, "enabled must be true or false"),
    ],
)
def test_add_device_refuses_bad_values(db, kwargs, message):
    from netjobs.services.devices import add_device, list_devices

    values = {"name": "r1", "address": "10.0.0.1", "platform": "linux", **kwargs}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        add_device(**values)
    assert list_devices() == []


# --- import -----------------------------------------------------------------------------------------


def test_import_keeps_good_rows_reports_bad_ones_and_reimport_changes_nothing(db):
    from netjobs.services.inventory import import_inventory

    first = import_inventory(GOOD_AND_BAD_CSV, "csv", "lab.csv")
    assert first == {"source": "lab.csv", "created": 2, "updated": 0, "unchanged": 0, "invalid": 8,
                     "errors": EXPECTED_ERRORS, "pruned": 0, "prune_skipped": None}
    before = device_rows(db)
    assert {n: (r["mgmt_address"], r["platform"], r["tags"], r["enabled"]) for n, r in before.items()} == {
        "r1": ("10.0.0.1", "cisco_ios", ["core", "edge"], True),
        "sw4": ("sw4.example.net", "arista_eos", ["access"], False),
    }
    again = import_inventory(GOOD_AND_BAD_CSV, "csv", "lab.csv")
    assert (again["created"], again["updated"], again["unchanged"], again["invalid"]) == (0, 0, 2, 8)
    assert device_rows(db) == before  # updated_at included: nothing was rewritten

    changed = GOOD_AND_BAD_CSV.replace("r1,10.0.0.1,cisco_ios,22,dc1,core;edge", "r1,10.0.0.1,cisco_ios,22,dc1,edge")
    third = import_inventory(changed, "csv", "lab.csv")
    assert (third["created"], third["updated"], third["unchanged"]) == (0, 1, 1)
    after = device_rows(db)
    assert after["r1"]["tags"] == ["edge"] and after["r1"]["updated_at"] > before["r1"]["updated_at"]
    assert after["sw4"] == before["sw4"]


def test_yaml_import_and_prune(db):
    from netjobs.services.devices import add_device, list_devices
    from netjobs.services.inventory import import_inventory

    add_device("old", "10.9.9.9", "linux")
    add_device("r1", "10.0.0.99", "linux")
    content = "- {name: r1, address: 10.0.0.1, platform: cisco_ios}\n- {name: r2, address: r2.lab, platform: linux}\n"
    bad = content + "- {name: r3, address: 10.0.0.3, platform: vax}\n"

    skipped = import_inventory(bad, "yaml", prune=True)
    assert (skipped["created"], skipped["updated"], skipped["pruned"]) == (1, 1, 0)
    assert skipped["prune_skipped"] == "1 invalid row(s): fix them to prune"
    assert [d["name"] for d in list_devices()] == ["old", "r1", "r2"]

    pruned = import_inventory(content, "yaml", prune=True)
    assert (pruned["created"], pruned["updated"], pruned["unchanged"], pruned["pruned"]) == (0, 0, 2, 1)
    assert [(d["name"], d["address"]) for d in list_devices()] == [("r1", "10.0.0.1"), ("r2", "r2.lab")]

    empty = import_inventory("devices: []\n", "yaml", prune=True)
    assert empty["prune_skipped"] == "the file lists no devices" and len(list_devices()) == 2


def test_import_tasks_on_the_real_worker(worker, db, celery_app, tmp_path):
    from netjobs.services.devices import list_devices

    text_result = celery_app.send_task("netjobs.inventory.import_text",
                                       args=["name,address,platform\nr1,10.0.0.1,linux\nr2,10.0.0.2,nope\n", "csv"],
                                       kwargs={"source": "ops.csv"})
    summary = text_result.get(timeout=60)
    assert (summary["created"], summary["invalid"], summary["source"]) == (1, 1, "ops.csv")
    assert summary["errors"] == [{"line": 3, "reason": "platform 'nope' is not supported (supported: cisco_ios, "
                                                       "cisco_nxos, arista_eos, juniper_junos, linux)"}]

    inventory = tmp_path / "lab.yml"
    inventory.write_text("devices:\n  - {name: r2, address: 10.0.0.2, platform: linux}\n")
    file_summary = celery_app.send_task("netjobs.inventory.import_file", args=[str(inventory)],
                                        kwargs={"prune": True}).get(timeout=60)
    assert (file_summary["created"], file_summary["pruned"]) == (1, 1)
    assert [d["name"] for d in list_devices()] == ["r2"]

    with pytest.raises(Exception, match="does not exist on worker"):
        celery_app.send_task("netjobs.inventory.import_file", args=[str(tmp_path / "missing.csv")]).get(timeout=60)
    too_big = "name,address,platform\n" + "#" * (10 * 1024 * 1024)
    with pytest.raises(Exception, match="limited to 10485760 bytes"):
        celery_app.send_task("netjobs.inventory.import_text", args=[too_big, "csv"]).get(timeout=60)
    assert [d["name"] for d in list_devices()] == ["r2"]


def test_reading_inventory_files_gives_clear_errors(tmp_path):
    from netjobs.services.inventory import read_inventory_file

    good = tmp_path / "ok.csv"
    good.write_bytes(b"\xef\xbb\xbfname,address,platform\n")
    assert read_inventory_file(good) == "name,address,platform\n"  # a spreadsheet's BOM is dropped
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("name,address,platform\nr\xe9,10.0.0.1,linux\n".encode("latin-1"))
    with pytest.raises(ValidationError, match=r"latin1.csv is not UTF-8 text \(byte 0xe9 at offset 23\)"):
        read_inventory_file(latin1)
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as out:
        out.truncate(10 * 1024 * 1024 + 1)  # sparse: costs no disk
    with pytest.raises(ValidationError, match="huge.csv is 10485761 bytes; inventory files are limited to 10485760"):
        read_inventory_file(huge)
    with pytest.raises(ValidationError, match="does not exist on worker w1 or is not a file"):
        read_inventory_file(tmp_path, host="worker w1")
