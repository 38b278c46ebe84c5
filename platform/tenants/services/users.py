"""Staff users: listing, creating, editing, (de)activating, signing in, changing passwords."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import RowMapping, bindparam, func, select, update
from sqlalchemy.orm import Session

from core.db import release, utcnow
from core.errors import Conflict, NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from core.i18n import _l
from core.permissions import Actor
from core.security import hash_password, needs_rehash, verify_password
from tenants import permissions as perms
from tenants.errors import EmailTaken
from tenants.models import PasswordReset, Role, User
from tenants.services.auditing import audit, snapshot
from tenants.services.clients import revoke_clients_of_user
from tenants.services.common import _uid, check_password, clean_email, clean_name, require
from tenants.services.departments import get_department
from tenants.services.personal_tokens import revoke_personal_tokens_of_user
from tenants.services.roles import get_role

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
        revoke_personal_tokens_of_user(session, tenant, user.id)
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
