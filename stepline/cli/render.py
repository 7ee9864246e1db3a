"""Plain formatting helpers shared by the commands: times, durations, sizes, colours.

Nothing here imports Rich or touches a store, so it is cheap to import and easy to test.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from stepline.core.display import fmt_duration, fmt_size, fmt_time  # noqa: F401 - used by the commands
from stepline.core.records import TaskRecord
from stepline.core.status import TaskStatus
from stepline.pipeline.views import task_duration  # noqa: F401 - the commands import it from here

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

#: Width used when stdout is not a terminal (a pipe, a file) and COLUMNS is unset: wide enough
#: that a task's row stays on one line for grep, instead of Rich's 80-column default.
PIPE_WIDTH = 200

STATUS_STYLES: dict[TaskStatus, str] = {
    TaskStatus.created: "dim",
    TaskStatus.queued: "cyan",
    TaskStatus.in_progress: "bold blue",
    TaskStatus.completed: "green",
    TaskStatus.published: "bold green",
    TaskStatus.publishing: "green",
    TaskStatus.failed: "bold red",
    TaskStatus.stopped: "yellow",
    TaskStatus.closed: "dim",
    TaskStatus.unknown: "magenta",
}

LEVEL_STYLES: dict[str, str] = {
    "error": "red",
    "critical": "bold red",
    "warning": "yellow",
    "debug": "dim",
}


def status_style(status: TaskStatus | str) -> str:
    try:
        return STATUS_STYLES.get(TaskStatus(status), "")
    except ValueError:
        return ""


def status_text(record: TaskRecord) -> str:
    """The status, with the published/archived flags a task may carry beside it."""
    text = record.status.value
    flags = [f for f, on in (("published", record.published), ("archived", record.archived)) if on]
    return f"{text} ({', '.join(flags)})" if flags else text


def fmt_number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def first_line(text: str, width: int = 60) -> str:
    """The first line of ``text``, cut to ``width`` characters (with ``…``)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stdout_console() -> Console:
    """A Rich console on stdout; not squeezed to 80 columns when piped."""
    from rich.console import Console

    width = None if _stdout_is_terminal() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(width=width, highlight=False)


def print_error(message: str) -> None:
    """``error: <message>`` as one red line on stderr."""
    from rich.console import Console
    from rich.text import Text

    one_line = " ".join(message.split("\n"))
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text(f"error: {one_line}", style="red"))


def print_trimmed(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable`` (a table, a grid) without the blanks Rich pads lines with, so
    copied or piped output carries no trailing spaces."""
    from rich.segment import Segment, Segments

    out: list[Segment] = []
    for line in console.render_lines(renderable, pad=False):
        while line and not line[-1].control and not line[-1].text.strip():
            line.pop()
        if line and not line[-1].control:
            last = line[-1]
            line[-1] = Segment(last.text.rstrip(), last.style)
        out.extend(line)
        out.append(Segment.line())
    console.print(Segments(out))
