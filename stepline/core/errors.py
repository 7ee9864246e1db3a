"""stepline's errors. Each one says what went wrong, on what, and what to do about it."""

from __future__ import annotations


class StepLineError(Exception):
    """Base class of every error stepline raises on purpose."""


class ConfigError(StepLineError):
    """The configuration (environment variables, URLs) is unusable."""


class NotFoundError(StepLineError, LookupError):
    """Something asked for by id or name does not exist."""


class TaskNotFoundError(NotFoundError):
    def __init__(self, task_id: str, hint: str = "") -> None:
        self.task_id = task_id
        msg = f"task {task_id!r} does not exist in this store"
        super().__init__(
            msg + (f"; {hint}" if hint else "; check the id with `stepline tasks list`")
        )


class InvalidTransitionError(StepLineError):
    def __init__(self, task_id: str, old: str, new: str) -> None:
        self.task_id, self.old, self.new = task_id, old, new
        super().__init__(
            f"task {task_id}: cannot change status from {old!r} to {new!r}; "
            "a finished task must be reset (task.reset()) or cloned (Task.clone) to run again"
        )


class ValidationError(StepLineError, ValueError):
    """A value given by the user is not acceptable."""


class UnsafePathError(ValidationError):
    """A name or path would leave the storage root."""


class ArtifactError(StepLineError):
    """An artifact could not be stored or read."""


class ArtifactNotFoundError(ArtifactError, NotFoundError):
    pass


class ArtifactCorruptError(ArtifactError):
    pass


class SerializationError(ArtifactError, TypeError):
    pass


class StoreError(StepLineError):
    """The store could not carry out an operation."""


class StoreLockedError(StoreError):
    pass


class StoreUnavailableError(StoreError):
    """The database could not be reached (it is down or restarting) for longer than the
    store waits, or the connection was cut while a commit was in flight."""


class ConflictError(StoreError):
    """The operation conflicts with what is already stored (e.g. a duplicate name)."""


class AuthError(StepLineError):
    """A stepline server refused the request's token (or it had none)."""


class RequestTooLargeError(ValidationError):
    """A request to a stepline server was larger than it accepts."""


def error_classes() -> dict[str, type[StepLineError]]:
    """Every stepline error class by name (to rebuild an error that crossed the wire)."""
    found: dict[str, type[StepLineError]] = {}
    todo: list[type[StepLineError]] = [StepLineError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
