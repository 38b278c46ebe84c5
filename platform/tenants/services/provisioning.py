"""The tenant registry and the life of a tenant: provisioning, renaming, suspending, deleting."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import TenantBase, bind_tenant, release, tenant_options, utcnow
from core.errors import Conflict, TenantGoneError, TenantUnavailable
from core.i18n import _l, shown
from core.permissions import Actor, default_grants
from core.security import hash_password
from core.tasks import DeadTask, OutboxTask
from core.tenancy import BoundTenant, schema_for, validate_slug
from tenants import permissions as perms
from tenants.errors import SlugTaken, TenantNotFound
from tenants.migrator import tenant_head
from tenants.models import OAuthClient, OAuthToken, PersonalToken, Role, Tenant, User
from tenants.services.auditing import audit
from tenants.services.common import bound, check_password, clean_email, clean_name

#: Called with the new tenant's session after its schema, roles and admin exist: higher floors (the
#: CRM's dictionaries) seed their data here without tenants importing them.
PROVISION_HOOKS: list[Callable[[Session], None]] = []


def find_tenant(session: Session, slug: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.slug == slug))


def get_tenant(session: Session, slug: str) -> Tenant:
    tenant = find_tenant(session, slug)
    if tenant is None:
        raise TenantNotFound(_l("No tenant '%(slug)s'.", slug=shown(slug)))
    return tenant



def usable(tenant: Tenant | BoundTenant | None) -> BoundTenant:
    """The tenant a request may work for: unknown → 404, suspended/deleted → refused before any data."""
    if tenant is None:
        raise TenantNotFound(_l("No such workspace."))
    if tenant.status == "suspended":
        raise TenantUnavailable(_l("This workspace is suspended. Contact your administrator."))
    if tenant.status == "deleted":
        raise TenantGoneError(_l("This workspace has been deleted."))
    return bound(tenant)


def list_tenants(session: Session, *, include_deleted: bool = False) -> list[Tenant]:
    stmt = select(Tenant).order_by(Tenant.slug)
    if not include_deleted:
        stmt = stmt.where(Tenant.status != "deleted")
    return list(session.scalars(stmt))


def seats_used(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.active.is_(True))) or 0


@dataclass(frozen=True, slots=True)
class Provisioned:
    tenant: Tenant
    admin: User


def create_schema(session: Session, tenant: BoundTenant) -> None:
    """Create the schema, then its tables in separate statements (Citus needs them apart)."""
    conn = session.connection()
    conn.exec_driver_sql(f'CREATE SCHEMA "{tenant.schema}"')
    bound_conn = conn.execution_options(**tenant_options(tenant))
    TenantBase.metadata.create_all(bound_conn, checkfirst=False)
    conn.exec_driver_sql(
        f'CREATE TABLE "{tenant.schema}".alembic_version (version_num VARCHAR(32) NOT NULL '
        f"CONSTRAINT alembic_version_pkc PRIMARY KEY)")
    conn.exec_driver_sql(f'INSERT INTO "{tenant.schema}".alembic_version VALUES (%(v)s)',
                         {"v": tenant_head()})


def seed_roles(session: Session) -> dict[str, Role]:
    roles = {}
    for key, (name, name_zh, permissions) in perms.DEFAULT_ROLES.items():
        granted = sorted({*permissions, *default_grants(key)})
        role = Role(key=key, name=name, name_zh=name_zh, permissions=granted, builtin=True,
                    data_scope=perms.DEFAULT_SCOPES[key])
        session.add(role)
        roles[key] = role
    session.flush()
    return roles


def provision(session: Session, actor: Actor, *, slug: str, name: str, admin_email: str, admin_password: str,
              admin_name: str | None = None, tenant_id: uuid.UUID | None = None) -> Provisioned:
    """Register a tenant, create its schema at head and its first admin: all in the caller's transaction.

    Nothing is half-created: the registry row, the schema and the admin commit together or not at all.
    """
    slug = validate_slug((slug or "").strip())
    name = clean_name(name, "name")
    email = clean_email(admin_email)
    # A name given is checked (never silently cut); the default from the address may be shortened.
    admin_name = clean_name(admin_name) if admin_name else email.split("@")[0][:200]
    # Hashed before the first statement: argon2 must not run inside the open transaction.
    release(session)
    password_hash = hash_password(check_password(admin_password))
    if find_tenant(session, slug) is not None:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=slug),
                        field_errors={"slug": [_l("Already taken.")]})
    tenant = Tenant(slug=slug, name=name, status="active", schema_revision=tenant_head())
    if tenant_id is not None:
        tenant.id = tenant_id
    session.add(tenant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=slug),
                        field_errors={"slug": [_l("Already taken.")]}) from None
    bt = bound(tenant)
    create_schema(session, bt)
    tsession = bind_tenant(session, bt)
    roles = seed_roles(tsession)
    admin = User(email=email, name=admin_name, password_hash=password_hash, role_id=roles["admin"].id)
    tsession.add(admin)
    tsession.flush()
    for hook in PROVISION_HOOKS:
        hook(tsession)
    audit(tsession, actor, "tenant.provisioned", "tenant", tenant.id, after={"slug": slug, "name": name})
    tsession.flush()
    return Provisioned(tenant, admin)


def rename_tenant(session: Session, slug: str, new_slug: str) -> Tenant:
    tenant = get_tenant(session, slug)
    if tenant.status == "deleted":
        # The tombstone keeps its slug reserved; moving it would free the old URLs for someone else.
        raise Conflict(_l("Tenant '%(slug)s' is deleted; it cannot be renamed.", slug=slug))
    new_slug = validate_slug(new_slug)
    if find_tenant(session, new_slug) is not None:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=new_slug))
    tenant.slug = new_slug
    session.flush()
    return tenant


def set_status(session: Session, slug: str, status: str) -> Tenant:
    tenant = get_tenant(session, slug)
    if tenant.status == "deleted":
        raise Conflict(_l("Tenant '%(slug)s' is deleted; it cannot be %(status)s.", slug=slug, status=status))
    tenant.status = status
    tenant.status_changed_at = utcnow()
    session.flush()
    return tenant


def delete_tenant(session: Session, slug: str) -> Tenant:
    """Drop the tenant's schema and keep a tombstone row, so its old URLs answer "deleted"."""
    tenant = get_tenant(session, slug)
    if tenant.status != "deleted":
        session.connection().exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema_for(tenant.id)}" CASCADE')
    tenant.status = "deleted"
    tenant.status_changed_at = utcnow()
    session.execute(update(OAuthToken).where(OAuthToken.tenant_id == tenant.id, OAuthToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    session.execute(update(OAuthClient).where(OAuthClient.tenant_id == tenant.id,
                                              OAuthClient.revoked_at.is_(None)).values(revoked_at=utcnow()))
    session.execute(update(PersonalToken).where(PersonalToken.tenant_id == tenant.id,
                                                PersonalToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    # Queued tasks would only find the tenant gone; their arguments (mail text) should go with it.
    session.execute(delete(OutboxTask).where(OutboxTask.tenant_id == tenant.id))
    session.execute(delete(DeadTask).where(DeadTask.tenant_id == tenant.id))
    session.flush()
    return tenant
