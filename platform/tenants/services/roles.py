"""Roles and the functions they grant."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import Conflict, PermissionDenied, ValidationFailed
from core.i18n import MAX_PARAM_CHARS, Message, _l, shown
from core.permissions import Actor, known
from tenants import permissions as perms
from tenants.models import Role
from tenants.services.auditing import audit
from tenants.services.common import _uid, clean_name, require


def get_role(session: Session, key_or_id: str | uuid.UUID) -> Role:
    if isinstance(key_or_id, uuid.UUID):
        role = session.get(Role, key_or_id)
    else:
        role = session.scalar(select(Role).where(Role.key == key_or_id))
    if role is None:
        raise ValidationFailed(_l("No role '%(role)s'.", role=shown(key_or_id)),
                               field_errors={"role": [_l("Unknown role.")]})
    return role



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


def set_data_scope(session: Session, actor: Actor, key: str, scope: str) -> Role:
    """Which records the role's users see: own, department, subtree (department and below) or all."""
    require(actor, perms.ROLES_MANAGE)
    role = get_role(session, key)
    if role.key == "admin":
        raise Conflict(_l("The administrator role always sees everything."), code="admin_role_locked")
    if scope not in perms.DATA_SCOPES:
        msg = _l("Choose own, department, subtree or all.")
        raise ValidationFailed(msg, field_errors={"data_scope": [msg]})
    if role.data_scope == scope:
        return role
    before = {"data_scope": role.data_scope}
    role.data_scope = scope
    role.updated_by = _uid(actor)
    session.flush()
    audit(session, actor, "role.updated", "role", role.key, before=before, after={"data_scope": scope})
    return role
