"""The control plane (shared schema) and staff identity (each tenant's schema)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ARRAY, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import SharedBase, TenantBase, TenantRecord, utcnow, uuid7, uuid_pk
from core.permissions import all_names, known

# --------------------------------------------------------------------------- control plane


class Tenant(SharedBase):
    __tablename__ = "tenants"

    id: Mapped[uuid_pk]
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    #: The tenant tree revision its schema is at; changed in the same transaction as the DDL.
    schema_revision: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())
    status_changed_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_tenants_schema_revision", "schema_revision"),
        {"comment": "One row per enterprise; its data lives in schema t_<id hex>."},
    )


class TenantMigration(SharedBase):
    """One tenant's result in a fleet migration run: what `courtyard migrate` reports and resumes."""

    __tablename__ = "tenant_migrations"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared.tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    target_revision: Mapped[str] = mapped_column(String(64))
    from_revision: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # done | failed
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[uuid.UUID]
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class OAuthClient(SharedBase):
    """A machine client bound to one tenant; its secret is stored only as a digest."""

    __tablename__ = "oauth_clients"

    id: Mapped[uuid_pk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared.tenants.id", ondelete="CASCADE"),
                                                 index=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_digest: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: The staff user who made it (an id in the tenant's schema: no foreign key across schemas).
    created_by: Mapped[uuid.UUID | None]
    #: The client that made it through the API; revoking that client revokes this one too.
    created_by_client: Mapped[uuid.UUID | None] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None]


class OAuthToken(SharedBase):
    __tablename__ = "oauth_tokens"

    id: Mapped[uuid_pk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared.tenants.id", ondelete="CASCADE"))
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared.oauth_clients.id", ondelete="CASCADE"),
                                                 index=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_oauth_tokens_tenant_id_expires_at", "tenant_id", "expires_at"),
        # What the hourly purge deletes by (tenants.tasks.purge_expired_tokens).
        Index("ix_oauth_tokens_expires_at", "expires_at"),
        Index("ix_oauth_tokens_revoked_at", "revoked_at", postgresql_where=text("revoked_at IS NOT NULL")),
    )


class PersonalToken(SharedBase):
    """A staff user's own API token: it acts as that user (their role, their data scope), nothing more.

    In the control plane beside the OAuth tokens, so a request finds its tenant and its token in one
    query; the user is an id in the tenant's schema (no foreign key across schemas). Only the digest is
    stored; ``prefix`` (the token's first characters) lets the owner tell their tokens apart.
    """

    __tablename__ = "personal_tokens"

    id: Mapped[uuid_pk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared.tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Written at most once a minute (tenants.context): a busy script must not write on every call.
    last_used_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_personal_tokens_tenant_id_user_id", "tenant_id", "user_id"),)


# --------------------------------------------------------------------------- tenant schema


class Role(TenantRecord, TenantBase):
    __tablename__ = "roles"

    key: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str] = mapped_column(String(100), default="", server_default="")
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    builtin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    #: own | department | subtree | all (tenants.permissions.DATA_SCOPES): which records its users see.
    data_scope: Mapped[str] = mapped_column(String(16), default="own", server_default="own")

    @property
    def effective_permissions(self) -> frozenset[str]:
        """What the role may really do: the administrator role holds every function, always."""
        if self.key == "admin":
            return all_names()
        return frozenset(p for p in self.permissions if known(p))


class Department(TenantRecord, TenantBase):
    __tablename__ = "departments"

    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.departments.id", ondelete="RESTRICT"),
                                                        index=True)
    sort_order: Mapped[int] = mapped_column(default=0, server_default="0")

    # NULLS NOT DISTINCT: two top-level departments (parent NULL) with one name are duplicates too.
    __table_args__ = (UniqueConstraint("parent_id", "name", postgresql_nulls_not_distinct=True),)


class User(TenantRecord, TenantBase):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    role_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.roles.id", ondelete="RESTRICT"), index=True)
    department_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenant.departments.id", ondelete="SET NULL"), index=True)
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    locale: Mapped[str | None] = mapped_column(String(8))
    last_login_at: Mapped[dt.datetime | None]
    deactivated_at: Mapped[dt.datetime | None]

    role: Mapped[Role] = relationship(lazy="joined")

    @property
    def role_key(self) -> str:
        """The role's key, as read-only views (services.view_user) carry it too."""
        return self.role.key

    __table_args__ = (Index("uq_users_email_lower", func.lower(text("email")), unique=True),)


class Invitation(TenantRecord, TenantBase):
    __tablename__ = "invitations"

    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    role_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.roles.id", ondelete="CASCADE"))
    department_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenant.departments.id", ondelete="SET NULL"))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime]
    accepted_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class PasswordReset(TenantBase):
    __tablename__ = "password_resets"

    id: Mapped[uuid_pk]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.users.id", ondelete="CASCADE"), index=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class AuditEntry(TenantBase):
    """Append-only: who did what, when, with the record before and after.

    Entries are never updated, so they carry no version; ``id`` is a uuid7 and sorts by time.
    """

    __tablename__ = "audit_log"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    actor_id: Mapped[uuid.UUID | None]
    actor_label: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id"),)
