"""The training task of the custom pipeline: a logistic regression on iris.

Its hyper-parameters ``C`` and ``max_iter`` are connected in section ``General``; run as a clone
by an agent, the values stored on the clone replace the defaults below. It reports the
validation accuracy as scalar ``accuracy``/``validation`` and stores two artifacts: ``result``
(the parameters and the score) and ``confusion_matrix``.

search.py uses this script's task as the template of its trials.

Run it on its own:   python examples/custom_pipeline/train.py
"""

from data import load_split  # a local module: it travels with the task
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix

from stepline import Task

task = Task.init(project_name="examples", task_name="custom pipeline: train")
params = task.connect({"C": 1.0, "max_iter": 200})
print(f"parameters: {params}")

X_train, X_valid, y_train, y_valid = load_split()
model = LogisticRegression(C=params["C"], max_iter=params["max_iter"])
model.fit(X_train, y_train)
predicted = model.predict(X_valid)
accuracy = float((predicted == y_valid).mean())
print(f"validation accuracy: {accuracy:.4f}")

task.get_logger().report_scalar("accuracy", "validation", accuracy, iteration=0)
task.upload_artifact("result", {**params, "accuracy": accuracy})
task.upload_artifact("confusion_matrix", confusion_matrix(y_valid, predicted))
