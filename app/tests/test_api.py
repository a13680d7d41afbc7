"""The HTTP API in-process (FastAPI's TestClient over httpx) against the session's real Redis,
PostgreSQL and Celery worker: authentication, roles, jobs, runs, dead letters, schedules, devices,
health and the offline docs."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import wait_until

API = "/api/v1"
relaxed = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def api(netjobs_env, redis_client):
    from fastapi.testclient import TestClient

    from netjobs.api import auth
    from netjobs.api.app import create_app

    auth.reset_client()
    for key in redis_client.scan_iter(auth.FAILURES_KEY + "*"):
        redis_client.delete(key)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    for key in redis_client.scan_iter(auth.FAILURES_KEY + "*"):
        redis_client.delete(key)


def make_token(role: str, user: str | None = None) -> dict[str, str]:
    """Authorization headers with a new token of ``role`` (its user: the role's name unless given)."""
    from netjobs.services.tokens import create_token

    token, _ = create_token(f"{role}-{uuid.uuid4().hex[:8]}", user or role, role)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(db):
    return {role: make_token(role) for role in ("viewer", "operator", "admin")}


def assert_422(response, field: str, *fragments: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    body = response.json()
    assert any(e["field"] == field for e in body["errors"]), body
    for fragment in fragments:
        assert fragment in body["detail"], (fragment, body)


def wait_done(api, headers, task_id: str, timeout: float = 30) -> dict:
    response = api.get(f"{API}/jobs/{task_id}/wait", params={"timeout": timeout}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["done"], body
    return body


# --- authentication and roles ----------------------------------------------------------------


def test_only_liveness_goes_without_a_token_and_bad_revoked_or_missing_tokens_get_401(api, db):
    from netjobs.services.tokens import revoke_token

    assert api.get(f"{API}/health/live").json() == {"status": "live"}
    missing = api.get(f"{API}/runs")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer TOKEN" in missing.json()["detail"]
    for header in ("Bearer nj_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer", "nj_token-without-scheme"):
        refused = api.get(f"{API}/runs", headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert "invalid token" in refused.json()["detail"]
    for path in ("/health/ready", "/jobs/tasks", "/workers", "/queues", "/schedules", "/devices", "/deadletters",
                 "/configs/changed", "/tokens", "/audit"):
        assert api.get(API + path).status_code == 401, path

    from netjobs.services.tokens import create_token

    token, _ = create_token("short-lived", "dave", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get(f"{API}/runs", headers=headers).status_code == 200
    revoke_token("short-lived")
    revoked = api.get(f"{API}/runs", headers=headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


def test_failed_authentication_is_limited_per_address_in_redis(api, db, monkeypatch, redis_client):
    from fastapi.testclient import TestClient

    from netjobs.api import auth
    from netjobs.api.app import create_app
    from netjobs.config import reset_settings

    monkeypatch.setenv("NETJOBS_API_AUTH_FAILURES", "3")
    monkeypatch.setenv("NETJOBS_API_AUTH_WINDOW_SECONDS", "120")
    reset_settings()
    try:
        good = make_token("viewer")
        for _ in range(3):
            assert api.get(f"{API}/runs", headers={"Authorization": "Bearer nj_guess"}).status_code == 401
        blocked = api.get(f"{API}/runs", headers=good)
        assert blocked.status_code == 429, blocked.text
        assert "too many failed authentications from testclient" in blocked.json()["detail"]
        assert 0 < int(blocked.headers["retry-after"]) <= 120
        # The count is in Redis, where a second API host finds it.
        assert redis_client.get(auth.FAILURES_KEY + "testclient") == "3"
        assert 0 < redis_client.ttl(auth.FAILURES_KEY + "testclient") <= 120
        with TestClient(create_app(), client=("192.0.2.7", 40000)) as other:
            assert other.get(f"{API}/runs", headers=good).status_code == 200
        redis_client.delete(auth.FAILURES_KEY + "testclient")
        assert api.get(f"{API}/runs", headers=good).status_code == 200
    finally:
        monkeypatch.undo()
        reset_settings()


def test_each_role_may_do_what_it_should_and_nothing_more(api, tokens):
    viewer, operator, admin = tokens["viewer"], tokens["operator"], tokens["admin"]
    device = {"name": "edge-1", "address": "192.0.2.10", "platform": "cisco_ios"}
    job = {"task": "netjobs.diag.ping", "countdown": 600}

    for headers in (viewer, operator, admin):
        assert api.get(f"{API}/runs", headers=headers).status_code == 200
        assert api.get(f"{API}/devices", headers=headers).status_code == 200
    denied = api.post(f"{API}/jobs", json=job, headers=viewer)
    assert denied.status_code == 403
    assert denied.json()["detail"] == ("forbidden: this needs the operator role; the token of viewer has the "
                                       "viewer role")
    assert api.post(f"{API}/schedules", json={"name": "x", "task": "ping", "every": "1h"},
                    headers=viewer).status_code == 403
    assert api.post(f"{API}/deadletters/1/requeue", headers=viewer).status_code == 403
    assert api.post(f"{API}/devices", json=device, headers=operator).status_code == 403
    assert api.post(f"{API}/devices/import", json={"content": "", "format": "csv"}, headers=operator).status_code == 403
    for headers in (viewer, operator):
        assert api.get(f"{API}/tokens", headers=headers).status_code == 403
        assert api.get(f"{API}/audit", headers=headers).status_code == 403

    submitted = api.post(f"{API}/jobs", json=job, headers=operator)
    assert submitted.status_code == 202, submitted.text
    assert api.post(f"{API}/jobs/{submitted.json()['task_id']}/cancel", headers=operator).status_code == 200
    assert api.post(f"{API}/devices", json=device, headers=admin).status_code == 201
    created = api.post(f"{API}/tokens", json={"name": "bot", "user": "chatops", "role": "operator"}, headers=admin)
    assert created.status_code == 201 and created.json()["token"].startswith("nj_")
    listed = api.get(f"{API}/tokens", headers=admin).json()
    assert "bot" in [t["name"] for t in listed] and created.json()["token"] not in str(listed)
    assert api.get(f"{API}/runs", headers={"Authorization": f"Bearer {created.json()['token']}"}).status_code == 200
    assert api.delete(f"{API}/tokens/bot", headers=admin).json()["revoked_at"] is not None
    audit = api.get(f"{API}/audit", params={"by": "api:admin"}, headers=admin).json()
    assert [(e["action"], e["target"]) for e in audit] == [("token.revoke", "bot"), ("token.create", "bot"),
                                                           ("device.add", "edge-1")]


# --- jobs --------------------------------------------------------------------------------------


def test_a_job_submitted_over_http_runs_on_a_real_worker_with_progress_result_and_its_submitter(api, worker, db):
    alice = make_token("operator", "alice")
    tasks = api.get(f"{API}/jobs/tasks", headers=alice).json()
    sleep = next(t for t in tasks if t["name"] == "netjobs.diag.sleep")
    assert sleep["queue"] == "default" and sleep["kwargs"] == [{"name": "seconds", "default": 1.0}]

    submitted = api.post(f"{API}/jobs", json={"task": "sleep", "kwargs": {"seconds": 3}, "priority": "high"},
                         headers=alice)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert (job["task"], job["queue"], job["priority"], job["submitted_by"]) == (
        "netjobs.diag.sleep", "default", 3, "api:alice")
    task_id = job["task_id"]
    progress = wait_until(lambda: api.get(f"{API}/jobs/{task_id}", headers=alice).json().get("progress"), 20,
                          message="PROGRESS meta")
    assert progress["total"] == 3 and 1 <= progress["current"] <= 3
    early = api.get(f"{API}/jobs/{task_id}/result", headers=alice)
    assert early.status_code in (409, 200)

    done = wait_done(api, alice, task_id)
    assert done["state"] == "SUCCESS" and done["timed_out"] is False and done["submitted_by"] == "api:alice"
    result = api.get(f"{API}/jobs/{task_id}/result", headers=alice).json()
    assert result["state"] == "SUCCESS" and result["result"]["slept"] >= 2.9
    run = wait_until(lambda: (r := api.get(f"{API}/runs/{task_id}", headers=alice).json())["state"] == "SUCCESS"
                     and r, 10, message="job history")  # the worker writes history in batches
    assert run["submitted_by"] == "api:alice"

    failed = api.post(f"{API}/jobs", json={"task": "netjobs.diag.fail", "kwargs": {"message": "bad day"}},
                      headers=alice).json()
    outcome = wait_done(api, alice, failed["task_id"])
    assert outcome["state"] == "FAILURE" and "bad day" in outcome["error"]
    assert "bad day" in api.get(f"{API}/jobs/{failed['task_id']}/result", headers=alice).json()["error"]

    assert api.get(f"{API}/jobs/{uuid.uuid4()}", headers=alice).status_code == 404
    slow = api.post(f"{API}/jobs", json={"task": "netjobs.diag.sleep", "kwargs": {"seconds": 5}},
                    headers=alice).json()
    waited = api.get(f"{API}/jobs/{slow['task_id']}/wait", params={"timeout": 0.5}, headers=alice).json()
    assert waited["done"] is False and waited["timed_out"] is True
    assert api.get(f"{API}/jobs/{slow['task_id']}/result", headers=alice).status_code == 409


def test_bad_input_is_422_naming_the_field_never_500(api, tokens):
    op = tokens["operator"]

    def submit(body):
        return api.post(f"{API}/jobs", json=body, headers=op)

    assert_422(submit({"task": "netjobs.diag.pingg"}), "body.task", "unknown task", "did you mean netjobs.diag.ping")
    assert_422(submit({"task": "ping", "kwargs": {"bogus": 1}}), "body.kwargs", "unexpected keyword argument")
    assert_422(submit({"task": "sleep", "kwargs": {"seconds": 1}, "queue": "nope"}), "body.queue", "unknown queue")
    assert_422(submit({"task": "ping", "countdown": 10**7}), "body.countdown")
    assert_422(submit({"task": "ping", "countdown": -1}), "body.countdown")
    assert_422(submit({"task": "ping", "priority": "asap"}), "body.priority", "invalid priority")
    assert_422(submit({"task": "ping", "priority": 12}), "body.priority")
    assert_422(submit({}), "body.task")
    assert_422(submit({"task": "ping", "kwargs": [1, 2]}), "body.kwargs")
    assert_422(submit({"task": "ping", "surprise": True}), "body.surprise")
    not_json = api.post(f"{API}/jobs", content=b"{not json", headers={**op, "Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert_422(api.get(f"{API}/jobs/bad id!", headers=op), "path.task_id")
    assert_422(api.get(f"{API}/jobs/{uuid.uuid4()}/wait", params={"timeout": 120}, headers=op), "query.timeout")
    assert_422(api.get(f"{API}/runs", params={"state": "DONE"}, headers=op), "query.state", "unknown state")
    assert_422(api.get(f"{API}/runs", params={"since": "yesterday"}, headers=op), "query.since", "invalid --since")
    assert_422(api.get(f"{API}/runs", params={"limit": 0}, headers=op), "query.limit")
    assert_422(api.get(f"{API}/runs", params={"offset": 9990, "limit": 100}, headers=op), "query.offset")
    assert_422(api.get(f"{API}/deadletters/0", headers=op), "path.letter_id")
    assert_422(api.post(f"{API}/devices", json={"name": "x", "address": "999.1.1.1", "platform": "cisco_ios"},
                        headers=tokens["admin"]), "body", "neither an IP address nor a DNS hostname")
    assert_422(api.post(f"{API}/schedules", json={"name": "s", "task": "ping", "cron": "61 * * * *"}, headers=op),
               "body.cron", "minute")
    huge = api.post(f"{API}/jobs", content=b"x" * (13 * 1024 * 1024), headers={**op, "Content-Type": "application/json"})
    assert huge.status_code == 413


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                      max_size=3), max_leaves=8)


@relaxed
@given(body=st.dictionaries(st.sampled_from(["task", "kwargs", "queue", "countdown", "priority", "other"]),
                            json_values, max_size=5))
def test_any_job_body_gets_an_answer_not_a_500(api, tokens, body):
    response = api.post(f"{API}/jobs", json=body, headers=tokens["operator"])
    assert response.status_code in (202, 422), (body, response.status_code, response.text)
    if response.status_code == 202:  # a valid job by chance: do not let it run
        api.post(f"{API}/jobs/{response.json()['task_id']}/cancel", headers=tokens["operator"])


@relaxed
@given(body=st.dictionaries(st.sampled_from(["name", "address", "platform", "port", "site", "tags", "enabled"]),
                            json_values, max_size=7))
def test_any_device_body_gets_an_answer_not_a_500(api, tokens, body):
    response = api.post(f"{API}/devices", json=body, headers=tokens["admin"])
    assert response.status_code in (201, 422), (body, response.status_code, response.text)


def test_cancel_says_what_it_could_do(api, worker, db):
    op = make_token("operator")
    later = api.post(f"{API}/jobs", json={"task": "ping", "countdown": 30}, headers=op).json()
    cancelled = api.post(f"{API}/jobs/{later['task_id']}/cancel", headers=op)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["outcome"] == "revoked_before_start" and body["cancelled"] is True
    assert worker.hostname in body["acknowledged_by"]
    assert api.get(f"{API}/runs", params={"state": "REVOKED"}, headers=op).json()["items"][0]["task_id"] == later[
        "task_id"]
    again = api.post(f"{API}/jobs/{later['task_id']}/cancel", headers=op)
    assert again.status_code == 409 and again.json()["outcome"] == "already_finished"

    running = api.post(f"{API}/jobs", json={"task": "sleep", "kwargs": {"seconds": 30}}, headers=op).json()
    task_id = running["task_id"]
    wait_until(lambda: api.get(f"{API}/jobs/{task_id}", headers=op).json()["state"] in ("STARTED", "PROGRESS"), 30,
               message="job running")
    kept = api.post(f"{API}/jobs/{task_id}/cancel", json={"terminate": False}, headers=op)
    assert kept.status_code == 409 and kept.json()["outcome"] == "still_running", kept.text
    assert "unless you terminate it" in kept.json()["detail"]
    stopped = api.post(f"{API}/jobs/{task_id}/cancel", json={"terminate": True}, headers=op)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["outcome"] == "terminated" and stopped.json()["cancelled"] is True
    assert wait_done(api, op, task_id)["state"] == "REVOKED"

    unknown = api.post(f"{API}/jobs/{uuid.uuid4()}/cancel", headers=op).json()
    assert unknown["outcome"] == "revoked_unknown"


# --- history, dead letters, schedules, workers ---------------------------------------------------


def test_runs_are_paginated_and_filtered_by_task_state_and_submitter(api, worker, db):
    from netjobs.actor import acting_as
    from netjobs.celery_app import app
    from netjobs.services.jobs import submit_job

    alice, bob = make_token("operator", "alice"), make_token("viewer", "bob")
    ids = [api.post(f"{API}/jobs", json={"task": "ping"}, headers=alice).json()["task_id"] for _ in range(5)]
    with acting_as("cli:carol"):
        cli_id = submit_job(app, "netjobs.diag.ping", {}).task_id
    for task_id in ids + [cli_id]:
        wait_done(api, alice, task_id)
    # Pages are stable once history stops changing (the worker writes it in batches).
    wait_until(lambda: len(api.get(f"{API}/runs", params={"state": "SUCCESS"}, headers=bob).json()["items"]) == 6,
               10, message="job history")

    first = api.get(f"{API}/runs", params={"task": "ping", "limit": 2}, headers=bob).json()
    assert len(first["items"]) == 2 and first["next_offset"] == 2 and first["offset"] == 0
    second = api.get(f"{API}/runs", params={"task": "ping", "limit": 2, "offset": 2}, headers=bob).json()
    third = api.get(f"{API}/runs", params={"task": "ping", "limit": 2, "offset": 4}, headers=bob).json()
    assert third["next_offset"] is None
    seen = [r["task_id"] for page in (first, second, third) for r in page["items"]]
    assert sorted(seen) == sorted(ids + [cli_id])

    by_alice = api.get(f"{API}/runs", params={"by": "alice", "limit": 50}, headers=bob).json()["items"]
    assert sorted(r["task_id"] for r in by_alice) == sorted(ids)
    assert {r["submitted_by"] for r in by_alice} == {"api:alice"}
    assert [r["task_id"] for r in api.get(f"{API}/runs", params={"by": "cli:carol"}, headers=bob).json()["items"]] == [
        cli_id]
    assert api.get(f"{API}/runs", params={"by": "api:carol"}, headers=bob).json()["items"] == []
    assert len(api.get(f"{API}/runs", params={"state": "success", "since": "1h", "task": "netjobs.diag.*"},
                       headers=bob).json()["items"]) == 6
    assert api.get(f"{API}/runs/{uuid.uuid4()}", headers=bob).status_code == 404


def test_dead_letters_are_listed_shown_requeued_once_and_discarded(api, worker, db):
    op, viewer = make_token("operator", "olga"), make_token("viewer")
    failed = api.post(f"{API}/jobs", json={"task": "netjobs.diag.fail", "kwargs": {"message": "boom 7"}},
                      headers=op).json()
    wait_done(api, op, failed["task_id"])
    letters = wait_until(lambda: api.get(f"{API}/deadletters", headers=viewer).json()["items"], 10,
                         message="dead letter")
    assert [(d["task_id"], d["kwargs"]) for d in letters] == [(failed["task_id"], {"message": "boom 7"})]
    letter_id = letters[0]["id"]
    shown = api.get(f"{API}/deadletters/{letter_id}", headers=viewer).json()
    assert "boom 7" in shown["error"] and shown["traceback"]

    requeued = api.post(f"{API}/deadletters/{letter_id}/requeue", headers=op)
    assert requeued.status_code == 200, requeued.text
    new_id = requeued.json()["task_id"]
    again = api.post(f"{API}/deadletters/{letter_id}/requeue", headers=op)
    assert again.status_code == 409 and "already requeued" in again.json()["detail"]
    wait_done(api, op, new_id)
    second = wait_until(lambda: [d for d in api.get(f"{API}/deadletters", headers=viewer).json()["items"]
                                 if d["task_id"] == new_id], 10, message="second dead letter")
    assert api.get(f"{API}/deadletters", params={"all": True}, headers=viewer).json()["items"][-1]["requeued_task_id"] \
        == new_id
    assert api.delete(f"{API}/deadletters/{second[0]['id']}", headers=op).json()["discarded"] is True
    assert api.delete(f"{API}/deadletters/{second[0]['id']}", headers=op).status_code == 404
    assert api.get(f"{API}/deadletters/{second[0]['id']}", headers=viewer).status_code == 404
    audit = api.get(f"{API}/audit", params={"by": "olga"}, headers=make_token("admin")).json()
    assert [e["action"] for e in audit] == ["dead_letter.discard", "dead_letter.requeue"]


def test_schedules_are_added_disabled_enabled_and_removed(api, db):
    op, viewer = make_token("operator", "sam"), make_token("viewer")
    name = f"api-{uuid.uuid4().hex[:8]}"
    added = api.post(f"{API}/schedules", json={"name": name, "task": "ping", "every": "1h30m", "queue": "default"},
                     headers=op)
    assert added.status_code == 201, added.text
    assert (added.json()["task"], added.json()["schedule"], added.json()["enabled"]) == (
        "netjobs.diag.ping", "every 1h30m", True)
    assert name in [s["name"] for s in api.get(f"{API}/schedules", headers=viewer).json()]
    duplicate = api.post(f"{API}/schedules", json={"name": name, "task": "ping", "every": "1h"}, headers=op)
    assert_422(duplicate, "body.name", "already exists")
    assert_422(api.post(f"{API}/schedules", json={"name": "x", "task": "ping"}, headers=op), "body.cron",
               "exactly one of")
    assert_422(api.post(f"{API}/schedules", json={"name": "bad name", "task": "ping", "every": "1h"}, headers=op),
               "body.name")
    assert api.post(f"{API}/schedules/{name}/disable", headers=op).json()["enabled"] is False
    assert api.get(f"{API}/schedules/{name}", headers=viewer).json()["enabled"] is False
    assert api.post(f"{API}/schedules/{name}/enable", headers=op).json()["enabled"] is True
    assert api.delete(f"{API}/schedules/{name}", headers=op).json()["removed"] is True
    assert api.delete(f"{API}/schedules/{name}", headers=op).status_code == 404
    assert api.get(f"{API}/schedules/{name}", headers=viewer).status_code == 404
    audit = api.get(f"{API}/audit", params={"by": "api:sam"}, headers=make_token("admin")).json()
    assert [e["action"] for e in audit] == ["schedule.remove", "schedule.enable", "schedule.disable", "schedule.add"]


def test_workers_and_queues(api, worker, db):
    viewer = make_token("viewer")
    workers = api.get(f"{API}/workers", params={"timeout": 1}, headers=viewer).json()
    assert worker.hostname in [w["name"] for w in workers]
    queues = {q["queue"]: q for q in api.get(f"{API}/queues", params={"timeout": 1}, headers=viewer).json()}
    assert set(queues) >= {"default", "backup", "network", "heavy"}
    assert worker.hostname in queues["default"]["consumers"]


# --- devices and configs ---------------------------------------------------------------------------


def test_devices_are_managed_by_admins_and_backed_up_now_by_operators(api, worker, db):
    admin, op = make_token("admin", "ada"), make_token("operator", "otto")
    added = api.post(f"{API}/devices", json={"name": "core-sw1", "address": "192.0.2.1", "platform": "cisco_ios",
                                             "site": "lab", "tags": ["core"]}, headers=admin)
    assert added.status_code == 201 and added.json()["tags"] == ["core"]
    assert api.post(f"{API}/devices", json={"name": "core-sw1", "address": "192.0.2.1", "platform": "cisco_ios"},
                    headers=admin).status_code == 422
    csv = "name,address,platform\ncore-sw2,192.0.2.2,arista_eos\nbad,not an address,cisco_ios\n"
    imported = api.post(f"{API}/devices/import", json={"content": csv, "format": "csv", "source": "lab.csv"},
                        headers=admin).json()
    assert (imported["created"], imported["invalid"]) == (1, 1) and imported["errors"][0]["line"] == 3
    names = [d["name"] for d in api.get(f"{API}/devices", params={"site": "lab"}, headers=op).json()]
    assert names == ["core-sw1"]
    assert [d["name"] for d in api.get(f"{API}/devices", headers=op).json()] == ["core-sw1", "core-sw2"]
    assert api.get(f"{API}/devices/core-sw2", headers=op).json()["platform"] == "arista_eos"

    assert api.post(f"{API}/devices/nope/backup", headers=op).status_code == 404
    now = api.post(f"{API}/devices/core-sw1/backup", json={"now": True}, headers=op)
    assert now.status_code == 202, now.text
    plain = api.post(f"{API}/devices/core-sw1/backup", headers=op).json()
    assert (now.json()["task"], now.json()["queue"], now.json()["priority"], plain["priority"]) == (
        "netjobs.backup.device", "backup", 0, 6)
    for job in (now.json(), plain):  # no device answers at 192.0.2.1: do not leave them retrying
        api.post(f"{API}/jobs/{job['task_id']}/cancel", json={"terminate": True}, headers=op)
    assert api.get(f"{API}/runs", params={"by": "otto", "task": "netjobs.backup.device"},
                   headers=op).json()["items"][0]["submitted_by"] == "api:otto"

    assert api.delete(f"{API}/devices/core-sw2", headers=admin).json()["removed"] is True
    assert api.get(f"{API}/devices/core-sw2", headers=op).status_code == 404
    assert api.get(f"{API}/configs/core-sw1/log", headers=op).json() == []
    assert api.get(f"{API}/configs/nope/log", headers=op).status_code == 404
    assert api.get(f"{API}/configs/changed", params={"since": "1d"}, headers=op).json() == []
    assert_422(api.get(f"{API}/configs/changed", params={"since": "soon"}, headers=op), "query.since")


def test_config_history_is_read_over_http(api, db):
    from netjobs.services.archive import store_snapshot
    from netjobs.services.devices import add_device, get_device  # noqa: F401
    from netjobs.db.engine import session_scope
    from netjobs.db.models import Device
    from sqlalchemy import select
    import hashlib

    add_device("r1", "192.0.2.9", "cisco_ios")
    with session_scope() as session:
        device_id = session.scalars(select(Device.id).where(Device.name == "r1")).one()
    for text in ("hostname r1\n", "hostname r1\ninterface Gi0/1\n"):
        store_snapshot(device_id, text, hashlib.sha256(text.encode()).hexdigest(), None)
    viewer = make_token("viewer")
    log = api.get(f"{API}/configs/r1/log", headers=viewer).json()
    assert len(log) == 2
    shown = api.get(f"{API}/configs/r1/show", headers=viewer)
    assert shown.text == "hostname r1\ninterface Gi0/1\n" and shown.headers["content-type"].startswith("text/plain")
    diff = api.get(f"{API}/configs/r1/diff", headers=viewer).json()
    assert "+interface Gi0/1" in diff["diff"]
    assert api.get(f"{API}/configs/r1/show", params={"at": "zzz"}, headers=viewer).status_code in (404, 422)


# --- health and docs ---------------------------------------------------------------------------


def test_ready_runs_the_doctor_checks_and_lists_the_failing_ones(api, worker, db, monkeypatch):
    from netjobs.config import reset_settings

    viewer = make_token("viewer")
    monkeypatch.setenv("NETJOBS_EXTRA_QUEUES", "nobody-consumes-this")
    reset_settings()
    try:
        response = api.get(f"{API}/health/ready", params={"timeout": 1}, headers=viewer)
    finally:
        monkeypatch.undo()
        reset_settings()
    assert response.status_code == 503, response.text
    body = response.json()
    failing = {c["name"]: c for c in body["failing"]}
    assert body["ready"] is False and "queue nobody-consumes-this consumed" in failing
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["database reachable"]["ok"] and checks["broker reachable"]["ok"]
    assert checks["queue default consumed"]["ok"]
    assert all(c["severity"] == "error" for c in body["failing"])


def test_docs_pages_work_offline(api):
    for page, assets in (("docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("redoc", ("redoc.standalone.js",))):
        html = api.get(f"{API}/{page}")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not re.search(r"(https?:)?//[a-z0-9]", html.text, re.I), html.text  # nothing from another host
        for asset in assets:
            assert f"{API}/docs/static/{asset}" in html.text
            served = api.get(f"{API}/docs/static/{asset}")
            assert served.status_code == 200 and len(served.content) > 50_000
        favicon = re.search(r'href="([^"]+favicon[^"]*)"', html.text).group(1)
        assert api.get(favicon).status_code == 200
    schema = api.get(f"{API}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert f"{API}/jobs" in schema["paths"]
