"""Pipeline step 1: store the iris data set as the artifact "dataset".

The data comes from the copy bundled with scikit-learn, so nothing is downloaded. Run this
script once by hand (or let pipeline_controller.py do it) so that the store holds a task the
pipeline can clone; each pipeline run then executes its own clone.

Run it:   python examples/pipeline_from_tasks/step1_dataset_artifact.py
"""

from sklearn.datasets import load_iris

from stepline import Task

task = Task.init(project_name="examples", task_name="pipeline step 1 dataset artifact")

# 150 rows: four measurement columns and the integer class in "target".
iris = load_iris(as_frame=True)
table = iris.frame
print(f"iris: {len(table)} rows, columns {list(table.columns)}")

# A DataFrame is stored as a Parquet file; the next step reads it back from the artifact URL.
task.upload_artifact("dataset", artifact_object=table)
print(f"artifact 'dataset' stored by task {task.id}")
