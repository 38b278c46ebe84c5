"""Personal API tokens of staff users, beside the OAuth tokens in the control plane.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "shared"


def upgrade():
    op.create_table(
        "personal_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["shared.tenants.id"], ondelete="CASCADE",
                                name="fk_personal_tokens_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_personal_tokens"),
        sa.UniqueConstraint("token_digest", name="uq_personal_tokens_token_digest"),
        schema=S,
    )
    op.create_index("ix_personal_tokens_tenant_id_user_id", "personal_tokens", ["tenant_id", "user_id"], schema=S)


def downgrade():
    op.drop_index("ix_personal_tokens_tenant_id_user_id", "personal_tokens", schema=S)
    op.drop_table("personal_tokens", schema=S)
