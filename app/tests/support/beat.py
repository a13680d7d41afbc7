"""A real `celery beat` (RedBeat scheduler) subprocess for schedule and lock tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.support.servers import VENV_BIN, _stop

# Short loop and lock so the tests see ticks, lock waits and expiry in seconds, not minutes.
FAST_BEAT = {"NETJOBS_BEAT_MAX_INTERVAL": "1", "NETJOBS_REDBEAT_LOCK_TIMEOUT": "5"}


@dataclass
class Beat:
    proc: subprocess.Popen
    logfile: Path
    final_log: str | None = None  # kept once the process is gone

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        return self.logfile.read_text(errors="replace")

    def sends(self, entry: str) -> int:
        """How many times this beat sent ``entry`` (its log line per due entry)."""
        return len(re.findall(rf"Sending due task {re.escape(entry)} ", self.log()))

    @property
    def has_lock(self) -> bool:
        return "beat: Acquired lock" in self.log()

    def kill(self) -> None:
        """SIGKILL: the lock is not released and must expire."""
        self.proc.kill()
        self.proc.wait(10)


@contextmanager
def beat_process(env: dict[str, str], **overrides: str) -> Iterator[Beat]:
    workdir = Path(tempfile.mkdtemp(prefix="netjobs-beat-"))
    logfile = workdir / "beat.log"
    argv = [str(VENV_BIN / "celery"), "-A", "netjobs.celery_app:app", "beat", "-l", "INFO",
            "--schedule", str(workdir / "unused-schedule"), "--pidfile", str(workdir / "beat.pid")]
    with open(logfile, "w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env, **FAST_BEAT, **overrides}, cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    beat = Beat(proc, logfile)
    try:
        deadline = time.monotonic() + 30
        while "beat: Starting..." not in beat.log():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery beat did not start:\n{beat.log()[-3000:]}")
            time.sleep(0.05)
        yield beat
    finally:
        _stop(proc, signal.SIGTERM, 15)
        beat.final_log = beat.log()
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
