"""On Citus, the outbox joins Citus's metadata so that it commits two-phase with the tenant rows.

A tenant's schema may live on a worker while ``shared`` stays on the coordinator. With the outbox a
plain local table, a transaction that writes both is committed on the worker first and on the
coordinator after: a crash in between keeps the tenant rows and loses the queued task. As a Citus
local table (still one shard, on the coordinator), the same transaction is committed with PREPARE
TRANSACTION / COMMIT PREPARED and recovered by Citus if a node dies in between.

Does nothing on plain PostgreSQL. A database that gets Citus later needs the same call once
(docs/scaling.md, "Setting it up").

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "shared.task_outbox"
COMMENT = "Tasks queued by committed work, deleted once the broker has them."  # as 0002 and the model say


def _citus_tracks_outbox(conn) -> bool | None:
    """None without Citus; else whether the outbox is already in its metadata."""
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first() is None:
        return None
    return conn.execute(text("SELECT 1 FROM pg_dist_partition WHERE logicalrelid = CAST(:t AS regclass)"),
                        {"t": TABLE}).first() is not None


def upgrade():
    conn = op.get_bind()
    if _citus_tracks_outbox(conn) is False:
        conn.execute(text("SELECT citus_add_local_table_to_metadata(:t)"), {"t": TABLE})
        # Citus 14.0.1 loses the table's comment on the way (the schema comparison test saw it).
        op.execute(f"COMMENT ON TABLE {TABLE} IS '{COMMENT}'")


def downgrade():
    conn = op.get_bind()
    if _citus_tracks_outbox(conn):
        conn.execute(text("SELECT undistribute_table(:t)"), {"t": TABLE})
        op.execute(f"COMMENT ON TABLE {TABLE} IS '{COMMENT}'")
