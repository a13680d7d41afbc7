"""`netjobs top` against real Redis, PostgreSQL and a worker; the Grafana dashboard against a real scrape.

The backlog lives in an extra queue that only the `netjobs top` subprocess and a producer app are
told about (NETJOBS_EXTRA_QUEUES): the session worker does not consume it, so its messages wait.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_until
from tests.support.cli import NETJOBS, run_netjobs
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "netjobs.json"
PROVIDER = REPO / "monitoring" / "grafana" / "provisioning" / "dashboards" / "netjobs.yml"
BACKLOG = 3
WIDE = {"COLUMNS": "250"}  # rich wraps at the terminal width: keep each table row on one line


# --- netjobs top -----------------------------------------------------------------------------


@pytest.fixture
def backlog_queue(netjobs_env, redis_client):
    """An extra queue holding BACKLOG pings that nobody consumes; its name goes to NETJOBS_EXTRA_QUEUES."""
    from celery import Celery

    from netjobs.celery_settings import celery_settings
    from netjobs.config import load_settings
    from netjobs.services.health import queue_keys

    name = f"topbacklog-{uuid.uuid4().hex[:6]}"
    producer = Celery("top-test-producer")
    producer.conf.update(celery_settings(load_settings({**netjobs_env, "NETJOBS_EXTRA_QUEUES": name})))
    for _ in range(BACKLOG):
        producer.send_task("netjobs.diag.ping", queue=name)
    yield name
    producer.close()
    redis_client.delete(*queue_keys(name))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def _row(stdout: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in stdout.splitlines():
        if "│" in line and _cells(line)[0] == first_cell:
            return _cells(line)
    raise AssertionError(f"no row {first_cell!r} in:\n{stdout}")


def _row_naming(stdout: str, text: str) -> list[str]:
    for line in stdout.splitlines():
        if "│" in line and text in _cells(line):
            return _cells(line)
    raise AssertionError(f"no row with {text!r} in:\n{stdout}")


def test_top_once_shows_the_backlog_the_worker_a_running_task_and_a_recent_failure(netjobs_env, worker, celery_app,
                                                                                   db, backlog_queue, redis_client):
    from netjobs.leases import LEASE_KEY
    from netjobs.services.runs import get_run

    marker = uuid.uuid4().hex[:8]
    failed = celery_app.send_task("netjobs.diag.fail", args=[f"top test failure {marker}\nsecond line"])
    with pytest.raises(Exception):
        failed.get(timeout=30)
    wait_until(lambda: (get_run(failed.id) or None) and get_run(failed.id).state == "FAILURE", 30,
               message="the failure in job_runs")
    sleeper = celery_app.send_task("netjobs.diag.sleep", kwargs={"seconds": 60})
    try:
        wait_until(lambda: (get_run(sleeper.id) or None) and get_run(sleeper.id).state == "STARTED", 15,
                   message="the sleep task to start")
        # "held" is what the worker's lease says, renewed every NETJOBS_WORKER_LEASE_SECONDS / 4.
        wait_until(lambda: json.loads(redis_client.get(LEASE_KEY.format(worker=worker.hostname)) or "{}").get("tags"),
                   30, message="the worker's lease to hold the sleep task")
        time.sleep(1)  # the backlog's oldest message is at least a second old
        env = {**WIDE, "NETJOBS_EXTRA_QUEUES": backlog_queue}

        shown = run_netjobs("top", "--once", env=env)
        assert shown.exit_code == 0, shown.stderr
        assert "Traceback" not in shown.stdout + shown.stderr
        queue, waiting, unacked, oldest, consumers = _row(shown.stdout, backlog_queue)
        assert (waiting, unacked, consumers) == (str(BACKLOG), "0", "0")
        assert re.fullmatch(r"\d+s", oldest) and int(oldest[:-1]) >= 1
        assert _row(shown.stdout, "default")[4] != "0"  # the session worker consumes it
        name, alive, held, queues = _row(shown.stdout, worker.hostname)
        assert alive == "yes" and int(held) >= 1 and "default" in queues
        task, task_id, running_on, running_for = _row(shown.stdout, "netjobs.diag.sleep")
        assert (task_id, running_on) == (sleeper.id, worker.hostname)
        assert re.fullmatch(r"\d+s", running_for)
        failure = _row_naming(shown.stdout, failed.id)
        assert failure[1:3] == ["netjobs.diag.fail", failed.id]
        assert f"top test failure {marker}" in failure[3] and "second line" not in shown.stdout
        assert "dead letters open: " in shown.stdout

        as_json = run_netjobs("top", "--once", "--json", env=env)
        assert as_json.exit_code == 0, as_json.stderr
        frame = as_json.json()
        assert frame["problems"] == []
        backlog = next(q for q in frame["queues"] if q["queue"] == backlog_queue)
        assert backlog["waiting"] == BACKLOG and backlog["unacked"] == 0 and backlog["consumers"] == 0
        assert 1 <= backlog["oldest_age_seconds"] < 60
        me = next(w for w in frame["workers"] if w["worker"] == worker.hostname)
        assert me["alive"] is True and me["held"] >= 1
        running = next(r for r in frame["running"] if r["task_id"] == sleeper.id)
        assert running["task"] == "netjobs.diag.sleep" and running["worker"] == worker.hostname
        assert running["worker_alive"] is True and 0 <= running["running_seconds"] < 30
        assert frame["recent_failures"][0]["task_id"] == failed.id
        assert frame["recent_failures"][0]["error"].endswith(f"top test failure {marker}")
        assert frame["dead_letters_open"] >= 1
        assert {"lock_held", "holder", "last_tick_age_seconds", "ticking"} <= set(frame["beat"])
    finally:
        celery_app.control.revoke(sleeper.id, terminate=True)
        wait_until(lambda: get_run(sleeper.id).state != "STARTED", 30, message="the sleep task to end")


def test_top_without_redis_names_the_problem_and_exits_1_without_a_traceback(netjobs_env, db):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    env = {**WIDE, "NETJOBS_BROKER_URL": closed, "NETJOBS_RESULT_BACKEND_URL": closed, "NETJOBS_REDBEAT_URL": closed}

    shown = run_netjobs("top", "--once", env=env)
    assert shown.exit_code == 1
    assert "Traceback" not in shown.stdout + shown.stderr
    assert "cannot reach Redis" in shown.stdout  # in the frame
    assert "queues: not available" in shown.stdout
    assert "recent failures" in shown.stdout  # PostgreSQL still answers: its part still shows
    assert len(shown.stderr_lines) == 1 and "cannot reach Redis" in shown.stderr_lines[0]

    as_json = run_netjobs("top", "--once", "--json", env=env)
    assert as_json.exit_code == 1
    frame = as_json.json()
    assert frame["queues"] is None and frame["workers"] is None and frame["beat"] is None
    assert any("cannot reach Redis" in problem for problem in frame["problems"])
    assert frame["recent_failures"] == []


def _interruptible() -> None:
    # The child gets Ctrl-C as a terminal would give it, whatever an earlier test in this pytest
    # worker left of SIGINT's disposition or mask (inherited across exec: top then never ended).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_until(fd: int, done, timeout: float) -> str:
    """What ``fd`` (a pty's master side) gives until ``done(text so far)``, EOF or ``timeout``."""
    text, deadline = "", time.monotonic() + timeout
    while not done(text) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        text += chunk.decode(errors="replace")
    return text


def test_top_refreshes_until_ctrl_c_and_then_exits_0(netjobs_env, worker, db):
    # On a terminal (a pty), as an operator runs it: rich's Live draws each frame there at once,
    # so the test waits for frames instead of a fixed time (on a pipe it writes only when it stops).
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    proc = subprocess.Popen([str(NETJOBS), "top", "--interval", "0.3"], env={**os.environ, **WIDE},
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    os.close(slave)
    try:
        frame = _read_until(master, lambda out: "queues" in out and worker.hostname in out, 120)
        assert "queues" in frame and worker.hostname in frame, frame[-3000:]
        later = _read_until(master, lambda out: out.count("queues") >= 2, 60)  # it refreshes
        assert later.count("queues") >= 2, later[-3000:]
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rest = _read_until(master, lambda out: False, 60)
        _, stderr = proc.communicate(timeout=60)  # generous: CI machines are loaded
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in frame + later + rest + stderr


def test_top_json_without_once_is_bad_input(netjobs_env):
    shown = run_netjobs("top", "--json")
    assert shown.exit_code == 2
    assert "--json needs --once" in shown.stderr


# --- the Grafana dashboard -------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])  # a collapsed row keeps its panels inside
    return panels


def _data_panels(dashboard: dict) -> list[dict]:
    return [p for p in _all_panels(dashboard) if p["type"] != "row"]


def _expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in _data_panels(dashboard) for t in p.get("targets") or []]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bnetjobs_[A-Za-z0-9_:]*", without_strings))


def _served_names(exposition: str) -> set[str]:
    """Every sample name the exporter can serve, from its TYPE lines (present even with no series yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(name)  # counters are typed with their _total name in the text format
    return names


def _promql(expr: str) -> str:
    """The expression as Prometheus would get it from Grafana: interval and template variables filled in."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?", ".*", expr)  # $queue, ${task}: "All" is .*


def test_the_dashboard_is_provisionable_json_with_titled_panels_a_datasource_and_unique_ids():
    dashboard = _dashboard()
    assert dashboard["uid"] == "netjobs-overview" and dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it; a fixed id clashes
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    ids = [p["id"] for p in _all_panels(dashboard)]
    assert len(ids) == len(set(ids)), sorted(ids)
    for panel in _all_panels(dashboard):
        assert panel.get("title"), panel
    data_panels = _data_panels(dashboard)
    assert len(data_panels) >= 30
    for panel in data_panels:  # rows hold no query, so they need no data source
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", panel["title"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Queues", "Tasks", "Workers", "Beat and schedules", "Dead letters and history",
                    "Config backups", "Compliance and reachability", "Datastores and exporter", "Hosts"]

    provider = yaml.safe_load(PROVIDER.read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")


def test_every_netjobs_metric_of_the_dashboard_is_served_by_the_exporter(netjobs_env, db):
    from prometheus_client import CollectorRegistry, generate_latest

    from netjobs.config import load_settings
    from netjobs.exporter.collector import NetjobsCollector

    registry = CollectorRegistry()
    registry.register(NetjobsCollector(dataclasses.replace(load_settings(netjobs_env), exporter_cache_seconds=0)))
    exposition = generate_latest(registry).decode()
    assert 'netjobs_exporter_source_up{source="redis"} 1.0' in exposition
    assert 'netjobs_exporter_source_up{source="database"} 1.0' in exposition
    served = _served_names(exposition)

    used = set().union(*(_metric_names(e) for e in _expressions(_dashboard())))
    assert not used - served, f"not served by netjobs-exporter: {sorted(used - served)}"
    # The panels the NOC needs are there (each of these names is used somewhere).
    for needed in ("netjobs_queue_messages_waiting", "netjobs_queue_oldest_message_age_seconds", "netjobs_tasks_total",
                   "netjobs_task_runtime_seconds_bucket", "netjobs_task_queue_wait_seconds_bucket",
                   "netjobs_worker_up", "netjobs_tasks_held_by_lost_workers", "netjobs_beat_lock_held",
                   "netjobs_beat_last_tick_age_seconds", "netjobs_schedule_overdue_seconds",
                   "netjobs_dead_letters_open", "netjobs_device_last_backup_age_seconds",
                   "netjobs_device_backup_failing", "netjobs_device_without_backup_seconds",
                   "netjobs_config_changes_last_24h", "netjobs_compliance_failures", "netjobs_site_devices"):
        assert needed in used, needed


def test_every_dashboard_expression_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus): PromQL syntax not checked")
    expressions = _expressions(_dashboard())
    # label_values() is Grafana's, not PromQL: check the metric it names instead.
    expressions = [re.sub(r"^label_values\((\w+),\s*\w+\)$", r"\1", e) for e in expressions]
    rules = {"groups": [{"name": "netjobs-dashboard", "rules": [
        {"record": f"netjobs_dashboard:expression_{index}", "expr": _promql(expr)}
        for index, expr in enumerate(expressions)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout
