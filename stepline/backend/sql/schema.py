"""The tables of the task store. Alembic migrations (``migrations/versions``) create and evolve
them; ``tests/backend/test_migrations.py`` checks that the migrated schema equals this one."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

ID = String(32)

projects = Table(
    "projects",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(512), nullable=False, unique=True),
    Column("parent_id", ID, ForeignKey("projects.id"), nullable=True),
    Column("created", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", String(512), nullable=False),
    Column("type", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("status_message", Text, nullable=False, default=""),
    Column("status_reason", Text, nullable=False, default=""),
    Column("comment", Text, nullable=False, default=""),
    Column("parent_id", ID, nullable=True),
    Column("user", String(256), nullable=False, default=""),
    Column("script", JSON, nullable=False),
    Column("created", Float, nullable=False),
    Column("started", Float, nullable=True),
    Column("completed", Float, nullable=True),
    Column("last_update", Float, nullable=False),
    Column("archived", Boolean, nullable=False, default=False),
    Column("published", Boolean, nullable=False, default=False),
    Index("ix_tasks_project_name", "project_id", "name"),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_parent", "parent_id"),
    Index("ix_tasks_created", "created"),
    Index("ix_tasks_last_update", "last_update"),
)


def _child(name: str, *cols: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("task_id", ID, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        *cols,
    )


task_tags = _child("task_tags", Column("tag", String(256), primary_key=True))
Index("ix_task_tags_tag", task_tags.c.tag)

task_params = _child(
    "task_params",
    Column("section", String(256), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("value", Text, nullable=False),
    Column("type", String(64), nullable=False),
    Column("description", Text, nullable=False),
)

task_configs = _child(
    "task_configs",
    Column("name", String(256), primary_key=True),
    Column("value", Text, nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("description", Text, nullable=False),
)

task_runtime = _child(
    "task_runtime",
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)
#: Finds tasks by a runtime property, e.g. the step cache key.
Index("ix_task_runtime_key_value", task_runtime.c.key, task_runtime.c.value)

artifacts = _child(
    "artifacts",
    Column("name", String(512), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("url", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("preview", Text, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("created", Float, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(512), nullable=False),
    Column("url", Text, nullable=False),
    Column("framework", String(128), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("created", Float, nullable=False),
    Index("ix_models_task", "task_id"),
)

scalars = Table(
    "scalars",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("title", String(256), nullable=False),
    Column("series", String(256), nullable=False),
    Column("iteration", BigInteger, nullable=False),
    #: NULL is NaN (SQLite cannot store NaN; PostgreSQL could, but its min/max would be NaN)
    Column("value", Float, nullable=True),
    Column("timestamp", Float, nullable=False),
    Index("ix_scalars_task", "task_id", "title", "series", "iteration"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("title", String(256), nullable=False),
    Column("series", String(256), nullable=False),
    Column("iteration", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("timestamp", Float, nullable=False),
    Index("ix_events_task", "task_id", "kind"),
)

log = Table(
    "log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("level", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("timestamp", Float, nullable=False),
    Index("ix_log_task", "task_id", "id"),
)

queues = Table(
    "queues",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("created", Float, nullable=False),
)

queue_entries = Table(
    "queue_entries",
    metadata,
    Column("task_id", ID, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("queue_id", ID, ForeignKey("queues.id", ondelete="CASCADE"), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("enqueued", Float, nullable=False),
    Index("ix_queue_entries_order", "queue_id", "priority", "enqueued"),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("queues", JSON, nullable=False),
    Column("host", String(256), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("timeout", Float, nullable=False),
    Column("running", JSON, nullable=False),
    Column("info", JSON, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("last_used", Float, nullable=True),
    Column("revoked", Float, nullable=True),
)
