"""``stepline agent`` (run an agent, ``agent list``) and ``stepline queues``."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from stepline.cli.render import fmt_duration, stdout_console

agent_app = typer.Typer(
    help="Run an agent that claims tasks from queues (`stepline agent --queue NAME`), or list "
    "the live agents (`stepline agent list`).",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
queues_app = typer.Typer(
    help="List, create and delete queues.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@agent_app.callback()
def agent(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A queue to serve (repeat: claimed in this order)."),
    ] = None,
    max_jobs: Annotated[
        int, typer.Option(help="Tasks run at once (services mode: 0, no limit).")
    ] = 1,
    services_mode: Annotated[
        bool,
        typer.Option(
            "--services-mode", help="Run pipeline controllers: queue 'services', no job limit."
        ),
    ] = False,
    isolated_env: Annotated[
        bool,
        typer.Option(
            "--isolated-env",
            help="Run every task in a virtual environment of its recorded packages (uv).",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Name shown in `agent list`.")] = None,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 1.0,
    timeout: Annotated[
        float, typer.Option(help="Seconds without a heartbeat after which it counts as dead.")
    ] = 30.0,
    poll: Annotated[float, typer.Option(help="Seconds between looks at idle queues.")] = 0.02,
    once: Annotated[bool, typer.Option("--once", help="Exit after one task.")] = False,
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without work.")
    ] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from stepline.agent import Agent

    runner = Agent(
        queue or [],
        name=name,
        max_jobs=0 if services_mode and max_jobs == 1 else max_jobs,
        services_mode=services_mode,
        isolated_env=isolated_env,
        poll=poll,
        heartbeat=heartbeat,
        timeout=timeout,
    )
    raise typer.Exit(runner.run(once=once, idle_exit=idle_exit))


@agent_app.command("list")
def list_agents(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The live agents: their queues and the tasks they run now. Agents whose heartbeats
    stopped are dropped (and their tasks re-queued or failed) first."""
    from stepline.backend import get_backend

    backend = get_backend()
    backend.reap_agents()
    agents = backend.get_agents()
    if as_json:
        sys.stdout.write(json.dumps([a.__dict__ for a in agents], indent=2, default=str) + "\n")
        return
    if not agents:
        typer.echo("no live agents; start one with: stepline agent --queue default")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("name", "queues", "running", "up", "last seen", "host/pid"):
        table.add_column(col)
    now = time.time()
    for a in agents:
        running = ", ".join(t[:8] for t in a.running) or "-"
        table.add_row(
            a.name,
            ", ".join(a.queues),
            running,
            fmt_duration(now - a.started),
            f"{now - a.last_seen:.1f}s ago",
            f"{a.host}/{a.pid}",
        )
    stdout_console().print(table)


@queues_app.command("list")
def list_queues(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every queue, how many tasks wait in it, and the live agents serving it."""
    from stepline.backend import get_backend

    backend = get_backend()
    backend.reap_agents()
    queues = backend.get_queues()
    agents = backend.get_agents()
    serving = {q.name: [a.name for a in agents if q.name in a.queues] for q in queues}
    if as_json:
        out = [{**q.__dict__, "agents": serving[q.name]} for q in queues]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("queue", "waiting", "agents"):
        table.add_column(col)
    for q in queues:
        table.add_row(q.name, str(q.pending), ", ".join(serving[q.name]) or "-")
    stdout_console().print(table)


@queues_app.command("create")
def create_queue(name: str) -> None:
    """Create a queue (nothing happens if it exists)."""
    from stepline.backend import get_backend

    get_backend().create_queue(name)
    typer.echo(f"queue {name} ready")


@queues_app.command("delete")
def delete_queue(name: str) -> None:
    """Delete an empty queue."""
    from stepline.backend import get_backend

    get_backend().delete_queue(name)
    typer.echo(f"queue {name} deleted")


@queues_app.command("show")
def show_queue(name: str) -> None:
    """The tasks waiting in a queue, in the order agents will take them."""
    from stepline.backend import get_backend

    backend = get_backend()
    ids = backend.queue_tasks(name)
    if not ids:
        typer.echo(f"queue {name} is empty")
        return
    for pos, task_id in enumerate(ids, 1):
        rec = backend.get_task(task_id)
        typer.echo(f"{pos:>4}  {task_id}  {rec.name}")
