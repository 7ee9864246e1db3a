"""Metric values may be NaN (stored as NULL), and PostgreSQL tells listeners of changes.

On PostgreSQL, triggers send a notification on ``stepline_task`` whenever a task row is written,
on ``stepline_queue`` whenever a task is queued and on ``stepline_output`` whenever log lines,
metrics, events or artifacts are added, so agents waiting for work, controllers waiting for
steps and the server's live pages wake at once instead of polling (``backend.sql.notify``).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: tables whose new rows are "output" (one notification per statement, not per row)
OUTPUT_TABLES = ("log", "scalars", "events", "artifacts")

TRIGGERS = [
    """
CREATE OR REPLACE FUNCTION stepline_notify_task() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('stepline_task', NEW.id);
    RETURN NULL;
END $$ LANGUAGE plpgsql""",
    """
CREATE OR REPLACE FUNCTION stepline_notify_queue() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('stepline_queue', NEW.queue_id);
    RETURN NULL;
END $$ LANGUAGE plpgsql""",
    """
CREATE OR REPLACE FUNCTION stepline_notify_output() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('stepline_output', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION stepline_notify_task()",
    "CREATE TRIGGER queue_entries_notify AFTER INSERT ON queue_entries "
    "FOR EACH ROW EXECUTE FUNCTION stepline_notify_queue()",
    *(
        f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION stepline_notify_output()"
        for table in OUTPUT_TABLES
    ),
]

DROP_TRIGGERS = [
    *(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}" for table in OUTPUT_TABLES),
    "DROP FUNCTION IF EXISTS stepline_notify_output()",
    "DROP TRIGGER IF EXISTS queue_entries_notify ON queue_entries",
    "DROP TRIGGER IF EXISTS tasks_notify ON tasks",
    "DROP FUNCTION IF EXISTS stepline_notify_queue()",
    "DROP FUNCTION IF EXISTS stepline_notify_task()",
]


def upgrade() -> None:
    with op.batch_alter_table("scalars") as batch:
        batch.alter_column("value", existing_type=sa.Float(), nullable=True)
    if op.get_bind().dialect.name == "postgresql":
        for statement in TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DROP_TRIGGERS:
            op.execute(statement)
    op.execute("DELETE FROM scalars WHERE value IS NULL")
    with op.batch_alter_table("scalars") as batch:
        batch.alter_column("value", existing_type=sa.Float(), nullable=False)
