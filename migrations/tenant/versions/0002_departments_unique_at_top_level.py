"""Department names are unique among siblings at the top level too (NULLS NOT DISTINCT).

A plain UNIQUE (parent_id, name) lets two top-level departments share a name, because NULL parents
are distinct to PostgreSQL. A tenant that already has such duplicates fails this step with a clear
unique-violation, stays at 0001 and is reported by `courtyard migrate`; rename one and re-run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE departments DROP CONSTRAINT uq_departments_parent_id_name")
    op.execute("ALTER TABLE departments ADD CONSTRAINT uq_departments_parent_id_name "
               "UNIQUE NULLS NOT DISTINCT (parent_id, name)")


def downgrade():
    op.execute("ALTER TABLE departments DROP CONSTRAINT uq_departments_parent_id_name")
    op.execute("ALTER TABLE departments ADD CONSTRAINT uq_departments_parent_id_name UNIQUE (parent_id, name)")
