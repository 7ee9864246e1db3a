"""``stepline pipelines list``, ``show``, ``run``, ``resume`` and ``abort``.

A pipeline run is a task of type ``controller``. Its configuration object ``Pipeline`` holds
the DAG (each step's parents), and its runtime properties hold the run's version, progress and,
for each step, ``_node/STEP``: a JSON object with the step's status, task, start and end times,
cache reuse, retries and message. Like ``stepline tasks``, only ``Backend`` protocol calls are
used; Rich and the store are imported inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepline.cli.render import (
    fmt_duration,
    fmt_number,
    fmt_time,
    print_trimmed,
    status_style,
    status_text,
    stdout_console,
)
from stepline.cli.tasks import (
    MIN_PREFIX,
    _backend,
    _Col,
    _print_json,
    resolve_task,
    task_table,
)
from stepline.core.errors import ValidationError
from stepline.core.records import TaskFilter, TaskRecord
from stepline.core.status import TaskTypes
from stepline.pipeline.views import (
    RT_VERSION,
    RunView,
    StepView,
    run_summary,
    task_duration,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from stepline.backend import Backend

app = typer.Typer(
    help="List, inspect, run again and abort pipeline runs.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Width of the field names in the header of ``pipelines show``.
KEY_WIDTH = 9
#: Narrowest message column of ``pipelines show``; below it messages follow the table.
MIN_MESSAGE_WIDTH = 24
STEP_STYLES = {
    "pending": "dim",
    "queued": "cyan",
    "running": "bold blue",
    "completed": "green",
    "cached": "green",
    "aborted": "yellow",
    "failed": "bold red",
    "skipped": "dim",
}


def _progress_text(runtime: dict[str, str]) -> str:
    value = runtime.get("progress")
    if value is None or value == "":
        return "-"
    try:
        return f"{int(float(value))}%"
    except ValueError:
        return value


# -- pipelines list ----------------------------------------------------------------------------
def _runs_table(
    records: list[TaskRecord], runtimes: dict[str, dict[str, str]], width: int
) -> Table:
    """The ``pipelines list`` table; the full id always shows, the name is shortened and
    started, progress and duration dropped (in that order) on a narrow terminal."""
    from rich.text import Text

    def col(header: str, texts: list[str], styles: list[str] | None = None, **kw: Any) -> _Col:
        cells: list[RenderableType] = [
            Text(t, style=(styles[i] if styles else "")) for i, t in enumerate(texts)
        ]
        return _Col(header, cells, texts, **kw)

    cols = [
        col("id", [r.id for r in records], style="cyan"),
        col("name", [r.name for r in records], flex_min=14),
        col("version", [runtimes[r.id].get(RT_VERSION) or "-" for r in records]),
        col("status", [status_text(r) for r in records], [status_style(r.status) for r in records]),
        col("progress", [_progress_text(runtimes[r.id]) for r in records], drop=2, justify="right"),
        col("started", [fmt_time(r.started, seconds=False) for r in records], drop=3),
        col("duration", [fmt_duration(task_duration(r)) for r in records], drop=1, justify="right"),
    ]
    return task_table(cols, records, width)


@app.command("list")
def list_runs(
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only runs of this project.")
    ] = None,
    include_archived: Annotated[
        bool, typer.Option("--all", "--archived", "-a", help="Include archived runs.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-l", min=0, help="Show at most this many runs (0: all).")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of runs instead of a table.")
    ] = False,
) -> None:
    """List pipeline runs (tasks of type controller), newest first."""
    backend = _backend()
    _reap(backend)
    records = backend.find_tasks(
        TaskFilter(
            project=project,
            type=[str(TaskTypes.controller)],
            archived=None if include_archived else False,
            order_by="-created",
            limit=limit + 1 if limit else None,  # one more tells whether there are more
        )
    )
    more = bool(limit) and len(records) > limit
    if limit:
        records = records[:limit]
    runtimes = {r.id: backend.get_runtime(r.id) for r in records}

    if as_json:
        rows = [run_summary(r, runtimes[r.id]) for r in records]
        _print_json(rows)
        return

    from rich.text import Text

    console = stdout_console()
    if not records:
        hint = "" if include_archived else " (archived runs are hidden; add --all to see them)"
        console.print(Text(f"no pipeline runs found{hint}", style="dim"))
        return
    print_trimmed(console, _runs_table(records, runtimes, console.width))
    if more:
        console.print(
            Text(f"showing the newest {limit}; --limit N shows more (0: all)", style="dim")
        )


@app.command("show")
def show_run(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN_ID",
            help=f"A pipeline run's task id, or a unique prefix of one ({MIN_PREFIX}+ characters).",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
) -> None:
    """Show a pipeline run: its version, status and arguments, then each step in DAG order."""
    backend = _backend()
    _reap(backend)
    view = RunView.load(backend, resolve_task(backend, run_ref))
    if as_json:
        _print_json(view.to_json())
    else:
        _render_run(stdout_console(), view)


def _render_run(console: Console, view: RunView) -> None:
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    rec, runtime = view.task, view.runtime

    def field(key: str, value: str | Text) -> None:
        line = Text(f"{key:<{KEY_WIDTH}} ", style="bold")
        line.append_text(value if isinstance(value, Text) else Text(value))
        console.print(line)

    def heading(text: str) -> None:
        console.print()
        console.print(Text(text, style="bold underline"))

    console.print(Text.assemble(("Pipeline run ", "bold"), (rec.id, "bold cyan")))
    field("name", rec.name)
    field("project", rec.project)
    field("version", runtime.get(RT_VERSION) or "-")
    status = Text(status_text(rec), style=status_style(rec.status))
    if rec.status_message:
        status.append(f"  {rec.status_message}")
    field("status", status)
    field("progress", _progress_text(runtime))
    started = fmt_time(rec.started)
    duration = task_duration(rec)
    if duration is not None:
        ran = "running for" if rec.completed is None else "ran"
        started += f"  ({ran} {fmt_duration(duration)})"
    field("started", started)
    args = ", ".join(f"{k}={v}" for k, v in sorted(view.args.items()))
    field("args", args or "-")
    if view.resume_of:
        field("resumes", view.resume_of)
    if view.resumed_by:
        field("resumed", ", ".join(view.resumed_by))

    heading(f"Steps ({len(view.steps)})")
    if view.steps:
        _steps_table(console, view.steps)
    else:
        console.print(Text("  none", style="dim"))

    if view.metrics:
        heading("Metrics (last values)")
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("title", overflow="fold")
        table.add_column("series", overflow="fold")
        table.add_column("last", justify="right", no_wrap=True)
        for title in sorted(view.metrics):
            for series in sorted(view.metrics[title]):
                table.add_row(
                    Text(title), Text(series), fmt_number(view.metrics[title][series].get("last"))
                )
        print_trimmed(console, Padding.indent(table, 2))

    if rec.status_reason and rec.status_reason.strip() != rec.status_message.strip():
        heading("Reason")
        console.print(Text(rec.status_reason.rstrip()))
    console.print()
    console.print(
        Text("a step's parameters, artifacts and log: stepline tasks show TASK", style="dim")
    )


def _steps_table(console: Console, steps: list[StepView]) -> None:
    """One row per step. When the terminal leaves the messages too little room, they follow
    the table, one line per step that has one, instead of being squeezed into a column."""
    from rich.cells import cell_len
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    rows: list[tuple[Text, Text, Text, Text, str]] = []
    for s in steps:
        status_cell = Text(s.status, style=STEP_STYLES.get(s.status, ""))
        if s.retries:
            status_cell.append(f" ({s.retries} retr{'y' if s.retries == 1 else 'ies'})")
        task_id = s.cached_from if s.cached and s.cached_from else s.task
        task_cell = Text(task_id or "-", style="cyan" if task_id else "dim")
        message = s.message
        if s.cached and not message:
            message = "reuses the outputs of an earlier run"
        rows.append(
            (Text(s.name), status_cell, Text(fmt_duration(s.duration())), task_cell, message)
        )

    headers = ("step", "status", "duration", "task")
    widths = [len(h) for h in headers]
    for *cells, _ in rows:
        widths = [max(w, cell_len(c.plain)) for w, c in zip(widths, cells, strict=True)]
    room = console.width - 2 - sum(widths) - 2 * len(widths)
    longest = max((cell_len(message) for *_, message in rows), default=0)
    inline = longest <= room or room >= MIN_MESSAGE_WIDTH

    table = Table(box=None, header_style="bold", pad_edge=False)
    for h in headers:
        table.add_column(h, no_wrap=True, justify="right" if h == "duration" else "left")
    if inline:
        table.add_column("message", overflow="fold")
    for *cells, message in rows:
        table.add_row(*cells, *([Text(message)] if inline else []))
    print_trimmed(console, Padding.indent(table, 2))
    if not inline:
        for name, _, _, _, message in rows:
            if message:
                console.print(Text.assemble("  ", (name.plain, "bold"), f": {message}"))


# -- running a stored pipeline again -----------------------------------------------------------
def _find_pipeline(backend: Backend, ref: str, project: str | None, version: str | None) -> str:
    """The controller task id of ``ref``: a run's id (or prefix), else the newest run of the
    highest version of the pipeline named ``ref``."""
    from stepline.core.errors import NotFoundError
    from stepline.pipeline.controller import PipelineController

    try:
        rec = resolve_task(backend, ref)
        if rec.type == str(TaskTypes.controller):
            return rec.id
    except (NotFoundError, ValidationError):
        pass
    pipe = PipelineController.get(
        pipeline_project=project, pipeline_name=ref, pipeline_version=version
    )
    assert pipe.id is not None
    return pipe.id


def _param_values(items: list[str], option: str = "--param") -> dict[str, str]:
    """``--param NAME=VALUE`` options as {name: value} (checked by ``actions.check_args``)."""
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValidationError(f"{option} {item!r}: write NAME=VALUE, e.g. {option} epochs=5")
        values[key.strip()] = value
    return values


@app.command("run")
def run_pipeline(
    pipeline: Annotated[
        str, typer.Argument(help="A pipeline's name, or the id of one of its runs.")
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE: a new value for an argument (repeat)."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", "-q", help="Send the run to an agent of this queue."),
    ] = None,
    project: Annotated[str | None, typer.Option(help="The pipeline's project.")] = None,
    version: Annotated[
        str | None, typer.Option(help="Run this version (default: the highest).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --queue: wait for the run's end.")
    ] = False,
) -> None:
    """Run a stored pipeline again, with new argument values: its last run is cloned (DAG,
    arguments and code) and run here, or queued for an agent with --queue."""
    from stepline.pipeline.actions import new_run

    backend = _backend()
    source = _find_pipeline(backend, pipeline, project, version)
    values = _param_values(list(param or []))
    rec = new_run(backend, source, values, queue=queue)  # checks everything first
    shown = " ".join(f"{k}={v}" for k, v in values.items()) or "the same arguments"
    _follow(backend, rec, queue, wait, f"pipeline {rec.name}: run {rec.id} with {shown}")


def _reap(backend: Backend) -> None:
    """Runs whose controller died are marked interrupted before they are shown."""
    from stepline.core.errors import StepLineError
    from stepline.pipeline.recovery import reap_runs

    try:
        reap_runs(backend)
    except StepLineError:
        pass  # showing what is stored matters more


@app.command("resume")
def resume_run(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN_ID",
            help=f"A pipeline run's task id, or a unique prefix of one ({MIN_PREFIX}+ characters).",
        ),
    ],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from", help="Re-execute this step and everything downstream of it, even if done."
        ),
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="NAME=VALUE: a new value for an argument of the --from step."
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", "-q", help="Send the attempt to an agent of this queue."),
    ] = None,
    here: Annotated[
        bool, typer.Option("--here", help="Run it here even if the run was on an agent.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With a queue: wait for the run's end.")
    ] = False,
) -> None:
    """Resume a failed, aborted or interrupted run: a new run linked to it reuses every step
    it completed (whatever their cache setting) and runs the rest with the same arguments.
    It runs where the run ran: here, or on the agents' queue it was taken from."""
    from stepline.pipeline.recovery import ResumePlan, resume_run, source_queue

    backend = _backend()
    rec = resolve_task(backend, run_ref)
    if queue is None and not here:
        queue = source_queue(backend, rec.id)
    changes = _param_values(list(values or []), option="--set")
    attempt = resume_run(backend, rec.id, from_step=from_step, values=changes, queue=queue)
    plan = ResumePlan.of(backend.get_runtime(attempt.id))
    what = f"{len(plan.reuse)} step(s) reused"
    if plan.rerun:
        what += f", {len(plan.rerun)} re-executed from {from_step}"
    _follow(backend, attempt, queue, wait, f"resuming run {rec.id} as run {attempt.id} ({what})")


def _follow(backend: Backend, rec: TaskRecord, queue: str | None, wait: bool, said: str) -> None:
    """Run a new draft run here (through the runner) or tell where it was queued, and wait."""
    import subprocess
    import sys

    from stepline.core.status import FINAL, TaskStatus

    if queue is None:
        typer.echo(f"{said}, here")
        code = subprocess.call([sys.executable, "-m", "stepline.runner", rec.id])
        status = backend.get_task(rec.id).status
        typer.echo(f"run {rec.id}: {status.value}; details: stepline pipelines show {rec.id}")
        raise typer.Exit(0 if status == TaskStatus.completed else (code or 1))
    typer.echo(f"{said}, queued on {queue}")
    if not wait:
        typer.echo(f"follow it with: stepline pipelines show {rec.id}")
        return
    from stepline.sdk.task import Task

    task = Task(rec, backend)
    task.wait_for_status(status=[str(s) for s in FINAL], raise_on_status=(), check_interval_sec=1)
    status = task.data.status
    typer.echo(f"run {rec.id}: {status.value}; details: stepline pipelines show {rec.id}")
    raise typer.Exit(0 if status == TaskStatus.completed else 1)


@app.command("abort")
def abort_run(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN_ID",
            help=f"A pipeline run's task id, or a unique prefix of one ({MIN_PREFIX}+ characters).",
        ),
    ],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (kept on the stopped tasks).")
    ] = "aborted from the command line",
) -> None:
    """Abort a pipeline run: its task and its steps' tasks that have not ended are stopped.
    The running pipeline then kills its steps and skips the rest (agents end the steps they
    run)."""
    from stepline.pipeline.actions import abort_run as abort

    backend = _backend()
    rec = resolve_task(backend, run_ref)
    stopped = abort(backend, rec.id, reason)
    if not stopped:
        typer.echo(f"run {rec.id} had ended ({rec.status.value}); nothing to abort")
        return
    steps = len(stopped) - (1 if stopped[0] == rec.id else 0)
    typer.echo(
        f"run {rec.id} aborted: {len(stopped)} task(s) stopped ({steps} step(s)); "
        f"details: stepline pipelines show {rec.id}"
    )
