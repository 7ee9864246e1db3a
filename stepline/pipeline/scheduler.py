"""The one scheduler: decides which step runs when, for every execution mode.

Policy
------
* A step is **ready** when every parent is done and succeeded (completed or cached). A parent
  that failed (or was aborted) skips its children unless it was added with
  ``continue_on_fail`` (``continue_on_abort``) and ``skip_children_on_fail=False``
  (``..._on_abort``); a skipped parent skips its children.
* Ready steps launch in the order they were added, at most ``executor.max_workers`` at once.
  Launching asks the hooks (the controller) for a task: a new one, a cached one (the step is
  ``cached`` at once), or none (``pre_execute_callback`` said no: the step is skipped).
* A failed step is retried while its ``retry_on_failure`` allows. Otherwise it marks the run
  failed unless ``continue_on_fail``; with ``abort_on_failure`` every running step is killed
  and every pending step skipped.
* Time limits (per step and for the whole run) are deadlines in the loop: a step past its
  limit is killed and fails; a run past its limit is stopped and fails.
* Stops made from outside (the command line, the web UI, another process: see
  ``pipeline.actions``) are seen by a look at the store every ``LOOK_INTERVAL`` seconds: the
  ``look`` the scheduler is given reads the run's task and its running steps' tasks at once.
  When the run's task has ended, the run stops as ``stop()`` stops it (running steps killed,
  pending ones skipped). When a running step's task was stopped, that step is killed and
  ends ``aborted``, which fails the run unless the step has ``continue_on_abort``.

State and events
----------------
The scheduler runs in one thread and owns the nodes' run state. Executors and other threads
talk to it only through ``_events`` (a finished task, a stop, a node added by a dynamic
pipeline), so a finished step wakes the loop at once; the only timeout is the next deadline
(or the next look at the store).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stepline.core.status import TaskStatus
from stepline.pipeline.dag import FINAL, SUCCEEDED, Node, NodeStatus
from stepline.pipeline.executors import Executor
from stepline.pipeline.views import last_line

#: Seconds between looks at the store for stops made from outside the run.
LOOK_INTERVAL = 0.5


@dataclass
class Outside:
    """What one look at the store found ended by someone else."""

    #: the run's own task has ended: its status and why
    run: tuple[TaskStatus, str] | None = None
    #: running step tasks that were stopped: task id -> why
    steps: dict[str, str] = field(default_factory=dict)


class LocalRun(Protocol):
    """A step run by code of this process rather than by the executor (a pipeline used as a
    step of a decorator pipeline runs its logic here)."""

    def run(self) -> tuple[TaskStatus, str]: ...

    def stop(self, reason: str) -> None: ...


@dataclass
class Launch:
    """What the hooks decided for a ready step."""

    task_id: str | None = None  #: run this task
    cached: bool = False  #: task_id is an earlier task whose outputs are reused
    skip: bool = False  #: do not run the step (its children are skipped)
    #: task_id was started by an earlier attempt of the run and is queued or running: follow it
    adopt: bool = False
    #: what the step's status message says about it (default: for a cached step, which task)
    note: str = ""
    local: LocalRun | None = None  #: run the task by calling this instead of the executor


class StepHooks(Protocol):
    """What the scheduler needs from a pipeline (the controller implements it)."""

    def launch(self, node: Node) -> Launch: ...

    def relaunch(self, node: Node) -> None:
        """Make the node's task runnable again (a retry)."""

    def should_retry(self, node: Node) -> bool: ...

    def end_task(self, node: Node, status: TaskStatus, reason: str) -> None:
        """Record on the node's task that it ended (killed, or its process died)."""

    def task_status(self, task_id: str) -> tuple[TaskStatus, str]: ...

    def on_status(self, node: Node, previous: NodeStatus) -> None: ...

    def on_finished(self, node: Node) -> None: ...


@dataclass
class Outcome:
    failed: bool = False
    aborted: bool = False
    reason: str = ""


@dataclass
class _Running:
    node: Node
    deadline: float | None
    killed: str = ""  #: why it was killed, once it was
    kill_status: TaskStatus = TaskStatus.failed
    local: LocalRun | None = None


@dataclass
class _Done:
    task_id: str
    status: TaskStatus | None
    detail: str


@dataclass
class _Started:
    task_id: str


@dataclass
class _Stop:
    reason: str
    failed: bool


@dataclass
class _Add:
    node: Node


@dataclass
class _Close:
    pass


@dataclass
class _State:
    running: dict[str, _Running] = field(default_factory=dict)  #: by task id
    stopping: bool = False
    outcome: Outcome = field(default_factory=Outcome)


class Scheduler:
    def __init__(
        self,
        nodes: dict[str, Node],
        executor: Executor,
        hooks: StepHooks,
        *,
        abort_on_failure: bool = False,
        time_limit: float | None = None,
        dynamic: bool = False,
        on_error: Callable[[Node, BaseException], None] | None = None,
        look: Callable[[Sequence[str]], Outside] | None = None,
    ) -> None:
        self.nodes = nodes
        self.executor = executor
        self.hooks = hooks
        self.abort_on_failure = abort_on_failure
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.time_limit = time_limit
        self.dynamic = dynamic
        self._closed = not dynamic
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._state = _State()
        #: nodes still pending, in the order they were added (only these are scanned)
        self._pending: dict[str, Node] = {
            n.name: n for n in nodes.values() if n.status == NodeStatus.pending
        }
        for node in self._pending.values():
            self._hint(node)
        self._on_error = on_error
        self._look = look
        self._next_look = time.monotonic() + LOOK_INTERVAL
        self.finished = threading.Event()
        executor.on_started = lambda task_id: self._events.put(_Started(task_id))

    # -- thread-safe entry points ------------------------------------------------------------
    def stop(self, reason: str = "stopped by the user", failed: bool = False) -> None:
        self._events.put(_Stop(reason, failed))

    def add_node(self, node: Node) -> None:
        self._events.put(_Add(node))

    def close(self) -> None:
        """A dynamic pipeline will add no more nodes."""
        self._events.put(_Close())

    def _done(self, task_id: str, status: TaskStatus | None, detail: str) -> None:
        self._events.put(_Done(task_id, status, detail))

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            while True:
                self._launch_ready()
                if not self._state.running and self._closed and self._all_final():
                    break
                timeout = self._timeout()
                try:
                    event = self._events.get(timeout=timeout)
                except queue.Empty:
                    event = None
                while event is not None:
                    self._handle(event)
                    try:
                        event = self._events.get_nowait()
                    except queue.Empty:
                        event = None
                self._check_deadlines()
                self._look_outside()
        finally:
            self.finished.set()
        return self._state.outcome

    def _timeout(self) -> float | None:
        deadlines = [
            r.deadline for r in self._state.running.values() if r.deadline and not r.killed
        ]
        if not self._state.stopping:
            if self._look is not None:
                deadlines.append(self._next_look)
            if self.deadline is not None:
                deadlines.append(self.deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic()) + 0.001

    def _all_final(self) -> bool:
        return all(n.status in FINAL for n in self.nodes.values())

    def _handle(self, event: Any) -> None:
        if isinstance(event, _Done):
            self._finish(event)
        elif isinstance(event, _Started):
            run = self._state.running.get(event.task_id)
            if run is not None and run.node.status == NodeStatus.queued:
                run.node.job_started = time.time()
                if run.node.timeout and not run.killed:  # the time limit counts from here
                    run.deadline = time.monotonic() + run.node.timeout
                self._set(run.node, NodeStatus.running)
        elif isinstance(event, _Stop):
            self._stop_all(event.reason, failed=event.failed, aborted=not event.failed)
        elif isinstance(event, _Add):
            self.nodes[event.node.name] = event.node
            if event.node.status == NodeStatus.pending:
                self._pending[event.node.name] = event.node
                self._hint(event.node)
        elif isinstance(event, _Close):
            self._closed = True

    def _hint(self, node: Node) -> None:
        if node.function is not None and node.call is None:
            try:
                self.executor.hint(node.function.source)
            except Exception:  # only an optimisation
                pass

    def _set(self, node: Node, status: NodeStatus, message: str = "") -> None:
        previous = node.status
        node.status = status
        if status != NodeStatus.pending:
            self._pending.pop(node.name, None)
        if message:
            node.status_message = message
        if status in FINAL and node.job_ended is None and node.job_started is not None:
            node.job_ended = time.time()
        if previous != status:
            self._guard(node, self.hooks.on_status, node, previous)

    def _guard(self, node: Node, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a hook; an exception from user code fails the step instead of the loop."""
        try:
            return fn(*args)
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(node, exc)
            return None

    # -- launching ---------------------------------------------------------------------------
    def _parents_verdict(self, node: Node) -> str:
        """'wait', 'skip' or 'go'."""
        verdict = "go"
        for name in node.parents:
            parent = self.nodes.get(name)
            if parent is None:
                return "wait" if not self._closed else "skip"
            st = parent.status
            if st not in FINAL:
                verdict = "wait"
            elif st in SUCCEEDED:
                continue
            elif st == NodeStatus.failed:
                if not (parent.continue_on_fail and not parent.skip_children_on_fail):
                    return "skip"
            elif st == NodeStatus.aborted:
                if not (parent.continue_on_abort and not parent.skip_children_on_abort):
                    return "skip"
            else:
                return "skip"
        return verdict

    def _launch_ready(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in list(self._pending.values()):
                if node.status != NodeStatus.pending:
                    self._pending.pop(node.name, None)
                    continue
                if self._state.stopping:
                    node.executed = False
                    self._set(node, NodeStatus.skipped, "the run was stopped")
                    changed = True
                    continue
                verdict = self._parents_verdict(node)
                if verdict == "wait":
                    continue
                if verdict == "skip":
                    node.executed = False
                    self._set(node, NodeStatus.skipped, "a parent step did not succeed")
                    changed = True
                    continue
                if len(self._state.running) >= self.executor.max_workers:
                    return
                self._launch(node)
                changed = True

    def _launch(self, node: Node) -> None:
        try:
            plan = self.hooks.launch(node)
        except Exception as exc:
            node.executed = node.executed or None
            self._fail(node, f"could not start: {exc}")
            return
        if plan.skip:
            node.executed = False
            self._set(node, NodeStatus.skipped, "skipped by its pre_execute_callback")
            return
        assert plan.task_id is not None
        node.executed = plan.task_id
        if plan.cached:
            self._set(node, NodeStatus.cached, plan.note or f"reused task {plan.task_id}")
            self._guard(node, self.hooks.on_finished, node)
            return
        self._submit(node, plan.task_id, plan.local, adopt=plan.adopt)

    def _submit(
        self, node: Node, task_id: str, local: LocalRun | None = None, adopt: bool = False
    ) -> None:
        node.job_started = time.time()
        node.job_ended = None
        deadline = time.monotonic() + node.timeout if node.timeout else None
        self._state.running[task_id] = _Running(node, deadline, local=local)
        queued = local is None and self.executor.queues
        if not queued:
            self._set(node, NodeStatus.running)
        try:
            if local is not None:
                threading.Thread(
                    target=self._run_local, args=(task_id, local), daemon=True,
                    name=f"stepline-{node.name}",
                ).start()  # fmt: skip
                return
            self.executor.submit(
                task_id, self._done, is_function=node.is_function, queue=node.queue, adopt=adopt
            )
            if queued:  # once the task is on its queue (its start is an event after this)
                self._set(node, NodeStatus.queued)
        except Exception as exc:
            self._state.running.pop(task_id, None)
            self.hooks.end_task(node, TaskStatus.failed, f"could not start: {exc}")
            self._fail(node, f"could not start: {exc}")

    def _run_local(self, task_id: str, local: LocalRun) -> None:
        try:
            status, detail = local.run()
        except BaseException as exc:
            status, detail = TaskStatus.failed, f"{type(exc).__name__}: {exc}"
        self._done(task_id, status, detail)

    # -- finishing ---------------------------------------------------------------------------
    def _finish(self, event: _Done) -> None:
        run = self._state.running.pop(event.task_id, None)
        if run is None:
            return
        node = run.node
        status, reason = event.status, event.detail
        if run.killed:
            self.hooks.end_task(node, run.kill_status, run.killed)
            status, reason = run.kill_status, run.killed
        elif status is None:
            status, stored_reason = self.hooks.task_status(event.task_id)
            if status not in (TaskStatus.completed, TaskStatus.failed, TaskStatus.stopped):
                # the process ended without recording an end: it died
                why = reason or "the step's process ended without reporting a result"
                self.hooks.end_task(node, TaskStatus.failed, why)
                status, reason = TaskStatus.failed, why
            else:
                reason = stored_reason or reason
        if status == TaskStatus.completed:
            self._set(node, NodeStatus.completed)
            self._guard(node, self.hooks.on_finished, node)
        elif status == TaskStatus.stopped:
            if not run.killed:  # stopped by someone else: maybe with the whole run, look now
                self._next_look = 0.0
            self._set(node, NodeStatus.aborted, last_line(reason) or "aborted")
            self._guard(node, self.hooks.on_finished, node)
            if not node.continue_on_abort and not self._state.stopping:
                self._run_failed(f"step {node.name!r} was aborted")
        else:
            if not run.killed and run.local is None and self._retry(node, event.task_id):
                return
            self._fail(node, reason)

    def _retry(self, node: Node, task_id: str) -> bool:
        if self._state.stopping or not self._guard(node, self.hooks.should_retry, node):
            return False
        node.retries += 1
        try:
            self.hooks.relaunch(node)
        except Exception as exc:
            node.status_message = f"could not retry: {exc}"
            return False
        self._submit(node, task_id)
        return True

    def _fail(self, node: Node, reason: str) -> None:
        self._set(node, NodeStatus.failed, last_line(reason))
        self._guard(node, self.hooks.on_finished, node)
        if node.continue_on_fail:
            return
        self._run_failed(f"step {node.name!r} failed: {last_line(reason)}")
        if self.abort_on_failure:
            self._stop_all(f"aborted because step {node.name!r} failed", failed=True)

    def _run_failed(self, reason: str) -> None:
        out = self._state.outcome
        if not out.failed:
            out.failed = True
            out.reason = reason

    def _stop_all(self, reason: str, *, failed: bool, aborted: bool = False) -> None:
        state = self._state
        if state.stopping:
            return
        state.stopping = True
        if failed:
            self._run_failed(reason)
        if aborted:
            state.outcome.aborted = True
            state.outcome.reason = state.outcome.reason or reason
        for task_id, run in list(state.running.items()):
            if not run.killed:
                run.killed = reason
                run.kill_status = TaskStatus.stopped
                self._kill(task_id, run)
        for node in self.nodes.values():
            if node.status == NodeStatus.pending:
                node.executed = False
                self._set(node, NodeStatus.skipped, reason)

    def _kill(self, task_id: str, run: _Running) -> None:
        if run.local is not None:
            run.local.stop(run.killed)  # it ends, and reports, on its own
            return
        self.executor.kill(task_id)
        if not self.executor.can_kill:
            # a thread cannot be killed: the step is abandoned and ends as recorded now
            self._done(task_id, run.kill_status, run.killed)

    def _look_outside(self) -> None:
        """Every ``LOOK_INTERVAL`` seconds: act on stops made from outside (module docstring)."""
        if self._look is None or self._state.stopping:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + LOOK_INTERVAL
        running = [task_id for task_id, run in self._state.running.items() if not run.killed]
        try:
            seen = self._look(running)
        except Exception:  # the store cannot be read now: the next look tries again
            return
        if seen.run is not None:
            status, reason = seen.run
            why = reason or f"the run's task was {status.value} from outside"
            failed = status == TaskStatus.failed
            self._stop_all(why, failed=failed, aborted=not failed)
            # the run's end is why its steps ended (a step it saw aborted first included)
            out = self._state.outcome
            out.failed, out.aborted, out.reason = failed, not failed, why
            return
        for task_id, reason in seen.steps.items():
            run = self._state.running.get(task_id)
            if run is not None and not run.killed:
                run.killed = reason or "aborted"
                run.kill_status = TaskStatus.stopped
                self._kill(task_id, run)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline and not self._state.stopping:
            limit = self.time_limit or 0
            self._stop_all(f"the pipeline's time limit of {limit:g} s was exceeded", failed=True)
        for task_id, run in list(self._state.running.items()):
            if run.deadline is not None and now >= run.deadline and not run.killed:
                run.killed = f"the step's time limit of {run.node.timeout:g} s was exceeded"
                run.kill_status = TaskStatus.failed
                self._kill(task_id, run)
