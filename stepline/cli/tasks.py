"""``stepline tasks list`` and ``stepline tasks show``.

Only ``Backend`` protocol calls are used (no SQL), so the same commands will work on the HTTP
backend. Rich and the store are imported inside the commands.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from stepline.cli.render import (
    LEVEL_STYLES,
    first_line,
    fmt_duration,
    fmt_number,
    fmt_size,
    fmt_time,
    print_trimmed,
    status_style,
    status_text,
    stdout_console,
    task_duration,
)
from stepline.core.errors import NotFoundError, TaskNotFoundError, ValidationError
from stepline.core.records import (
    ArtifactRecord,
    ConfigObject,
    LogLine,
    Param,
    TaskFilter,
    TaskRecord,
)
from stepline.core.status import TaskStatus, TaskTypes

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from stepline.backend import Backend

app = typer.Typer(
    help="List and inspect tasks.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Shortest id prefix ``tasks show`` resolves.
MIN_PREFIX = 6
#: Width of the field names in the header of ``tasks show``.
KEY_WIDTH = 10


def _backend() -> Backend:
    from stepline.backend import get_backend

    return get_backend()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# -- finding tasks -----------------------------------------------------------------------------
def resolve_task(backend: Backend, ref: str) -> TaskRecord:
    """The task whose id is ``ref``, or whose id alone starts with ``ref`` (>= 6 characters).

    Archived tasks count too; a full id costs one ``get_task``."""
    ref = ref.strip()
    if not ref:
        raise ValidationError("give a task id (see `stepline tasks list`)")
    try:
        return backend.get_task(ref)
    except TaskNotFoundError:
        if len(ref) < MIN_PREFIX:
            raise TaskNotFoundError(
                ref,
                f"an id prefix needs at least {MIN_PREFIX} characters; "
                "check the id with `stepline tasks list`",
            ) from None
    matches = backend.find_tasks(TaskFilter(id_prefix=ref, archived=None, limit=6))
    if not matches:
        raise TaskNotFoundError(
            ref, "no task id starts with it either; check the id with `stepline tasks list --all`"
        )
    if len(matches) > 1:
        shown = ", ".join(f"{r.id} ({r.name})" for r in matches[:5])
        count = "more than 5" if len(matches) > 5 else str(len(matches))
        raise ValidationError(
            f"task id prefix {ref!r} is ambiguous: it matches {count} tasks: "
            f"{shown}; give more characters of the id"
        )
    return matches[0]


def _progress(backend: Backend, records: list[TaskRecord]) -> dict[str, int]:
    """Runtime property "progress" of the running tasks among ``records``.

    One call per running task (there is no batch read of runtime properties); finished and
    draft tasks are not asked, so a long listing of old tasks costs nothing extra."""
    out: dict[str, int] = {}
    for r in records:
        if r.status != TaskStatus.in_progress:
            continue
        try:
            value = backend.get_runtime(r.id).get("progress")
        except NotFoundError:  # deleted since it was listed
            continue
        if value is not None:
            try:
                out[r.id] = int(float(value))
            except ValueError:
                pass
    return out


def _task_json(record: TaskRecord, *, script: bool) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["status"] = record.status.value
    if not script:
        data.pop("script", None)
    data["duration"] = task_duration(record)
    return data


@dataclasses.dataclass
class _Col:
    header: str
    cells: list[RenderableType]
    texts: list[str]
    flex_min: int = 0  #: >0: may be shortened (with an ellipsis) down to this width
    drop: int = 0  #: >0: dropped when the terminal is too narrow, highest first
    justify: Literal["left", "right"] = "left"
    style: str = ""

    @property
    def natural(self) -> int:
        from rich.cells import cell_len

        return max([cell_len(self.header), *(cell_len(t) for t in self.texts)])


def _fit(cols: list[_Col], width: int, gap: int = 2) -> dict[str, int]:
    """Widths of the flexible columns so that a row fits ``width``; droppable columns are
    removed from ``cols`` while the flexible ones would get less than their minimum. Fixed
    columns (the id) keep their width."""
    while True:
        fixed = sum(c.natural for c in cols if not c.flex_min) + gap * (len(cols) - 1)
        flex = [c for c in cols if c.flex_min]
        room = width - fixed
        droppable = [c for c in cols if c.drop]
        if room >= sum(c.flex_min for c in flex) or not droppable:
            break
        cols.remove(max(droppable, key=lambda c: c.drop))
    widths: dict[str, int] = {}
    want = sum(c.natural for c in flex)
    for i, c in enumerate(flex):
        if want <= room:
            widths[c.header] = c.natural
        elif i == len(flex) - 1:
            widths[c.header] = max(c.flex_min, min(c.natural, room))
        else:
            share = max(c.flex_min, min(c.natural, room * c.natural // max(want, 1)))
            widths[c.header] = share
            room -= share
            want -= c.natural
    return widths


def _task_table(records: list[TaskRecord], progress: dict[str, int], width: int) -> Table:
    """The ``tasks list`` table. The full id always shows (it is what users copy); on a
    narrow terminal project and name are shortened and progress, started, type and duration
    dropped, in that order, as needed."""
    from rich.text import Text

    def col(header: str, texts: list[str], styles: list[str] | None = None, **kw: Any) -> _Col:
        cells: list[RenderableType] = [
            Text(t, style=(styles[i] if styles else "")) for i, t in enumerate(texts)
        ]
        return _Col(header, cells, texts, **kw)

    cols = [
        col("id", [r.id for r in records], style="cyan"),
        col("project", [r.project for r in records], flex_min=7),
        col("name", [r.name for r in records], flex_min=14),
        col("type", [r.type for r in records], drop=2),
        col("status", [status_text(r) for r in records], [status_style(r.status) for r in records]),
        col("started", [fmt_time(r.started, seconds=False) for r in records], drop=3),
        col("duration", [fmt_duration(task_duration(r)) for r in records], drop=1, justify="right"),
    ]
    if progress:
        texts = [f"{progress[r.id]}%" if r.id in progress else "" for r in records]
        cols.append(col("progress", texts, drop=4, justify="right"))
    return task_table(cols, records, width)


def task_table(cols: list[_Col], records: list[TaskRecord], width: int) -> Table:
    """A table of one row per task, its columns fitted to ``width``; archived tasks dimmed."""
    from rich.table import Table

    widths = _fit(cols, width)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for c in cols:
        table.add_column(
            c.header,
            style=c.style,
            justify=c.justify,
            no_wrap=True,
            overflow="ellipsis",
            width=widths.get(c.header),
        )
    for i, r in enumerate(records):
        table.add_row(*(c.cells[i] for c in cols), style="dim" if r.archived else None)
    return table


# -- tasks list --------------------------------------------------------------------------------
@app.command("list")
def list_tasks(
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only tasks of this project.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Only tasks whose name matches this regular expression."),
    ] = None,
    status: Annotated[
        list[TaskStatus] | None,
        typer.Option(
            "--status", "-s", help="Only tasks in this status (repeatable).", case_sensitive=False
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="Only tasks with this tag (repeatable: all must match; --tag=-x excludes tag x).",
        ),
    ] = None,
    task_type: Annotated[
        list[TaskTypes] | None,
        typer.Option("--type", help="Only tasks of this type (repeatable).", case_sensitive=False),
    ] = None,
    include_archived: Annotated[
        bool, typer.Option("--all", "--archived", "-a", help="Include archived tasks.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-l", min=0, help="Show at most this many tasks (0: all).")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of tasks instead of a table.")
    ] = False,
) -> None:
    """List tasks, newest first."""
    if name:
        try:
            re.compile(name)
        except re.error as exc:
            raise ValidationError(f"--name {name!r} is not a regular expression: {exc}") from None
    flt = TaskFilter(
        project=project,
        name=name or None,
        tags=list(tag) if tag else None,
        status=list(status) if status else None,
        type=[t.value for t in task_type] if task_type else None,
        archived=None if include_archived else False,
        order_by="-created",
        limit=limit + 1 if limit else None,  # one more tells whether there are more
    )
    backend = _backend()
    records = backend.find_tasks(flt)
    more = bool(limit) and len(records) > limit
    if limit:
        records = records[:limit]
    progress = _progress(backend, records)

    if as_json:
        rows = []
        for r in records:
            row = _task_json(r, script=False)
            row["progress"] = progress.get(r.id)
            rows.append(row)
        _print_json(rows)
        return

    from rich.text import Text

    console = stdout_console()
    if not records:
        hint = "" if include_archived else " (archived tasks are hidden; add --all to see them)"
        console.print(Text(f"no tasks found{hint}", style="dim"))
        return
    table = _task_table(records, progress, console.width)
    print_trimmed(console, table)
    if more:
        console.print(
            Text(f"showing the newest {limit}; --limit N shows more (0: all)", style="dim")
        )


# -- tasks show --------------------------------------------------------------------------------
def _log_tail(backend: Backend, task_id: str, n: int) -> tuple[list[LogLine], int]:
    """The last ``n`` console lines and how many lines the log holds."""
    return backend.get_log(task_id, tail=max(n, 0)), backend.count_log(task_id)


def _params_by_section(params: list[Param]) -> dict[str, list[Param]]:
    out: dict[str, list[Param]] = {}
    for p in sorted(params, key=lambda p: (p.section, p.name)):
        out.setdefault(p.section, []).append(p)
    return out


def _script_line(script: dict[str, Any]) -> str:
    entry = script.get("entry_point") or ""
    where = []
    if script.get("repository"):
        where.append(str(script["repository"]))
    if script.get("branch"):
        where.append(str(script["branch"]))
    if script.get("commit"):
        where.append(str(script["commit"])[:10])
    return f"{entry} ({' '.join(where)})" if entry and where else entry or " ".join(where)


@dataclasses.dataclass
class TaskView:
    """Everything ``tasks show`` prints about one task."""

    task: TaskRecord
    parent_name: str | None
    params: list[Param]
    configs: list[ConfigObject]
    artifacts: list[ArtifactRecord]
    metrics: dict[str, dict[str, dict[str, float]]]
    runtime: dict[str, str]
    log: list[LogLine]
    log_total: int

    @classmethod
    def load(cls, backend: Backend, ref: str, log_lines: int) -> TaskView:
        rec = resolve_task(backend, ref)
        parent_name = None
        if rec.parent:
            try:
                parent_name = backend.get_task(rec.parent).name
            except NotFoundError:
                pass
        log, log_total = _log_tail(backend, rec.id, log_lines) if log_lines else ([], 0)
        return cls(
            task=rec,
            parent_name=parent_name,
            params=backend.get_params(rec.id),
            configs=backend.get_configs(rec.id),
            artifacts=backend.get_artifacts(rec.id),
            metrics=backend.get_last_scalars(rec.id),
            runtime=backend.get_runtime(rec.id),
            log=log,
            log_total=log_total,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": _task_json(self.task, script=True),
            "parent_name": self.parent_name,
            "runtime": self.runtime,
            "parameters": [dataclasses.asdict(p) for p in self.params],
            "configurations": [dataclasses.asdict(c) for c in self.configs],
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "metrics": self.metrics,
            "log": [dataclasses.asdict(ln) for ln in self.log],
            "log_total": self.log_total,
        }


@app.command("show")
def show_task(
    task_ref: Annotated[
        str,
        typer.Argument(
            metavar="ID", help=f"A task id, or a unique prefix of one ({MIN_PREFIX}+ characters)."
        ),
    ],
    log: Annotated[
        int, typer.Option("--log", min=0, help="Show the last N console log lines (0: none).")
    ] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
) -> None:
    """Show a task: fields, parameters, artifacts, last metrics and the end of its console log."""
    view = TaskView.load(_backend(), task_ref, log)
    if as_json:
        _print_json(view.to_json())
    else:
        _render_show(stdout_console(), view, log)


def _render_show(console: Console, view: TaskView, log: int) -> None:
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    rec, parent_name, params, configs = view.task, view.parent_name, view.params, view.configs
    artifacts, metrics, runtime, lines = view.artifacts, view.metrics, view.runtime, view.log

    def heading(text: str) -> None:
        console.print()
        console.print(Text(text, style="bold underline"))

    def field(key: str, value: str | Text) -> None:
        # Plain lines rather than a grid: no trailing padding, continuation lines indented.
        value = value if isinstance(value, Text) else Text(value)
        indent = " " * (KEY_WIDTH + 1)
        for i, part in enumerate(value.split("\n") or [Text("")]):
            line = Text()
            line.append(f"{key:<{KEY_WIDTH}} " if i == 0 else indent, style="bold")
            line.append_text(part)
            console.print(line)

    console.print(Text.assemble(("Task ", "bold"), (rec.id, "bold cyan")))
    status = Text(status_text(rec), style=status_style(rec.status))
    if rec.status_message:
        status.append(f"  {rec.status_message}")
    field("name", rec.name)
    field("project", rec.project)
    field("type", rec.type)
    field("status", status)
    if rec.status_reason:
        field("reason", rec.status_reason.rstrip())
    if "progress" in runtime:
        field("progress", f"{runtime['progress']}%")
    field("created", fmt_time(rec.created))
    field("started", fmt_time(rec.started))
    completed = fmt_time(rec.completed)
    duration = task_duration(rec)
    if duration is not None:
        ran = "running for" if rec.completed is None else "ran"
        completed += f"  ({ran} {fmt_duration(duration)})"
    field("completed", completed)
    if rec.parent:
        parent = Text(rec.parent, style="cyan")
        parent.append(f"  {parent_name}" if parent_name else "  (no longer stored)")
        field("parent", parent)
    else:
        field("parent", "-")
    field("tags", ", ".join(rec.tags) or "-")
    field("comment", rec.comment or "-")
    if rec.user:
        field("user", rec.user)
    script = _script_line(rec.script)
    if script:
        field("script", script)

    heading("Parameters")
    if not params:
        console.print(Text("  none", style="dim"))
    for section, items in _params_by_section(params).items():
        console.print(Text(f"  {section}", style="bold"))
        described = any(p.description for p in items)
        grid = Table.grid(padding=(0, 2, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_column(style="dim", no_wrap=True)
        if described:
            grid.add_column(style="dim", overflow="fold")
        for p in items:
            cells = [Text(f"    {p.name}"), Text(p.value), Text(p.type)]
            grid.add_row(*cells, *([Text(p.description)] if described else []))
        print_trimmed(console, grid)

    if configs:
        heading("Configuration objects")
        for c in configs:
            line = Text(f"  {c.name}")
            line.append(f"  {c.content_type}", style="dim")
            if c.description:
                line.append(f"  {c.description}", style="dim")
            console.print(line)

    heading("Artifacts")
    if not artifacts:
        console.print(Text("  none", style="dim"))
    name_w = max((len(a.name) for a in artifacts), default=0)
    type_w = max((len(a.type) for a in artifacts), default=0)
    size_w = max((len(fmt_size(a.size)) for a in artifacts), default=0)
    for a in artifacts:
        line = Text("  ")
        line.append(f"{a.name:<{name_w}}", style="bold")
        line.append(f"  {a.type:<{type_w}}  {fmt_size(a.size):>{size_w}}  ")
        line.append(f"sha256:{a.hash[:12]}", style="dim")
        console.print(line)
        console.print(Text.assemble(("      url      ", "dim"), a.url))
        preview = first_line(a.preview, 100)
        if preview:
            console.print(Text.assemble(("      preview  ", "dim"), preview))

    heading("Metrics (last values)")
    if metrics:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("title", overflow="fold")
        table.add_column("series", overflow="fold")
        for col in ("last", "min", "max", "iteration"):
            table.add_column(col, justify="right", no_wrap=True)
        for title in sorted(metrics):
            for series in sorted(metrics[title]):
                m = metrics[title][series]
                table.add_row(
                    Text(title),
                    Text(series),
                    fmt_number(m.get("last")),
                    fmt_number(m.get("min")),
                    fmt_number(m.get("max")),
                    fmt_number(int(m["iteration"]) if "iteration" in m else None),
                )
        print_trimmed(console, Padding.indent(table, 2))
    else:
        console.print(Text("  none", style="dim"))

    if log:
        shown = f"last {len(lines)} of {view.log_total} lines" if view.log_total else "empty"
        heading(f"Console log ({shown})")
        for ln in lines:
            text = Text()
            text.append(f"{fmt_time(ln.timestamp)[11:]} ", style="dim")
            body = Text.from_ansi(ln.text)
            body.stylize(LEVEL_STYLES.get(ln.level, ""))
            text.append_text(body)
            console.print(text)


# -- queues and aborts -------------------------------------------------------------------------
@app.command("enqueue")
def enqueue_task(
    task_id: Annotated[str, typer.Argument(help="Task id (or a unique prefix).")],
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue name.")] = "default",
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
) -> None:
    """Put a draft task on a queue for an agent to run."""
    backend = _backend()
    rec = resolve_task(backend, task_id)
    backend.enqueue(rec.id, queue, priority=priority)
    typer.echo(f"task {rec.id} queued on {queue}")


@app.command("dequeue")
def dequeue_task(
    task_id: Annotated[str, typer.Argument(help="Task id (or a unique prefix).")],
) -> None:
    """Take a queued task off its queue (it becomes a draft)."""
    backend = _backend()
    rec = resolve_task(backend, task_id)
    backend.dequeue(rec.id)
    typer.echo(f"task {rec.id} dequeued")


@app.command("stop")
def stop_task(
    task_id: Annotated[str, typer.Argument(help="Task id (or a unique prefix).")],
) -> None:
    """Abort a queued or running task: its agent ends the task's processes."""
    backend = _backend()
    rec = resolve_task(backend, task_id)
    if rec.status not in (TaskStatus.created, TaskStatus.queued, TaskStatus.in_progress):
        raise ValidationError(f"task {rec.id} is {rec.status.value}; only a live task stops")
    backend.set_status(
        rec.id, TaskStatus.stopped, message="aborted", reason="stopped from the command line"
    )
    typer.echo(f"task {rec.id} stopped")
