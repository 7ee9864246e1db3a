"""Base task for a second stage: uploads what its connected dict received (values and types)."""

import os

from stepline import Task

task = Task.init(project_name="flow", task_name="stage2")
cfg = task.connect(
    {"x": "", "y": 0.0, "src": "", "src_x": "", "digest": "", "size": 0, "arg": 0, "note": ""}
)
received = dict(cfg)
task.upload_artifact(
    "received",
    {
        "values": received,
        "types": {k: type(v).__name__ for k, v in received.items()},
        "pid": os.getpid(),
    },
)
