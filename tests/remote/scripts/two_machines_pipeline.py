"""A decorator pipeline for the two-machine test: calling ``main`` queues the pipeline on
``services`` and exits; an agent of ``services`` runs the logic, and the steps go to
``default``. ``make`` returns a numpy array, which travels to ``total`` as an artifact."""

from stepline import PipelineDecorator


@PipelineDecorator.component(return_values=["matrix"], cache=False)
def make(n):
    import numpy as np

    return np.arange(n * n, dtype="float64").reshape(n, n)


@PipelineDecorator.component(return_values=["total"], cache=False)
def total(matrix):
    return float(matrix.sum())


@PipelineDecorator.pipeline(name="two-machines", project="server-tests", version="1.0.0")
def main(n=3):
    matrix = make(n)
    result = total(matrix)
    print(f"total {result}")
    return result


if __name__ == "__main__":
    main(n=300)
