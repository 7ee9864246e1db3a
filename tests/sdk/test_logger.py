from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from stepline.sdk import logger as logger_mod
from stepline.sdk.logger import ConsoleCapture
from stepline.sdk.task import Task


@pytest.fixture
def task(home: Path) -> Task:
    return Task.create(project_name="p", task_name="reports")


def test_scalars_are_buffered_then_flushed(task: Task) -> None:
    log = task.get_logger()
    for i in range(10):
        log.report_scalar("loss", "train", 10 - i, i)
        log.report_scalar("loss", "val", 20 - i, i)
    assert task._backend.get_scalars(task.id) == []  # still in the buffer
    log.flush()
    scalars = task.get_reported_scalars()
    assert scalars["loss"]["train"] == {
        "x": list(range(10)),
        "y": [float(10 - i) for i in range(10)],
    }
    last = task.get_last_scalar_metrics()["loss"]["val"]
    assert last == {"last": 11.0, "min": 11.0, "max": 20.0, "iteration": 9}


def test_a_full_batch_is_written_at_once(task: Task) -> None:
    log = task.get_logger()
    for i in range(logger_mod.BATCH):
        log.report_scalar("m", "s", i, i)
    assert len(task._backend.get_scalars(task.id)) == logger_mod.BATCH


def test_old_buffers_are_flushed_in_the_background(task: Task) -> None:
    task.get_logger().report_scalar("m", "s", 1.0, 0)
    deadline = time.monotonic() + 10 * logger_mod.FLUSH_SECONDS
    while not task._backend.get_scalars(task.id):
        assert time.monotonic() < deadline, "the background flush never wrote the point"
        time.sleep(0.05)


def test_single_value_text_table_plot_and_image(task: Task) -> None:
    log = task.get_logger()
    log.report_single_value("accuracy", 0.9)
    log.report_text("hello\nworld", print_console=False)
    log.report_table("t", "s", 0, table_plot=pd.DataFrame({"a": [1, None]}, index=["r1", "r2"]))
    log.report_table("rows", "s", 0, table_plot=[["x", "y"], [1, 2]])
    log.report_plotly("p", "s", {"data": [{"type": "scatter", "x": [1], "y": [2]}]}, 3)
    log.report_scatter2d("sc", "s", [[0, 1], [1, 2]], 0, xaxis="x", yaxis="y")
    log.report_histogram("h", "s", [1, 2, 3], 0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    log.report_matplotlib_figure("fig", "s", fig, 1)
    plt.close(fig)
    log.flush()

    assert task.get_last_scalar_metrics()["Summary"]["accuracy"]["last"] == 0.9
    assert task.get_reported_console_output() == ["hello", "world"]
    events = task._backend.get_events(task.id)
    kinds = [(e.kind, e.title) for e in events]
    assert kinds == [
        ("table", "t"),
        ("table", "rows"),
        ("plot", "p"),
        ("plot", "sc"),
        ("plot", "h"),
        ("image", "fig"),
    ]
    table = json.loads(events[0].payload)
    assert table["columns"] == ["index", "a"]
    assert table["rows"] == [["r1", 1.0], ["r2", None]]
    assert json.loads(events[1].payload)["rows"] == [[1, 2]]
    assert events[2].iteration == 3
    assert events[5].payload.startswith("data:image/png;base64,")
    plots = task.get_reported_plots()
    assert [p["metric"] for p in plots] == ["p", "sc", "h"]


def test_console_capture_tees_lines(task: Task) -> None:
    out = io.StringIO()
    cap = ConsoleCapture(out, task.get_logger(), "info")  # type: ignore[arg-type]
    cap.write("first line\nsecond ")
    cap.write("part\r\nno newline yet")
    assert out.getvalue() == "first line\nsecond part\r\nno newline yet"
    cap.flush_partial()
    task.flush()
    assert task.get_reported_console_output() == ["first line", "second part", "no newline yet"]
