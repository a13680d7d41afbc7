"""Reachability sweep: parsing, probing real loopback listeners, storage, the Celery tasks.

Only loopback addresses (127.0.0.0/8, ::1) are ever probed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import resource
import shutil
import uuid

import pytest
from hypothesis import given, strategies as st
from sqlalchemy import insert, text

from netjobs.errors import NotFoundError, PermanentError, ValidationError
from netjobs.services import sweep
from tests.conftest import wait_until
from tests.support.sweep import filtered_ports, free_port, ipv6_loopback_available, open_ports

# --- ports ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    (22, (22,)),
    ("22", (22,)),
    ("22,443,8000-8003", (22, 443, 8000, 8001, 8002, 8003)),
    (" 443 , 22 ,22, 1-2 ", (1, 2, 22, 443)),
    ([443, "22", "10-11"], (10, 11, 22, 443)),
    ("65535", (65535,)),
])
def test_port_specs_parse(spec, expected):
    assert sweep.parse_ports(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("0", "out of range"),
    (65536, "out of range"),
    ("70000", "out of range"),
    ("10-5", "runs backwards"),
    ("ssh", "bad port 'ssh'"),
    ("22;80", "bad port"),
    (True, "must be numbers"),
    (2.5, "must be numbers"),
    ("", "no ports given"),
    ([], "no ports given"),
    ("1-2000", "more than 1024 ports"),
])
def test_bad_port_specs_are_refused(spec, message):
    with pytest.raises(ValidationError, match=message):
        sweep.parse_ports(spec)


def _render(ports: set[int]) -> str:
    """Write a port set the way an operator would: runs of consecutive ports as ranges."""
    parts, ordered = [], sorted(ports)
    start = previous = ordered[0]
    for port in ordered[1:] + [None]:
        if port is not None and port == previous + 1:
            previous = port
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if port is not None:
            start = previous = port
    return ",".join(parts)


@given(st.sets(st.integers(1, 65535), min_size=1, max_size=60), st.randoms())
def test_rendered_port_sets_parse_back(ports, rnd):
    spec = _render(ports).split(",")
    rnd.shuffle(spec)
    assert sweep.parse_ports(",".join(spec)) == tuple(sorted(ports))
    assert sweep.parse_ports(spec) == tuple(sorted(ports))


@given(st.text(alphabet="0123456789,- x", max_size=20))
def test_port_parser_returns_valid_ports_or_a_clear_error(spec):
    try:
        ports = sweep.parse_ports(spec)
    except ValidationError as exc:
        assert str(exc)
    else:
        assert ports and all(1 <= p <= 65535 for p in ports) and list(ports) == sorted(set(ports))


# --- prefixes --------------------------------------------------------------------------------------


ipv4_networks = st.builds(
    lambda address, length: ipaddress.ip_network(f"{ipaddress.IPv4Address(address)}/{length}", strict=False),
    st.integers(0, 2**32 - 1), st.integers(16, 32),
)
ipv6_networks = st.builds(
    lambda address, length: ipaddress.ip_network(f"{ipaddress.IPv6Address(address)}/{length}", strict=False),
    st.integers(0, 2**128 - 1), st.integers(112, 128),
)


@given(st.one_of(ipv4_networks, ipv6_networks), st.booleans())
def test_prefixes_parse_and_enumerate(network, with_host_bits):
    text_form = str(network)
    if with_host_bits and network.num_addresses > 1:  # 10.1.2.3/24 means 10.1.2.0/24
        text_form = f"{network.network_address + 1}/{network.prefixlen}"
    parsed = sweep.parse_prefix(f" {text_form} ", 65536)
    assert parsed == network
    expected_size = network.num_addresses
    if network.version == 4 and network.prefixlen <= 30:
        expected_size -= 2  # network and broadcast address
    assert sweep.prefix_size(parsed) == expected_size
    if expected_size <= 1024:
        addresses = [ipaddress.ip_address(a) for a in sweep.prefix_addresses(parsed)]
        assert len(addresses) == expected_size == len(set(addresses))
        assert all(a in network for a in addresses)
        if network.version == 4 and network.prefixlen <= 30:
            assert network.network_address not in addresses and network.broadcast_address not in addresses


def test_single_addresses_and_small_ipv4_prefixes_keep_every_address():
    assert list(sweep.prefix_addresses(sweep.parse_prefix("127.0.0.5", 1))) == ["127.0.0.5"]
    assert list(sweep.prefix_addresses(sweep.parse_prefix("127.0.0.4/31", 2))) == ["127.0.0.4", "127.0.0.5"]
    assert list(sweep.prefix_addresses(sweep.parse_prefix("127.0.0.4/30", 4))) == ["127.0.0.5", "127.0.0.6"]
    assert list(sweep.prefix_addresses(sweep.parse_prefix("::1", 1))) == ["::1"]


def test_too_large_prefix_is_refused_with_the_limit_named():
    with pytest.raises(ValidationError) as caught:
        sweep.parse_prefix("10.0.0.0/8", 65536)
    assert str(caught.value) == ("prefix 10.0.0.0/8 has 16777216 addresses; the limit is 65536 "
                                 "(NETJOBS_SWEEP_MAX_ADDRESSES)")
    assert sweep.parse_prefix("10.0.0.0/16", 65536).num_addresses == 65536
    with pytest.raises(ValidationError, match="2001:db8::/64 has 18446744073709551616 addresses"):
        sweep.parse_prefix("2001:db8::/64", 65536)


@pytest.mark.parametrize("value", ["", "  ", "10.0.0.0/33", "300.1.1.1", "host.example", "10.0.0.0/8/8", None, 42])
def test_malformed_targets_are_refused(value):
    with pytest.raises(ValidationError, match="target"):
        sweep.parse_prefix(value, 65536)


# --- request validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    ({}, "give either a target prefix/address or a device selection"),
    ({"target": "127.0.0.1", "site": "lab"}, "not both"),
    ({"target": "127.0.0.1", "timeout": 0}, "timeout must be a number from 0.05 to 30.0"),
    ({"target": "127.0.0.1", "timeout": "1"}, "timeout must be a number"),
    ({"target": "127.0.0.1", "concurrency": 0}, "concurrency must be a number from 1"),
    ({"target": "127.0.0.1", "concurrency": True}, "concurrency must be a number"),
    ({"target": "127.0.0.1", "icmp": "yes"}, "icmp must be true or false"),
    ({"target": "127.0.0.1", "icmp": True}, "ICMP probes are disabled here: set NETJOBS_ICMP_ENABLED=true"),
    ({"target": "127.0.0.1", "ports": "99999"}, "out of range"),
    ({"target": "127.0.0.1", "ports": []}, "no ports given"),
    ({"devices": []}, "devices must be a list of device names"),
    ({"devices": [1, 2]}, "devices must be a list of device names"),
    ({"site": ""}, "site must be a non-empty string"),
    ({"target": "127.0.0.0/16", "ports": "1-1000"}, "more than 1048576 probes"),
    ({"target": "127.0.0.0/16", "ports": "1-16", "timeout": 2, "concurrency": 100, "time_limit": 540},
     "can take 20971 s, more than the task time limit"),
])
def test_bad_sweep_arguments_are_refused(arguments, message):
    with pytest.raises(ValidationError, match=message):
        sweep.build_request(**arguments)


def test_request_defaults():
    request = sweep.build_request(target="127.0.0.0/24", default_concurrency=77)
    assert request.ports == sweep.DEFAULT_PREFIX_PORTS and request.concurrency == 77 and not request.by_devices
    by_devices = sweep.build_request(devices="r1, r2", ports="22")
    assert by_devices.by_devices and by_devices.devices == ["r1", "r2"] and by_devices.ports == (22,)
    assert sweep.build_request(site="lab").ports is None  # each device's own port
    assert sweep.build_request(target="::1", ports=[], icmp=True, icmp_enabled=True).ports == ()


def test_open_files_limit_is_raised_but_never_past_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft + 10 if hard == resource.RLIM_INFINITY else hard + 10
    new_soft = sweep.raise_open_files_limit(wanted)
    assert new_soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert new_soft >= soft and (hard == resource.RLIM_INFINITY or new_soft == hard)


# --- probing real listeners ------------------------------------------------------------------------


def probe(target: str, ports, timeout=1.0, concurrency=64, keep=sweep.keep_everything, progress=None):
    network = sweep.parse_prefix(target, 65536)
    outcome, _ = asyncio.run(sweep.probe_targets(
        sweep.prefix_targets(network, sweep.parse_ports(ports)), sweep.prefix_size(network),
        timeout=timeout, concurrency=concurrency, keep=keep, progress=progress))
    return outcome, {(t.address, port): state for t, port, state, _rtt, _error in outcome.results}


def test_open_closed_and_filtered_ports_on_loopback():
    closed = free_port()
    with open_ports(["127.0.0.1", "127.0.0.2"]) as both, open_ports(["127.0.0.2"]) as only_second, \
            filtered_ports(["127.0.0.3"]) as filtered:
        reports = []
        outcome, states = probe("127.0.0.0/29", [both, only_second, closed, filtered], timeout=0.5,
                                progress=lambda done, total: reports.append((done, total)))
    assert outcome.addresses == 6 and outcome.probes == 24
    assert states[("127.0.0.1", both)] == states[("127.0.0.2", both)] == "open"
    assert states[("127.0.0.2", only_second)] == "open"
    assert states[("127.0.0.1", only_second)] == "closed"
    assert states[("127.0.0.3", filtered)] == "filtered"
    assert states[("127.0.0.4", filtered)] == "closed"  # only .3 listens there
    assert all(states[(f"127.0.0.{i}", closed)] == "closed" for i in range(1, 7))
    assert outcome.states == {"open": 3, "closed": 20, "filtered": 1, "unreachable": 0, "error": 0}
    assert outcome.reachable == 6  # every address answered on some port (a RST counts)
    assert reports[-1] == (6, 6) and [d for d, _ in reports] == sorted(d for d, _ in reports)
    rtts = {(t.address, p): rtt for t, p, _s, rtt, _e in outcome.results}
    assert rtts[("127.0.0.1", both)] is not None and rtts[("127.0.0.3", filtered)] is None


def test_a_refused_socket_reused_for_the_next_probe_reports_that_probe_correctly():
    # One worker probes in address order, so each closed probe hands its socket to the next one.
    with open_ports(["127.0.0.2", "127.0.0.6"]) as port, filtered_ports(["127.0.0.4"], port):
        outcome, states = probe("127.0.0.0/29", [port], timeout=0.3, concurrency=1)
    assert [states[(f"127.0.0.{i}", port)] for i in range(1, 7)] == [
        "closed", "open", "closed", "filtered", "closed", "open"]


def test_only_filtered_addresses_are_not_reachable():
    with filtered_ports(["127.0.0.2", "127.0.0.3"]) as port:
        outcome, states = probe("127.0.0.2/31", [port], timeout=0.3)
    assert set(states.values()) == {"filtered"} and outcome.reachable == 0
    errors = {error for *_, error in outcome.results}
    assert errors == {"no answer before the timeout"}


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback in this environment")
def test_ipv6_loopback():
    closed = free_port("::1")
    with open_ports(["::1"]) as port:
        outcome, states = probe("::1", [port, closed])
    assert states == {("::1", port): "open", ("::1", closed): "closed"}
    assert outcome.reachable == 1


def test_default_policy_keeps_only_open_ports_of_a_prefix():
    with open_ports(["127.0.0.2"]) as port:
        outcome, states = probe("127.0.0.0/30", [port, free_port()], keep=sweep.keep_answers)
    assert states == {("127.0.0.2", port): "open"}
    assert outcome.states["closed"] == 3


def test_icmp_echo_on_loopback():
    addresses = ["127.0.0.1"] + (["::1"] if ipv6_loopback_available() else [])
    try:
        replies = asyncio.run(sweep.icmp_probe(addresses, 1.0, 8))
    except PermanentError as exc:  # e.g. an unprivileged container
        pytest.skip(str(exc))
    assert set(replies) == set(addresses)
    assert all(rtt is not None and rtt >= 0 for rtt in replies.values())


def test_icmp_with_plain_ping_when_fping_is_missing():
    ping = shutil.which("ping")
    if ping is None:
        pytest.skip("no ping installed")
    try:
        replies = asyncio.run(sweep._icmp_ping(ping, ["127.0.0.1"], 1.0, 4))
    except PermanentError as exc:
        pytest.skip(str(exc))
    assert replies["127.0.0.1"] is not None


# --- storing, through the service ------------------------------------------------------------------


def reachability_rows(engine, sweep_id):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT address, port, method, reachable, state, rtt_ms, error, device_id FROM reachability_results "
            "WHERE sweep_id = :s ORDER BY address, port"), {"s": sweep_id}).mappings()]


def test_sweep_stores_open_ports_and_a_summary(db):
    with open_ports(["127.0.0.1", "127.0.0.2"]) as port:
        summary = sweep.run_sweep(sweep.build_request(target="127.0.0.0/29", ports=[port, free_port()]), "s-1")
    rows = reachability_rows(db, "s-1")
    assert [(r["address"], r["port"], r["state"], r["reachable"], r["method"]) for r in rows] == [
        ("127.0.0.1", port, "open", True, "tcp"), ("127.0.0.2", port, "open", True, "tcp")]
    assert all(r["rtt_ms"] is not None and r["error"] is None for r in rows)
    assert summary["sweep_id"] == "s-1" and summary["target"] == "127.0.0.0/29"
    assert (summary["addresses"], summary["probes"], summary["reachable"], summary["open"]) == (6, 12, 6, 2)
    assert summary["stored"] == 2 and summary["states"] == {"open": 2, "closed": 10}
    assert sorted(summary["open_ports"]) == [f"127.0.0.1:{port}", f"127.0.0.2:{port}"]
    assert summary["addresses_per_s"] > 0 and summary["probes_per_s"] > 0


def test_same_sweep_id_twice_stores_each_result_once(db):
    with open_ports(["127.0.0.1"]) as port:
        request = sweep.build_request(target="127.0.0.0/30", ports=[port, free_port()], store_all=True)
        first = sweep.run_sweep(request, "again")
        second = sweep.run_sweep(request, "again")
    assert first["stored"] == second["stored"] == 4
    rows = reachability_rows(db, "again")
    assert len(rows) == 4 and len({(r["address"], r["port"]) for r in rows}) == 4


def test_icmp_sweep_stores_echo_replies(db):
    request = sweep.build_request(target="127.0.0.1", ports=[], icmp=True, icmp_enabled=True)
    try:
        summary = sweep.run_sweep(request, "echo")
    except PermanentError as exc:
        pytest.skip(str(exc))
    assert summary["reachable"] == 1 and summary["probes"] == 0 and summary["states"] == {"up": 1}
    assert [(r["address"], r["port"], r["method"], r["state"]) for r in reachability_rows(db, "echo")] == [
        ("127.0.0.1", None, "icmp", "up")]


# --- the tasks, on the real worker -----------------------------------------------------------------


def add_devices(engine, *devices):
    from netjobs.db.models import Device

    with engine.begin() as conn:
        for name, address, port, site, tags, enabled in devices:
            conn.execute(insert(Device).values(name=name, mgmt_address=address, port=port, platform="linux",
                                               site=site, tags=list(tags), enabled=enabled))
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT name, id FROM devices")).all())


def test_device_selection_sweep_on_the_worker(worker, db, celery_app):
    closed = free_port()
    with open_ports(["127.0.0.1"]) as ssh, filtered_ports(["127.0.0.4"]) as filtered:
        ids = add_devices(
            db,
            ("r1", "127.0.0.1", ssh, "lab", ["core"], True),
            ("r2", "127.0.0.2", closed, "lab", ["edge"], True),
            ("r3", "127.0.0.4", filtered, "lab", ["edge"], True),
            ("r4", "127.0.0.1", ssh, "lab", ["edge"], False),  # disabled: left out
            ("r5", "127.0.0.3", ssh, "other", ["edge"], True),
        )
        by_site = celery_app.send_task("netjobs.network.sweep", kwargs={"site": "lab", "timeout": 0.3})
        summary = by_site.get(timeout=30)
        by_tag = celery_app.send_task("netjobs.network.sweep", kwargs={"tag": "edge", "ports": str(ssh)})
        tag_summary = by_tag.get(timeout=30)
        inventory = celery_app.send_task("netjobs.network.sweep_inventory", kwargs={"timeout": 0.3}).get(timeout=30)
    assert summary["devices"] == {"total": 3, "up": 1, "down": ["r2", "r3"]}
    assert summary["target"] == "devices" and summary["addresses"] == 3 and summary["reachable"] == 2
    rows = reachability_rows(db, by_site.id)
    assert [(r["address"], r["port"], r["state"], r["reachable"], r["device_id"]) for r in rows] == [
        ("127.0.0.1", ssh, "open", True, ids["r1"]),
        ("127.0.0.2", closed, "closed", False, ids["r2"]),
        ("127.0.0.4", filtered, "filtered", False, ids["r3"]),
    ]
    # Explicit ports replace each device's own port.
    assert tag_summary["devices"] == {"total": 3, "up": 0, "down": ["r2", "r3", "r5"]}
    assert {(r["address"], r["port"], r["state"]) for r in reachability_rows(db, by_tag.id)} == {
        ("127.0.0.2", ssh, "closed"), ("127.0.0.3", ssh, "closed"), ("127.0.0.4", ssh, "closed")}
    assert inventory["devices"] == {"total": 4, "up": 1, "down": ["r2", "r3", "r5"]}


def test_progress_is_reported_through_the_worker(worker, db, celery_app):
    addresses = [f"127.0.0.{i}" for i in range(9, 15)]
    with filtered_ports(addresses) as port:
        result = celery_app.send_task("netjobs.network.sweep", kwargs={
            "target": "127.0.0.8/29", "ports": [port], "timeout": 0.4, "concurrency": 1})
        meta = wait_until(lambda: result.state == "PROGRESS" and result.info, 30, 0.05, "PROGRESS state")
        summary = result.get(timeout=30)
    assert meta["total"] == 6 and 1 <= meta["current"] < 6 and meta["stage"] == "probing"
    assert summary["states"] == {"filtered": 6} and summary["reachable"] == 0 and summary["stored"] == 0


def test_redelivered_sweep_task_does_not_duplicate_rows(worker, db, celery_app):
    task_id = str(uuid.uuid4())
    with open_ports(["127.0.0.1"]) as port:
        for _ in range(2):  # a second delivery of the same task id
            result = celery_app.send_task("netjobs.network.sweep", task_id=task_id,
                                          kwargs={"target": "127.0.0.1/31", "ports": [port, free_port()],
                                                  "store_all": True})
            assert result.get(timeout=30)["stored"] == 4
    assert len(reachability_rows(db, task_id)) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "10.0.0.0/8"}, "prefix 10.0.0.0/8 has 16777216 addresses; the limit is 65536"),
    ({"target": "127.0.0.1", "icmp": True}, "NETJOBS_ICMP_ENABLED"),
    ({"target": "127.0.0.1", "ports": "22-"}, "bad port"),
    ({"devices": ["nope"]}, "unknown device: nope"),
])
def test_bad_task_arguments_fail_at_once_with_a_clear_message(worker, db, celery_app, kwargs, message):
    result = celery_app.send_task("netjobs.network.sweep", kwargs=kwargs)
    with pytest.raises(Exception, match=message):
        result.get(timeout=30)
    assert result.state == "FAILURE"


def test_device_addresses_are_resolved_and_shared_addresses_probed_once():
    devices = [{"id": 1, "name": "a", "address": "localhost", "port": 22},  # /etc/hosts: no DNS traffic
               {"id": 2, "name": "b", "address": "127.0.0.1", "port": 830},
               {"id": 3, "name": "c", "address": "127.0.0.1", "port": 22}]
    selection = sweep.device_targets(devices, None)
    assert selection.unresolved == []
    by_address = {t.address: t for t in selection.targets}
    assert by_address["127.0.0.1"].ports[-1] == 830 and by_address["127.0.0.1"].owners[830] == (2,)
    assert devices[0]["probed_address"] in ("127.0.0.1", "::1")
    if devices[0]["probed_address"] == "127.0.0.1":
        assert by_address["127.0.0.1"].owners[22] == (1, 3) and len(selection.targets) == 1


def test_sweeping_an_empty_inventory_is_not_an_error(db):
    summary = sweep.run_sweep(sweep.build_request(inventory=True), "empty")
    assert (summary["addresses"], summary["probes"], summary["stored"]) == (0, 0, 0)
    assert summary["devices"] == {"total": 0, "up": 0, "down": []}


def test_unknown_device_is_a_not_found_error(db):
    with pytest.raises(NotFoundError, match="unknown devices: a, b"):
        sweep.run_sweep(sweep.build_request(devices=["a", "b"]))
