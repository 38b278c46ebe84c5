"""The tenant admin's configuration of the CRM: custom fields, dictionaries and number formats.

Every function takes the session and the actor explicitly, requires ``crm.configure`` (admins have it;
no other built-in role is granted it), flushes, never commits, writes one audit entry with readable
before/after values, and clears the per-session cache of definitions (definitions.forget) so that
the same request already sees the change.

Decisions where the issue is silent:
- A custom field's key is fixed once created (records and saved views store it); its type may change
  only while no record holds a value for it.
- An option of a choice field that live records use cannot be removed (the error names it and how
  many records use it): those records are changed first, with a filter on the value and a bulk "set",
  so that no record is left holding a value its field no longer knows. Records in the recycle bin do
  not hold an option back; restored, they show the stored value as it is.
- Dictionary codes are fixed once created (records store codes); labels, order, parent and the active
  flag change. An item is only deleted while no record uses it and it has no children; otherwise it
  is deactivated (kept for the records that show it, no longer offered).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.db import text_problem
from core.errors import Conflict, NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from core.i18n import Text, _l, _ln, shown
from core.permissions import Actor
from crm.records import definitions, lists, seeds
from crm.records import services as record_services
from crm.records.entity import Entity, entities, find_entity
from crm.records.fields import CUSTOM_TYPES, Field, FieldType, Invalid, convert, to_json
from crm.records.models import CustomField, DictionaryItem, NumberFormat
from crm.records.permissions import CONFIGURE
from tenants import services as tenant_services
from tenants.models import User

MAX_FIELDS = 100
MAX_OPTIONS = 200
MAX_ITEMS = 1000
MAX_TREE_DEPTH = 6
LABEL_MAX = 100
KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}")
#: Words an API body or a list query already uses for something else.
RESERVED_KEYS = lists.RESERVED | {"id", "version", "title", "display", "custom", "allow_duplicates", "items"}
#: These separate the values of a multiple choice in an import cell (fields._multi).
OPTION_SEPARATORS = re.compile(r"[,;，；|]")
#: Types a value can be unique for (a choice or a yes/no is shared by design).
UNIQUE_TYPES = (FieldType.TEXT, FieldType.NUMBER, FieldType.MONEY, FieldType.DATE, FieldType.DATETIME,
                FieldType.EMAIL, FieldType.PHONE, FieldType.URL)
#: Dictionaries whose items may have a parent.
TREE_KINDS = frozenset({"region"})


def require(actor: Actor) -> None:
    if not actor.can(CONFIGURE):
        raise PermissionDenied(_l("Only a workspace administrator may change the CRM's configuration."))


def _invalid(errors: dict[str, list[Text]]) -> ValidationFailed:
    return ValidationFailed(_ln("%(num)d field needs attention.", "%(num)d fields need attention.", len(errors)),
                            field_errors=errors)


def _entity(key: Any) -> Entity:
    ent = find_entity(key) if isinstance(key, str) else None
    if ent is None:
        raise ValidationFailed(_l("Choose one of the CRM's record types."),
                               field_errors={"entity": [_l("Unknown record type '%(value)s'.", value=shown(key))]})
    return ent


def _uuid(raw: Any) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(str(raw)[:40])
    except ValueError:
        raise NotFound(_l("Not found.")) from None


def _label(raw: Any, key: str, errors: dict[str, list[Text]]) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        errors.setdefault(key, []).append(_l("Expected text."))
        return ""
    value = raw.strip()
    if len(value) > LABEL_MAX:
        errors.setdefault(key, []).append(_l("At most %(max)d characters.", max=LABEL_MAX))
    elif (problem := text_problem(value)) or "\n" in value or "\r" in value:
        errors.setdefault(key, []).append(_l("This text cannot be stored: %(problem)s.",
                                             problem=problem or "line break"))
    return value


def _flag(raw: Any, key: str, errors: dict[str, list[Text]]) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("", "0", "1", "true", "false", "on", "off", "yes", "no"):
        return raw.strip().lower() in ("1", "true", "on", "yes")
    errors.setdefault(key, []).append(_l("Expected yes or no."))
    return False


def _slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", text.casefold())).strip("_")


def _audit(session: Session, actor: Actor, action: str, kind: str, ident: Any, before: dict[str, Any] | None,
           after: dict[str, Any] | None) -> None:
    tenant_services.audit(session, actor, action, kind, ident, before=before, after=after)
    definitions.forget(session)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


# --------------------------------------------------------------------------- custom fields


def as_field(row: CustomField) -> Field:
    return definitions.custom_field(row)


def readable(row: CustomField) -> dict[str, Any]:
    """A definition as the audit log shows it: labels, the type's name, options as 'value: labels'."""
    ent = find_entity(row.entity)
    return {"entity": ent.plural_en if ent else row.entity, "key": row.key, "type": row.type,
            "label_en": row.label_en, "label_zh": row.label_zh, "required": row.required, "unique": row.is_unique,
            "default": row.default, "active": row.active, "order": row.sort_order,
            "options": [f"{o['value']}: {o.get('label_en', '')} / {o.get('label_zh', '')}" for o in row.options or ()]}


def list_fields(session: Session, actor: Actor, entity_key: Any) -> list[CustomField]:
    """An entity's custom fields, active and not, in their order."""
    require(actor)
    ent = _entity(entity_key)
    return list(session.scalars(select(CustomField).where(CustomField.entity == ent.key)
                                .order_by(CustomField.sort_order, CustomField.label_en)))


def get_field(session: Session, actor: Actor, field_id: Any) -> CustomField:
    require(actor)
    row = session.get(CustomField, _uuid(field_id))
    if row is None:
        raise NotFound(_l("Not found."))
    return row


def parse_options(text: str) -> list[dict[str, str]]:
    """A form's options, one per line: ``value | English | 中文`` (labels optional; a line with only a
    label gets a value made from it)."""
    out = []
    for line in text.splitlines()[:MAX_OPTIONS + 1]:
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 1:
            out.append({"value": "", "label_en": parts[0], "label_zh": ""})
        else:
            out.append({"value": parts[0], "label_en": parts[1], "label_zh": parts[2] if len(parts) > 2 else ""})
    return out


def options_text(options: Sequence[Mapping[str, str]]) -> str:
    return "\n".join(f"{o['value']} | {o.get('label_en', '')} | {o.get('label_zh', '')}" for o in options)


def _options(raw: Any, errors: dict[str, list[Text]]) -> list[dict[str, str]]:  # noqa: PLR0912 - one check each
    if raw is None:
        return []
    if isinstance(raw, str):
        if len(raw) > MAX_OPTIONS * 250:
            errors.setdefault("options", []).append(_l("At most %(max)d options.", max=MAX_OPTIONS))
            return []
        raw = parse_options(raw)
    if not isinstance(raw, list):
        errors.setdefault("options", []).append(_l("Expected a list of options."))
        return []
    if len(raw) > MAX_OPTIONS:
        errors.setdefault("options", []).append(_l("At most %(max)d options.", max=MAX_OPTIONS))
        return []
    out: list[dict[str, str]] = []
    seen_values: set[str] = set()
    seen_labels: set[str] = set()
    for n, given in enumerate(raw, start=1):
        item = {"value": "", "label_en": given} if isinstance(given, str) else given
        if not isinstance(item, dict) or not all(isinstance(item.get(k, ""), str) or item.get(k) is None
                                                 for k in ("value", "label_en", "label_zh")):
            errors.setdefault("options", []).append(_l("Option %(num)d: expected value and labels as text.", num=n))
            continue
        mine: dict[str, list[Text]] = {}
        label_en = _label(item.get("label_en"), "options", mine)
        label_zh = _label(item.get("label_zh"), "options", mine)
        value = (item.get("value") or "").strip() or _slug(label_en) or label_zh
        if not label_en and not label_zh:
            label_en = value
        if not value or len(value) > 40 or text_problem(value):
            mine.setdefault("options", []).append(_l("Option %(num)d: a value of 1 to 40 characters.", num=n))
        elif any(OPTION_SEPARATORS.search(t) for t in (value, label_en, label_zh)):
            mine.setdefault("options", []).append(
                _l("Option %(num)d: commas, semicolons and | separate values in imports; leave them out.", num=n))
        elif value in seen_values or {label_en.casefold(), label_zh} & seen_labels - {""}:
            mine.setdefault("options", []).append(_l("Option %(num)d: '%(value)s' is there twice.", num=n,
                                                     value=shown(value)))
        if mine:
            errors.setdefault("options", []).extend(mine["options"])
            continue
        seen_values.add(value)
        seen_labels.update({label_en.casefold(), label_zh} - {""})
        out.append({"value": value, "label_en": label_en or label_zh, "label_zh": label_zh or label_en})
    if len(errors.get("options", [])) > 10:
        errors["options"] = errors["options"][:10]
    return out


def values_in_use(session: Session, ent: Entity, key: str, *, live_only: bool = False) -> int:
    """How many records hold a value for a custom field (the GIN index on ``custom`` answers ``?``)."""
    stmt = select(func.count()).select_from(ent.model).where(ent.model.custom.has_key(key))
    if live_only:
        stmt = stmt.where(ent.model.deleted_at.is_(None))
    return session.scalar(stmt) or 0


def _option_in_use(session: Session, ent: Entity, key: str, ftype: str, value: str) -> int:
    wanted = [value] if ftype == FieldType.MULTI else value
    return session.scalar(select(func.count()).select_from(ent.model).where(
        ent.model.custom.contains({key: wanted}), ent.model.deleted_at.is_(None))) or 0


def _duplicated_values(session: Session, ent: Entity, key: str) -> int:
    expr = ent.model.custom[key].astext
    inner = (select(expr).where(ent.model.custom.has_key(key), ent.model.deleted_at.is_(None))
             .group_by(expr).having(func.count() > 1).limit(1000).subquery())
    return session.scalar(select(func.count()).select_from(inner)) or 0


def _generated_key(session: Session, ent: Entity, label_en: str) -> str:
    taken = {f.key for f in ent.fields} | set(session.scalars(select(CustomField.key)
                                                              .where(CustomField.entity == ent.key)))
    base = _slug(label_en)[:34]
    if not base or not base[0].isalpha() or base in RESERVED_KEYS:
        base = f"field_{base}" if base else "field"
    key, n = base, 1
    while key in taken or key in RESERVED_KEYS:
        n += 1
        key = f"{base}_{n}"
    return key


def _check_key(session: Session, ent: Entity, raw: Any, errors: dict[str, list[Text]]) -> str:
    if not isinstance(raw, str) or not KEY_RE.fullmatch(raw) or "__" in raw:
        errors.setdefault("key", []).append(_l("A key is 1 to 40 lowercase letters, digits or single underscores, "
                                               "starting with a letter."))
        return ""
    if raw in RESERVED_KEYS or ent.field(raw) is not None:
        errors.setdefault("key", []).append(_l("'%(value)s' is already used by the system.", value=raw))
    elif session.scalar(select(CustomField.id).where(CustomField.entity == ent.key, CustomField.key == raw)):
        errors.setdefault("key", []).append(_l("Another custom field already has the key '%(value)s'.", value=raw))
    return raw


def _check_default(session: Session, definition: Field, raw: Any, errors: dict[str, list[Text]]) -> Any:
    if raw is None or raw in ("", []):
        return None
    try:
        value = convert(definition, raw)
    except Invalid as exc:
        errors.setdefault("default", []).append(exc.message)
        return None
    if definition.type == FieldType.USER and value is not None:
        user = session.get(User, value)
        if user is None or not user.active:
            errors.setdefault("default", []).append(_l("No active user with this id."))
            return None
    return to_json(definition, value)


FIELD_KEYS = frozenset({"entity", "key", "type", "label_en", "label_zh", "required", "unique", "default",
                        "options", "order"})


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str], errors: dict[str, list[Text]]) -> None:
    for key in data:
        if key not in allowed:
            errors.setdefault(shown(str(key)), []).append(_l("There is no such field."))


def create_field(session: Session, actor: Actor, data: Mapping[str, Any]) -> CustomField:
    """A new custom field; ``data`` as the API or a form gives it (every mistake reported at once)."""
    require(actor)
    ent = _entity(data.get("entity"))
    errors: dict[str, list[Text]] = {}
    _unknown_keys(data, FIELD_KEYS, errors)
    count = session.scalar(select(func.count()).select_from(CustomField).where(CustomField.entity == ent.key)) or 0
    if count >= MAX_FIELDS:
        raise Conflict(_l("%(entity)s already have %(max)d custom fields, the most there can be; deactivated "
                          "ones count too.", entity=ent.plural_en, max=MAX_FIELDS), code="too_many_fields")
    label_en = _label(data.get("label_en"), "label_en", errors)
    label_zh = _label(data.get("label_zh"), "label_zh", errors)
    if not label_en and not label_zh and "label_en" not in errors and "label_zh" not in errors:
        errors.setdefault("label_en", []).append(_l("Give the field a name in English or Chinese."))
    ftype = data.get("type")
    if ftype not in {t.value for t in CUSTOM_TYPES}:
        errors.setdefault("type", []).append(_l("Choose one of the field types."))
        ftype = None
    raw_key = data.get("key")
    key = (_check_key(session, ent, raw_key, errors) if raw_key not in (None, "")
           else _generated_key(session, ent, label_en))
    required = _flag(data.get("required", False), "required", errors)
    unique = _flag(data.get("unique", False), "unique", errors)
    options = _options(data.get("options"), errors)
    order = _order(data.get("order"), errors, default=count)
    row = CustomField(entity=ent.key, key=key, type=ftype or FieldType.TEXT.value, label_en=label_en or label_zh,
                      label_zh=label_zh or label_en, required=required, is_unique=unique, options=options,
                      sort_order=order, active=True)
    _check_definition(session, ent, row, errors, old=None)
    row.default = _check_default(session, as_field(row), data.get("default"), errors) if ftype else None
    if errors:
        raise _invalid(errors)
    row.created_by = row.updated_by = actor.id if isinstance(actor.id, uuid.UUID) else None
    session.add(row)
    session.flush()
    _audit(session, actor, "custom_field.created", "custom_field", row.id, None, readable(row))
    return row


def _order(raw: Any, errors: dict[str, list[Text]], *, default: int) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip().lstrip("-").isdigit() \
            or len(str(raw)) > 6:
        errors.setdefault("order", []).append(_l("Expected a whole number from 0 to 9999."))
        return default
    value = int(str(raw).strip())
    if not 0 <= value <= 9999:
        errors.setdefault("order", []).append(_l("Expected a whole number from 0 to 9999."))
        return default
    return value


def _check_definition(session: Session, ent: Entity, row: CustomField, errors: dict[str, list[Text]],
                      old: CustomField | None) -> None:
    """What depends on the type: options for choices, unique only where it means something."""
    ftype = FieldType(row.type)
    if ftype in (FieldType.CHOICE, FieldType.MULTI):
        if not row.options and "options" not in errors:
            errors.setdefault("options", []).append(_l("A choice field needs at least one option."))
    elif row.options:
        errors.setdefault("options", []).append(_l("Only choice fields have options."))
    if row.is_unique and ftype not in UNIQUE_TYPES:
        errors.setdefault("unique", []).append(_l("Only text, number, date, email, phone and web address fields "
                                                  "can be unique."))
    elif row.is_unique and old is not None and not old.is_unique:
        dupes = _duplicated_values(session, ent, row.key)
        if dupes:
            errors.setdefault("unique", []).append(_ln(
                "%(num)d value is held by more than one record; make them distinct first.",
                "%(num)d values are held by more than one record; make them distinct first.", dupes))
    if old is not None and row.type != old.type:
        used = values_in_use(session, ent, row.key)
        if used:
            errors.setdefault("type", []).append(_ln(
                "%(num)d record holds a value of this field, so its type cannot change; add a new field instead.",
                "%(num)d records hold a value of this field, so its type cannot change; add a new field instead.",
                used))
    if old is not None and ftype in (FieldType.CHOICE, FieldType.MULTI) and row.type == old.type:
        kept = {o["value"] for o in row.options}
        for gone in [o["value"] for o in old.options or () if o["value"] not in kept][:MAX_OPTIONS]:
            used = _option_in_use(session, ent, row.key, row.type, gone)
            if used:
                errors.setdefault("options", []).append(_ln(
                    "'%(value)s' is chosen in %(num)d record; change it there before removing the option.",
                    "'%(value)s' is chosen in %(num)d records; change them before removing the option.",
                    used, value=shown(gone)))


def update_field(session: Session, actor: Actor, field_id: Any, data: Mapping[str, Any], *,
                 expected_version: int | None = None) -> CustomField:
    """Change labels, required, unique, default, options, order (and the type while no record uses it)."""
    row = get_field(session, actor, field_id)
    if expected_version is not None and expected_version != row.version:
        raise PreconditionFailed(_l("Someone changed this field since you loaded it; reload and try again."))
    ent = _entity(row.entity)
    errors: dict[str, list[Text]] = {}
    _unknown_keys(data, FIELD_KEYS - {"entity"}, errors)
    if "key" in data and data["key"] != row.key:
        errors.setdefault("key", []).append(_l("The key cannot change: records, imports and saved views use it."))
    before = readable(row)
    old = CustomField(entity=row.entity, key=row.key, type=row.type, is_unique=row.is_unique,
                      options=list(row.options or ()))
    label_en = _label(data.get("label_en", row.label_en), "label_en", errors)
    label_zh = _label(data.get("label_zh", row.label_zh), "label_zh", errors)
    if not label_en and not label_zh and "label_en" not in errors:
        errors.setdefault("label_en", []).append(_l("Give the field a name in English or Chinese."))
    ftype = data.get("type", row.type)
    if ftype not in {t.value for t in CUSTOM_TYPES}:
        errors.setdefault("type", []).append(_l("Choose one of the field types."))
        ftype = row.type
    candidate = CustomField(entity=row.entity, key=row.key, type=ftype, label_en=label_en or label_zh,
                            label_zh=label_zh or label_en,
                            required=_flag(data.get("required", row.required), "required", errors),
                            is_unique=_flag(data.get("unique", row.is_unique), "unique", errors),
                            options=_options(data["options"], errors) if "options" in data else list(row.options or ()),
                            sort_order=_order(data.get("order"), errors, default=row.sort_order))
    if FieldType(ftype) not in (FieldType.CHOICE, FieldType.MULTI) and "options" not in data:
        candidate.options = []
    _check_definition(session, ent, candidate, errors, old=old)
    default = _check_default(session, as_field(candidate), data.get("default", row.default), errors)
    if errors:
        raise _invalid(errors)
    for attr in ("type", "label_en", "label_zh", "required", "is_unique", "options", "sort_order"):
        setattr(row, attr, getattr(candidate, attr))
    row.default = default
    after = readable(row)
    if after == before:
        return row
    row.updated_by = actor.id if isinstance(actor.id, uuid.UUID) else None
    session.flush()
    _audit(session, actor, "custom_field.updated", "custom_field", row.id, *_changed(before, after))
    return row


def set_field_active(session: Session, actor: Actor, field_id: Any, active: bool) -> CustomField:
    """Deactivate (hidden everywhere, values kept) or bring back a custom field."""
    row = get_field(session, actor, field_id)
    if row.active == active:
        return row
    row.active = active
    row.updated_by = actor.id if isinstance(actor.id, uuid.UUID) else None
    session.flush()
    _audit(session, actor, "custom_field.activated" if active else "custom_field.deactivated", "custom_field",
           row.id, {"active": not active, "label_en": row.label_en, "label_zh": row.label_zh},
           {"active": active, "label_en": row.label_en, "label_zh": row.label_zh})
    return row


def reorder_fields(session: Session, actor: Actor, entity_key: Any, ids: Sequence[Any]) -> list[CustomField]:
    """Put an entity's custom fields in the order of ``ids`` (every one of them, once)."""
    rows = list_fields(session, actor, entity_key)
    if not isinstance(ids, (list, tuple)) or len(ids) > MAX_FIELDS:
        raise ValidationFailed(_l("Send the ids of the fields in their new order."),
                               field_errors={"ids": [_l("A list of at most %(max)d ids.", max=MAX_FIELDS)]})
    by_id = {str(r.id): r for r in rows}
    wanted = [str(i)[:40] for i in ids]
    if sorted(wanted) != sorted(by_id):
        raise ValidationFailed(_l("Send the ids of the fields in their new order."),
                               field_errors={"ids": [_l("Every custom field of this record type, each once.")]})
    before = [by_id[k].key for k in sorted(by_id, key=lambda k: by_id[k].sort_order)]
    for n, ident in enumerate(wanted):
        by_id[ident].sort_order = n
    session.flush()
    after = [by_id[k].key for k in wanted]
    if before != after:
        _audit(session, actor, "custom_field.reordered", "custom_field", None, {"order": before}, {"order": after})
    return sorted(rows, key=lambda r: r.sort_order)


def move_field(session: Session, actor: Actor, field_id: Any, step: int) -> None:
    """One place up (-1) or down (+1): the page's buttons."""
    row = get_field(session, actor, field_id)
    rows = list_fields(session, actor, row.entity)
    ids = [r.id for r in rows]
    at = ids.index(row.id)
    to = min(max(at + step, 0), len(ids) - 1)
    ids.insert(to, ids.pop(at))
    reorder_fields(session, actor, row.entity, ids)


# --------------------------------------------------------------------------- dictionaries


@dataclass(frozen=True, slots=True)
class Kind:
    key: str
    label_en: str
    label_zh: str
    tree: bool
    count: int

    def label(self, locale: str) -> str:
        return self.label_zh if locale == "zh" else self.label_en


def kinds(session: Session, actor: Actor) -> list[Kind]:
    require(actor)
    counts = dict(session.execute(select(DictionaryItem.kind, func.count()).group_by(DictionaryItem.kind)).all())
    return [Kind(k, en, zh, k in TREE_KINDS, counts.get(k, 0)) for k, (en, zh) in seeds.KINDS.items()]


def _kind(raw: Any) -> str:
    if not isinstance(raw, str) or raw not in seeds.KINDS:
        raise NotFound(_l("There is no such dictionary."))
    return raw


def items(session: Session, actor: Actor, kind: Any) -> list[DictionaryItem]:
    require(actor)
    return list(session.scalars(select(DictionaryItem).where(DictionaryItem.kind == _kind(kind))
                                .order_by(DictionaryItem.sort_order, DictionaryItem.code)))


def tree(rows: Sequence[DictionaryItem]) -> list[tuple[int, DictionaryItem]]:
    """Items depth-first under their parents, each with its depth (an orphan shows at the top)."""
    children: dict[uuid.UUID | None, list[DictionaryItem]] = {}
    known = {r.id for r in rows}
    for r in rows:
        children.setdefault(r.parent_id if r.parent_id in known else None, []).append(r)
    out: list[tuple[int, DictionaryItem]] = []

    def walk(parent: uuid.UUID | None, depth: int) -> None:
        for r in children.get(parent, []):
            out.append((depth, r))
            if depth < MAX_TREE_DEPTH * 2:
                walk(r.id, depth + 1)

    walk(None, 0)
    return out


def item_json(r: DictionaryItem, locale: str) -> dict[str, Any]:
    return {"id": str(r.id), "code": r.code, "label_en": r.label_en, "label_zh": r.label_zh,
            "label": r.label(locale), "parent_id": str(r.parent_id) if r.parent_id else None,
            "order": r.sort_order, "active": r.active, "version": r.version}


def nested(rows: Sequence[DictionaryItem], locale: str) -> list[dict[str, Any]]:
    """The items as a tree: each with its ``children``."""
    made: dict[uuid.UUID, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for depth, r in tree(rows):
        node = {**item_json(r, locale), "children": []}
        made[r.id] = node
        parent = made.get(r.parent_id) if r.parent_id is not None and depth else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots


def get_item(session: Session, actor: Actor, kind: Any, item_id: Any) -> DictionaryItem:
    require(actor)
    k = _kind(kind)
    row = session.get(DictionaryItem, _uuid(item_id))
    if row is None or row.kind != k:
        raise NotFound(_l("Not found."))
    return row


def _readable_item(r: DictionaryItem, parent: DictionaryItem | None) -> dict[str, Any]:
    kind_en, kind_zh = seeds.KINDS.get(r.kind, (r.kind, r.kind))
    return {"dictionary": f"{kind_en} / {kind_zh}", "code": r.code, "label_en": r.label_en, "label_zh": r.label_zh,
            "parent": f"{parent.label_en} / {parent.label_zh}" if parent else None, "order": r.sort_order,
            "active": r.active}


def _parent(session: Session, kind: str, raw: Any, errors: dict[str, list[Text]],
            item: DictionaryItem | None) -> DictionaryItem | None:
    if raw in (None, ""):
        return None
    if kind not in TREE_KINDS:
        errors.setdefault("parent_id", []).append(_l("Only regions form a tree."))
        return None
    try:
        parent = session.get(DictionaryItem, uuid.UUID(str(raw)[:40]))
    except ValueError:
        parent = None
    if parent is None or parent.kind != kind:
        errors.setdefault("parent_id", []).append(_l("No such item in this dictionary."))
        return None
    # Walk up from the new parent: meeting the item itself would make a cycle.
    node: DictionaryItem | None = parent
    depth = 0
    while node is not None:
        if item is not None and node.id == item.id:
            errors.setdefault("parent_id", []).append(_l("An item cannot sit under itself or under one of its own "
                                                         "sub-items."))
            return None
        depth += 1
        if depth >= MAX_TREE_DEPTH:
            errors.setdefault("parent_id", []).append(_l("At most %(max)d levels.", max=MAX_TREE_DEPTH))
            return None
        node = session.get(DictionaryItem, node.parent_id) if node.parent_id else None
    return parent


ITEM_KEYS = frozenset({"code", "label_en", "label_zh", "parent_id", "order", "active"})


def add_item(session: Session, actor: Actor, kind: Any, data: Mapping[str, Any]) -> DictionaryItem:
    require(actor)
    k = _kind(kind)
    errors: dict[str, list[Text]] = {}
    _unknown_keys(data, ITEM_KEYS, errors)
    count = session.scalar(select(func.count()).select_from(DictionaryItem).where(DictionaryItem.kind == k)) or 0
    if count >= MAX_ITEMS:
        raise Conflict(_l("This dictionary already has %(max)d items, the most there can be.", max=MAX_ITEMS),
                       code="too_many_items")
    label_en = _label(data.get("label_en"), "label_en", errors)
    label_zh = _label(data.get("label_zh"), "label_zh", errors)
    if not label_en and not label_zh and "label_en" not in errors and "label_zh" not in errors:
        errors.setdefault("label_en", []).append(_l("Give the item a name in English or Chinese."))
    code = data.get("code")
    if code in (None, ""):
        base = _slug(label_en)[:36] or f"item_{count + 1}"
        code, n = base, 1
        while session.scalar(select(DictionaryItem.id).where(DictionaryItem.kind == k, DictionaryItem.code == code)):
            n += 1
            code = f"{base}_{n}"
    elif not isinstance(code, str) or not CODE_RE.fullmatch(code):
        errors.setdefault("code", []).append(_l("A code is 1 to 40 letters, digits, dots, dashes or underscores."))
    elif session.scalar(select(DictionaryItem.id).where(DictionaryItem.kind == k, DictionaryItem.code == code)):
        errors.setdefault("code", []).append(_l("Another item already has the code '%(value)s'.", value=code))
    parent = _parent(session, k, data.get("parent_id"), errors, None)
    order = _order(data.get("order"), errors, default=count)
    active = _flag(data.get("active", True), "active", errors)
    if errors:
        raise _invalid(errors)
    row = DictionaryItem(kind=k, code=str(code), label_en=label_en or label_zh, label_zh=label_zh or label_en,
                         parent_id=parent.id if parent else None, sort_order=order, active=active,
                         created_by=actor.id if isinstance(actor.id, uuid.UUID) else None)
    session.add(row)
    session.flush()
    _audit(session, actor, "dictionary_item.created", "dictionary_item", row.id, None, _readable_item(row, parent))
    return row


def update_item(session: Session, actor: Actor, kind: Any, item_id: Any, data: Mapping[str, Any], *,
                expected_version: int | None = None) -> DictionaryItem:
    """Rename, reorder, move under another parent, (de)activate; the code stays (records store it)."""
    row = get_item(session, actor, kind, item_id)
    if expected_version is not None and expected_version != row.version:
        raise PreconditionFailed(_l("Someone changed this item since you loaded it; reload and try again."))
    errors: dict[str, list[Text]] = {}
    _unknown_keys(data, ITEM_KEYS, errors)
    if "code" in data and data["code"] != row.code:
        errors.setdefault("code", []).append(_l("The code cannot change: records store it. Rename the item instead."))
    old_parent = session.get(DictionaryItem, row.parent_id) if row.parent_id else None
    before = _readable_item(row, old_parent)
    label_en = _label(data.get("label_en", row.label_en), "label_en", errors)
    label_zh = _label(data.get("label_zh", row.label_zh), "label_zh", errors)
    if not label_en and not label_zh and "label_en" not in errors:
        errors.setdefault("label_en", []).append(_l("Give the item a name in English or Chinese."))
    parent = (_parent(session, row.kind, data["parent_id"], errors, row) if "parent_id" in data else old_parent)
    order = _order(data.get("order"), errors, default=row.sort_order)
    active = _flag(data.get("active", row.active), "active", errors)
    if errors:
        raise _invalid(errors)
    row.label_en, row.label_zh = label_en or label_zh, label_zh or label_en
    row.parent_id = parent.id if parent else None
    row.sort_order, row.active = order, active
    after = _readable_item(row, parent)
    if after == before:
        return row
    row.updated_by = actor.id if isinstance(actor.id, uuid.UUID) else None
    session.flush()
    _audit(session, actor, "dictionary_item.updated", "dictionary_item", row.id, *_changed(before, after))
    return row


def item_in_use(session: Session, kind: str, code: str) -> int:
    """How many records (the recycle bin's included) hold this code in a field of this dictionary."""
    total = 0
    for ent in entities():
        for f in ent.fields:
            if f.type == FieldType.DICT and f.target == kind:
                total += session.scalar(select(func.count()).select_from(ent.model)
                                        .where(getattr(ent.model, f.key) == code)) or 0
    return total


def remove_item(session: Session, actor: Actor, kind: Any, item_id: Any) -> bool:
    """Delete an item no record uses and no item sits under; otherwise deactivate it. True if deleted."""
    row = get_item(session, actor, kind, item_id)
    has_children = session.scalar(select(func.count()).select_from(DictionaryItem)
                                  .where(DictionaryItem.parent_id == row.id)) or 0
    if has_children or item_in_use(session, row.kind, row.code):
        update_item(session, actor, kind, item_id, {"active": False})
        return False
    parent = session.get(DictionaryItem, row.parent_id) if row.parent_id else None
    before = _readable_item(row, parent)
    session.execute(delete(DictionaryItem).where(DictionaryItem.id == row.id))
    session.expunge(row)
    _audit(session, actor, "dictionary_item.deleted", "dictionary_item", item_id, before, None)
    return True


def move_item(session: Session, actor: Actor, kind: Any, item_id: Any, step: int) -> None:
    """One place up or down among its siblings (orders are renumbered 0..n-1 among them)."""
    row = get_item(session, actor, kind, item_id)
    siblings = [r for r in items(session, actor, kind) if r.parent_id == row.parent_id]
    at = siblings.index(row)
    siblings.insert(min(max(at + step, 0), len(siblings) - 1), siblings.pop(at))
    for n, r in enumerate(siblings):
        if r.sort_order != n:
            r.sort_order = n
    session.flush()
    _audit(session, actor, "dictionary_item.reordered", "dictionary_item", row.id, None,
           {"order": [f"{r.label_en} / {r.label_zh}" for r in siblings]})


# --------------------------------------------------------------------------- number formats


@dataclass(frozen=True, slots=True)
class Format:
    entity: Entity
    pattern: str
    custom: bool
    preview: str


def preview(session: Session, ent: Entity, pattern: str) -> str:
    """The number the next record would get in ``pattern`` (nothing is consumed)."""
    return record_services.peek_number(session, ent, pattern)


def formats(session: Session, actor: Actor) -> list[Format]:
    require(actor)
    own = dict(session.execute(select(NumberFormat.entity, NumberFormat.pattern)).all())
    return [Format(e, own.get(e.key, e.number_format), e.key in own,
                   preview(session, e, own.get(e.key, e.number_format))) for e in entities()]


def check_format(session: Session, ent: Entity, raw: Any) -> str:
    """A pattern the number column can hold, or ValidationFailed on ``pattern``."""
    if not isinstance(raw, str):
        raise ValidationFailed(_l("A number format is text."), field_errors={"pattern": [_l("Expected text.")]})
    pattern = raw.strip()
    if len(pattern) > 60 or text_problem(pattern) or any(ch in pattern for ch in "\r\n\t"):
        raise ValidationFailed(_l("A number format needs {seq} and at most 60 characters."),
                               field_errors={"pattern": [_l("At most 60 characters on one line.")]})
    record_services.check_pattern(pattern)
    sample = record_services.format_number(pattern, 10 ** 9, record_services.today())
    if len(sample) > 40:
        raise ValidationFailed(_l("Numbers in this format could be longer than 40 characters."),
                               field_errors={"pattern": [_l("Shorten the fixed text or the padding.")]})
    return pattern


def set_format(session: Session, actor: Actor, entity_key: Any, raw: Any) -> Format:
    """Set (or, with an empty pattern, reset to the default) an entity's number format.

    Refused when the next number in the new format is already taken: the record saved next would
    otherwise fail on the unique number.
    """
    require(actor)
    ent = _entity(entity_key)
    row = session.scalar(select(NumberFormat).where(NumberFormat.entity == ent.key))
    old = row.pattern if row else ent.number_format
    pattern = ent.number_format if raw in (None, "") else check_format(session, ent, raw)
    if pattern != old:
        upcoming = preview(session, ent, pattern)
        if session.scalar(select(ent.model.id).where(ent.model.number == upcoming).limit(1)) is not None:
            raise ValidationFailed(_l("The next number in this format, %(number)s, is already taken.",
                                      number=upcoming),
                                   field_errors={"pattern": [_l("Change the fixed text so that new numbers differ "
                                                                "from the existing ones.")]})
        if pattern == ent.number_format and row is not None:
            session.delete(row)
        elif row is None:
            session.add(NumberFormat(entity=ent.key, pattern=pattern,
                                     created_by=actor.id if isinstance(actor.id, uuid.UUID) else None))
        else:
            row.pattern = pattern
        session.flush()
        _audit(session, actor, "number_format.updated", "number_format", ent.key,
               {"entity": ent.plural_en, "pattern": old}, {"entity": ent.plural_en, "pattern": pattern})
    return Format(ent, pattern, pattern != ent.number_format, preview(session, ent, pattern))
