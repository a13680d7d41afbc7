"""`netjobs runs --task`: which names a full name, a short one or a pattern matches (list_runs)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

NAMES = (
    "netjobs.diag.ping", "netjobs.diag.xping", "other.diag.ping", "ping", "netjobs.diag.ping.slow",
    "netjobs.backup.device", "netjobs.backup.all", "netjobs.backupXdevice", "netjobs.a_b", "netjobs.aXb",
    "netjobs.a%b", "netjobs.a\\b", None,
)
STATES = ("SUCCESS", "FAILURE", "RETRY", "REVOKED")


@pytest.fixture
def history(db):
    """Runs of every name in NAMES, several per name and state; some at the same instant (ties by id)."""
    from netjobs.db.models import JobRun

    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows, n = [], 0
    for round_ in range(3):
        for i, name in enumerate(NAMES):
            for k, state in enumerate(STATES):
                n += 1
                # every third row shares its instant with the row before it
                at = base + timedelta(seconds=(n - (n % 3 == 0)) * 10)
                rows.append({"task_id": f"t{n:04d}", "task_name": name, "state": state, "state_at": at,
                             "submitted_by": ("cli:alice", "api:bob")[(i + k + round_) % 2]})
    with db.begin() as conn:
        conn.execute(insert(JobRun), rows)
    return rows


def old_rule(task, state=None, since=None, by=None, limit=50):
    """The query list_runs issued before the names were resolved first: the rule inside one WHERE."""
    from netjobs.db.engine import session_scope
    from netjobs.db.models import JobRun
    from netjobs.services.audit import actor_filter
    from netjobs.services.runs import task_name_matches

    query = select(JobRun.task_id).order_by(JobRun.state_at.desc(), JobRun.id.desc()).limit(limit)
    query = query.where(task_name_matches(JobRun.task_name, task))
    if state:
        query = query.where(JobRun.state == state)
    if since:
        query = query.where(JobRun.state_at >= since)
    if by is not None:
        query = query.where(actor_filter(JobRun.submitted_by, by))
    with session_scope() as session:
        return list(session.scalars(query))


def ids(task, **options):
    from netjobs.services.runs import list_runs

    return [r.task_id for r in list_runs(task=task, **options)]


def names(task, **options):
    from netjobs.services.runs import list_runs

    return {r.task_name for r in list_runs(task=task, limit=10_000, **options)}


def test_a_name_matches_itself_or_as_a_dotted_suffix(history):
    assert names("ping") == {"ping", "netjobs.diag.ping", "other.diag.ping"}
    assert names("diag.ping") == {"netjobs.diag.ping", "other.diag.ping"}
    assert names("netjobs.diag.ping") == {"netjobs.diag.ping"}
    assert names("slow") == {"netjobs.diag.ping.slow"}
    assert names("iag.ping") == set()  # a suffix starts after a dot
    assert names("netjobs.diag") == set()  # not a prefix
    assert names("nosuch") == set()
    # LIKE's wildcards and its escape character are plain characters in a name
    assert names("a_b") == {"netjobs.a_b"}
    assert names("a%b") == {"netjobs.a%b"}
    assert names("a\\b") == {"netjobs.a\\b"}


def test_a_pattern_with_a_star_matches_whole_names(history):
    assert names("netjobs.backup.*") == {"netjobs.backup.device", "netjobs.backup.all"}
    assert names("*.ping") == {"netjobs.diag.ping", "other.diag.ping"}
    assert names("*ping*") == {"netjobs.diag.ping", "netjobs.diag.xping", "other.diag.ping", "ping",
                               "netjobs.diag.ping.slow"}
    assert names("netjobs.a_*") == {"netjobs.a_b"}
    assert names("netjobs.a%*") == {"netjobs.a%b"}
    assert names("netjobs.a\\*") == {"netjobs.a\\b"}
    assert names("backup.*") == set()  # anchored at the start
    # every name: only the runs without a name are left out
    assert names("*") == {n for n in NAMES if n is not None}


@pytest.mark.parametrize("task", ["ping", "diag.ping", "netjobs.diag.ping", "a_b", "netjobs.backup.*", "*",
                                  "*ping*", "netjobs.*", "nosuch", "netjobs.a\\*"])
@pytest.mark.parametrize("options", [{}, {"state": "FAILURE"}, {"state": "SUCCESS", "limit": 5}, {"limit": 1},
                                     {"by": "alice", "limit": 7}, {"since": "since", "state": "RETRY"}])
def test_results_and_order_are_those_of_the_single_query_rule(history, task, options):
    """Same rows in the same order (newest first, ties by id) as the rule applied inside one query."""
    options = dict(options)
    if options.get("since") == "since":
        options["since"] = history[len(history) // 2]["state_at"]
    expected = old_rule(task, **options)
    assert ids(task, **options) == expected
    if task not in ("nosuch",):
        assert expected, "the case should select some rows"


def test_invalid_options_are_refused_even_when_no_name_matches(history):
    from netjobs.errors import ValidationError
    from netjobs.services.runs import list_runs

    with pytest.raises(ValidationError):
        list_runs(task="nosuch", by=" ")
    with pytest.raises(ValidationError):
        list_runs(task="nosuch", state="DONE")
    with pytest.raises(ValidationError):
        list_runs(task="nosuch", limit=0)


def test_migration_0006_leaves_its_partial_indexes_valid(netjobs_env):
    """Built CONCURRENTLY outside a transaction: both there, valid, with their predicates."""
    from sqlalchemy import text

    from netjobs.db.engine import get_engine

    with get_engine().connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname IN ('ix_job_runs_unsuccessful_task_state_at', 'ix_dead_letters_waiting_failed_at')")).all())
        definitions = dict(conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
            "('ix_job_runs_unsuccessful_task_state_at', 'ix_dead_letters_waiting_failed_at')")).all())
    assert rows == {"ix_job_runs_unsuccessful_task_state_at": True, "ix_dead_letters_waiting_failed_at": True}
    assert "(task_name, state, state_at) WHERE ((state)::text <> 'SUCCESS'::text)" in \
        definitions["ix_job_runs_unsuccessful_task_state_at"]
    assert "(failed_at) WHERE (requeued_at IS NULL)" in definitions["ix_dead_letters_waiting_failed_at"]
