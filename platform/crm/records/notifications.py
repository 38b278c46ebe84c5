"""Notifications: the bell of each staff user, and a mail for each line if the user wants one.

Anything that has to tell a person something (a task's reminder now; approvals, SLA warnings and
workflow later) calls :func:`notify` inside its unit of work: the bell's row and the queued mail
commit with it or not at all. A notification about a record names it (entity, record id); the bell
shows it only while the user may still see that record (a record transferred away, or deleted,
takes its notifications out of sight), through the same scope condition as every list.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from babel.support import NullTranslations, Translations
from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.orm import Session

from core.db import utcnow
from core.errors import NotFound
from core.i18n import BABEL_LOCALES, DOMAIN, Message, Text, _l, translations_dir
from core.mail import Mail
from crm.records.entity import entities
from crm.records.models import Notification
from crm.records.preferences import wants_email
from crm.records.scope import Viewer, visible
from tenants.archive import row_check
from tenants.errors import InvalidArchive
from tenants.models import User

log = logging.getLogger(__name__)

MAX_TITLE = 300
MAX_BODY = 2000
MAX_LINK = 300
PAGE_MAX = 50
#: The badge counts up to this and then says "99+": the count stays one short index walk.
COUNT_CAP = 99

#: What each kind of notification is called in the bell and in mail subjects. Unknown kinds show as is.
KINDS: dict[str, Message] = {
    "task.reminder": _l("Task reminder"),
    "task.assigned": _l("Task assigned to you"),
    "general": _l("Notification"),
}


# --------------------------------------------------------------------------- language outside a request


@functools.lru_cache(maxsize=4)
def _translations(locale: str) -> NullTranslations:
    return Translations.load(str(translations_dir()), [BABEL_LOCALES.get(locale, "en")], DOMAIN)


def localized(text: Text, locale: str) -> str:
    """``text`` in ``locale``, with or without a request (the beat worker has none, and the mail goes to
    a user whose language is not the current request's)."""
    if not isinstance(text, Message):
        return text
    t = _translations(locale)
    params: dict[str, Any] = {k: localized(v, locale) if isinstance(v, Message) else v
                              for k, v in text.params.items()}
    if text.plural is None:
        s = t.ugettext(text.msgid)
    else:
        s = t.ungettext(text.msgid, text.plural, text.num or 0)
        params.setdefault("num", text.num)
    return s % params if params else s


def kind_label(kind: str, locale: str) -> str:
    label = KINDS.get(kind)
    return localized(label, locale) if label is not None else kind


# --------------------------------------------------------------------------- writing


def notify(session: Session, user_id: uuid.UUID, kind: str, title: Text, body: Text = "", link: str = "", *,
           entity: str | None = None, record_id: uuid.UUID | None = None) -> Notification | None:
    """Add a line to the user's bell and, if they want mail, queue one for after the commit.

    ``title`` and ``body`` may be catalog messages: they are written in the user's language. ``link``
    is a path inside the workspace (``/tasks/<id>``). Nothing happens for an unknown or deactivated user.
    """
    user = session.get(User, user_id)
    if user is None or not user.active:
        return None
    locale = user.locale or "en"
    if link and (not link.startswith("/") or link.startswith("//") or len(link) > MAX_LINK):
        msg = f"notification links are paths inside the workspace, not {link[:40]!r}"
        raise ValueError(msg)
    row = Notification(user_id=user.id, kind=kind[:40], title=localized(title, locale)[:MAX_TITLE],
                       body=localized(body, locale)[:MAX_BODY], link=link, entity=entity, record_id=record_id)
    session.add(row)
    session.flush()
    if wants_email(session, user.id):
        _queue_mail(session, user, row, locale)
    return row


def _queue_mail(session: Session, user: User, row: Notification, locale: str) -> None:
    from core.tasks import task_runtime
    from tenants.tasks import send_mail

    tenant = session.info.get("tenant")
    if tenant is None:  # pragma: no cover - tenant sessions always carry it (core.db)
        return
    settings = task_runtime().settings
    lines = [row.title]
    if row.body:
        lines += ["", row.body]
    if row.link:
        lines += ["", settings.tenant_link(tenant.slug, row.link)]
    lines += ["", "--", localized(_l("You get this mail because mail for notifications is on. Turn it off on "
                                     "the notifications page: %(link)s",
                                     link=settings.tenant_link(tenant.slug, "/notifications")), locale)]
    subject = f"{kind_label(row.kind, locale)}: {row.title}"
    send_mail(session, tenant, Mail(to=user.email, subject=subject[:200], text="\n".join(lines)))


# --------------------------------------------------------------------------- reading


def _still_visible(viewer: Viewer) -> ColumnElement[bool]:
    """Notifications about no record, about something that is not a record entity, or about a record
    the viewer may see now."""
    known = entities()
    conditions: list[ColumnElement[bool]] = [Notification.entity.is_(None),
                                             Notification.entity.not_in([e.key for e in known])]
    for ent in known:
        conditions.append(and_(Notification.entity == ent.key,
                               Notification.record_id.in_(select(ent.model.id).where(visible(ent, viewer)))))
    return or_(*conditions)


def _mine(viewer: Viewer) -> ColumnElement[bool]:
    if viewer.user_id is None:  # a machine client acts for the tenant, and has no bell of its own
        return false()
    return and_(Notification.user_id == viewer.user_id, _still_visible(viewer))


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Notification]
    #: Pass as ``before`` for the next (older) page; None at the end.
    next_before: uuid.UUID | None


def page(session: Session, viewer: Viewer, *, before: uuid.UUID | None = None, limit: int = 20,
         unread_only: bool = False) -> Page:
    """The viewer's notifications, newest first (ids are time-ordered), one keyset page."""
    limit = max(1, min(limit, PAGE_MAX))
    stmt = select(Notification).where(_mine(viewer))
    if before is not None:
        stmt = stmt.where(Notification.id < before)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    rows = list(session.scalars(stmt.order_by(Notification.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)


def unread_count(session: Session, viewer: Viewer) -> int:
    """Unread notifications, counted up to COUNT_CAP + 1 (the badge then says "99+")."""
    if viewer.user_id is None:
        return 0
    inner = (select(Notification.id).where(_mine(viewer), Notification.read_at.is_(None))
             .limit(COUNT_CAP + 1).subquery())
    return int(session.scalar(select(func.count()).select_from(inner)) or 0)


def badge(count: int) -> str:
    return f"{COUNT_CAP}+" if count > COUNT_CAP else str(count)


def mark_read(session: Session, viewer: Viewer, notification_id: uuid.UUID) -> Notification:
    row = session.scalar(select(Notification).where(Notification.id == notification_id, _mine(viewer)))
    if row is None:
        raise NotFound(_l("Not found."))
    if row.read_at is None:
        row.read_at = utcnow()
        session.flush()
    return row


def mark_all_read(session: Session, viewer: Viewer, now: dt.datetime | None = None) -> int:
    if viewer.user_id is None:
        return 0
    result = session.execute(update(Notification).where(Notification.user_id == viewer.user_id,
                                                        Notification.read_at.is_(None))
                             .values(read_at=now or utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]


@row_check("notifications")
def _check_notifications(session: Session) -> None:
    """A restored notification links only inside the workspace (the bell follows the link)."""
    bad = session.scalar(select(Notification.id).where(
        Notification.link != "", or_(~Notification.link.startswith("/"), Notification.link.startswith("//")))
        .limit(1))
    if bad is not None:
        raise InvalidArchive(_l("Table %(table)s, row %(row)s: %(field)s: %(reason)s", table="notifications",
                                row=str(bad), field="link", reason=_l("not a path inside the workspace.")))


def as_json(row: Notification, locale: str) -> Mapping[str, Any]:
    return {"id": row.id, "kind": row.kind, "kind_label": kind_label(row.kind, locale), "title": row.title,
            "body": row.body, "link": row.link, "entity": row.entity, "record_id": row.record_id,
            "created_at": row.created_at, "read_at": row.read_at, "read": row.read_at is not None}

