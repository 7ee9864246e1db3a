"""Pipeline step 3: fit a logistic regression on the arrays of step 2 and score it.

In the pipeline, ``dataset_task_id`` is set to the id of the task that ran step 2; run on its
own, the script uses the latest "pipeline step 2 process dataset" task.

Run it:   python examples/pipeline_from_tasks/step3_train_model.py
"""

import numpy as np
from sklearn.linear_model import LogisticRegression

from stepline import Task

task = Task.init(project_name="examples", task_name="pipeline step 3 train model")

args = {"dataset_task_id": ""}
task.connect(args)
print(f"parameters: {args}")

if args["dataset_task_id"]:
    data_task = Task.get_task(task_id=args["dataset_task_id"])
else:
    data_task = Task.get_task(project_name="examples", task_name="pipeline step 2 process dataset")
print(f"reading the train and test arrays of task {data_task.id}")
X_train = data_task.artifacts["X_train"].get()
X_test = data_task.artifacts["X_test"].get()
y_train = data_task.artifacts["y_train"].get()
y_test = data_task.artifacts["y_test"].get()

model = LogisticRegression(max_iter=500)
model.fit(X_train, y_train)
accuracy = float(np.mean(model.predict(X_test) == y_test))
print(f"test accuracy: {accuracy:.3f}")

task.get_logger().report_scalar("accuracy", "test", accuracy, 0)
task.upload_artifact("model", model)
print(f"model stored by task {task.id}")
