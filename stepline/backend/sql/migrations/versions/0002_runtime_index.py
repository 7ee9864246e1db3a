"""Index runtime properties by key and value, so a step's cache key is found at once.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_runtime_key_value", "task_runtime", ["key", "value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_task_runtime_key_value", table_name="task_runtime")
