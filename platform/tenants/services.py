"""Business rules of the tenants domain: functions taking the session and the actor explicitly.

Services flush, never commit: the caller (request, task or command) owns the unit of work.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, RowMapping, any_, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from core.db import (
    AdvisoryLock,
    TenantBase,
    advisory_xact_lock,
    bind_tenant,
    release,
    tenant_options,
    text_problem,
    utcnow,
)
from core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TenantGoneError,
    TenantUnavailable,
    ValidationFailed,
)
from core.i18n import MAX_PARAM_CHARS, Message, _l, _ln, shown
from core.permissions import Actor, default_grants, known
from core.security import digest, hash_password, needs_rehash, new_secret, password_problem, verify_password
from core.tasks import DeadTask, OutboxTask
from core.tenancy import BoundTenant, schema_for, validate_slug
from tenants import permissions as perms
from tenants.errors import EmailTaken, InvalidToken, SlugTaken, TenantNotFound
from tenants.migrator import tenant_head
from tenants.models import (
    AuditEntry,
    Department,
    Invitation,
    OAuthClient,
    OAuthToken,
    PasswordReset,
    Role,
    Tenant,
    User,
)

EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")  # fullmatch: no trailing line break
INVITATION_TTL = dt.timedelta(days=7)
RESET_TTL = dt.timedelta(hours=2)
#: Called with the new tenant's session after its schema, roles and admin exist: higher floors (the
#: CRM's dictionaries) seed their data here without tenants importing them.
PROVISION_HOOKS: list[Callable[[Session], None]] = []


def bound(tenant: Tenant | BoundTenant) -> BoundTenant:
    if isinstance(tenant, BoundTenant):
        return tenant
    return BoundTenant(id=tenant.id, slug=tenant.slug, name=tenant.name, status=tenant.status)


def require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(_l("You need the '%(permission)s' permission for this.", permission=permission))


def clean_email(email: str) -> str:
    value = (email or "").strip()
    if not EMAIL_RE.fullmatch(value) or len(value) > 254 or text_problem(value):
        # Quoted short: the address may be anything a client sent, of any length.
        raise ValidationFailed(_l("'%(email)s' is not a valid e-mail address.", email=shown(value)),
                               field_errors={"email": [_l("Enter a valid e-mail address.")]})
    return value.lower()


#: How a field a service checks is named in its messages.
FIELD_LABELS = {"name": _l("Name")}
#: Control characters, and the Unicode line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def clean_name(value: str, field: str = "name", max_len: int = 200) -> str:
    value = (value or "").strip()
    label = FIELD_LABELS.get(field) or field.capitalize()
    if not value:
        raise ValidationFailed(_l("%(field)s is required.", field=label), field_errors={field: [_l("Required.")]})
    # The web refuses such text before a view runs; the CLI reaches here without that check.
    problem = text_problem(value)
    if problem == "nul":
        raise ValidationFailed(_l("%(field)s must not contain NUL characters.", field=label),
                               field_errors={field: [_l("Must not contain NUL characters.")]})
    if problem == "surrogate":
        raise ValidationFailed(_l("%(field)s is not valid UTF-8 text.", field=label),
                               field_errors={field: [_l("Not valid Unicode text.")]})
    if len(value) > max_len:
        raise ValidationFailed(
            _ln("%(field)s is too long (at most %(num)d character).",
                "%(field)s is too long (at most %(num)d characters).", max_len, field=label),
            field_errors={field: [_ln("At most %(num)d character.", "At most %(num)d characters.", max_len)]})
    if any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in value):
        # A name is one line: it goes into mail subjects, CSV cells and page titles.
        raise ValidationFailed(_l("%(field)s must not contain line breaks or other control characters.", field=label),
                               field_errors={field: [_l("Must be a single line without control characters.")]})
    return value


def check_password(password: str, field: str = "password") -> str:
    problem = password_problem(password or "")
    if problem:
        raise ValidationFailed(_l("Password refused: %(problem)s", problem=problem), field_errors={field: [problem]})
    return password


# --------------------------------------------------------------------------- audit


def snapshot(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = str(value) if isinstance(value, (uuid.UUID, dt.datetime)) else value
    return out


def audit(session: Session, actor: Actor, action: str, entity_type: str, entity_id: object | None,
          before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEntry:
    entry = AuditEntry(
        actor_id=actor.id if isinstance(actor.id, uuid.UUID) else None,
        actor_label=actor.label[:254],
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        before=before,
        after=after,
        request_id=actor.request_id,
        ip=actor.ip,
    )
    session.add(entry)
    return entry


def list_audit(session: Session, actor: Actor, *, limit: int = 50, before_id: uuid.UUID | None = None,
               entity_type: str | None = None) -> list[AuditEntry]:
    require(actor, perms.AUDIT_READ)
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(max(limit, 1), 500))
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if entity_type:
        stmt = stmt.where(AuditEntry.entity_type == entity_type)
    return list(session.scalars(stmt))


# --------------------------------------------------------------------------- registry


def find_tenant(session: Session, slug: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.slug == slug))


def get_tenant(session: Session, slug: str) -> Tenant:
    tenant = find_tenant(session, slug)
    if tenant is None:
        raise TenantNotFound(_l("No tenant '%(slug)s'.", slug=shown(slug)))
    return tenant


# Driver-level SQL (psycopg placeholders) for the lookups every request makes; see _driver_row.
_TENANT_BY_SLUG_SQL = "SELECT id, slug, name, status FROM shared.tenants WHERE slug = %(slug)s"
# A live token and its client: unknown, expired and revoked tokens (or clients) find nothing.
_LIVE_GRANT_SQL = """
    SELECT t.tenant_id, c.client_id, c.name AS client_name, t.scopes
    FROM shared.oauth_tokens t JOIN shared.oauth_clients c ON c.id = t.client_pk
    WHERE t.token_digest = %(digest)s AND t.revoked_at IS NULL AND t.expires_at > now()
      AND c.revoked_at IS NULL"""
# The tenant and, when the request carries one, its bearer token in one round trip. The token side is
# a LEFT JOIN on the token's own digest, so a token of another tenant still comes back (with its own
# tenant_id) and the caller answers it with the same 404 as an unknown object.
_TENANT_AND_TOKEN_SQL = f"""
    SELECT n.id, n.slug, n.name, n.status, k.tenant_id, k.client_id, k.client_name, k.scopes
    FROM shared.tenants n LEFT JOIN ({_LIVE_GRANT_SQL}) k ON true
    WHERE n.slug = %(slug)s"""


def _driver_row(source: Session | Connection, sql: str, params: dict[str, object]) -> tuple[Any, ...] | None:
    """One row straight from the driver, on the session's own connection and transaction, or on a
    connection of the caller's (``Database.reading``: outside any transaction).

    Only for the two control-plane lookups every request makes: SQLAlchemy's result machinery costs
    more CPU than these indexed queries themselves (bench/api.py); everything else goes through the ORM.
    """
    connection = source if isinstance(source, Connection) else source.connection()
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchone()  # type: ignore[no-any-return]
    except psycopg.OperationalError as exc:
        # What SQLAlchemy would do had it run the query: drop the dead connection from the pool and
        # report it as such (the app answers 503, the next request gets a fresh connection).
        if connection.connection.driver_connection.closed:  # type: ignore[union-attr]
            connection.invalidate(exc)
            raise OperationalError(sql, params, exc, connection_invalidated=True) from exc
        raise OperationalError(sql, params, exc) from exc
    finally:
        cursor.close()


def lookup_tenant(session: Session | Connection, slug: str) -> BoundTenant | None:
    """The registry entry for ``slug`` as a :class:`BoundTenant`, in one indexed query.

    Tenant resolution runs this on every request: a plain Core row on the session's connection,
    because the ORM entity (and the ORM execution path) cost more CPU than the query itself
    (bench/api.py), and the request needs only these four fields.
    """
    row = _driver_row(session, _TENANT_BY_SLUG_SQL, {"slug": slug})
    if row is None:
        return None
    return BoundTenant(id=row[0], slug=row[1], name=row[2], status=row[3])


def lookup_tenant_and_token(session: Session | Connection, slug: str,
                            secret: str) -> tuple[BoundTenant | None, TokenInfo | None]:
    """:func:`lookup_tenant` and :func:`check_token` together, for API calls with a bearer token."""
    row = _driver_row(session, _TENANT_AND_TOKEN_SQL, {"slug": slug, "digest": digest(secret)})
    if row is None:
        return None, None
    tenant = BoundTenant(id=row[0], slug=row[1], name=row[2], status=row[3])
    token = TokenInfo(row[4], row[5], row[6], frozenset(row[7])) if row[4] is not None else None
    return tenant, token


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
    # Queued tasks would only find the tenant gone; their arguments (mail text) should go with it.
    session.execute(delete(OutboxTask).where(OutboxTask.tenant_id == tenant.id))
    session.execute(delete(DeadTask).where(DeadTask.tenant_id == tenant.id))
    session.flush()
    return tenant


# --------------------------------------------------------------------------- users


USER_FIELDS = ("email", "name", "role_id", "department_id", "active", "locale")


def actor_for(user: User, *, request_id: str | None = None, ip: str | None = None) -> Actor:
    return Actor(id=user.id, label=user.email, permissions=user.role.effective_permissions, kind="user",
                 request_id=request_id, ip=ip)


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(_l("No such user."))
    return user


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


#: The most users one page (API or HTML) holds.
MAX_USERS_PAGE = 100


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _user_filters(include_inactive: bool, active: bool | None, query: str | None) -> list[Any]:
    filters: list[Any] = []
    if not include_inactive:
        filters.append(User.active.is_(True))
    if active is not None:
        filters.append(User.active.is_(active))
    if query and query.strip():
        like = contains_pattern(query.strip())
        filters.append(User.name.ilike(like, escape="\\") | User.email.ilike(like, escape="\\"))
    return filters


def list_users(session: Session, actor: Actor, *, include_inactive: bool = True, query: str | None = None,
               active: bool | None = None, limit: int = 50, offset: int = 0) -> list[User]:
    """One page of users, sorted by name; filtered and paged in SQL (at most MAX_USERS_PAGE rows)."""
    require(actor, perms.USERS_READ)
    stmt = (select(User).where(*_user_filters(include_inactive, active, query)).order_by(User.name, User.id)
            .limit(min(max(limit, 1), MAX_USERS_PAGE)).offset(max(offset, 0)))
    return list(session.scalars(stmt))


def count_users(session: Session, actor: Actor, *, include_inactive: bool = True, query: str | None = None,
                active: bool | None = None) -> int:
    """How many users :func:`list_users` pages through with the same filters."""
    require(actor, perms.USERS_READ)
    stmt = select(func.count()).select_from(User).where(*_user_filters(include_inactive, active, query))
    return session.scalar(stmt) or 0


# What a user looks like to a reader: the columns UserOut shows, the role by its key. Single-record
# reads are the API's hottest path, and a Core row costs a third of an ORM load (bench/api.py), so
# reads that change nothing return this row; everything that writes loads the ORM entity.
_USER_VIEW = (select(User.id, User.email, User.name, Role.key.label("role_key"), User.department_id,
                     User.active, User.locale, User.last_login_at, User.created_at, User.updated_at,
                     User.version)
              .join(Role, Role.id == User.role_id)
              .where(User.id == bindparam("user_id")))


def view_user(session: Session, actor: Actor, user_id: uuid.UUID) -> RowMapping:
    """One user, read-only, for display (same fields and permission rule as the entity)."""
    if actor.id != user_id:
        require(actor, perms.USERS_READ)
    # Executing the one statement object (not a fresh .where() copy) lets SQLAlchemy reuse its compiled
    # form as is; a copy is matched column by column against the cached result map on every call.
    row = session.connection().execute(_USER_VIEW, {"user_id": user_id}).mappings().first()
    if row is None:
        raise NotFound(_l("No such user."))
    return row


def get_role(session: Session, key_or_id: str | uuid.UUID) -> Role:
    if isinstance(key_or_id, uuid.UUID):
        role = session.get(Role, key_or_id)
    else:
        role = session.scalar(select(Role).where(Role.key == key_or_id))
    if role is None:
        raise ValidationFailed(_l("No role '%(role)s'.", role=shown(key_or_id)),
                               field_errors={"role": [_l("Unknown role.")]})
    return role


def create_user(session: Session, actor: Actor, *, email: str, name: str | None = None, role: str = "sales",
                password: str | None = None, department_id: uuid.UUID | None = None) -> User:
    require(actor, perms.USERS_MANAGE)
    email = clean_email(email)
    password_hash = None
    if password:
        release(session)  # argon2 outside the transaction
        password_hash = hash_password(check_password(password))
    if find_user_by_email(session, email) is not None:
        raise EmailTaken(_l("A user with e-mail %(email)s already exists.", email=email),
                         field_errors={"email": [_l("Already in use.")]})
    role_obj = get_role(session, role)
    _may_assign(actor, role_obj)
    if department_id is not None:
        get_department(session, department_id)
    user = User(email=email, name=clean_name(name or email.split("@")[0]), role_id=role_obj.id,
                password_hash=password_hash,
                department_id=department_id, created_by=_uid(actor), updated_by=_uid(actor))
    user.role = role_obj
    session.add(user)
    session.flush()
    audit(session, actor, "user.created", "user", user.id, after=snapshot(user, USER_FIELDS))
    return user


def _uid(actor: Actor) -> uuid.UUID | None:
    return actor.id if isinstance(actor.id, uuid.UUID) else None


def update_user(session: Session, actor: Actor, user_id: uuid.UUID, *, name: str | None = None,
                role: str | None = None, department_id: uuid.UUID | str | None = "keep",
                locale: str | None = None, expected_version: int | None = None) -> User:
    user = get_user(session, user_id)
    self_service = actor.id == user.id and role is None and department_id == "keep"
    if not self_service:
        require(actor, perms.USERS_MANAGE)
        _may_assign(actor, user.role)  # nobody edits someone who may do more than they may
    if expected_version is not None and expected_version != user.version:
        raise PreconditionFailed(_l("This user was changed by someone else; reload and try again."))
    before = snapshot(user, USER_FIELDS)
    # One UPDATE (one version step) for the whole edit: lookups below must not flush half of it.
    with session.no_autoflush:
        _apply_user_changes(session, actor, user, name=name, role=role, department_id=department_id,
                            locale=locale)
    user.updated_by = _uid(actor)
    session.flush()
    after = snapshot(user, USER_FIELDS)
    if after != before:
        audit(session, actor, "user.updated", "user", user.id, before=before, after=after)
    return user


def _apply_user_changes(session: Session, actor: Actor, user: User, *, name: str | None, role: str | None,
                        department_id: uuid.UUID | str | None, locale: str | None) -> None:
    if name is not None:
        user.name = clean_name(name)
    if role is not None:
        new_role = get_role(session, role)
        if new_role.id != user.role_id:
            _may_assign(actor, new_role)
        if user.role.key == "admin" and new_role.key != "admin":
            _ensure_other_admin(session, user)
        user.role_id = new_role.id
        user.role = new_role
    if department_id != "keep":
        if department_id is not None:
            get_department(session, department_id)  # type: ignore[arg-type]
        user.department_id = department_id  # type: ignore[assignment]
    if locale is not None:
        if locale not in ("en", "zh"):
            raise ValidationFailed(_l("Language must be 'en' or 'zh'."), field_errors={"locale": [_l("en or zh")]})
        user.locale = locale


def _may_assign(actor: Actor, role: Role) -> None:
    """Managing users never escalates: only someone holding every function of a role may give it to
    a user, or edit or deactivate a user who has it (so a user manager cannot make anyone admin)."""
    if not role.effective_permissions <= actor.permissions:
        raise PermissionDenied(_l("You cannot give anyone, or manage anyone who has, functions you do not have "
                                  "yourself."))


def _ensure_other_admin(session: Session, user: User) -> None:
    # Lock the active administrators' rows first: two admins demoting each other at the same moment
    # would otherwise both see the other one and leave the workspace with none.
    session.execute(select(User.id).join(Role).where(Role.key == "admin", User.active.is_(True))
                    .with_for_update(of=User))
    others = session.scalar(
        select(func.count()).select_from(User).join(Role)
        .where(Role.key == "admin", User.active.is_(True), User.id != user.id))
    if not others:
        raise Conflict(_l("This is the last active administrator; make someone else an administrator first."),
                       code="last_admin")


def set_active(session: Session, actor: Actor, user_id: uuid.UUID, active: bool) -> User:
    """Deactivating frees the seat at once and ends the user's sessions (checked on every request)."""
    require(actor, perms.USERS_MANAGE)
    user = get_user(session, user_id)
    _may_assign(actor, user.role)
    if user.active == active:
        return user
    if not active:
        if user.id == actor.id:
            raise Conflict(_l("You cannot deactivate yourself."), code="self_deactivation")
        if user.role.key == "admin":
            _ensure_other_admin(session, user)
    before = snapshot(user, USER_FIELDS)
    user.active = active
    user.deactivated_at = None if active else utcnow()
    user.updated_by = _uid(actor)
    session.flush()
    audit(session, actor, "user.activated" if active else "user.deactivated", "user", user.id,
          before=before, after=snapshot(user, USER_FIELDS))
    tenant = session.info.get("tenant")
    if not active and tenant is not None:  # a tenant's session is always bound
        revoke_clients_of_user(session, actor, tenant, user.id)
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user for these credentials, or None (same answer, same time, for every kind of failure)."""
    try:
        address = clean_email(email)
    except ValidationFailed:
        verify_password(None, password)
        return None
    user = find_user_by_email(session, address)
    release(session)  # argon2 (and, on success, the caller's Redis calls) outside the transaction
    ok = verify_password(user.password_hash if user else None, password or "")
    if not ok or user is None or not user.active:
        return None
    # A bulk UPDATE leaves the row's version alone: signing in is not an edit, and must not make
    # an ETag someone holds for this user stale.
    values: dict[str, Any] = {"last_login_at": utcnow()}
    if user.password_hash and needs_rehash(user.password_hash):
        values["password_hash"] = hash_password(password)
    session.execute(update(User).where(User.id == user.id).values(**values),
                    execution_options={"synchronize_session": "fetch"})
    return user


def change_password(session: Session, actor: Actor, user_id: uuid.UUID, current: str, new: str) -> None:
    user = get_user(session, user_id)
    if actor.id != user.id:
        raise PermissionDenied(_l("You can only change your own password."))
    release(session)  # argon2 twice: outside the transaction
    if not verify_password(user.password_hash, current):
        raise ValidationFailed(_l("The current password is wrong."),
                               field_errors={"current_password": [_l("Wrong password.")]})
    user.password_hash = hash_password(check_password(new, "new_password"))
    # A reset link asked for before the change (by the user, or by someone who read their mail) must
    # not undo it.
    session.execute(update(PasswordReset).where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
                    .values(used_at=utcnow()))
    session.flush()
    audit(session, actor, "user.password_changed", "user", user.id)


# --------------------------------------------------------------------------- invitations & resets


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A one-time token: ``secret`` goes into the link, only its digest is stored."""

    secret: str
    expires_at: dt.datetime


def invite(session: Session, actor: Actor, *, email: str, role: str, name: str = "",
           department_id: uuid.UUID | None = None) -> tuple[Invitation, IssuedToken]:
    require(actor, perms.USERS_MANAGE)
    address = clean_email(email)
    if find_user_by_email(session, address) is not None:
        raise EmailTaken(_l("%(email)s is already a user of this workspace.", email=address),
                         field_errors={"email": [_l("Already a user.")]})
    role_obj = get_role(session, role)
    _may_assign(actor, role_obj)
    if department_id is not None:
        get_department(session, department_id)
    # A new invitation replaces any open one for the same address.
    session.execute(update(Invitation).where(func.lower(Invitation.email) == address,
                                             Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    secret = new_secret()
    expires = utcnow() + INVITATION_TTL
    inv = Invitation(email=address, name=clean_name(name) if (name or "").strip() else "", role_id=role_obj.id,
                     department_id=department_id, token_digest=digest(secret), expires_at=expires,
                     created_by=_uid(actor), updated_by=_uid(actor))
    session.add(inv)
    session.flush()
    audit(session, actor, "user.invited", "invitation", inv.id, after={"email": address, "role": role_obj.key})
    return inv, IssuedToken(secret, expires)


def pending_invitations(session: Session, actor: Actor) -> list[Invitation]:
    """Invitations not yet accepted, revoked or expired, newest first."""
    require(actor, perms.USERS_MANAGE)
    return list(session.scalars(
        select(Invitation).where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
                                 Invitation.expires_at > utcnow()).order_by(Invitation.created_at.desc())))


def revoke_invitation(session: Session, actor: Actor, invitation_id: uuid.UUID) -> Invitation:
    """The link stops working at once; revoking twice is harmless."""
    require(actor, perms.USERS_MANAGE)
    inv = session.get(Invitation, invitation_id)
    if inv is None:
        raise NotFound(_l("No such invitation."))
    if inv.revoked_at is None and inv.accepted_at is None:
        inv.revoked_at = utcnow()
        inv.updated_by = _uid(actor)
        session.flush()
        audit(session, actor, "user.invitation_revoked", "invitation", inv.id, after={"email": inv.email})
    return inv


def open_invitation(session: Session, secret: str) -> Invitation:
    inv = session.scalar(select(Invitation).where(Invitation.token_digest == digest(secret or "")))
    if inv is None or inv.revoked_at is not None or inv.accepted_at is not None or inv.expires_at < utcnow():
        raise InvalidToken(_l("This invitation link is invalid or has expired. Ask for a new one."))
    return inv


def accept_invitation(session: Session, secret: str, *, name: str, password: str) -> User:
    inv = open_invitation(session, secret)
    display_name = clean_name(name or inv.name or inv.email.split("@")[0])
    check_password(password)
    release(session)  # argon2 outside the transaction, and only for a link that works
    password_hash = hash_password(password)
    # The invitation's row is locked, then checked again: of two acceptances of one link at the same
    # moment, the second waits here and then finds it used (a 4xx), instead of failing on the unique
    # e-mail index with a 500.
    locked = session.scalar(select(Invitation).where(Invitation.id == inv.id).with_for_update()
                            .execution_options(populate_existing=True))
    if locked is None:
        raise InvalidToken(_l("This invitation link is invalid or has expired. Ask for a new one."))
    inv = locked
    if inv.revoked_at is not None or inv.accepted_at is not None or inv.expires_at < utcnow():
        raise InvalidToken(_l("This invitation link is invalid or has expired. Ask for a new one."))
    if find_user_by_email(session, inv.email) is not None:
        raise EmailTaken(_l("This address already has an account; sign in instead."))
    user = User(email=inv.email, name=display_name, password_hash=password_hash, role_id=inv.role_id,
                department_id=inv.department_id, created_by=inv.created_by)
    session.add(user)
    inv.accepted_at = utcnow()
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # The same address made a user some other way (created by an admin) in the meantime.
        raise EmailTaken(_l("This address already has an account; sign in instead.")) from None
    session.refresh(user)
    audit(session, Actor(user.id, user.email, frozenset()), "user.joined", "user", user.id,
          after=snapshot(user, USER_FIELDS))
    return user


def request_password_reset(session: Session, email: str) -> tuple[User, IssuedToken] | None:
    """A reset link for an active user, or None; callers answer the same either way (no enumeration)."""
    try:
        address = clean_email(email)
    except ValidationFailed:
        return None
    user = find_user_by_email(session, address)
    if user is None or not user.active:
        return None
    secret = new_secret()
    expires = utcnow() + RESET_TTL
    session.add(PasswordReset(user_id=user.id, token_digest=digest(secret), expires_at=expires))
    session.flush()
    return user, IssuedToken(secret, expires)


def open_reset(session: Session, secret: str) -> PasswordReset:
    """The reset a link stands for, if it can still be used (checked before the form is shown too)."""
    reset = session.scalar(select(PasswordReset).where(PasswordReset.token_digest == digest(secret or "")))
    if reset is None or reset.used_at is not None or reset.expires_at < utcnow():
        raise InvalidToken(_l("This reset link is invalid or has expired. Ask for a new one."))
    return reset


def reset_password(session: Session, secret: str, new_password: str) -> User:
    reset = open_reset(session, secret)
    user = get_user(session, reset.user_id)
    if not user.active:
        raise InvalidToken(_l("This account is deactivated."))
    check_password(new_password)
    release(session)  # argon2 outside the transaction, and only for a link that works
    password_hash = hash_password(new_password)
    # Locked and checked again: a link used twice at the same moment works once.
    locked = session.scalar(select(PasswordReset).where(PasswordReset.id == reset.id).with_for_update()
                            .execution_options(populate_existing=True))
    if locked is None or locked.used_at is not None:
        raise InvalidToken(_l("This reset link is invalid or has expired. Ask for a new one."))
    user.password_hash = password_hash
    reset.used_at = utcnow()
    # Every other open link for this user dies with this one.
    session.execute(update(PasswordReset).where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
                    .values(used_at=utcnow()))
    session.flush()
    audit(session, Actor(user.id, user.email, frozenset()), "user.password_reset", "user", user.id)
    return user


# --------------------------------------------------------------------------- roles


def _no_escalation(actor: Actor, granted: Sequence[str], what: Message) -> None:
    """Nobody hands out what they do not hold: a manager who may edit roles or API clients cannot
    grant a role or a client more than their own functions (an administrator holds them all)."""
    beyond = sorted(set(granted) - actor.permissions)
    if beyond:
        raise PermissionDenied(_l("You cannot grant %(what)s you do not have yourself: %(items)s.", what=what,
                                  items=shown(", ".join(beyond), MAX_PARAM_CHARS)))


def list_roles(session: Session) -> list[Role]:
    return list(session.scalars(select(Role).order_by(Role.builtin.desc(), Role.key)))


def set_role_permissions(session: Session, actor: Actor, key: str, permissions: Sequence[str]) -> Role:
    require(actor, perms.ROLES_MANAGE)
    role = get_role(session, key)
    if role.key == "admin":
        raise Conflict(_l("The administrator role always has every function."), code="admin_role_locked")
    unknown = sorted(p for p in permissions if not known(p))
    if unknown:
        msg = _l("Unknown functions: %(names)s.", names=shown(", ".join(unknown)))
        raise ValidationFailed(msg, field_errors={"permissions": [msg]})
    _no_escalation(actor, permissions, _l("functions"))
    before = {"permissions": sorted(role.permissions)}
    role.permissions = sorted(set(permissions))
    role.updated_by = _uid(actor)
    session.flush()
    audit(session, actor, "role.updated", "role", role.key, before=before, after={"permissions": role.permissions})
    return role


def clean_role_key(key: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,39}", key or ""):
        raise ValidationFailed(_l("Role keys use lower-case letters, digits and underscores."),
                               field_errors={"key": [_l("Invalid key.")]})
    return key


def create_role(session: Session, actor: Actor, *, key: str, name: str, permissions: Sequence[str] = ()) -> Role:
    require(actor, perms.ROLES_MANAGE)
    key = clean_role_key(key)
    if session.scalar(select(Role).where(Role.key == key)) is not None:
        raise Conflict(_l("A role '%(key)s' already exists.", key=key), field_errors={"key": [_l("Already exists.")]})
    role = Role(key=key, name=clean_name(name, max_len=100), permissions=[], created_by=_uid(actor))
    session.add(role)
    session.flush()
    audit(session, actor, "role.created", "role", key, after={"name": role.name})
    if permissions:
        set_role_permissions(session, actor, key, permissions)
    return role


# --------------------------------------------------------------------------- departments


def get_department(session: Session, department_id: uuid.UUID) -> Department:
    dept = session.get(Department, department_id)
    if dept is None:
        raise ValidationFailed(_l("No such department."),
                               field_errors={"department_id": [_l("Unknown department.")]})
    return dept


def list_departments(session: Session) -> list[Department]:
    return list(session.scalars(select(Department).order_by(Department.sort_order, Department.name)))


def department_tree(session: Session) -> list[tuple[int, Department]]:
    """Departments in tree order with their depth, for indented lists and selects.

    Every department is listed once, whatever the table holds: one that cannot be reached from the top
    (its line of parents loops, which writes through this module prevent but a restored backup or a hand
    edit can plant) is listed at the top level after the others, so it stays visible and can be moved.
    """
    depts = list_departments(session)
    children: dict[uuid.UUID | None, list[Department]] = {}
    for d in depts:
        children.setdefault(d.parent_id, []).append(d)
    out: list[tuple[int, Department]] = []
    seen: set[uuid.UUID] = set()

    def walk(root: Department) -> None:
        # An explicit stack: the depth is the data's to choose, not Python's recursion limit's.
        stack = [(0, root)]
        while stack:
            depth, dept = stack.pop()
            if dept.id in seen:
                continue
            seen.add(dept.id)
            out.append((depth, dept))
            stack.extend((depth + 1, child) for child in reversed(children.get(dept.id, [])))

    for top in children.get(None, []):
        walk(top)
    for dept in depts:
        if dept.id not in seen:
            walk(dept)
    return out


#: How far up a department's line of parents a check follows. Deeper chains are refused as parents, so
#: every walk over the tree, in SQL or in Python, is bounded.
MAX_DEPARTMENT_DEPTH = 64


def _lock_department_tree(session: Session) -> None:
    # One change to a tenant's tree at a time: two moves checked against the same snapshot ("A under B"
    # and "B under A") would both pass and leave a cycle. Held until the transaction ends.
    advisory_xact_lock(session, AdvisoryLock.DEPARTMENT_TREE, session.info["tenant"].schema)


def _check_parent(session: Session, parent_id: uuid.UUID, moving_id: uuid.UUID | None) -> None:
    """``parent_id`` may take a child (``moving_id``, when an existing department moves): it exists, the
    department is not among its ancestors, and its ancestry reaches the top within the depth bound.

    Asked of the database (a recursive query with a cycle guard and a depth bound) under the tree lock,
    so it reads the committed tree as it is now, not the snapshot a request started with.
    """
    d, step = Department.__table__.alias("d"), Department.__table__.alias("step")
    up = (select(d.c.id, d.c.parent_id, literal(1).label("depth"), pg_array([d.c.id]).label("seen"))
          .where(d.c.id == parent_id).cte("up", recursive=True))
    up = up.union_all(
        select(step.c.id, step.c.parent_id, up.c.depth + 1, up.c.seen.op("||")(step.c.id))
        .where(step.c.id == up.c.parent_id, up.c.depth < MAX_DEPARTMENT_DEPTH, step.c.id != any_(up.c.seen)))
    found, loops, rooted = session.execute(select(
        func.count(), func.coalesce(func.bool_or(up.c.id == moving_id), False),
        func.coalesce(func.bool_or(up.c.parent_id.is_(None)), False))).one()
    if not found:
        raise ValidationFailed(_l("No such department."), field_errors={"department_id": [_l("Unknown department.")]})
    if loops:
        raise ValidationFailed(_l("A department cannot be moved under itself."),
                               field_errors={"parent_id": [_l("Would create a cycle.")]})
    if not rooted:
        raise ValidationFailed(_l("The chosen parent is not reachable from the top level within %(depth)s levels; "
                                  "move it to the top level first.", depth=MAX_DEPARTMENT_DEPTH),
                               field_errors={"parent_id": [_l("Not reachable from the top level.")]})


def save_department(session: Session, actor: Actor, *, name: str, parent_id: uuid.UUID | None,
                    department_id: uuid.UUID | None = None) -> Department:
    require(actor, perms.DEPARTMENTS_MANAGE)
    name = clean_name(name)
    _lock_department_tree(session)
    dept: Department | None = None
    if department_id is not None:
        # Read again under the lock: a copy loaded earlier in this request may predate a move just committed.
        dept = session.get(Department, department_id, populate_existing=True)
        if dept is None:
            raise NotFound(_l("No such department."))
    if parent_id is not None:
        _check_parent(session, parent_id, department_id)
    else:
        # (parent_id, name) is unique, but PostgreSQL treats NULLs as distinct: the top level is checked here.
        stmt = select(Department.id).where(Department.parent_id.is_(None), Department.name == name)
        if department_id is not None:
            stmt = stmt.where(Department.id != department_id)
        if session.scalar(stmt.limit(1)) is not None:
            raise Conflict(_l("A department named '%(name)s' already exists there.", name=shown(name)),
                           field_errors={"name": [_l("Already exists at this level.")]})
    if dept is None:
        dept = Department(name=name, parent_id=parent_id, created_by=_uid(actor), updated_by=_uid(actor))
        session.add(dept)
        action, before = "department.created", None
    else:
        before = snapshot(dept, ("name", "parent_id"))
        dept.name, dept.parent_id, dept.updated_by = name, parent_id, _uid(actor)
        action = "department.updated"
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(_l("A department named '%(name)s' already exists there.", name=shown(name)),
                       field_errors={"name": [_l("Already exists at this level.")]}) from None
    audit(session, actor, action, "department", dept.id, before=before, after=snapshot(dept, ("name", "parent_id")))
    return dept


def delete_department(session: Session, actor: Actor, department_id: uuid.UUID) -> None:
    require(actor, perms.DEPARTMENTS_MANAGE)
    _lock_department_tree(session)
    dept = session.get(Department, department_id, populate_existing=True)
    if dept is None:
        raise NotFound(_l("No such department."))
    if session.scalar(select(func.count()).select_from(Department).where(Department.parent_id == dept.id)):
        raise Conflict(_l("Move or delete its sub-departments first."), code="department_has_children")
    session.execute(update(User).where(User.department_id == dept.id).values(department_id=None))
    before = snapshot(dept, ("name", "parent_id"))
    session.delete(dept)
    session.flush()
    audit(session, actor, "department.deleted", "department", department_id, before=before)


# --------------------------------------------------------------------------- OAuth clients


@dataclass(frozen=True, slots=True)
class NewClient:
    client: OAuthClient
    secret: str


def create_client(session: Session, actor: Actor, tenant: BoundTenant, *, name: str,
                  scopes: Sequence[str]) -> NewClient:
    """Client rows live in the control plane so the token endpoint can bind a token to its tenant."""
    require(actor, perms.CLIENTS_MANAGE)
    name = clean_name(name)
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if not known(s)]
    if unknown:
        msg = _l("Unknown scopes: %(names)s.", names=shown(", ".join(unknown)))
        raise ValidationFailed(msg, field_errors={"scopes": [msg]})
    _no_escalation(actor, scopes, _l("scopes"))
    if not scopes:
        raise ValidationFailed(_l("Grant at least one scope."), field_errors={"scopes": [_l("Required.")]})
    secret = new_secret(32)
    parent = _acting_client(session, actor, tenant)
    client = OAuthClient(tenant_id=tenant.id, client_id="cy_" + new_secret(12), secret_digest=digest(secret),
                         name=name, scopes=scopes, created_by=_uid(actor),
                         created_by_client=parent.id if parent is not None else None)
    session.add(client)
    session.flush()
    _audit_in_tenant(session, actor, tenant, "client.created", client.client_id,
                     {"name": name, "scopes": scopes})
    return NewClient(client, secret)


def _audit_in_tenant(session: Session, actor: Actor, tenant: BoundTenant, action: str, entity_id: str,
                     after: dict[str, Any] | None) -> None:
    # Clients live in the control plane, their audit trail in the tenant: a session not yet bound
    # (the CLI) is bound here; one bound to another tenant is refused by bind_tenant.
    audit(bind_tenant(session, tenant), actor, action, "oauth_client", entity_id, after=after)
    session.flush()


def list_clients(session: Session, actor: Actor, tenant: BoundTenant) -> list[OAuthClient]:
    require(actor, perms.CLIENTS_MANAGE)
    return list(session.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id)
                                .order_by(OAuthClient.created_at)))


def revoke_client(session: Session, actor: Actor, tenant: BoundTenant, client_id: str) -> OAuthClient:
    require(actor, perms.CLIENTS_MANAGE)
    client = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id,
                                                      OAuthClient.tenant_id == tenant.id))
    if client is None:
        raise NotFound(_l("No such client."))
    if client.revoked_at is None:
        _revoke_clients(session, actor, tenant, [client], reason=None)
    return client


# A client outlives neither the staff user who made it (deactivated) nor the client that made it
# (revoked): whoever loses access takes the access they handed out with them, however many clients
# deep. Reactivating the user does not bring the clients back.
CLIENT_ACTOR_PREFIX = "client:"  # tenants.context labels an API client's actor so


def _acting_client(session: Session, actor: Actor, tenant: BoundTenant) -> OAuthClient | None:
    """The client an API actor is (its creations are revoked with it); None for users and the system."""
    if actor.kind != "client" or not actor.label.startswith(CLIENT_ACTOR_PREFIX):
        return None
    return session.scalar(select(OAuthClient).where(
        OAuthClient.client_id == actor.label.removeprefix(CLIENT_ACTOR_PREFIX), OAuthClient.tenant_id == tenant.id))


def _revoke_clients(session: Session, actor: Actor, tenant: BoundTenant, roots: list[OAuthClient],
                    reason: str | None) -> list[OAuthClient]:
    """Revoke ``roots`` and every live client they made, directly or not, with all their tokens."""
    live = list(session.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id,
                                                          OAuthClient.revoked_at.is_(None))))
    children: dict[uuid.UUID, list[OAuthClient]] = {}
    for c in live:
        if c.created_by_client is not None:
            children.setdefault(c.created_by_client, []).append(c)
    doomed: dict[uuid.UUID, OAuthClient] = {}
    stack = [c for c in roots if c.revoked_at is None]
    while stack:  # each client is visited once: the walk ends even if the rows held a cycle
        c = stack.pop()
        if c.id in doomed:
            continue
        doomed[c.id] = c
        stack.extend(children.get(c.id, []))
    if not doomed:
        return []
    now = utcnow()
    for c in doomed.values():
        c.revoked_at = now
    session.execute(update(OAuthToken).where(OAuthToken.client_pk.in_(list(doomed)),
                                             OAuthToken.revoked_at.is_(None)).values(revoked_at=now))
    session.flush()
    root_ids = {c.id for c in roots}
    for c in doomed.values():
        why = reason if c.id in root_ids else "its creator was revoked"
        _audit_in_tenant(session, actor, tenant, "client.revoked", c.client_id, {"reason": why} if why else None)
    return list(doomed.values())


def revoke_clients_of_user(session: Session, actor: Actor, tenant: BoundTenant, user_id: uuid.UUID) -> int:
    """Revoke the clients a (deactivated) staff user made, and those they made in turn."""
    made = list(session.scalars(select(OAuthClient).where(
        OAuthClient.tenant_id == tenant.id, OAuthClient.created_by == user_id, OAuthClient.revoked_at.is_(None))))
    return len(_revoke_clients(session, actor, tenant, made, reason="its creator was deactivated"))


def find_client(session: Session, client_id: str) -> OAuthClient | None:
    return session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


def store_token(session: Session, client: OAuthClient, secret: str, scopes: Sequence[str],
                ttl_s: int) -> OAuthToken:
    """Record an access token by its digest only: a leaked table holds no usable token."""
    token = OAuthToken(tenant_id=client.tenant_id, client_pk=client.id, token_digest=digest(secret),
                       scopes=sorted(set(scopes)), expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
    session.add(token)
    session.flush()
    return token


def issue_token(session: Session, client: OAuthClient, scopes: Sequence[str], ttl_s: int) -> tuple[str, OAuthToken]:
    """A new token for ``client`` without the token endpoint (the CLI and tests)."""
    secret = new_secret(32)
    return secret, store_token(session, client, secret, scopes, ttl_s)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    tenant_id: uuid.UUID
    client_id: str
    client_name: str
    scopes: frozenset[str]


def check_token(session: Session, secret: str) -> TokenInfo | None:
    """A live token's binding, in one indexed query; None for unknown, expired or revoked tokens."""
    row = _driver_row(session, _LIVE_GRANT_SQL, {"digest": digest(secret)})
    if row is None:
        return None
    return TokenInfo(row[0], row[1], row[2], frozenset(row[3]))


def revoke_token(session: Session, tenant: BoundTenant, secret: str) -> bool:
    """RFC 7009: revoking an unknown token is not an error; only this tenant's tokens are touched."""
    result = session.execute(update(OAuthToken).where(
        OAuthToken.token_digest == digest(secret), OAuthToken.tenant_id == tenant.id,
        OAuthToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return bool(result.rowcount)  # type: ignore[attr-defined]
