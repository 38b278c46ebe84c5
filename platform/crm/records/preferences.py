"""A staff user's own settings: notification mail on or off, and their private calendar feed token.

One row per user, created on first change (a user without a row has the defaults). The feed token
is a bearer secret in a URL that calendar apps poll without a session, so only its SHA-256 digest is
stored: whoever reads the table cannot subscribe to anyone's calendar, and the user can replace it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import TenantBase, utcnow
from core.security import digest, new_secret
from tenants.archive import row_check
from tenants.models import User

#: The token's length in the URL (base64url of 32 random bytes); anything else is not a token.
TOKEN_CHARS = 43


class UserPreference(TenantBase):
    __tablename__ = "user_preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.users.id", ondelete="CASCADE"), primary_key=True)
    #: Notifications are always in the bell; this adds a mail for each one.
    email_notifications: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    calendar_token_digest: Mapped[str | None] = mapped_column(String(64))
    calendar_token_created_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=text("now()"))

    __table_args__ = (Index("uq_user_preferences_calendar_token", "calendar_token_digest", unique=True),)


def preference(session: Session, user_id: uuid.UUID) -> UserPreference | None:
    return session.get(UserPreference, user_id)


def _row(session: Session, user_id: uuid.UUID) -> UserPreference:
    row = session.get(UserPreference, user_id, with_for_update=True)
    if row is None:
        row = UserPreference(user_id=user_id, email_notifications=True)
        session.add(row)
    return row


def wants_email(session: Session, user_id: uuid.UUID) -> bool:
    row = preference(session, user_id)
    return True if row is None else row.email_notifications


def set_email_notifications(session: Session, user_id: uuid.UUID, enabled: bool) -> None:
    _row(session, user_id).email_notifications = enabled
    session.flush()


def new_calendar_token(session: Session, user_id: uuid.UUID) -> str:
    """Issue a feed token (the previous one stops working); the secret is returned once, never stored."""
    secret = new_secret(32)
    row = _row(session, user_id)
    row.calendar_token_digest = digest(secret)
    row.calendar_token_created_at = utcnow()
    session.flush()
    return secret


def revoke_calendar_token(session: Session, user_id: uuid.UUID) -> None:
    row = preference(session, user_id)
    if row is not None and row.calendar_token_digest is not None:
        row.calendar_token_digest = None
        row.calendar_token_created_at = None
        session.flush()


def user_for_calendar_token(session: Session, token: str) -> User | None:
    """The active user whose feed this token opens, or None (unknown, revoked, deactivated)."""
    # Bounded before hashing and the lookup: a token is exactly TOKEN_CHARS URL-safe characters.
    if len(token) != TOKEN_CHARS or not token.isascii() or not token.replace("-", "").replace("_", "").isalnum():
        return None
    user = session.scalar(select(User).join(UserPreference, UserPreference.user_id == User.id)
                          .where(UserPreference.calendar_token_digest == digest(token)))
    return user if user is not None and user.active else None


@row_check("user_preferences")
def _check_user_preferences(session: Session) -> None:
    """Flags and digests only; their column types and the unique index are the rule."""
    del session
