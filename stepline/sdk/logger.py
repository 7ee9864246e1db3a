"""Reporting metrics, text, tables, plots and images, and capturing the console.

Writes are batched: ``report_*`` calls append to an in-memory buffer that is written to the
store in one transaction when it holds ``BATCH`` items, when it is ``FLUSH_SECONDS`` old (a
background thread checks twice a second), on ``flush()``, and when the task ends or the
process exits. A report therefore costs microseconds, and the UI still sees it within a
second.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TextIO

from stepline.core.records import Event, LogLine, ScalarPoint

if TYPE_CHECKING:
    from stepline.sdk.task import Task

BATCH = 2000
FLUSH_SECONDS = 1.0


class _Flusher:
    """One daemon thread per process that flushes loggers whose buffers grew old."""

    def __init__(self) -> None:
        self._loggers: weakref.WeakSet[Logger] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def add(self, logger: Logger) -> None:
        with self._lock:
            self._loggers.add(logger)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="stepline-flush", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS / 2)
            for logger in list(self._loggers):
                if logger._due():
                    try:
                        logger.flush()
                    except Exception as exc:  # keep flushing others; report once
                        logger._flush_error(exc)

    def flush_all(self) -> None:
        for logger in list(self._loggers):
            try:
                logger.flush()
            except Exception as exc:
                logger._flush_error(exc)


_flusher = _Flusher()
atexit.register(_flusher.flush_all)


class Logger:
    """A task's reporter. Get it with ``task.get_logger()`` or ``Logger.current_logger()``."""

    def __init__(self, task: Task) -> None:
        self._task = task
        self._task_id = task.id
        self._backend = task._backend
        self._lock = threading.Lock()
        self._scalars: list[ScalarPoint] = []
        self._events: list[Event] = []
        self._lines: list[LogLine] = []
        self._first: float | None = None
        self._warned = False
        _flusher.add(self)

    @classmethod
    def current_logger(cls) -> Logger:
        from stepline.sdk.task import Task

        task = Task.current_task()
        if task is None:
            raise RuntimeError("Logger.current_logger() needs a task: call Task.init() first")
        return task.get_logger()

    # -- buffering -------------------------------------------------------------------------
    def _due(self) -> bool:
        first = self._first
        return first is not None and time.monotonic() - first >= FLUSH_SECONDS

    def _added(self, n: int) -> None:
        # called with the lock held
        if self._first is None:
            self._first = time.monotonic()
        if n >= BATCH:
            self._flush_locked()

    def _flush_locked(self) -> None:
        scalars, events, lines = self._scalars, self._events, self._lines
        self._scalars, self._events, self._lines = [], [], []
        self._first = None
        try:
            if scalars:
                self._backend.add_scalars(scalars)
            if events:
                self._backend.add_events(events)
            if lines:
                self._backend.add_log(lines)
        except Exception:
            # keep what could not be written for the next attempt
            self._scalars[:0], self._events[:0], self._lines[:0] = scalars, events, lines
            self._first = self._first or time.monotonic()
            raise

    def flush(self) -> bool:
        """Write everything buffered to the store now."""
        with self._lock:
            self._flush_locked()
        return True

    def _flush_error(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            stream = sys.__stderr__
            if stream is not None:
                stream.write(f"stepline: could not write reports of task {self._task_id}: {exc}\n")

    # -- scalars ---------------------------------------------------------------------------
    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        point = ScalarPoint(
            self._task_id, str(title), str(series), int(iteration), float(value), time.time()
        )
        with self._lock:
            self._scalars.append(point)
            self._added(len(self._scalars))

    def report_single_value(self, name: str, value: float) -> None:
        """A metric with one value (shown in the summary table)."""
        self.report_scalar("Summary", name, value, 0)

    # -- text and console ------------------------------------------------------------------
    def report_text(
        self, msg: Any, level: int = logging.INFO, print_console: bool = True, *args: Any, **_: Any
    ) -> None:
        text = str(msg)
        if print_console:
            stream = sys.__stdout__ if level < logging.WARNING else sys.__stderr__
            if stream is not None:
                stream.write(text + "\n")
        self._log_lines(text.splitlines() or [""], logging.getLevelName(level).lower())

    def _log_lines(self, texts: list[str], level: str) -> None:
        now = time.time()
        lines = [LogLine(self._task_id, t, level, now) for t in texts]
        with self._lock:
            self._lines.extend(lines)
            self._added(len(self._lines))

    # -- tables, plots, images -------------------------------------------------------------
    def _event(
        self, kind: str, title: str, series: str, iteration: int | None, payload: str
    ) -> None:
        ev = Event(
            self._task_id, kind, str(title), str(series), int(iteration or 0), payload, time.time()
        )
        with self._lock:
            self._events.append(ev)
            self._added(len(self._events))

    def report_table(
        self,
        title: str,
        series: str,
        iteration: int | None = None,
        table_plot: Any = None,
        csv: str | None = None,
        url: str | None = None,
        extra_layout: dict[str, Any] | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> None:
        """A table from a pandas DataFrame, a list of rows (first row = header), or CSV."""
        if csv is not None or url is not None:
            import pandas as pd

            table_plot = pd.read_csv(csv or url)
        if table_plot is None:
            raise ValueError(f"report_table({title!r}, {series!r}): give table_plot, csv or url")
        if hasattr(table_plot, "to_dict") and hasattr(table_plot, "columns"):
            frame = table_plot.reset_index()
            columns = [str(c) for c in frame.columns]
            rows = frame.astype(object).where(frame.notna(), None).values.tolist()
        else:
            data = [list(r) for r in table_plot]
            columns, rows = [str(c) for c in data[0]], data[1:]
        payload = {"columns": columns, "rows": rows, "layout": extra_layout or {}}
        self._event("table", title, series, iteration, json.dumps(payload, default=str))

    def report_plotly(
        self, title: str, series: str, figure: Any, iteration: int | None = None
    ) -> None:
        """A plotly figure (a ``plotly.graph_objects.Figure`` or its dict), stored as JSON."""
        if hasattr(figure, "to_plotly_json"):
            figure = figure.to_plotly_json()
        self._event("plot", title, series, iteration, json.dumps(figure, default=_json_default))

    def report_scatter2d(
        self,
        title: str,
        series: str,
        scatter: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        mode: str = "lines",
        **_: Any,
    ) -> None:
        pts = [list(p) for p in scatter]
        fig = {
            "data": [
                {
                    "type": "scatter",
                    "mode": mode,
                    "name": series,
                    "x": [p[0] for p in pts],
                    "y": [p[1] for p in pts],
                }
            ],
            "layout": {"title": title, "xaxis": {"title": xaxis}, "yaxis": {"title": yaxis}},
        }
        self.report_plotly(title, series, fig, iteration)

    def report_histogram(
        self,
        title: str,
        series: str,
        values: Any,
        iteration: int | None = None,
        labels: list[str] | None = None,
        xlabels: list[str] | None = None,
        **_: Any,
    ) -> None:
        vals = [float(v) for v in values]
        fig = {
            "data": [
                {
                    "type": "bar",
                    "name": series,
                    "y": vals,
                    "x": xlabels if xlabels else list(range(len(vals))),
                }
            ],
            "layout": {"title": title},
        }
        self.report_plotly(title, series, fig, iteration)

    def report_image(
        self,
        title: str,
        series: str,
        iteration: int | None = None,
        local_path: str | None = None,
        image: Any = None,
        matplotlib_figure: Any = None,
        max_image_history: int | None = None,
        delete_after_upload: bool = False,
        url: str | None = None,
    ) -> None:
        """An image from a file, a PIL image, a numpy array (HxW or HxWxC, uint8) or a
        matplotlib figure; stored inline as a PNG data URL (or as the given ``url``)."""
        if url is not None:
            self._event("image", title, series, iteration, url)
            return
        if matplotlib_figure is not None:
            self.report_matplotlib_figure(title, series, matplotlib_figure, iteration)
            return
        if local_path is not None:
            with open(local_path, "rb") as f:
                data = f.read()
            mime = "image/png" if local_path.lower().endswith(".png") else "image/jpeg"
        elif image is not None:
            data, mime = _png_bytes(image), "image/png"
        else:
            raise ValueError(f"report_image({title!r}, {series!r}): give local_path, image or url")
        payload = f"data:{mime};base64," + base64.b64encode(data).decode()
        self._event("image", title, series, iteration, payload)

    def report_matplotlib_figure(
        self,
        title: str,
        series: str,
        figure: Any,
        iteration: int | None = None,
        report_image: bool = True,
        report_interactive: bool = False,
    ) -> None:
        """A matplotlib figure (or the ``pyplot`` module: its current figure), as a PNG."""
        fig = figure.gcf() if hasattr(figure, "gcf") else figure
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        payload = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        self._event("image", title, series, iteration, payload)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _png_bytes(image: Any) -> bytes:
    if hasattr(image, "save"):  # PIL
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, image, format="png")
    return buf.getvalue()


class ConsoleCapture(io.TextIOBase):
    """Wraps ``sys.stdout`` / ``sys.stderr``: everything still reaches the terminal, and each
    complete line also goes to the task's log."""

    def __init__(self, stream: TextIO, logger: Logger, level: str) -> None:
        self._stream = stream
        self._logger = logger
        self._level = level
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        with self._lock:
            text = self._partial + s
            if "\n" in text:
                *lines, self._partial = text.split("\n")
                self._logger._log_lines([ln.rstrip("\r") for ln in lines], self._level)
            else:
                self._partial = text
        return len(s) if n is None else n

    def flush(self) -> None:
        self._stream.flush()

    def flush_partial(self) -> None:
        with self._lock:
            if self._partial:
                self._logger._log_lines([self._partial], self._level)
                self._partial = ""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def original(self) -> TextIO:
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: Set by an agent for the processes it runs: the runner captures file descriptors 1 and 2
#: (``FdCapture``) instead of ``sys.stdout``/``sys.stderr``.
ENV_CONSOLE_FDS = "STEPLINE_CONSOLE_FDS"


class FdCapture:
    """Routes everything written to this process's file descriptors 1 and 2 into the task's
    log: ``print``, C extensions, and the subprocesses the task starts. The output still goes
    where those descriptors went before (the agent's console)."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger
        self._saved: list[tuple[int, int]] = []
        self._threads: list[threading.Thread] = []
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, level in ((1, "info"), (2, "error")):
            keep = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved.append((fd, keep))
            thread = threading.Thread(
                target=self._pump, args=(read_end, keep, level), daemon=True,
                name=f"stepline-console-{fd}",
            )  # fmt: skip
            thread.start()
            self._threads.append(thread)
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                try:
                    reconfigure(line_buffering=True)
                except (OSError, ValueError):
                    pass
        atexit.register(self.close)

    def _pump(self, fd: int, echo: int, level: str) -> None:
        partial = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            try:
                os.write(echo, chunk)
            except OSError:
                pass
            *lines, partial = (partial + chunk).split(b"\n")
            if lines:
                self._logger._log_lines(
                    [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines], level
                )
        if partial:
            self._logger._log_lines([partial.decode("utf-8", "replace")], level)
        os.close(fd)

    def close(self) -> None:
        """Give the descriptors back and wait (briefly) for the last lines."""
        if not self._saved:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        saved, self._saved = self._saved, []
        for fd, keep in saved:
            os.dup2(keep, fd)  # the pipe's last writer here closes: its reader sees EOF
        for thread in self._threads:
            thread.join(timeout=1.0)  # a child process may still hold the pipe
        if not any(thread.is_alive() for thread in self._threads):
            for _fd, keep in saved:
                os.close(keep)
