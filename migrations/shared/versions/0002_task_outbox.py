"""Transactional outbox: tasks queued by committed work until the broker has them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "shared"


def upgrade():
    op.create_table(
        "task_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("args", pg.JSONB(), nullable=False),
        sa.Column("tenant_id", sa.Uuid()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_task_outbox"),
        schema=S,
        comment="Tasks queued by committed work, deleted once the broker has them.",
    )
    op.create_index("ix_task_outbox_created_at", "task_outbox", ["created_at"], schema=S)


def downgrade():
    op.drop_index("ix_task_outbox_created_at", "task_outbox", schema=S)
    op.drop_table("task_outbox", schema=S)
