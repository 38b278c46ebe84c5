"""The audit log as people read it: filtered in SQL, each change told field by field, with labels for
keys and names for ids (a department's name, not its UUID), Chinese shown as Chinese.

The log itself is written by ``services.audit``; this module only reads it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.i18n import LOCALE_NAMES, Message, Text, _l
from core.permissions import Actor, catalog
from tenants import permissions as perms
from tenants import services
from tenants.models import AuditEntry, Department, Role, User

#: What each kind of record is called (entity_type → label), in the order the filter offers them.
ENTITY_TYPES: dict[str, Message] = {
    "tenant": _l("Workspace"),
    "user": _l("User"),
    "role": _l("Role"),
    "department": _l("Department"),
    "invitation": _l("Invitation"),
    "oauth_client": _l("API client"),
}

#: The label of each field a snapshot holds (services.USER_FIELDS, departments, roles, clients, tenants).
FIELD_LABELS: dict[str, Message] = {
    "email": _l("E-mail"),
    "name": _l("Name"),
    "role_id": _l("Role"),
    "role": _l("Role"),
    "department_id": _l("Department"),
    "parent_id": _l("Parent department"),
    "active": _l("Status"),
    "locale": _l("Language"),
    "permissions": _l("Functions"),
    "scopes": _l("Scopes"),
    "slug": _l("Workspace address"),
}
#: A person's name is 姓名 in Chinese, a thing's 名称: the user's ``name`` has its own label.
PERSON_NAME = _l("Full name")
YES, NO = _l("Yes"), _l("No")
ACTIVE, DEACTIVATED = _l("Active"), _l("Deactivated")
TOP_LEVEL = _l("(top level)")
#: A query string's values are bounded before anything is parsed or looked up.
MAX_FILTER_CHARS = 64
PAGE = 50


@dataclass(frozen=True, slots=True)
class Filters:
    actor_id: uuid.UUID | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    @property
    def active(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)


def _bad(field_name: str, message: Message) -> ValidationFailed:
    return ValidationFailed(message, field_errors={field_name: [message]})


def parse_filters(args: Mapping[str, str]) -> Filters:
    """The filters of a query string (``actor``, ``action``, ``type``, ``from``, ``to``); a malformed
    value is a 422 naming its field, never a silently ignored filter."""
    values = {key: (args.get(key) or "").strip() for key in ("actor", "action", "type", "from", "to", "entity")}
    for key, value in values.items():
        if len(value) > MAX_FILTER_CHARS:
            raise _bad(key, _l("Too long."))
    actor_id = None
    if values["actor"]:
        try:
            actor_id = uuid.UUID(values["actor"])
        except ValueError:
            raise _bad("actor", _l("Unknown user.")) from None
    entity_type = values["type"] or None
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise _bad("type", _l("Unknown kind of record."))
    dates: dict[str, dt.date | None] = {}
    for key in ("from", "to"):
        try:
            dates[key] = dt.date.fromisoformat(values[key]) if values[key] else None
        except ValueError:
            raise _bad(key, _l("Enter a date as YYYY-MM-DD.")) from None
    if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
        raise _bad("to", _l("The end date is before the start date."))
    return Filters(actor_id=actor_id, action=values["action"] or None, entity_type=entity_type,
                   entity_id=values["entity"] or None, since=dates["from"], until=dates["to"])


def search(session: Session, actor: Actor, filters: Filters, *, limit: int = PAGE,
           before_id: uuid.UUID | None = None, after_id: uuid.UUID | None = None) -> list[AuditEntry]:
    """Newest first, one page, keyset on the time-ordered id: older than ``before_id``, or the ``limit``
    entries just newer than ``after_id`` (going back a page)."""
    services.require(actor, perms.AUDIT_READ)
    order = AuditEntry.id.asc() if after_id is not None else AuditEntry.id.desc()
    stmt = select(AuditEntry).order_by(order).limit(min(max(limit, 1), 200))
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if after_id is not None:
        stmt = stmt.where(AuditEntry.id > after_id)
    if filters.actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == filters.actor_id)
    if filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.entity_type:
        stmt = stmt.where(AuditEntry.entity_type == filters.entity_type)
    if filters.entity_id:
        stmt = stmt.where(AuditEntry.entity_id == filters.entity_id)
    if filters.since:
        stmt = stmt.where(AuditEntry.at >= dt.datetime.combine(filters.since, dt.time(), dt.UTC))
    if filters.until:
        stmt = stmt.where(AuditEntry.at < dt.datetime.combine(filters.until + dt.timedelta(days=1), dt.time(), dt.UTC))
    found = list(session.scalars(stmt))
    return found[::-1] if after_id is not None else found


@dataclass(slots=True)
class Change:
    label: Text
    before: Text | None
    after: Text | None


@dataclass(slots=True)
class Readable:
    entry: AuditEntry
    actor_name: str
    entity_label: Text
    entity_name: str | None
    changes: list[Change] = field(default_factory=list)


@dataclass(slots=True)
class _Names:
    users: dict[str, str]
    departments: dict[str, str]
    roles: dict[str, Role]
    locale: str

    def role(self, value: str) -> str:
        role = self.roles.get(value)
        if role is None:
            return value
        return role.name_zh if self.locale == "zh" and role.name_zh else role.name


def _uuids(values: Sequence[Any]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return out


def _names(session: Session, entries: Sequence[AuditEntry], locale: str) -> _Names:
    ids: list[Any] = []
    for e in entries:
        ids.extend(x for x in (e.actor_id, e.entity_id) if x)
        for snap in (e.before or {}, e.after or {}):
            ids.extend(snap.get(k) for k in ("department_id", "parent_id", "role_id") if snap.get(k))
    wanted = _uuids(ids)
    users: dict[str, str] = {}
    depts: dict[str, str] = {}
    if wanted:
        users = {str(i): n for i, n in session.execute(select(User.id, User.name).where(User.id.in_(wanted)))}
        depts = {str(i): n for i, n in
                 session.execute(select(Department.id, Department.name).where(Department.id.in_(wanted)))}
    roles = {}
    for role in session.scalars(select(Role)):
        roles[str(role.id)] = role
        roles[role.key] = role
    return _Names(users, depts, roles, locale)


def _function_labels(names: Sequence[str], locale: str) -> str:
    labels = {p.name: p.label for p in catalog()}
    sep = "、" if locale == "zh" else ", "
    return sep.join(str(labels.get(n, n)) for n in names) if names else "—"


def _value(key: str, value: Any, names: _Names) -> Text | None:
    if value is None or value == "":
        return TOP_LEVEL if key == "parent_id" else None
    if key == "active":
        return ACTIVE if value else DEACTIVATED
    if isinstance(value, bool):
        return YES if value else NO
    if key in ("department_id", "parent_id"):
        return names.departments.get(str(value), _l("(deleted department)"))
    if key in ("role_id", "role"):
        return names.role(str(value))
    if key == "locale":
        return LOCALE_NAMES.get(str(value), str(value))
    if key in ("permissions", "scopes") and isinstance(value, list):
        return _function_labels([str(v) for v in value], names.locale)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _changes(entry: AuditEntry, names: _Names) -> list[Change]:
    before, after = entry.before or {}, entry.after or {}
    keys = list(dict.fromkeys([*after, *before]))
    out = []
    for key in keys:
        if key in before and key in after and before[key] == after[key]:
            continue  # unchanged fields of a snapshot are noise
        label = PERSON_NAME if key == "name" and entry.entity_type == "user" else FIELD_LABELS.get(key, key)
        out.append(Change(label, _value(key, before.get(key), names) if key in before else None,
                          _value(key, after.get(key), names) if key in after else None))
    return out


def _entity_name(entry: AuditEntry, names: _Names) -> str | None:
    snap = entry.after or entry.before or {}
    if entry.entity_type == "user":
        return names.users.get(entry.entity_id or "") or snap.get("name") or snap.get("email")
    if entry.entity_type == "department":
        return names.departments.get(entry.entity_id or "") or snap.get("name")
    if entry.entity_type == "role":
        return names.role(entry.entity_id or "")
    # Clients and invitations: their name or address; the id only when the entry holds neither.
    return snap.get("name") or snap.get("email") or entry.entity_id


def readable(session: Session, entries: Sequence[AuditEntry], locale: str) -> list[Readable]:
    """The entries with names instead of ids and their changes field by field (three queries in all)."""
    names = _names(session, entries, locale)
    out = []
    for e in entries:
        actor = names.users.get(str(e.actor_id)) if e.actor_id else None
        out.append(Readable(entry=e, actor_name=actor or e.actor_label,
                            entity_label=ENTITY_TYPES.get(e.entity_type, e.entity_type),
                            entity_name=_entity_name(e, names), changes=_changes(e, names)))
    return out
