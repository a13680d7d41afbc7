"""Load for the upgrade scenario, run on a netjobs host with netjobs.env loaded (netjobs-exec).

    load.py submit COUNT SECONDS IDS_FILE   queue COUNT netjobs.diag.sleep tasks, write their ids
    load.py count IDS_FILE TIMEOUT          wait until none is pending, print the counts as JSON

`count` reads each task's result from the result backend and its rows from job_runs, so a task
lost by a restart shows up as pending (never finished) or missing from job_runs.
"""

import json
import os
import sys
import time

from netjobs.celery_app import app


def submit(count, seconds, ids_file):
    ids = [app.send_task("netjobs.diag.sleep", kwargs={"seconds": seconds}).id for _ in range(count)]
    with open(ids_file, "w") as out:
        json.dump(ids, out)
    print(json.dumps({"submitted": len(ids)}))


def job_runs(ids):
    import sqlalchemy

    engine = sqlalchemy.create_engine(os.environ["NETJOBS_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT state, count(*) FROM job_runs WHERE task_id = ANY(:ids) GROUP BY state"),
            {"ids": ids},
        ).all()
    return {state: n for state, n in rows}


def count(ids_file, timeout):
    with open(ids_file) as src:
        ids = json.load(src)
    deadline = time.monotonic() + timeout
    while True:
        states = [app.AsyncResult(task_id).state for task_id in ids]
        pending = sum(state not in ("SUCCESS", "FAILURE", "REVOKED") for state in states)
        runs = job_runs(ids)
        finished_runs = sum(n for state, n in runs.items() if state in ("SUCCESS", "FAILURE", "REVOKED"))
        if (not pending and finished_runs >= len(ids)) or time.monotonic() > deadline:
            break
        time.sleep(2)
    unfinished = [task_id for task_id, state in zip(ids, states) if state not in ("SUCCESS", "FAILURE", "REVOKED")]
    print(json.dumps({
        "submitted": len(ids),
        "success": states.count("SUCCESS"),
        "failure": states.count("FAILURE"),
        "pending": pending,
        "job_runs": runs,
        # Where the messages of unfinished tasks are, to tell a lost message from a slow one.
        "unfinished": {task_id: where(task_id) for task_id in unfinished[:10]},
    }, sort_keys=True))


def where(task_id):
    """The Redis lists and the unacked entry holding ``task_id``'s message, and the leases naming it."""
    from netjobs.leases import LEASE_KEY, LEASES_KEY, UNACKED_INDEX_KEY, UNACKED_KEY

    found = []
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        for key in client.scan_iter(match="*", count=1000, _type="list"):
            if task_id.encode() in b"".join(client.lrange(key, 0, -1)):
                found.append(f"list {key.decode(errors='replace')!r}")
        for tag, raw in client.hscan_iter(UNACKED_KEY):
            if task_id.encode() in raw:
                tag = tag.decode()
                delivered = client.zscore(UNACKED_INDEX_KEY, tag)
                holders = [w.decode() for w in client.zrange(LEASES_KEY, 0, -1)
                           if tag in (client.get(LEASE_KEY.format(worker=w.decode())) or b"").decode()]
                found.append(f"unacked {tag} delivered {time.time() - (delivered or 0):.0f}s ago, leased by {holders}")
    return found or ["nowhere in Redis"]


if __name__ == "__main__":
    if sys.argv[1] == "submit":
        submit(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    else:
        count(sys.argv[2], float(sys.argv[3]))
