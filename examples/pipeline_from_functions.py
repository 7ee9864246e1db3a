"""The pipeline of examples/pipeline_from_tasks/, with plain Python functions as its steps.

    load_data  ->  split_data  ->  train

Each function becomes a step task that stores its code, its arguments and its return values
(``function_return``); a later step receives them through ``"${step.name}"`` arguments. The
data step is cached: a rerun with the same code and arguments reuses its earlier task instead
of running it again. ``test_size`` is an argument of the pipeline itself (``add_parameter``).

Run it:   python examples/pipeline_from_functions.py
Then see: stepline pipelines list   /   stepline pipelines show <run id>
"""

import sys

from stepline import PipelineController


def load_dataset():
    # imported inside the step: the step runs its stored code in a process of its own
    from sklearn.datasets import load_iris

    table = load_iris(as_frame=True).frame
    print(f"iris: {len(table)} rows")
    return table


def split_dataset(table, test_size=0.2, random_state=42):
    from sklearn.model_selection import train_test_split

    features = table.drop(columns=["target"]).to_numpy()
    labels = table["target"].to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=random_state, stratify=labels
    )
    print(f"split: {len(X_train)} rows to train on, {len(X_test)} to test on")
    return X_train, X_test, y_train, y_test


def train_model(X_train, X_test, y_train, y_test):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from stepline import Logger

    model = LogisticRegression(max_iter=500)
    model.fit(X_train, y_train)
    accuracy = float(np.mean(model.predict(X_test) == y_test))
    Logger.current_logger().report_scalar("accuracy", "test", accuracy, 0)
    print(f"test accuracy: {accuracy:.3f}")
    return model, accuracy


def main() -> None:
    pipe = PipelineController(
        name="pipeline demo (functions)", project="examples", add_pipeline_tags=False
    )
    pipe.add_parameter("test_size", 0.25, description="share of the rows kept for testing")

    pipe.add_function_step(
        name="load_data",
        function=load_dataset,
        function_return=["table"],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        name="split_data",
        function=split_dataset,
        function_kwargs={"table": "${load_data.table}", "test_size": "${pipeline.test_size}"},
        function_return=["X_train", "X_test", "y_train", "y_test"],
    )
    pipe.add_function_step(
        name="train",
        function=train_model,
        function_kwargs={
            "X_train": "${split_data.X_train}",
            "X_test": "${split_data.X_test}",
            "y_train": "${split_data.y_train}",
            "y_test": "${split_data.y_test}",
        },
        function_return=["model", "accuracy"],
        monitor_metrics=[("accuracy", "test")],
    )

    succeeded = pipe.start_locally(run_pipeline_steps_locally=True)

    print()
    print(f"pipeline run {pipe.id} (version {pipe.version}): {'ok' if succeeded else 'FAILED'}")
    for node in pipe.get_pipeline_dag().values():
        task_id = node.executed if isinstance(node.executed, str) else "-"
        took = f"{node.duration:.1f}s" if node.duration is not None else "-"
        reused = "  (reused from an earlier run)" if node.cached_from else ""
        print(f"  {node.name:<11} {node.status.value:<10} {took:>7}  task {task_id}{reused}")
    print(f"details: stepline pipelines show {pipe.id}")
    sys.exit(0 if succeeded else 1)


if __name__ == "__main__":
    main()
