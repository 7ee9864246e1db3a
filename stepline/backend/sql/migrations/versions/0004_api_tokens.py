"""Server API tokens (stored as sha256 hashes), and an index for "tasks changed since".

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("last_used", sa.Float(), nullable=True),
        sa.Column("revoked", sa.Float(), nullable=True),
    )
    op.create_index("ix_tasks_last_update", "tasks", ["last_update"])


def downgrade() -> None:
    op.drop_index("ix_tasks_last_update", "tasks")
    op.drop_table("api_tokens")
