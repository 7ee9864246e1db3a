"""A custom pipeline: a random search over the ``C`` of ``train.py``, run by agents.

No DAG here: the logic is plain Python around four task calls, the "custom pipeline" of the
reference (clone a template task, change its parameters, enqueue it, wait, act on its outputs):

    template "custom pipeline: train"
        --Task.clone--> trial i  --update_parameters(General/C)--> Task.enqueue(queue)
        --wait_for_status--> get_last_scalar_metrics()["accuracy"]["validation"]

1. The template. If project ``examples`` has no task "custom pipeline: train", one is made
   with ``Task.create(script="train.py")``: a draft that stores the script and the local
   module it imports (``data.py``), so agents run the trials without these files. The newest
   task of that name is the template, with the code stored on it: after editing train.py, run
   it once (``python examples/custom_pipeline/train.py``) to make a new template.
2. ``--trials`` clones of it, each with a ``C`` drawn log-uniformly from [0.001, 10] (seeded:
   ``--seed``), queued on ``--queue``, children of this script's own task
   ("custom pipeline: search", type optimizer).
3. Wait for each trial, read its accuracy, print a table and the best ``C``; store them on the
   search task (table "trials", artifacts "trials" and "best").

Run it with an agent serving the queue:

    stepline agent --queue default                 # in another shell
    python examples/custom_pipeline/search.py --trials 5

or let the script start an agent for the run (and stop it at the end):

    python examples/custom_pipeline/search.py --local-agent

Then see: stepline tasks list --project examples   /   stepline tasks show <task id>
"""

import argparse
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from stepline import Task, TaskTypes

PROJECT = "examples"
TEMPLATE = "custom pipeline: train"
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Trial:
    index: int
    C: float
    task: Task
    accuracy: float | None = None
    error: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="random search over C of train.py")
    parser.add_argument("--trials", type=int, default=5, help="number of trials")
    parser.add_argument("--queue", default="default", help="queue the trials go to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw of C")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for all the trials"
    )
    parser.add_argument(
        "--local-agent",
        action="store_true",
        help="start an agent on --queue for this run (and stop it at the end)",
    )
    return parser.parse_args()


def get_template() -> Task:
    """The task the trials are cloned from; made from train.py on a fresh store."""
    try:
        return Task.get_task(project_name=PROJECT, task_name=TEMPLATE)
    except LookupError:
        pass
    print(f"no task {TEMPLATE!r} in project {PROJECT!r} yet: storing train.py as the template")
    return Task.create(
        project_name=PROJECT, task_name=TEMPLATE, script=os.path.join(HERE, "train.py")
    )


def draw_values(count: int, seed: int) -> list[float]:
    """``count`` different values of C, log-uniform in [0.001, 10], with 3 significant digits."""
    rng = random.Random(seed)
    values: list[float] = []
    while len(values) < count:
        value = float(f"{10 ** rng.uniform(-3, 1):.3g}")
        if value not in values:
            values.append(value)
    return values


@contextlib.contextmanager
def local_agent(queue: str):
    """A ``stepline agent`` serving ``queue``, in an empty folder of its own (so the trials
    can only run the code stored on them); stopped with SIGTERM at the end."""
    with tempfile.TemporaryDirectory(prefix="stepline-agent-") as folder:
        log_path = os.path.join(folder, "agent.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stepline.cli.main", "agent", "--queue", queue],
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        print(f"started a local agent (pid {proc.pid}) on queue {queue!r}")
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            print(f"stopped the local agent (exit code {code})")
            if code not in (0, -signal.SIGTERM):
                with open(log_path, errors="replace") as f:
                    print(f.read()[-3000:])


def wait_for(trial: Trial, deadline: float, agent: subprocess.Popen | None) -> None:
    """Wait until the trial ends; record its accuracy or why it has none."""
    while True:
        try:
            left = deadline - time.monotonic()
            trial.task.wait_for_status(check_interval_sec=1, timeout=max(0.1, min(5, left)))
            break
        except RuntimeError as exc:  # the trial failed
            trial.error = str(exc).splitlines()[0]
            return
        except TimeoutError:
            if agent is not None and agent.poll() is not None:
                raise RuntimeError(f"the local agent exited (code {agent.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result from trial {trial.index} after the --timeout")
    metrics = trial.task.get_last_scalar_metrics()
    accuracy = metrics.get("accuracy", {}).get("validation", {}).get("last")
    if accuracy is None or math.isnan(accuracy):
        trial.error = f"ended {trial.task.status} without an accuracy"
    else:
        trial.accuracy = accuracy


def cancel(trials: list[Trial]) -> None:
    """Take the trials that did not end off the queue, or stop them."""
    for trial in trials:
        status = trial.task.reload().status
        if status == "queued":
            Task.dequeue(trial.task)
        elif status == "in_progress":
            trial.task.mark_stopped()


def search(args: argparse.Namespace, task: Task, agent: subprocess.Popen | None) -> list[Trial]:
    template = get_template()
    print(f"template: task {template.id}")
    trials: list[Trial] = []
    done = False
    try:
        for i, value in enumerate(draw_values(args.trials, args.seed)):
            clone = Task.clone(template, name=f"{TEMPLATE} trial {i}", parent=task.id)
            clone.update_parameters({"General/C": value})
            Task.enqueue(clone, queue_name=args.queue)
            trials.append(Trial(i, value, clone))
            print(f"trial {i}: C={value!r} queued on {args.queue!r} as task {clone.id}")
        if agent is None:
            print(f"waiting for an agent on queue {args.queue!r} (stepline agent -q {args.queue})")
        deadline = time.monotonic() + args.timeout
        for trial in trials:
            wait_for(trial, deadline, agent)
        done = True
    finally:
        if not done:
            cancel(trials)
    return trials


def report(task: Task, trials: list[Trial]) -> Trial | None:
    """Print and store the trials; the best one (first of the highest accuracy)."""
    rows = [
        [t.index, t.task.id, t.C, t.accuracy if t.accuracy is not None else t.error] for t in trials
    ]
    print()
    print(f"{'trial':>5}  {'task':<32}  {'C':>8}  accuracy")
    for index, task_id, value, accuracy in rows:
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else accuracy
        print(f"{index:>5}  {task_id:<32}  {value:>8g}  {shown}")
    task.get_logger().report_table(
        "trials", "C vs accuracy", table_plot=[["trial", "task", "C", "accuracy"], *rows]
    )
    task.upload_artifact(
        "trials",
        [{"trial": i, "task": t, "C": c, "accuracy": a} for i, t, c, a in rows],
    )
    scored = [t for t in trials if t.accuracy is not None]
    if not scored:
        return None
    best = max(scored, key=lambda t: t.accuracy)
    print(f"best C: {best.C!r} (validation accuracy {best.accuracy:.4f}, task {best.task.id})")
    task.upload_artifact("best", {"C": best.C, "accuracy": best.accuracy, "task": best.task.id})
    task.get_logger().report_single_value("best accuracy", best.accuracy)
    return best


def main() -> None:
    task = Task.init(
        project_name=PROJECT, task_name="custom pipeline: search", task_type=TaskTypes.optimizer
    )
    args = parse_args()
    with local_agent(args.queue) if args.local_agent else contextlib.nullcontext() as agent:
        trials = search(args, task, agent)
    best = report(task, trials)
    print(f"search task {task.id}: stepline tasks show {task.id}")
    sys.exit(0 if best is not None else 1)


if __name__ == "__main__":
    main()
