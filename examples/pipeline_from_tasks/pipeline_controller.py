"""A pipeline whose three steps are existing tasks, each cloned and run for every pipeline run.

    stage_data  ->  stage_process  ->  stage_train

The base tasks are made by the three step scripts of this folder. A fresh store has none, so
this script first runs each missing one once; after that, only the pipeline runs. Each step
runs as a child process of this one (run_pipeline_steps_locally=True).

Run it:   python examples/pipeline_from_tasks/pipeline_controller.py
Then see: stepline pipelines list   /   stepline pipelines show <run id>
"""

import os
import subprocess
import sys

from stepline import PipelineController, Task

PROJECT = "examples"
HERE = os.path.dirname(os.path.abspath(__file__))
# base task name -> the script that creates it, in the order they have to run
BASE_TASKS = {
    "pipeline step 1 dataset artifact": "step1_dataset_artifact.py",
    "pipeline step 2 process dataset": "step2_process_dataset.py",
    "pipeline step 3 train model": "step3_train_model.py",
}


def ensure_base_tasks() -> None:
    """Run each step script whose task is not stored yet, so the pipeline has tasks to clone."""
    for task_name, script in BASE_TASKS.items():
        try:
            Task.get_task(project_name=PROJECT, task_name=task_name)
            continue
        except (LookupError, ValueError):
            pass
        print(f"no task {task_name!r} in project {PROJECT!r} yet: running {script} once")
        subprocess.run([sys.executable, os.path.join(HERE, script)], check=True)


def main() -> None:
    ensure_base_tasks()

    pipe = PipelineController(name="pipeline demo", project=PROJECT, add_pipeline_tags=False)
    pipe.add_step(
        name="stage_data",
        base_task_project=PROJECT,
        base_task_name="pipeline step 1 dataset artifact",
    )
    pipe.add_step(
        name="stage_process",
        parents=["stage_data"],
        base_task_project=PROJECT,
        base_task_name="pipeline step 2 process dataset",
        # the clone reads step 1's artifact through its URL, with a larger test share
        parameter_override={
            "General/dataset_url": "${stage_data.artifacts.dataset.url}",
            "General/test_size": 0.25,
        },
    )
    pipe.add_step(
        name="stage_train",
        parents=["stage_process"],
        base_task_project=PROJECT,
        base_task_name="pipeline step 3 train model",
        # the id of the task that ran stage_process in this run (not of its base task)
        parameter_override={"General/dataset_task_id": "${stage_process.id}"},
        # copy the step's test accuracy onto the pipeline's own task
        monitor_metrics=[("accuracy", "test")],
    )

    succeeded = pipe.start_locally(run_pipeline_steps_locally=True)

    print()
    print(f"pipeline run {pipe.id} (version {pipe.version}): {'ok' if succeeded else 'FAILED'}")
    for node in pipe.get_pipeline_dag().values():
        task_id = node.executed if isinstance(node.executed, str) else "-"
        took = f"{node.duration:.1f}s" if node.duration is not None else "-"
        print(f"  {node.name:<14} {node.status.value:<10} {took:>7}  task {task_id}")
    if pipe.task is not None:
        accuracy = pipe.task.get_last_scalar_metrics().get("accuracy", {}).get("test", {})
        if "last" in accuracy:
            print(f"test accuracy: {accuracy['last']:.3f}")
    print(f"details: stepline pipelines show {pipe.id}")
    sys.exit(0 if succeeded else 1)


if __name__ == "__main__":
    main()
