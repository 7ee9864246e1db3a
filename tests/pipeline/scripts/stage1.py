"""Base task for a first stage: connects a dict and uploads artifact ``data``."""

from stepline import Task

task = Task.init(project_name="flow", task_name="stage1")
cfg = task.connect({"rows": 4, "x": "stage1-x"})
task.upload_artifact("data", {"rows": cfg["rows"], "values": list(range(cfg["rows"]))})
