"""Pipeline step 2: split the data set of step 1 into train and test parts.

In the pipeline, ``dataset_url`` is set to the URL of step 1's "dataset" artifact and
``test_size`` is overridden; run on its own, the script reads the artifact of the latest
"pipeline step 1 dataset artifact" task instead.

Run it:   python examples/pipeline_from_tasks/step2_process_dataset.py
"""

import pandas as pd
from sklearn.model_selection import train_test_split

from stepline import StorageManager, Task

task = Task.init(project_name="examples", task_name="pipeline step 2 process dataset")

# Connected parameters: stored on the task, and replaced by the stored values (with the types
# of these defaults) when the task is run by a pipeline.
args = {
    "dataset_url": "",
    "test_size": 0.2,
    "random_state": 42,
}
task.connect(args)
print(f"parameters: {args}")

if args["dataset_url"]:
    local_file = StorageManager.get_local_copy(args["dataset_url"])
else:
    source = Task.get_task(project_name="examples", task_name="pipeline step 1 dataset artifact")
    local_file = source.artifacts["dataset"].get_local_copy()
table = pd.read_parquet(local_file)
print(f"read {len(table)} rows from {local_file}")

features = table.drop(columns=["target"]).to_numpy()
labels = table["target"].to_numpy()
X_train, X_test, y_train, y_test = train_test_split(
    features,
    labels,
    test_size=args["test_size"],
    random_state=args["random_state"],
    stratify=labels,
)
print(f"split: {len(X_train)} rows to train on, {len(X_test)} to test on")

task.upload_artifact("X_train", X_train)
task.upload_artifact("X_test", X_test)
task.upload_artifact("y_train", y_train)
task.upload_artifact("y_test", y_test)
print(f"train and test arrays stored by task {task.id}")
