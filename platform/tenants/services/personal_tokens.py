"""Personal API tokens: a staff user's own bearer tokens, acting with exactly that user's rights.

The rows live in the control plane (beside the OAuth tokens, so a request finds tenant and token in one
query); their audit trail lives in the tenant. A token carries no permissions of its own: every request
reads the user again (active? which role?), so a deactivation or a role change applies at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db import bind_tenant, utcnow
from core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from core.i18n import _l, _ln
from core.permissions import Actor
from core.security import digest, new_secret
from core.tenancy import BoundTenant
from tenants.models import PersonalToken, User
from tenants.services.auditing import audit
from tenants.services.common import clean_name
from tenants.services.lookup import PERSONAL_TOKEN_PREFIX

#: How much of a token is kept in the clear and shown in lists: the prefix and eight characters of it.
VISIBLE_CHARS = len(PERSONAL_TOKEN_PREFIX) + 8
#: Live tokens one user may hold: a bound on the list and on what one account can mint.
MAX_TOKENS_PER_USER = 50
#: The longest lifetime a token may be given (ten years); without one it lasts until revoked.
MAX_EXPIRY_DAYS = 3650
MAX_TOKEN_NAME = 100


@dataclass(frozen=True, slots=True)
class NewPersonalToken:
    """A token just made: ``secret`` is shown once, only its digest is stored."""

    token: PersonalToken
    secret: str


def _owner_only(actor: Actor, user_id: uuid.UUID) -> None:
    # A user manages their own tokens; the platform (CLI) may act for anyone. Nobody else may, not even an
    # administrator: a token would let them act as that person.
    if actor.kind != "system" and actor.id != user_id:
        raise PermissionDenied(_l("You can only manage your own personal tokens."))


def _live(tenant: BoundTenant, user_id: uuid.UUID) -> list[Any]:
    return [PersonalToken.tenant_id == tenant.id, PersonalToken.user_id == user_id,
            PersonalToken.revoked_at.is_(None),
            PersonalToken.expires_at.is_(None) | (PersonalToken.expires_at > func.now())]


def clean_expiry_days(value: int | None) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= MAX_EXPIRY_DAYS:
        msg = _ln("A token expires after 1 to %(num)d day.", "A token expires after 1 to %(num)d days.",
                  MAX_EXPIRY_DAYS)
        raise ValidationFailed(msg, field_errors={"expires_days": [msg]})
    return value


def create_personal_token(session: Session, actor: Actor, tenant: BoundTenant, *, user_id: uuid.UUID,
                          name: str, expires_days: int | None = None) -> NewPersonalToken:
    _owner_only(actor, user_id)
    name = clean_name(name, max_len=MAX_TOKEN_NAME)
    expires_days = clean_expiry_days(expires_days)
    tsession = bind_tenant(session, tenant)  # the CLI's session is not bound yet; a request's already is
    user = tsession.get(User, user_id)
    if user is None:
        raise NotFound(_l("No such user."))
    if not user.active:
        raise Conflict(_l("%(email)s is deactivated; a deactivated user cannot have tokens.", email=user.email),
                       code="user_inactive")
    live = session.scalar(select(func.count()).select_from(PersonalToken).where(*_live(tenant, user_id))) or 0
    if live >= MAX_TOKENS_PER_USER:
        raise Conflict(_ln("You have %(num)d token already, the most one person may hold; revoke one first.",
                           "You have %(num)d tokens already, the most one person may hold; revoke one first.",
                           live), code="too_many_tokens")
    secret = PERSONAL_TOKEN_PREFIX + new_secret(32)
    expires_at = utcnow() + dt.timedelta(days=expires_days) if expires_days else None
    token = PersonalToken(tenant_id=tenant.id, user_id=user_id, name=name, prefix=secret[:VISIBLE_CHARS],
                          token_digest=digest(secret), expires_at=expires_at)
    session.add(token)
    session.flush()
    audit(tsession, actor, "user.token_created", "personal_token", token.id,
          after={"user_id": str(user_id), "name": name, "prefix": token.prefix,
                 "expires_at": expires_at.isoformat() if expires_at else None})
    session.flush()
    return NewPersonalToken(token, secret)


def list_personal_tokens(session: Session, actor: Actor, tenant: BoundTenant,
                         user_id: uuid.UUID) -> list[PersonalToken]:
    """The user's live tokens (not revoked, not expired), newest first."""
    _owner_only(actor, user_id)
    return list(session.scalars(select(PersonalToken).where(*_live(tenant, user_id))
                                .order_by(PersonalToken.created_at.desc()).limit(MAX_TOKENS_PER_USER)))


def revoke_personal_token(session: Session, actor: Actor, tenant: BoundTenant, user_id: uuid.UUID,
                          token_id: uuid.UUID) -> PersonalToken:
    """The token stops working at once; revoking twice is harmless. Another user's token is a 404."""
    _owner_only(actor, user_id)
    token = session.scalar(select(PersonalToken).where(
        PersonalToken.id == token_id, PersonalToken.tenant_id == tenant.id, PersonalToken.user_id == user_id))
    if token is None:
        raise NotFound(_l("No such token."))
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit(bind_tenant(session, tenant), actor, "user.token_revoked", "personal_token", token.id,
              after={"user_id": str(user_id), "name": token.name, "prefix": token.prefix})
        session.flush()
    return token


def revoke_personal_tokens_of_user(session: Session, tenant: BoundTenant, user_id: uuid.UUID) -> int:
    """On deactivation: the tokens stop for good (reactivating the user does not bring them back)."""
    result = session.execute(update(PersonalToken).where(
        PersonalToken.tenant_id == tenant.id, PersonalToken.user_id == user_id,
        PersonalToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
