"""Indexes for the hourly token purge: it deletes by expires_at and by revoked_at in bounded batches.

Revision ID: 0004
Revises: 0002 (another branch adds 0003; the chain is set when they meet)
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "shared"


def upgrade():
    op.create_index("ix_oauth_tokens_expires_at", "oauth_tokens", ["expires_at"], schema=S)
    # Only revoked tokens carry a revoked_at: the partial index stays as small as they are.
    op.create_index("ix_oauth_tokens_revoked_at", "oauth_tokens", ["revoked_at"], schema=S,
                    postgresql_where=sa.text("revoked_at IS NOT NULL"))


def downgrade():
    op.drop_index("ix_oauth_tokens_revoked_at", "oauth_tokens", schema=S)
    op.drop_index("ix_oauth_tokens_expires_at", "oauth_tokens", schema=S)
