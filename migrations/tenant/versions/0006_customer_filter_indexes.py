"""Customers: indexes for the list's most used filters (region, industry, level), in name order.

A filtered list counts its matches (exactly up to 10,000). Without an index on the filter, that count
reads the whole table, and a customer row is wide (its search vector alone is ~1.3 kB): bench/crm.py
measured a sequential scan of every customer for "region = beijing" on each request. With
(field, sort_key, id) the count is an index range and the first page in name order an ordered index
scan, as the owner and department indexes already do for the data scope.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FIELDS = ("region", "industry", "level")


def upgrade():
    for name in FIELDS:
        op.execute(f"CREATE INDEX ix_customers_{name} ON customers ({name}, sort_key, id) WHERE deleted_at IS NULL")


def downgrade():
    for name in FIELDS:
        op.execute(f"DROP INDEX ix_customers_{name}")
