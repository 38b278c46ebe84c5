"""The lifecycle of every CRM record: validate, create, read, change, share, transfer, merge, delete.

Functions take the session and the :class:`~crm.records.scope.Viewer` explicitly and flush, never
commit. A record outside the viewer's scope raises :class:`NotFound` (it does not exist for them);
one they may see but not change raises :class:`PermissionDenied`.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, text
from sqlalchemy import update as sa_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.db import utcnow, uuid7
from core.errors import Conflict, NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from core.i18n import Text, _l, _ln, shown
from crm.records import definitions, search
from crm.records.entity import Entity, entities, entity, find_entity
from crm.records.fields import Field, FieldType, Invalid, convert, from_json, to_json
from crm.records.models import RECYCLE_DAYS, NumberFormat, NumberSequence, RecordShare
from crm.records.scope import Viewer, editable, visible
from tenants import services as tenant_services
from tenants.models import Department, User

MAX_BULK = 1000
DUPLICATE_LIMIT = 5
#: pg_trgm similarity from which two names count as possibly the same customer.
SIMILARITY = 0.45


@dataclass(frozen=True, slots=True)
class Link:
    """Rows of any entity that point at a record by (entity key, id): activities, tasks, attachments,
    shares. A merge moves them; a purge deletes or detaches them."""

    model: type[Any]
    entity_attr: str
    id_attr: str


LINKS: list[Link] = [Link(RecordShare, "entity", "record_id")]


def register_link(model: type[Any], entity_attr: str = "related_entity", id_attr: str = "related_id") -> None:
    LINKS.append(Link(model, entity_attr, id_attr))


#: An entity's own rules on every create and update, whichever way the change comes (page, API, import):
#: called with the record already changed and, on update, the changed fields' previous values (None on
#: create). A rule raises ValidationFailed, or returns further changes by field key (a task's reminder
#: moving with its due time), which are applied and audited with the rest.
Rule = Callable[[Session, Viewer, Any, Mapping[str, Any] | None], Mapping[str, Any]]
RULES: dict[str, list[Rule]] = {}


def register_rule(entity_key: str, rule: Rule) -> None:
    RULES.setdefault(entity_key, []).append(rule)


def _run_rules(session: Session, viewer: Viewer, ent: Entity, record: Any, fields: Mapping[str, Field],
               old: Mapping[str, Any] | None, before: dict[str, Any], after: dict[str, Any]) -> None:
    for rule in RULES.get(ent.key, ()):
        extra = rule(session, viewer, record, old)
        if extra:
            more_before, more_after = _apply(record, fields, extra)
            before.update({k: v for k, v in more_before.items() if k not in before})
            after.update(more_after)


# --------------------------------------------------------------------------- reading


def get(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str, *,
        deleted: bool = False) -> Any:
    """The record if the viewer may see it, else NotFound (also for an id that is no id)."""
    try:
        ident = record_id if isinstance(record_id, uuid.UUID) else uuid.UUID(str(record_id))
    except ValueError:
        raise NotFound(_l("Not found.")) from None
    row = session.scalars(select(ent.model).where(ent.model.id == ident, visible(ent, viewer, deleted=deleted))
                          ).one_or_none()
    if row is None:
        raise NotFound(_l("Not found."))
    return row


def can_edit(session: Session, viewer: Viewer, ent: Entity, record: Any) -> bool:
    if viewer.scope == "all":
        return viewer.can(ent, "edit") and record.deleted_at is None
    return session.scalar(select(func.count()).where(ent.model.id == record.id, editable(ent, viewer))) == 1


def get_for_edit(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str) -> Any:
    record = get(session, viewer, ent, record_id)
    if not can_edit(session, viewer, ent, record):
        raise PermissionDenied(_l("You may see this record but not change it."), code="read_only")
    return record


def value(record: Any, f: Field) -> Any:
    if f.custom:
        return from_json(f, (record.custom or {}).get(f.key))
    return getattr(record, f.key, None)


def values(record: Any, fields: Sequence[Field]) -> dict[str, Any]:
    return {f.key: value(record, f) for f in fields}


def user_names(session: Session, ids: Iterable[Any]) -> dict[Any, str]:
    wanted = {i for i in ids if isinstance(i, uuid.UUID)}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(wanted))).all())


def title(ent: Entity, record: Any) -> str:
    return str(getattr(record, ent.title_field, "") or record.number or "")


# --------------------------------------------------------------------------- validation


def clean(session: Session, viewer: Viewer, ent: Entity, data: Mapping[str, Any], *, record: Any | None = None,
          fields: Sequence[Field] | None = None) -> dict[str, Any]:
    """``data`` converted field by field; every problem of every field reported at once (422).

    ``record`` None means a new record: required fields must be there and defaults apply. Keys are
    field keys; unknown and read-only ones are refused by name rather than ignored.
    """
    all_fields = tuple(fields if fields is not None else definitions.fields(session, ent))
    by_key = {f.key: f for f in all_fields}
    errors: dict[str, list[Text]] = {}
    out: dict[str, Any] = {}
    for key, raw in data.items():
        f = by_key.get(key)
        if f is None:
            errors.setdefault(shown(key), []).append(_l("There is no such field."))
            continue
        if f.readonly:
            errors.setdefault(key, []).append(_l("This field is set by the system."))
            continue
        try:
            out[key] = convert(f, raw)
        except Invalid as exc:
            errors.setdefault(key, []).append(exc.message)
    if record is None:
        for f in all_fields:
            if f.key not in out and f.default is not None and not f.readonly:
                out[f.key] = convert(f, f.default) if not isinstance(f.default, (list, bool)) else f.default
    for f in all_fields:
        if not f.required or f.key in errors:
            continue
        present = out.get(f.key) if f.key in out else (value(record, f) if record is not None else None)
        if present is None or present in ([], ""):
            errors.setdefault(f.key, []).append(_l("Required."))
    _check_references(session, viewer, ent, out, by_key, errors)
    _check_unique(session, ent, out, by_key, errors, record)
    if errors:
        raise ValidationFailed(_ln("%(num)d field needs attention.", "%(num)d fields need attention.",
                                   len(errors)), field_errors=errors)
    return out


def _check_references(session: Session, viewer: Viewer, ent: Entity, out: dict[str, Any],
                      by_key: Mapping[str, Field], errors: dict[str, list[Text]]) -> None:
    for key, val in list(out.items()):
        f = by_key[key]
        if val is None:
            continue
        if f.type == FieldType.DICT and f.target:
            code = definitions.find_code(session, f.target, str(val))
            if code is None:
                errors.setdefault(key, []).append(_l("'%(value)s' is not in the list of %(field)s.",
                                                     value=shown(val), field=f.label(viewer.locale)))
            else:
                out[key] = code
        elif f.type == FieldType.USER:
            user = session.get(User, val)
            if user is None or not user.active:
                errors.setdefault(key, []).append(_l("No active user with this id."))
        elif f.type == FieldType.REF and f.target:
            target = find_entity(f.target)
            if target is None:
                continue
            if target == ent and val == out.get("id"):
                errors.setdefault(key, []).append(_l("A record cannot refer to itself."))
                continue
            found = session.scalar(select(func.count()).where(target.model.id == val, visible(target, viewer)))
            if not found:
                errors.setdefault(key, []).append(_l("No such %(what)s, or you may not see it.",
                                                     what=target.label(viewer.locale)))


def _check_unique(session: Session, ent: Entity, out: dict[str, Any], by_key: Mapping[str, Field],
                  errors: dict[str, list[Text]], record: Any | None) -> None:
    for key, val in out.items():
        f = by_key[key]
        if not f.unique or val is None:
            continue
        # Custom values: containment, which the GIN index on ``custom`` answers (a scan otherwise).
        same = (ent.model.custom.contains({key: to_json(f, val)}) if f.custom else getattr(ent.model, key) == val)
        stmt = select(ent.model.id).where(same, ent.model.deleted_at.is_(None)).limit(1)
        if record is not None:
            stmt = stmt.where(ent.model.id != record.id)
        if session.scalar(stmt) is not None:
            errors.setdefault(key, []).append(_l("Another record already has this value."))


# --------------------------------------------------------------------------- numbers


_TOKEN = re.compile(r"\{(yyyy|yy|mm|dd|seq(?::0?(\d))?)\}")


def number_pattern(session: Session, ent: Entity) -> str:
    row = session.scalar(select(NumberFormat.pattern).where(NumberFormat.entity == ent.key))
    return row or ent.number_format


def check_pattern(pattern: str) -> str:
    if not 1 <= len(pattern) <= 60 or "{seq" not in pattern:
        raise ValidationFailed(_l("A number format needs {seq} and at most 60 characters."),
                               field_errors={"pattern": [_l("Use {seq} or {seq:05}, and optionally {yyyy}, "
                                                            "{yy}, {mm}, {dd}.")]})
    leftover = _TOKEN.sub("", pattern)
    if "{" in leftover or "}" in leftover:
        raise ValidationFailed(_l("Unknown placeholder in the number format."),
                               field_errors={"pattern": [_l("Use {seq} or {seq:05}, and optionally {yyyy}, "
                                                            "{yy}, {mm}, {dd}.")]})
    return pattern


def today() -> dt.date:
    return utcnow().date()


def _period(pattern: str, day: dt.date) -> str:
    """The counter's period: the date parts the format names ('' for a running count)."""
    period = ("%Y" if "{yy" in pattern else "") + ("%m" if "{mm}" in pattern else "") + (
        "%d" if "{dd}" in pattern else "")
    return day.strftime(period) if period else ""


def format_number(pattern: str, seq: int, day: dt.date) -> str:
    def fill(m: re.Match[str]) -> str:
        token = m.group(1)
        if token.startswith("seq"):
            return str(seq).zfill(int(m.group(2) or 0))
        return {"yyyy": day.strftime("%Y"), "yy": day.strftime("%y"), "mm": day.strftime("%m"),
                "dd": day.strftime("%d")}[token]

    return _TOKEN.sub(fill, pattern)


def next_number(session: Session, ent: Entity, today: dt.date | None = None) -> str:
    """The next number in the entity's format; the counter restarts each period the format names.

    ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` takes the row lock, so concurrent creations get
    distinct numbers without a lock of our own (a rolled-back one leaves a gap, as sequences do).
    """
    pattern = number_pattern(session, ent)
    day = today or utcnow().date()
    stmt = pg_insert(NumberSequence).values(entity=ent.key, period=_period(pattern, day), next_value=2)
    stmt = stmt.on_conflict_do_update(index_elements=["entity", "period"],
                                      set_={"next_value": NumberSequence.next_value + 1})
    seq = session.scalar(stmt.returning(NumberSequence.next_value - 1))
    return format_number(pattern, seq or 1, day)


def peek_number(session: Session, ent: Entity, pattern: str | None = None, day: dt.date | None = None) -> str:
    """What :func:`next_number` would give now (in ``pattern`` if given), without taking it: a preview."""
    pattern = pattern or number_pattern(session, ent)
    day = day or utcnow().date()
    seq = session.scalar(select(NumberSequence.next_value).where(NumberSequence.entity == ent.key,
                                                                 NumberSequence.period == _period(pattern, day)))
    return format_number(pattern, seq or 1, day)


# --------------------------------------------------------------------------- writing


def without_pinyin(f: Field) -> bool:
    """Addresses and long texts are searched by their words, not by pinyin (two lexemes a character)."""
    return f.type == FieldType.LONGTEXT or "address" in f.key


def reindex(session: Session, ent: Entity, record: Any) -> None:
    """Recompute the record's search vector and sort key from its current values.

    Names, codes, phones and emails get pinyin lexemes; addresses and long texts do not (pinyin
    costs two lexemes per character, and nobody looks up an address by its initials).
    """
    texts: list[str] = []
    plain: list[str] = []
    for f in definitions.fields(session, ent):
        if (f.key in ent.search_fields or (f.custom and f.searchable)) and (v := value(record, f)):
            (plain if without_pinyin(f) else texts).append(str(v))
    if record.number:
        texts.append(record.number)
    if ent.extra_search is not None:
        texts.extend(ent.extra_search(record))
    record.search_vector = search.to_vector(search.document_tokens(texts, without_pinyin=plain))
    record.sort_key = search.sort_key(title(ent, record))


def _apply(record: Any, fields: Mapping[str, Field], changes: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                                           dict[str, Any]]:
    """Set the changed values; return (before, after) of what really changed, as JSON values."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    custom = dict(record.custom or {})
    for key, new in changes.items():
        f = fields[key]
        old = value(record, f)
        if old == new or (old in (None, [], "") and new in (None, [], "")):
            continue
        before[key], after[key] = to_json(f, old), to_json(f, new)
        if f.custom:
            if new is None:
                custom.pop(key, None)
            else:
                custom[key] = to_json(f, new)
        else:
            setattr(record, key, new)
    if custom != (record.custom or {}):
        record.custom = custom
    return before, after


def _owner_department(session: Session, owner_id: uuid.UUID | None) -> uuid.UUID | None:
    if owner_id is None:
        return None
    return session.scalar(select(User.department_id).where(User.id == owner_id))


def _audit(session: Session, viewer: Viewer, ent: Entity, action: str, record_id: Any,
           before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    tenant_services.audit(session, viewer.actor, f"{ent.key}.{action}", ent.key, record_id, before=before,
                          after=after)


def create(session: Session, viewer: Viewer, ent: Entity, data: Mapping[str, Any], *,
           allow_duplicates: bool = True, number: str | None = None) -> Any:
    viewer.require(ent, "create")
    fields = definitions.field_map(session, ent)
    changes = clean(session, viewer, ent, data)
    owner = changes.get("owner_id") or viewer.user_id
    if owner != viewer.user_id and not viewer.can(ent, "transfer") and viewer.user_id is not None:
        raise ValidationFailed(_l("Only someone who may transfer records can create them for another owner."),
                               field_errors={"owner_id": [_l("You can only create records you own.")]})
    if not allow_duplicates:
        dupes = find_duplicates(session, viewer, ent, changes)
        if dupes:
            raise PossibleDuplicates(ent, dupes)
    record = ent.model()
    record.id = uuid7()  # known before the flush: the audit entry and search index need it
    record.custom = {}
    record.tags = []
    _, after = _apply(record, fields, {k: v for k, v in changes.items() if k != "owner_id"})
    record.owner_id = owner
    record.department_id = _owner_department(session, owner)
    _run_rules(session, viewer, ent, record, fields, None, {}, after)
    record.number = number or next_number(session, ent)
    record.created_by = record.updated_by = viewer.user_id
    reindex(session, ent, record)
    session.add(record)
    session.flush()
    after.update(number=record.number, owner_id=str(owner) if owner else None)
    _audit(session, viewer, ent, "created", record.id, None, after)
    return record


class PossibleDuplicates(Conflict):
    """Similar records exist; the caller shows them and may create anyway (allow_duplicates)."""

    code = "possible_duplicates"

    def __init__(self, ent: Entity, records: Sequence[Any]) -> None:
        super().__init__(_ln("%(num)d similar record already exists.", "%(num)d similar records already exist.",
                             len(records)))
        self.entity = ent
        self.records = list(records)


def update(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str, data: Mapping[str, Any], *,
           expected_version: int | None = None) -> Any:
    record = get_for_edit(session, viewer, ent, record_id)
    if expected_version is not None and record.version != expected_version:
        raise PreconditionFailed(_l("This record was changed since you loaded it (version %(now)d, you had "
                                    "%(had)d); reload it and apply your change again.",
                                    now=record.version, had=expected_version))
    fields = definitions.field_map(session, ent)
    changes = clean(session, viewer, ent, data, record=record)
    if "owner_id" in changes:
        new_owner = changes.pop("owner_id")
        if new_owner != record.owner_id:
            if new_owner is None:
                raise ValidationFailed(_l("A record always has an owner."),
                                       field_errors={"owner_id": [_l("Required.")]})
            transfer(session, viewer, ent, [record.id], new_owner)
    old = {key: value(record, fields[key]) for key in changes}
    before, after = _apply(record, fields, changes)
    if not after:
        return record
    _run_rules(session, viewer, ent, record, fields, old, before, after)
    record.updated_by = viewer.user_id
    record.updated_at = utcnow()
    reindex(session, ent, record)
    session.flush()
    _audit(session, viewer, ent, "updated", record.id, before, after)
    return record


def _bounded_ids(ids: Sequence[uuid.UUID | str]) -> list[uuid.UUID]:
    if not ids:
        raise ValidationFailed(_l("Select at least one record."))
    if len(ids) > MAX_BULK:
        raise ValidationFailed(_l("At most %(max)d records at a time.", max=MAX_BULK))
    out = []
    for i in ids:
        try:
            out.append(i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)))
        except ValueError:
            raise ValidationFailed(_l("'%(value)s' is not a record id.", value=shown(i))) from None
    return list(dict.fromkeys(out))


def _editable_records(session: Session, viewer: Viewer, ent: Entity, ids: Sequence[uuid.UUID | str],
                      action: str) -> list[Any]:
    """All the records, each visible and changeable, or an error naming how many are not (none changed)."""
    viewer.require(ent, action)
    wanted = _bounded_ids(ids)
    rows = list(session.scalars(select(ent.model).where(ent.model.id.in_(wanted), editable(ent, viewer))
                                .order_by(ent.model.id).with_for_update()))
    if len(rows) != len(wanted):
        raise NotFound(_ln("%(num)d of the selected records cannot be found or changed by you.",
                           "%(num)d of the selected records cannot be found or changed by you.",
                           len(wanted) - len(rows)))
    return rows


def delete_records(session: Session, viewer: Viewer, ent: Entity, ids: Sequence[uuid.UUID | str]) -> int:
    """Move records to the recycle bin (restorable for RECYCLE_DAYS days)."""
    rows = _editable_records(session, viewer, ent, ids, "delete")
    now = utcnow()
    for row in rows:
        row.deleted_at, row.deleted_by, row.updated_by = now, viewer.user_id, viewer.user_id
        _audit(session, viewer, ent, "deleted", row.id, None, {"title": title(ent, row)})
    session.flush()
    return len(rows)


def restore(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str) -> Any:
    viewer.require(ent, "delete")
    record = get(session, viewer, ent, record_id, deleted=True)
    record.deleted_at = record.deleted_by = None
    record.updated_by = viewer.user_id
    session.flush()
    _audit(session, viewer, ent, "restored", record.id, None, {"title": title(ent, record)})
    return record


def purge_expired(session: Session, now: dt.datetime | None = None, *, batch: int = 1000) -> int:
    """Delete records that stayed in the recycle bin past RECYCLE_DAYS; returns how many went."""
    cutoff = (now or utcnow()) - dt.timedelta(days=RECYCLE_DAYS)
    total = 0
    for ent in entities():
        ids = list(session.scalars(select(ent.model.id).where(ent.model.deleted_at < cutoff).limit(batch)))
        if not ids:
            continue
        for link in LINKS:
            session.execute(delete(link.model).where(getattr(link.model, link.entity_attr) == ent.key,
                                                     getattr(link.model, link.id_attr).in_(ids)))
        session.execute(delete(ent.model).where(ent.model.id.in_(ids)))
        total += len(ids)
    return total


def transfer(session: Session, viewer: Viewer, ent: Entity, ids: Sequence[uuid.UUID | str],
             owner_id: uuid.UUID | str, *, with_children: bool = True) -> int:
    """Give records (and their children that the old owner held, e.g. a customer's contacts) to a user."""
    rows = _editable_records(session, viewer, ent, ids, "transfer")
    try:
        new_owner = session.get(User, owner_id if isinstance(owner_id, uuid.UUID) else uuid.UUID(str(owner_id)))
    except ValueError:
        new_owner = None
    if new_owner is None or not new_owner.active:
        raise ValidationFailed(_l("Choose an active user as the new owner."),
                               field_errors={"owner_id": [_l("No active user with this id.")]})
    for row in rows:
        old = row.owner_id
        if old == new_owner.id:
            continue
        row.owner_id, row.department_id = new_owner.id, new_owner.department_id
        row.updated_by = viewer.user_id
        _audit(session, viewer, ent, "transferred", row.id, {"owner_id": str(old) if old else None},
               {"owner_id": str(new_owner.id)})
        if with_children:
            for child in ent.children:
                if not child.transfer:
                    continue
                target = entity(child.entity)
                col = getattr(target.model, child.column)
                session.execute(sa_update(target.model).where(col == row.id, target.model.owner_id == old,
                                                           _open(target))
                                .values(owner_id=new_owner.id, department_id=new_owner.department_id,
                                        version=target.model.version + 1),
                                execution_options={"synchronize_session": "fetch"})
    session.flush()
    return len(rows)


OPEN_FILTERS: dict[str, Callable[[Any], ColumnElement[bool]]] = {}


def _open(ent: Entity) -> ColumnElement[bool]:
    """Which of an entity's records a transfer takes along (tasks: only open ones)."""
    f = OPEN_FILTERS.get(ent.key)
    return f(ent.model) if f else ent.model.deleted_at.is_(None)


def transfer_all(session: Session, viewer: Viewer, from_user: uuid.UUID, to_user: uuid.UUID) -> dict[str, int]:
    """A leaving rep's records (open ones only, where an entity says so), in every area, to another user."""
    moved: dict[str, int] = {}
    for ent in entities():
        if not viewer.can(ent, "transfer"):
            continue
        ids = list(session.scalars(select(ent.model.id).where(ent.model.owner_id == from_user, _open(ent),
                                                               editable(ent, viewer))))
        count = 0
        for start in range(0, len(ids), MAX_BULK):
            count += transfer(session, viewer, ent, ids[start:start + MAX_BULK], to_user, with_children=False)
        moved[ent.key] = count
    return moved


def share(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str, *,
          user_id: uuid.UUID | None = None, department_id: uuid.UUID | None = None, access: str = "read") -> None:
    record = get_for_edit(session, viewer, ent, record_id)
    if (user_id is None) == (department_id is None):
        raise ValidationFailed(_l("Share with one user or one department."))
    if access not in ("read", "edit"):
        raise ValidationFailed(_l("Access is 'read' or 'edit'."), field_errors={"access": [_l("read or edit")]})
    if user_id is not None and session.get(User, user_id) is None:
        raise ValidationFailed(_l("No such user."), field_errors={"user_id": [_l("No such user.")]})
    if department_id is not None and session.get(Department, department_id) is None:
        raise ValidationFailed(_l("No such department."), field_errors={"department_id": [_l("No such department.")]})
    stmt = pg_insert(RecordShare).values(entity=ent.key, record_id=record.id, user_id=user_id,
                                         department_id=department_id, access=access, created_by=viewer.user_id)
    stmt = stmt.on_conflict_do_update(constraint="uq_record_shares_entity_record_id_user_id_department_id",
                                      set_={"access": access})
    session.execute(stmt)
    _audit(session, viewer, ent, "shared", record.id, None,
           {"user_id": str(user_id) if user_id else None,
            "department_id": str(department_id) if department_id else None, "access": access})


def unshare(session: Session, viewer: Viewer, ent: Entity, record_id: uuid.UUID | str, share_id: uuid.UUID) -> None:
    record = get_for_edit(session, viewer, ent, record_id)
    gone = session.execute(delete(RecordShare).where(RecordShare.id == share_id, RecordShare.entity == ent.key,
                                                     RecordShare.record_id == record.id))
    if not gone.rowcount:  # type: ignore[attr-defined]
        raise NotFound(_l("Not found."))
    _audit(session, viewer, ent, "unshared", record.id, {"share": str(share_id)}, None)


def shares(session: Session, viewer: Viewer, ent: Entity, record: Any) -> list[RecordShare]:
    return list(session.scalars(select(RecordShare).where(RecordShare.entity == ent.key,
                                                          RecordShare.record_id == record.id)
                                .order_by(RecordShare.created_at)))


def bulk_set(session: Session, viewer: Viewer, ent: Entity, ids: Sequence[uuid.UUID | str], key: str,
             raw: Any) -> int:
    """Set one field on many records, each checked as a single edit would be."""
    rows = _editable_records(session, viewer, ent, ids, "edit")
    for row in rows:
        update(session, viewer, ent, row.id, {key: raw})
    return len(rows)


def bulk_tag(session: Session, viewer: Viewer, ent: Entity, ids: Sequence[uuid.UUID | str], tags: Any, *,
             remove: bool = False) -> int:
    tag_field = definitions.field_map(session, ent)["tags"]
    try:
        wanted = convert(tag_field, tags) or []
    except Invalid as exc:
        raise ValidationFailed(exc.message, field_errors={"tags": [exc.message]}) from None
    rows = _editable_records(session, viewer, ent, ids, "edit")
    for row in rows:
        current = list(row.tags or [])
        new = [t for t in current if t not in wanted] if remove else current + [t for t in wanted if t not in current]
        if new != current:
            before, row.tags = current, new
            row.updated_by = viewer.user_id
            reindex(session, ent, row)
            _audit(session, viewer, ent, "updated", row.id, {"tags": before}, {"tags": new})
    session.flush()
    return len(rows)


# --------------------------------------------------------------------------- duplicates and merge


def find_duplicates(session: Session, viewer: Viewer, ent: Entity, data: Mapping[str, Any], *,
                    exclude: uuid.UUID | None = None, limit: int = DUPLICATE_LIMIT) -> list[Any]:
    """Records that may be the same: an equal value in a duplicate field, or a similar title.

    Only records the viewer may see are named (a rep is not told of a colleague's private customer).
    """
    model = ent.model
    conds: list[ColumnElement[bool]] = []
    for key in ent.duplicate_fields:
        val = data.get(key)
        if val:
            conds.append(func.lower(getattr(model, key)) == str(val).lower())
    name = data.get(ent.title_field)
    if isinstance(name, str) and name.strip():
        col = getattr(model, ent.title_field)
        conds.append(func.lower(col) == name.strip().lower())
        if len(name.strip()) >= 3:
            conds.append(col.op("%")(name.strip()))  # pg_trgm similarity, index-assisted
    if not conds:
        return []
    stmt = select(model).where(or_(*conds), visible(ent, viewer)).limit(limit)
    if exclude is not None:
        stmt = stmt.where(model.id != exclude)
    # The `%` operator (index-assisted) compares against this setting; for this transaction only.
    session.execute(text("SELECT set_config('pg_trgm.similarity_threshold', :t, true)"), {"t": str(SIMILARITY)})
    return list(session.scalars(stmt))


def merge(session: Session, viewer: Viewer, ent: Entity, keep_id: uuid.UUID | str, drop_id: uuid.UUID | str,
          *, take: Sequence[str] = ()) -> Any:
    """Merge ``drop`` into ``keep``: every related record moves, empty fields are filled from ``drop``
    (and the fields named in ``take`` are taken from it), ``drop`` goes to the recycle bin, the audit
    log says so on both."""
    rows = _editable_records(session, viewer, ent, [keep_id, drop_id], "merge")
    if len(rows) != 2:
        raise ValidationFailed(_l("Choose two different records to merge."))
    keep = next(r for r in rows if str(r.id) == str(keep_id))
    drop = next(r for r in rows if str(r.id) == str(drop_id))
    fields = definitions.field_map(session, ent)
    changes: dict[str, Any] = {}
    for f in fields.values():
        if f.readonly or f.key in ("owner_id",):
            continue
        mine, theirs = value(keep, f), value(drop, f)
        if theirs in (None, [], ""):
            continue
        if f.key in take or mine in (None, [], ""):
            changes[f.key] = theirs
        elif f.type == FieldType.TAGS:
            changes[f.key] = list(dict.fromkeys([*(mine or []), *theirs]))
    before, after = _apply(keep, fields, changes)
    moved: dict[str, int] = {}
    for child in ent.children:
        target = entity(child.entity)
        col = getattr(target.model, child.column)
        result = session.execute(sa_update(target.model).where(col == drop.id)
                                 .values({child.column: keep.id, "version": target.model.version + 1}),
                                 execution_options={"synchronize_session": "fetch"})
        moved[child.entity] = result.rowcount  # type: ignore[attr-defined]
    for link in LINKS:
        result = session.execute(sa_update(link.model).where(getattr(link.model, link.entity_attr) == ent.key,
                                                          getattr(link.model, link.id_attr) == drop.id)
                                 .values({link.id_attr: keep.id}), execution_options={"synchronize_session": "fetch"})
        moved[link.model.__tablename__] = result.rowcount  # type: ignore[attr-defined]
    drop.deleted_at, drop.deleted_by = utcnow(), viewer.user_id
    keep.updated_by = viewer.user_id
    reindex(session, ent, keep)
    session.flush()
    _audit(session, viewer, ent, "merged", keep.id, before,
           {**after, "merged": {"id": str(drop.id), "number": drop.number, "title": title(ent, drop)},
            "moved": moved})
    _audit(session, viewer, ent, "merged_into", drop.id, None,
           {"into": {"id": str(keep.id), "number": keep.number, "title": title(ent, keep)}})
    session.expire_all()
    return session.get(ent.model, keep.id)
