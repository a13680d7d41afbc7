"""The operator CLI: `netjobs COMMAND ...`.

Exit codes: 0 ok, 1 a check or job failed (or a service is unreachable), 2 bad input or
configuration. Errors an operator can act on are one red line on stderr; ``--debug`` (or
NETJOBS_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import click

from netjobs.cli.common import EXIT_FAILED, debug_enabled, err, escape, explain


def _version() -> str:
    try:
        return version("netjobs")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class NetjobsGroup(click.Group):
    """Turns known errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            err().print("[red]interrupted[/red]")
            ctx.exit(130)
        except Exception as exc:
            if ctx.meta.get("netjobs.debug") or debug_enabled():
                raise
            known = explain(exc)
            if known is None:
                err().print(f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(exc)} "
                            "(run with --debug for the traceback)")
                ctx.exit(EXIT_FAILED)
            code, message = known
            err().print(f"[red]error:[/red] {escape(message)}")
            ctx.exit(code)


@click.group(cls=NetjobsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks (also NETJOBS_DEBUG=1).")
@click.version_option(_version(), "--version", prog_name="netjobs")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """netjobs: background jobs for network operations (Celery, Redis, PostgreSQL)."""
    from netjobs.actor import acting_as, cli_actor

    ctx.meta["netjobs.debug"] = debug
    # Jobs submitted and changes made by this command are recorded as the person's (netjobs.actor).
    ctx.with_resource(acting_as(cli_actor()))


def _register() -> None:
    from netjobs.cli import access, configs, devices, history, jobs, ops, restore, schedules, top

    for module in (jobs, history, schedules, ops, devices, configs, restore, access, top):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="netjobs", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILED)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
