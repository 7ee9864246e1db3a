"""``stepline``: the command line entry point.

Kept cheap to start: the store (SQLAlchemy) and Rich are imported inside the commands that
need them. Every ``StepLineError`` becomes one red ``error: ...`` line and exit code 1.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from stepline.cli import agents, db, pipelines, server, tasks
from stepline.core.errors import StepLineError


class _Group(TyperGroup):
    """Turns stepline's own errors, raised by any (sub)command, into a one-line message."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except StepLineError as exc:
            from stepline.cli.render import print_error

            print_error(str(exc))
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="stepline",
    help="Track ML and data pipeline steps: tasks, pipeline runs, queues and agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tasks.app, name="tasks")
app.add_typer(pipelines.app, name="pipelines")
app.add_typer(agents.agent_app, name="agent")
app.add_typer(agents.queues_app, name="queues")
app.add_typer(server.server_app, name="server")
app.add_typer(db.app, name="db")


@app.command()
def version() -> None:
    """Print stepline's version."""
    from stepline import __version__

    typer.echo(f"stepline {__version__}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="stepline")


if __name__ == "__main__":
    main()
