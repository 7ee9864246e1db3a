"""Agents (workers that claim queued tasks), and the queues every home starts with.

Revision ID: 0003
Revises: 0002
"""

import time
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Every home has these: steps go to ``default`` unless told otherwise, controllers to
#: ``services``.
SEEDED_QUEUES = ("default", "services")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
    )
    queues = sa.table(
        "queues", sa.column("id", sa.String), sa.column("name", sa.String),
        sa.column("created", sa.Float),
    )  # fmt: skip
    conn = op.get_bind()
    have = {row[0] for row in conn.execute(sa.select(queues.c.name))}
    rows = [
        {"id": uuid.uuid4().hex, "name": name, "created": time.time()}
        for name in SEEDED_QUEUES
        if name not in have
    ]
    if rows:
        op.bulk_insert(queues, rows)


def downgrade() -> None:
    op.drop_table("agents")
