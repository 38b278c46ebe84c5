"""Outbox retries (attempts and backoff per row, a dead-letter table), and which client made a client.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "shared"


def upgrade():
    op.add_column("task_outbox", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"), schema=S)
    op.add_column("task_outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False,
                                           server_default=sa.func.now()), schema=S)
    op.add_column("task_outbox", sa.Column("last_error", sa.String(500)), schema=S)
    # Rows already waiting are due at once, oldest first, as before.
    op.execute(f"UPDATE {S}.task_outbox SET next_attempt_at = created_at")
    op.drop_index("ix_task_outbox_created_at", "task_outbox", schema=S)
    op.create_index("ix_task_outbox_next_attempt_at", "task_outbox", ["next_attempt_at"], schema=S)
    op.create_table(
        "task_dead_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("args", pg.JSONB(), nullable=False),
        sa.Column("tenant_id", sa.Uuid()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(500)),
        sa.Column("died_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_task_dead_letters"),
        schema=S,
        comment="Outbox tasks that could not be handed to the broker; `courtyard outbox`.",
    )
    op.create_index("ix_task_dead_letters_died_at", "task_dead_letters", ["died_at"], schema=S)
    # A client made through the API by another client is revoked with it.
    op.add_column("oauth_clients", sa.Column("created_by_client", sa.Uuid()), schema=S)
    op.create_index("ix_oauth_clients_created_by_client", "oauth_clients", ["created_by_client"], schema=S)


def downgrade():
    op.drop_index("ix_oauth_clients_created_by_client", "oauth_clients", schema=S)
    op.drop_column("oauth_clients", "created_by_client", schema=S)
    # Dead letters go back into the outbox rather than being lost with their table.
    op.execute(f"INSERT INTO {S}.task_outbox (id, task, args, tenant_id, created_at) "
               f"SELECT id, task, args, tenant_id, created_at FROM {S}.task_dead_letters")
    op.drop_index("ix_task_dead_letters_died_at", "task_dead_letters", schema=S)
    op.drop_table("task_dead_letters", schema=S)
    op.drop_index("ix_task_outbox_next_attempt_at", "task_outbox", schema=S)
    op.create_index("ix_task_outbox_created_at", "task_outbox", ["created_at"], schema=S)
    op.drop_column("task_outbox", "last_error", schema=S)
    op.drop_column("task_outbox", "next_attempt_at", schema=S)
    op.drop_column("task_outbox", "attempts", schema=S)
