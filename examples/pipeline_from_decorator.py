"""A pipeline written as plain Python functions with ``@PipelineDecorator``.

    load_dataset  ->  split_dataset  ->  train_model  ->  score_model

``@PipelineDecorator.component`` makes each function a step: a call inside the pipeline
function returns at once a placeholder for its result, and the step runs in the background as a
task of its own that stores its code, arguments and results. Passing a placeholder to the next
component makes that step wait for this one; using it (``print``, arithmetic) waits for the
value. ``@PipelineDecorator.pipeline`` makes ``main`` the pipeline; its arguments are stored as
the run's arguments. The data steps are cached: a rerun with the same code and arguments reuses
their earlier tasks.

Run it:   python examples/pipeline_from_decorator.py            (each step in a process of its own)
          python examples/pipeline_from_decorator.py --debug    (steps in threads of this process)
Then see: stepline pipelines list   /   stepline pipelines show <run id>
"""

import sys

from stepline import PipelineDecorator, TaskTypes


@PipelineDecorator.component(
    return_values=["data_frame"], cache=True, task_type=TaskTypes.data_processing
)
def load_dataset(n_rows: int = 0):
    # imported inside the step: in local mode it runs its stored code in a process of its own
    from sklearn.datasets import load_iris

    data_frame = load_iris(as_frame=True).frame
    if n_rows:
        data_frame = data_frame.head(n_rows)
    print(f"iris: {len(data_frame)} rows, columns {list(data_frame.columns)}")
    return data_frame


@PipelineDecorator.component(
    return_values=["X_train", "X_test", "y_train", "y_test"],
    cache=True,
    task_type=TaskTypes.data_processing,
)
def split_dataset(data_frame, test_size: float = 0.25, random_state: int = 42):
    from sklearn.model_selection import train_test_split

    y = data_frame["target"]
    X = data_frame.drop(columns=["target"])
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=random_state, stratify=y
    )
    print(f"split: {len(X_train)} rows to train on, {len(X_test)} to test on")
    return X_train, X_test, y_train, y_test


@PipelineDecorator.component(return_values=["model"], task_type=TaskTypes.training)
def train_model(X_train, y_train, max_iter: int = 500):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=max_iter)
    model.fit(X_train, y_train)
    print(f"trained on {len(X_train)} rows, classes {model.classes_.tolist()}")
    return model


@PipelineDecorator.component(
    return_values=["accuracy"], task_type=TaskTypes.qc, monitor_metrics=[("accuracy", "test")]
)
def score_model(model, X_test, y_test):
    from sklearn.metrics import accuracy_score

    from stepline import Logger

    accuracy = float(accuracy_score(y_test, model.predict(X_test)))
    Logger.current_logger().report_scalar("accuracy", "test", accuracy, 0)
    return accuracy


@PipelineDecorator.pipeline(
    name="pipeline demo (decorator)", project="examples", version="1.0.0", return_value="accuracy"
)
def main(test_size: float = 0.25, max_iter: int = 500):
    data_frame = load_dataset()
    X_train, X_test, y_train, y_test = split_dataset(data_frame, test_size=test_size)
    model = train_model(X_train, y_train, max_iter=max_iter)
    accuracy = score_model(model, X_test, y_test)
    print(f"accuracy: {100 * accuracy:.1f}%")  # waits for score_model, then loads its value
    run = PipelineDecorator.get_current_pipeline()
    print(f"details: stepline pipelines show {run.id}")
    return accuracy


if __name__ == "__main__":
    if "--debug" in sys.argv[1:]:
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally()
    main()
