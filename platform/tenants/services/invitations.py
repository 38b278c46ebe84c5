"""Invitations and password resets: one-time links whose digest only is stored."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import release, utcnow
from core.errors import NotFound, ValidationFailed
from core.i18n import _l
from core.permissions import Actor
from core.security import digest, hash_password, new_secret
from tenants import permissions as perms
from tenants.errors import EmailTaken, InvalidToken
from tenants.models import Invitation, PasswordReset, User
from tenants.services.auditing import audit, snapshot
from tenants.services.common import _uid, check_password, clean_email, clean_name, require
from tenants.services.departments import get_department
from tenants.services.roles import get_role
from tenants.services.users import USER_FIELDS, _may_assign, find_user_by_email, get_user

INVITATION_TTL = dt.timedelta(days=7)
RESET_TTL = dt.timedelta(hours=2)


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
