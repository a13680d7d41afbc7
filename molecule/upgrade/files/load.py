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
    print(json.dumps({
        "submitted": len(ids),
        "success": states.count("SUCCESS"),
        "failure": states.count("FAILURE"),
        "pending": pending,
        "job_runs": runs,
    }, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "submit":
        submit(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    else:
        count(sys.argv[2], float(sys.argv[3]))
