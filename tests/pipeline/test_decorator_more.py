"""Decorator pipelines: numpy scalar arguments, nested steps with continue_on_fail, and what
a retry runs in debug mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.pipeline import deco_more_steps as steps


def test_numpy_scalar_arguments_keep_their_types(mode: str) -> None:
    result = steps.numpy_args_pipeline()
    bool_name = type(np.bool_(True)).__name__  # "bool" in numpy 2, "bool_" before
    assert result == {
        "int64": ["int64", 6],
        "float32": ["float32", 3.0],
        "float64": ["float64", 4.5],
        bool_name: [bool_name, 2],
    }


def test_nested_step_with_continue_on_fail_gives_none(mode: str) -> None:
    assert steps.nested_continue_pipeline(x=4) == [4, None]


def test_a_retry_runs_the_same_code_as_the_first_attempt(mode: str, tmp_path: Path) -> None:
    where = steps.retry_where_pipeline(str(tmp_path / "marker"))
    if mode == "debug":  # the user's own function, so breakpoints in it work on retries too
        assert where == "deco_more_steps.py"
    else:  # the step's stored code
        assert where.startswith("<step where_am_i")
