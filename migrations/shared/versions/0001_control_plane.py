"""Control plane: tenants, fleet-migration results, OAuth clients and tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "shared"


def upgrade():
    op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("slug", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("schema_revision", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status_changed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
        sa.CheckConstraint("status IN ('active', 'suspended', 'deleted')", name="ck_tenants_status"),
        schema=S,
        comment="One row per enterprise; its data lives in schema t_<id hex>.",
    )
    op.create_index("ix_tenants_schema_revision", "tenants", ["schema_revision"], schema=S)
    op.create_table(
        "tenant_migrations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("target_revision", sa.String(64), nullable=False),
        sa.Column("from_revision", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_migrations"),
        sa.ForeignKeyConstraint(["tenant_id"], [f"{S}.tenants.id"], ondelete="CASCADE",
                                name="fk_tenant_migrations_tenant_id_tenants"),
        schema=S,
    )
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("secret_digest", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", pg.ARRAY(sa.String(64)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid()),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_clients"),
        sa.UniqueConstraint("client_id", name="uq_oauth_clients_client_id"),
        sa.ForeignKeyConstraint(["tenant_id"], [f"{S}.tenants.id"], ondelete="CASCADE",
                                name="fk_oauth_clients_tenant_id_tenants"),
        schema=S,
    )
    op.create_index("ix_oauth_clients_tenant_id", "oauth_clients", ["tenant_id"], schema=S)
    op.create_table(
        "oauth_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("scopes", pg.ARRAY(sa.String(64)), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_tokens"),
        sa.UniqueConstraint("token_digest", name="uq_oauth_tokens_token_digest"),
        sa.ForeignKeyConstraint(["tenant_id"], [f"{S}.tenants.id"], ondelete="CASCADE",
                                name="fk_oauth_tokens_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["client_pk"], [f"{S}.oauth_clients.id"], ondelete="CASCADE",
                                name="fk_oauth_tokens_client_pk_oauth_clients"),
        schema=S,
    )
    op.create_index("ix_oauth_tokens_client_pk", "oauth_tokens", ["client_pk"], schema=S)
    op.create_index("ix_oauth_tokens_tenant_id_expires_at", "oauth_tokens", ["tenant_id", "expires_at"], schema=S)


def downgrade():
    for table in ("oauth_tokens", "oauth_clients", "tenant_migrations", "tenants"):
        op.drop_table(table, schema=S)
