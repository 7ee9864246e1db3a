"""A tracked task: parameters, a dataset artifact, metrics and console output.

Run it:   python examples/task_example.py
Then see: stepline tasks list   /   stepline tasks show <id>
"""

import argparse

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from stepline import Task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args()

    task = Task.init(project_name="examples", task_name="iris logistic regression")
    params = task.connect({"test_size": 0.25, "random_state": 42, "C": 1.0})
    print(f"training with {params} and max_iter={args.max_iter}")

    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=params["test_size"], random_state=params["random_state"]
    )
    task.upload_artifact("train_features", x_train)
    task.upload_artifact("classes", {"names": list(iris.target_names)})

    logger = task.get_logger()
    for iteration, c in enumerate((0.01, 0.1, params["C"])):
        model = LogisticRegression(C=c, max_iter=args.max_iter)
        model.fit(x_train, y_train)
        accuracy = float(np.mean(model.predict(x_test) == y_test))
        logger.report_scalar("accuracy", "test", accuracy, iteration)
        logger.report_scalar("regularization", "C", c, iteration)
        print(f"C={c}: test accuracy {accuracy:.3f}")
    task.upload_artifact("model", model)
    print(f"task {task.id} done")


if __name__ == "__main__":
    main()
