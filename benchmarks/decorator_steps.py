"""The components and pipelines that ``bench_decorator.py`` runs.

A component's stored code repeats this module's top-level imports (each guarded), and every
step runs that code, so the only import here is the decorator itself, which the fork server
has already imported.
"""

from stepline.pipeline.decorator import PipelineDecorator


@PipelineDecorator.component(return_values=["out"])
def add_one(x: int):  # the step: its source is stored, and run from there
    return x + 1


@PipelineDecorator.pipeline(name="decorator-chain", project="bench")
def chain(steps: int):
    """``x = add_one(x)`` ``steps`` times from 0: each step waits for the one before (its
    input is the previous result, by reference). Returns ``steps``."""
    x = 0
    for _ in range(steps):
        x = add_one(x)
    return x


@PipelineDecorator.pipeline(name="decorator-fan-out", project="bench")
def fan_out(steps: int):
    """``steps`` independent calls ``add_one(i)``, then the logic sums the results (waiting for
    each). Returns ``steps * (steps + 1) // 2``."""
    results = [add_one(i) for i in range(steps)]
    return sum(results)
