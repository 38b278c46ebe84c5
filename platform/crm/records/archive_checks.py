"""What a tenant archive's CRM rows must meet before they are accepted (tenants.archive.row_check).

A signed archive is still input: every record's values must be ones the record services would have
stored (checked by the same :func:`crm.records.fields.convert`), and the foundation's own tables must
hold only what their services write.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.i18n import _l
from core.storage import InvalidKey, check_key
from crm.records.entity import Entity, entities
from crm.records.fields import CUSTOM_TYPES, FieldType, Invalid, convert
from crm.records.models import (
    Attachment,
    CustomField,
    DictionaryItem,
    Notification,
    NumberFormat,
    NumberSequence,
    RecordShare,
    SavedView,
)
from crm.records.services import check_pattern
from tenants.archive import check_versions as _versions
from tenants.archive import refuse as _refuse
from tenants.archive import row_check

KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: Field types whose stored value is exactly what convert() returns for it.
TEXTUAL = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.EMAIL, FieldType.PHONE, FieldType.URL, FieldType.CHOICE)


def _check_entity(ent: Entity) -> None:
    table = ent.model.__tablename__  # type: ignore[attr-defined]

    def check(session: Session) -> None:
        _versions(session, ent.model)
        textual = [f for f in ent.fields if not f.custom and not f.readonly and f.type in TEXTUAL]
        for row in session.scalars(select(ent.model).execution_options(yield_per=500)):
            for f in textual:
                raw = getattr(row, f.key)
                if raw is None:
                    continue
                try:
                    if convert(f, raw) != raw:
                        raise _refuse(table, row.id, f.key, _l("not in the form the application stores."))
                except Invalid as exc:
                    raise _refuse(table, row.id, f.key, exc.message) from None
            if not isinstance(row.custom, dict) or len(row.custom) > 200:
                raise _refuse(table, row.id, "custom", _l("must be an object of at most 200 values."))
            for tag in row.tags or []:
                if not re.fullmatch(r"[^\s,;，；]{1,40}", tag):
                    raise _refuse(table, row.id, "tags", _l("not a tag the application stores."))

    row_check(table)(check)


def register() -> None:
    for ent in entities():
        _check_entity(ent)


@row_check("custom_fields")
def _custom_fields(session: Session) -> None:
    _versions(session, CustomField)
    known = {e.key for e in entities()}
    for row in session.scalars(select(CustomField)):
        if row.entity not in known:
            raise _refuse("custom_fields", row.id, "entity", _l("not an entity of this version."))
        if not KEY_RE.fullmatch(row.key) or "__" in row.key:
            raise _refuse("custom_fields", row.id, "key", _l("not a key the application makes."))
        if row.type not in {t.value for t in CUSTOM_TYPES}:
            raise _refuse("custom_fields", row.id, "type", _l("not a custom field type."))
        if not isinstance(row.options, list) or len(row.options) > 200 or not all(
                isinstance(o, dict) and isinstance(o.get("value"), str) for o in row.options):
            raise _refuse("custom_fields", row.id, "options", _l("not a list of options."))


@row_check("dictionary_items")
def _dictionary_items(session: Session) -> None:
    _versions(session, DictionaryItem)
    parents: dict[Any, Any] = {}
    for row in session.scalars(select(DictionaryItem)):
        if not re.fullmatch(r"[A-Za-z0-9_\-.]{1,40}", row.code) or not KEY_RE.fullmatch(row.kind):
            raise _refuse("dictionary_items", row.id, "code", _l("not a code the application makes."))
        parents[row.id] = row.parent_id
    for start in parents:
        seen: set[Any] = set()
        cursor = start
        while cursor is not None:
            if cursor in seen:
                raise _refuse("dictionary_items", start, "parent_id", _l("the items form a cycle."))
            seen.add(cursor)
            cursor = parents.get(cursor)


@row_check("number_formats")
def _number_formats(session: Session) -> None:
    _versions(session, NumberFormat)
    for row in session.scalars(select(NumberFormat)):
        try:
            check_pattern(row.pattern)
        except ValidationFailed as exc:
            raise _refuse("number_formats", row.id, "pattern", exc) from None


@row_check("number_sequences")
def _number_sequences(session: Session) -> None:
    for row in session.scalars(select(NumberSequence)):
        if row.next_value < 1 or not re.fullmatch(r"[0-9]{0,8}", row.period):
            raise _refuse("number_sequences", row.entity, "next_value", _l("not a counter the application keeps."))


@row_check("record_shares")
def _record_shares(session: Session) -> None:
    for row in session.scalars(select(RecordShare)):
        if row.access not in ("read", "edit") or (row.user_id is None) == (row.department_id is None):
            raise _refuse("record_shares", row.id, "access", _l("a share is to one user or one department, "
                                                                "to read or to edit."))


@row_check("saved_views")
def _saved_views(session: Session) -> None:
    _versions(session, SavedView)
    for row in session.scalars(select(SavedView)):
        params = row.spec.get("params") if isinstance(row.spec, dict) else None
        if not isinstance(params, list) or len(params) > 60:
            raise _refuse("saved_views", row.id, "spec", _l("not a list view the application saves."))


@row_check("attachments")
def _attachments(session: Session) -> None:
    _versions(session, Attachment)
    for row in session.scalars(select(Attachment)):
        try:
            check_key(row.storage_key)
        except InvalidKey:
            raise _refuse("attachments", row.id, "storage_key", _l("not a storage key.")) from None


@row_check("notifications")
def _notifications(session: Session) -> None:
    for row in session.scalars(select(Notification)):
        # Shown as a link in the bell: only paths inside the workspace.
        if row.link and (not row.link.startswith("/") or row.link.startswith("//")):
            raise _refuse("notifications", row.id, "link", _l("must be a path inside the workspace."))
