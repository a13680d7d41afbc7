"""Helpers to run the `netjobs` CLI in-process (click's runner) and as the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NETJOBS = Path(sys.executable).parent / "netjobs"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    @property
    def stdout_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def invoke(*args: str, input: str | None = None) -> CliResult:
    """`netjobs ARGS` in this process, against the session's services."""
    from click.testing import CliRunner

    from netjobs.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_netjobs(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = (),
                timeout: float = 60) -> CliResult:
    """The installed `netjobs` console script in a subprocess; ``drop`` removes variables."""
    full_env = {**os.environ, **(env or {})}
    for name in drop:
        full_env.pop(name, None)
    proc = subprocess.run([str(NETJOBS), *map(str, args)], env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_error_line(result: CliResult, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one line on stderr containing every fragment, and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
