"""Task statuses, the transitions allowed between them, and task types.

A task moves created -> queued -> in_progress -> completed | failed | stopped.
``published`` and ``archived`` are flags on a task, not statuses it passes through.
Every status change in a store is one atomic compare-and-set against ``ALLOWED_FROM``.
"""

from __future__ import annotations

from enum import Enum


class TaskStatus(str, Enum):
    created = "created"
    queued = "queued"
    in_progress = "in_progress"
    stopped = "stopped"
    published = "published"
    publishing = "publishing"
    closed = "closed"
    failed = "failed"
    completed = "completed"
    unknown = "unknown"

    def __str__(self) -> str:
        return self.value


S = TaskStatus

#: new status -> the statuses a task may hold before moving to it.
ALLOWED_FROM: dict[TaskStatus, frozenset[TaskStatus]] = {
    # created again: dequeue, or an explicit reset of a finished task
    S.created: frozenset({S.queued, S.stopped, S.failed, S.completed}),
    S.queued: frozenset({S.created}),
    S.in_progress: frozenset({S.created, S.queued}),
    S.completed: frozenset({S.created, S.in_progress}),
    S.failed: frozenset({S.created, S.queued, S.in_progress}),
    S.stopped: frozenset({S.created, S.queued, S.in_progress}),
}

FINAL = frozenset({S.completed, S.failed, S.stopped})


def can_move(old: TaskStatus, new: TaskStatus) -> bool:
    return old in ALLOWED_FROM.get(new, frozenset())


class TaskTypes(str, Enum):
    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"

    def __str__(self) -> str:
        return self.value
