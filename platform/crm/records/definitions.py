"""An entity's fields as this tenant has them: the built-in ones plus its custom fields; dictionaries.

Both are read often (every list, form and import) and change rarely, so they are read once per
session (a request, a task) and kept in ``session.info``; a change made through
:mod:`crm.records.settings` clears that copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import uuid7
from crm.records.entity import Entity
from crm.records.fields import Choice, Field, FieldType
from crm.records.models import CustomField, DictionaryItem

_FIELDS = "crm.fields"
_DICTS = "crm.dictionaries"
_CUSTOM = "crm.custom_fields"


def custom_field(row: CustomField) -> Field:
    return Field(
        key=row.key, type=FieldType(row.type), label_en=row.label_en, label_zh=row.label_zh,
        required=row.required, unique=row.is_unique, default=row.default, custom=True,
        choices=tuple(Choice(o["value"], o.get("label_en", o["value"]), o.get("label_zh", ""))
                      for o in row.options or ()),
        list_order=0, searchable=FieldType(row.type) in (FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE),
    )


def fields(session: Session, entity: Entity, *, include_inactive: bool = False) -> tuple[Field, ...]:
    """Built-in fields first, then the tenant's custom fields in their order."""
    cache: dict[tuple[str, bool], tuple[Field, ...]] = session.info.setdefault(_FIELDS, {})
    key = (entity.key, include_inactive)
    if key not in cache:
        rows = [r for r in _custom_rows(session) if r.entity == entity.key and (include_inactive or r.active)]
        cache[key] = entity.fields + tuple(custom_field(r) for r in rows)
    return cache[key]


def _custom_rows(session: Session) -> list[CustomField]:
    """Every entity's custom fields in one query per session: a record page shows several entities
    (the customer, its contacts, activities, tasks), and each query is a round trip."""
    rows: list[CustomField] | None = session.info.get(_CUSTOM)
    if rows is None:
        rows = session.info[_CUSTOM] = list(session.scalars(select(CustomField).order_by(
            CustomField.sort_order, CustomField.label_en)))
    return rows


def field_map(session: Session, entity: Entity) -> dict[str, Field]:
    return {f.key: f for f in fields(session, entity)}


def dictionary(session: Session, kind: str) -> list[DictionaryItem]:
    """A dictionary's items (active and not: old records keep showing their label), in order."""
    cache: dict[str, list[DictionaryItem]] | None = session.info.get(_DICTS)
    if cache is None:
        # Every dictionary at once (a tenant has a few hundred items): a page labels several of them,
        # and one query costs less than one round trip per dictionary.
        cache = session.info[_DICTS] = {}
        for item in session.scalars(select(DictionaryItem).order_by(DictionaryItem.sort_order, DictionaryItem.code)):
            cache.setdefault(item.kind, []).append(item)
    return cache.get(kind, [])


def dictionary_label(session: Session, kind: str, code: str | None, locale: str) -> str:
    if code is None:
        return ""
    item = next((i for i in dictionary(session, kind) if i.code == code), None)
    return item.label(locale) if item else str(code)


def forget(session: Session) -> None:
    """Drop the cached definitions (after an admin changed them in this session)."""
    session.info.pop(_FIELDS, None)
    session.info.pop(_CUSTOM, None)
    session.info.pop(_DICTS, None)


def find_code(session: Session, kind: str, text: str) -> str | None:
    """The code of a dictionary item given its code or either label (imports carry labels)."""
    folded = text.strip().casefold()
    for item in dictionary(session, kind):
        if item.active and folded in (item.code.casefold(), item.label_en.casefold(), item.label_zh.casefold()):
            return item.code
    return None


def display(session: Session, f: Field, value: Any, locale: str, *, users: dict[Any, str] | None = None) -> str:
    """A value as a person reads it: labels for choices and dictionaries, names for users."""
    if value is None or value in ([], ""):
        return ""
    if f.type == FieldType.CHOICE:
        c = f.choice(str(value))
        return c.label(locale) if c else str(value)
    if f.type == FieldType.MULTI:
        return "、".join((f.choice(v).label(locale) if f.choice(v) else v) for v in value)  # type: ignore[union-attr]
    if f.type == FieldType.DICT and f.target:
        return dictionary_label(session, f.target, str(value), locale)
    if f.type == FieldType.TAGS:
        return ", ".join(value)
    if f.type == FieldType.BOOL:
        return ("是" if value else "否") if locale == "zh" else ("Yes" if value else "No")
    if f.type == FieldType.MONEY and isinstance(value, Decimal):
        return f"{value:,.2f}"  # 6,530,000.00: amounts are read with thousands separators
    if f.type == FieldType.USER and users is not None:
        return users.get(value, str(value))
    if hasattr(value, "isoformat"):
        text = str(value.isoformat())
        return text[:16].replace("T", " ") if f.type == FieldType.DATETIME else text[:10]
    return str(value)


def seed(session: Session, seeds: Sequence[tuple[str, str, str, str, str | None]]) -> None:
    """Add dictionary items (kind, code, English, Chinese, parent code) that are not there yet."""
    existing = {(i.kind, i.code): i for i in session.scalars(select(DictionaryItem))}
    for order, (kind, code, en, zh, parent) in enumerate(seeds):
        if (kind, code) in existing:
            continue
        # Ids given here, so a child names its parent without a flush per item: every new tenant
        # seeds ~100 items, and one batched INSERT costs one round trip instead of a hundred.
        item = DictionaryItem(id=uuid7(), kind=kind, code=code, label_en=en, label_zh=zh, sort_order=order,
                              parent_id=existing[(kind, parent)].id if parent else None)
        session.add(item)
        existing[(kind, code)] = item
    session.flush()
    session.info.pop(_DICTS, None)
