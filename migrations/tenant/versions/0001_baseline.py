"""Baseline of the tenant tree.

Tenant schemas are created from the current models and stamped at head (tenants/services.py), never
by replaying this history, so the baseline has nothing to do: it marks where the history starts.
Later revisions move existing tenants forward; each must leave a schema exactly as the models now
create it (tests/tenants/test_schema_revisions.py checks that for every revision after this one).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
