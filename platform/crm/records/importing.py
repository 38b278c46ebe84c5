"""Import records of any entity from a file: every row checked as a form would be, then written in bulk.

The file layer (:mod:`crm.records.tabular`) gives headers and rows of text; this module turns them into
records. It is generic over :class:`~crm.records.entity.Entity`: nothing here names an entity.

Two passes over the file (it is opened twice, through ``open_table``):

1. **Check** every row: each mapped cell through :func:`crm.records.fields.convert` (the rules a form
   and the API use), dictionary values by code or either label, users by email (or exact name), records
   referred to (a contact's customer) by number, id or exact title among the records the importer may
   see, required fields, rows longer than the header or too short to hold a required value, unique
   fields, and duplicates: within the file and against live records the importer may see. Lookups that
   need the database are made once per batch of rows, never per row. Nothing is written.
2. **Write**, only when no row is bad (or the caller chose to skip bad rows) and this is not a dry run:
   the numbers are taken from the entity's sequence in one step, search vectors and sort keys are
   computed here, and rows go in batches of ``executemany`` (pipelined by psycopg). One audit entry
   says who imported how many records from which file.

What counts as a duplicate (decided here; the issue left it open):

- an equal value (case-insensitive) in one of the entity's ``duplicate_fields`` (phone, email, tax no.);
- the same title (customer name, contact name …) with the same records referred to (a contact named
  张伟 at another customer is another person), for entities that declare duplicate fields at all
  (customers, contacts; an activity's subject repeats by nature);
- an equal ``number`` given in the file.

Each of these is an error: the later row of the file, or the row that matches a live record. Similar
titles (the fuzzy rule of the create form) are not checked on import: one trigram probe per row would
cost more than the whole import; the duplicate finder and merge handle them afterwards. Existing
records are those the importer may see (a rep is never told of a colleague's private customer), except
numbers and unique custom fields, which are unique over the whole tenant.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import ARRAY, ColumnElement, Text, Uuid, any_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.db import utcnow, uuid7
from core.i18n import Message, _l, shown
from crm.records import definitions, search, tabular
from crm.records.entity import Entity, entities
from crm.records.fields import Field, FieldType, Invalid, convert, to_json
from crm.records.models import NumberSequence
from crm.records.scope import Viewer, visible
from crm.records.services import number_pattern
from tenants import services as tenant_services
from tenants.models import User

#: Rows checked (and written) per batch: one round of lookups, one executemany.
BATCH = 2000
#: Row errors kept for the report; more are counted in ``bad_rows`` but not listed.
MAX_ERRORS = 50_000
#: The field name of an error about the row itself (too many values), not about one field.
ROW = "_row"
#: What ``progress`` is told: (phase, rows done).
Progress = Callable[[str, int], None]
_TOKEN = re.compile(r"\{(yyyy|yy|mm|dd|seq(?::0?(\d))?)\}")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: Message | str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": str(self.message)}


@dataclass(slots=True)
class ImportResult:
    """What an import did (or, in a dry run, would do).

    ``imported`` counts the records written; in a dry run, the rows that would be written (nothing is).
    ``skipped`` is ``total - imported``: bad rows, or every row when bad rows stopped the import.
    """

    total: int = 0
    imported: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    bad_rows: int = 0
    dry_run: bool = False
    #: Headers of columns that feed no field (unmatched and not chosen by the user), left out.
    ignored_columns: list[str] = field(default_factory=list)
    #: The first and last number given to the imported records.
    numbers: tuple[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        """Exactly what ``courtyard crm import --json`` prints."""
        return {"total": self.total, "imported": self.imported, "skipped": self.skipped,
                "errors": [e.as_json() for e in self.errors]}

    @property
    def complete(self) -> bool:
        """Every row was (or, in a dry run, would be) imported."""
        return self.total > 0 and self.imported == self.total


# --------------------------------------------------------------------------- which fields a file may fill


def number_field(ent: Entity) -> Field:
    """The record's number as an importable column: a file from another system keeps its codes (客户代码)."""
    base = ent.field("number")
    assert base is not None
    aliases = (f"{ent.label_zh}代码", f"{ent.label_zh}编号", f"{ent.label_zh}编码", f"{ent.label_en} code",
               f"{ent.label_en} number", f"{ent.label_en} no.", "Code", "代码", "编码")
    return replace(base, readonly=False, aliases=aliases)


def importable_fields(session: Session, ent: Entity) -> list[Field]:
    """The fields a column may feed: every field a form may set, the owner, and the number."""
    out = [number_field(ent)]
    out.extend(f for f in definitions.fields(session, ent) if not f.readonly)
    return out


def mapping_for(session: Session, ent: Entity, headers: Sequence[str],
                chosen: Mapping[str, str] | None = None) -> tabular.HeaderMapping:
    """Headers matched to fields by their labels; ``chosen`` (header → field key or "ignore") wins."""
    return tabular.map_headers(headers, importable_fields(session, ent), chosen)


# --------------------------------------------------------------------------- lookups, made once


def _any(expr: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``expr = ANY(array)``: one parameter for a batch's values (an IN list of thousands of parameters
    costs more to send and parse than the lookup itself)."""
    return expr == any_(bindparam(None, list(values), type_=ARRAY(Text)))  # type: ignore[no-any-return]



class _Lookups:
    """What checking a value needs from the database, read once per import (or per batch, for records)."""

    def __init__(self, session: Session, viewer: Viewer, ent: Entity) -> None:
        self.session = session
        self.viewer = viewer
        self.ent = ent
        self.codes: dict[str, dict[str, str]] = {}
        users = session.execute(select(User.id, User.email, User.name, User.department_id, User.active)).all()
        self.user_department = {u.id: u.department_id for u in users}
        self.active_users = {u.id for u in users if u.active}
        self.user_by_text: dict[str, uuid.UUID | str] = {}
        for u in users:
            if not u.active:
                continue
            self.user_by_text[u.email.casefold()] = u.id
            name = u.name.strip().casefold()
            known = self.user_by_text.get(name)
            self.user_by_text[name] = u.id if known in (None, u.id) else _AMBIGUOUS
        #: (target entity, text) → id, None (no such record) or _AMBIGUOUS.
        self.refs: dict[tuple[str, str], uuid.UUID | str | None] = {}

    def code(self, kind: str, text: str) -> str | None:
        if kind not in self.codes:
            table: dict[str, str] = {}
            for item in definitions.dictionary(self.session, kind):
                if item.active:
                    for label in (item.label_en, item.label_zh, item.code):
                        if label:
                            table.setdefault(label.strip().casefold(), item.code)
            self.codes[kind] = table
        return self.codes[kind].get(text.strip().casefold())

    def user(self, text: str) -> uuid.UUID | str | None:
        folded = text.strip().casefold()
        found = self.user_by_text.get(folded)
        if found is None and _UUID_RE.fullmatch(folded):
            ident = uuid.UUID(folded)
            found = ident if ident in self.active_users else None
        return found

    def resolve_refs(self, target: Entity, texts: set[str]) -> None:
        """Look up, in one query, the records of ``target`` that these texts name (number, id, title)."""
        wanted = {t for t in texts if (target.key, t) not in self.refs}
        if not wanted:
            return
        model = target.model
        title = getattr(model, target.title_field)
        ids = [uuid.UUID(t) for t in wanted if _UUID_RE.fullmatch(t)]
        folded = [t.casefold() for t in wanted]
        conds = [_any(model.number, wanted), _any(func.lower(title), folded)]
        if ids:
            conds.append(model.id == any_(bindparam("ids", ids, type_=ARRAY(Uuid))))
        rows = self.session.execute(select(model.id, model.number, title).where(
            or_(*conds), visible(target, self.viewer))).all()
        by_number = {r[1]: r[0] for r in rows if r[1]}
        by_id = {r[0] for r in rows}
        by_title: dict[str, set[uuid.UUID]] = {}
        for r in rows:
            if r[2]:
                by_title.setdefault(str(r[2]).casefold(), set()).add(r[0])
        for t in wanted:
            found: uuid.UUID | str | None = by_number.get(t)
            if found is None and _UUID_RE.fullmatch(t) and uuid.UUID(t) in by_id:
                found = uuid.UUID(t)
            if found is None:
                titled = by_title.get(t.casefold(), set())
                found = next(iter(titled)) if len(titled) == 1 else (_AMBIGUOUS if titled else None)
            self.refs[(target.key, t)] = found


# --------------------------------------------------------------------------- one row


@dataclass(slots=True)
class _Row:
    line: int
    values: dict[str, Any]
    errors: list[RowError]
    #: REF fields still to resolve: key → text.
    refs: dict[str, str]


class _Checker:
    """Turns a row of cells into field values, with every problem of the row."""

    def __init__(self, session: Session, viewer: Viewer, ent: Entity, headers: Sequence[str],
                 mapping: tabular.HeaderMapping) -> None:
        self.session = session
        self.viewer = viewer
        self.ent = ent
        self.width = len(headers)
        by_key = {f.key: f for f in importable_fields(session, ent)}
        self.columns: list[tuple[int, Field]] = sorted((i, by_key[k]) for i, k in mapping.columns.items())
        self.mapped = {f.key for _i, f in self.columns}
        self.fields = [f for f in definitions.fields(session, ent) if not f.readonly]
        self.lookups = _Lookups(session, viewer, ent)
        self.may_transfer = viewer.can(ent, "transfer") or viewer.user_id is None
        #: Defaults of the fields no column feeds, as clean() gives a new record.
        self.defaults: dict[str, Any] = {}
        for f in self.fields:
            if f.key not in self.mapped and f.default is not None:
                self.defaults[f.key] = convert(f, f.default) if not isinstance(f.default, (list, bool)) else f.default
        self.required = [f for f in self.fields if f.required and f.key not in self.defaults]
        self.first_index = {f.key: i for i, f in self.columns}

    def row(self, line: int, cells: list[str]) -> _Row:
        errors: list[RowError] = []
        values: dict[str, Any] = dict(self.defaults)
        refs: dict[str, str] = {}
        if len(cells) > self.width:
            errors.append(RowError(line, ROW, _l("This row has %(num)d values but the header only %(width)d "
                                                 "columns; are values shifted?", num=len(cells), width=self.width)))
        for index, f in self.columns:
            raw = cells[index] if index < len(cells) else ""
            try:
                value = self._value(f, raw)
            except Invalid as exc:
                errors.append(RowError(line, f.key, exc.message))
                continue
            if f.type == FieldType.REF and value is not None:
                refs[f.key] = value
                continue
            if value is None and f.key in self.defaults:
                continue
            values[f.key] = value
        for f in self.required:
            if values.get(f.key) in (None, [], "") and f.key not in refs and not any(e.field == f.key for e in errors):
                position = self.first_index.get(f.key)
                if position is not None and position >= len(cells):
                    errors.append(RowError(line, f.key, _l("The row ends after %(num)d values, before this "
                                                           "required column.", num=len(cells))))
                else:
                    errors.append(RowError(line, f.key, _l("Required.")))
        owner = values.get("owner_id")
        if owner is not None and owner != self.viewer.user_id and not self.may_transfer:
            errors.append(RowError(line, "owner_id", _l("You may only import records you own: your role "
                                                        "cannot give records to someone else.")))
        return _Row(line, values, errors, refs)

    def _value(self, f: Field, raw: str) -> Any:  # noqa: PLR0912 - one branch per kind of lookup
        if f.key == "number":
            text = raw.strip()
            if len(text) > f.limit:
                raise Invalid(_l("At most %(max)d characters.", max=f.limit))
            return convert(f, text) if text else None
        if f.type == FieldType.DICT and f.target:
            text = convert(f, raw)
            if text is None:
                return None
            code = self.lookups.code(f.target, text)
            if code is None:
                raise Invalid(_l("'%(value)s' is not in the list of %(field)s.", value=shown(text),
                                 field=f.label(self.viewer.locale)))
            return code
        if f.type == FieldType.USER:
            text = raw.strip()
            if not text:
                return None
            if len(text) > 254:
                raise Invalid(_l("No active user with this email or name."))
            found = self.lookups.user(text)
            if found == _AMBIGUOUS:
                raise Invalid(_l("Several users are called '%(value)s': give their email.", value=shown(text)))
            if found is None:
                raise Invalid(_l("No active user with the email or name '%(value)s'.", value=shown(text)))
            return found
        if f.type == FieldType.REF:
            text = raw.strip()
            if not text:
                return None
            if len(text) > 200:
                raise Invalid(_l("At most %(max)d characters.", max=200))
            return text
        return convert(f, raw)

    def resolve(self, rows: Sequence[_Row]) -> None:
        """Turn the texts naming other records into ids, one query per target entity for the batch."""
        by_key = {f.key: f for _i, f in self.columns}
        wanted: dict[str, set[str]] = {}
        for r in rows:
            for key, text in r.refs.items():
                target_key = by_key[key].target
                if target_key:
                    wanted.setdefault(target_key, set()).add(text)
        targets = {e.key: e for e in entities()}
        for target_key, texts in wanted.items():
            found_entity = targets.get(target_key)
            if found_entity is not None:
                self.lookups.resolve_refs(found_entity, texts)
        for r in rows:
            for key, text in r.refs.items():
                target = targets.get(by_key[key].target or "")
                if target is None:
                    continue
                found = self.lookups.refs.get((target.key, text))
                if found is None:
                    r.errors.append(RowError(r.line, key, _l("No %(what)s '%(value)s' that you may see (give its "
                                                             "number or exact name).",
                                                             what=target.label(self.viewer.locale),
                                                             value=shown(text))))
                elif found == _AMBIGUOUS:
                    r.errors.append(RowError(r.line, key, _l("Several %(what)s are called '%(value)s': give the "
                                                             "number instead.",
                                                             what=target.plural(self.viewer.locale),
                                                             value=shown(text))))
                else:
                    r.values[key] = found


# --------------------------------------------------------------------------- duplicates


class _Duplicates:
    """Keys seen in the file so far, and the check against live records, batch by batch."""

    def __init__(self, session: Session, viewer: Viewer, ent: Entity, checker: _Checker) -> None:
        self.session = session
        self.viewer = viewer
        self.ent = ent
        self.dup_fields = [k for k in ent.duplicate_fields if k in checker.mapped]
        self.by_title = bool(ent.duplicate_fields) and ent.title_field in checker.mapped
        self.ref_keys = sorted(f.key for _i, f in checker.columns if f.type == FieldType.REF)
        self.unique = [f for _i, f in checker.columns if f.unique]
        self.unique_keys = {f.key for f in self.unique}
        self.check_number = "number" in checker.mapped
        self.seen: dict[tuple[Any, ...], int] = {}
        self.labels = {f.key: f.label(viewer.locale) for _i, f in checker.columns}

    def _title_key(self, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        title = values.get(self.ent.title_field)
        if not self.by_title or not isinstance(title, str):
            return None
        return ("title", title.casefold(), *(values.get(k) for k in self.ref_keys))

    def _keys(self, values: Mapping[str, Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for key in self.dup_fields:
            value = values.get(key)
            if value:
                yield key, (key, str(value).casefold())
        for f in self.unique:
            value = values.get(f.key)
            if value is not None:
                yield f.key, (f.key, str(to_json(f, value)))
        if self.check_number and values.get("number"):
            yield "number", ("number", values["number"])
        title = self._title_key(values)
        if title is not None:
            yield self.ent.title_field, title

    def in_file(self, row: _Row) -> None:
        for key, k in self._keys(row.values):
            first = self.seen.get(k)
            if first is None:
                self.seen[k] = row.line
            elif first != row.line:
                row.errors.append(RowError(row.line, key, _l("Same %(field)s as line %(line)d of the file.",
                                                             field=self.labels.get(key, key), line=first)))

    def existing(self, rows: Sequence[_Row]) -> None:  # noqa: PLR0912 - one query per kind of key
        """Rows equal to a live record (the importer's visible ones; numbers and unique fields: any)."""
        model = self.ent.model
        live = model.deleted_at.is_(None)
        seen_by: dict[tuple[Any, ...], str] = {}
        conds = []
        values_of: dict[str, set[str]] = {}
        for key in self.dup_fields:
            vals = {str(r.values[key]).casefold() for r in rows if r.values.get(key)}
            if vals:
                values_of[key] = vals
                conds.append(_any(func.lower(getattr(model, key)), vals))
        titles = {r.values[self.ent.title_field].casefold() for r in rows
                  if self.by_title and isinstance(r.values.get(self.ent.title_field), str)}
        title_col = getattr(model, self.ent.title_field)
        if titles:
            conds.append(_any(func.lower(title_col), titles))
        if conds:
            cols = [model.number, title_col, *(getattr(model, k) for k in self.dup_fields),
                    *(getattr(model, k) for k in self.ref_keys)]
            for rec in self.session.execute(select(*cols).where(or_(*conds), live, visible(self.ent, self.viewer))):
                number, title = rec[0], rec[1]
                rest = list(rec[2:])
                for key in self.dup_fields:
                    value = rest.pop(0)
                    if value:
                        seen_by[(key, str(value).casefold())] = number or ""
                refs = tuple(rest)
                if isinstance(title, str):
                    seen_by[("title", title.casefold(), *refs)] = number or ""
        numbers = {r.values["number"] for r in rows if self.check_number and r.values.get("number")}
        if numbers:
            for (number,) in self.session.execute(select(model.number).where(_any(model.number, numbers))):
                seen_by[("number", number)] = number or ""
        for f in self.unique:
            vals = {str(to_json(f, r.values[f.key])) for r in rows if r.values.get(f.key) is not None}
            if not vals:
                continue
            expr = model.custom[f.key].astext if f.custom else getattr(model, f.key)
            for (value,) in self.session.execute(select(expr).where(_any(expr, vals), live)):
                seen_by[(f.key, str(value))] = ""
        if not seen_by:
            return
        for r in rows:
            for key, k in self._keys(r.values):
                if k in seen_by:
                    number = seen_by[k]
                    if key == "number":
                        message = _l("Another record already has this number.")
                    elif key in self.unique_keys:
                        message = _l("Another record already has this value.")
                    else:
                        message = _l("Same %(field)s as the existing record %(number)s.",
                                     field=self.labels.get(key, key), number=number)
                    r.errors.append(RowError(r.line, key, message))


# --------------------------------------------------------------------------- numbers


def allocate_numbers(session: Session, ent: Entity, n: int, today: dt.date | None = None) -> list[str]:
    """``n`` consecutive numbers in the entity's format, taken from its sequence in one statement
    (as :func:`crm.records.services.next_number` takes one)."""
    if n <= 0:
        return []
    pattern = number_pattern(session, ent)
    day = today or utcnow().date()
    period = ("%Y" if "{yy" in pattern else "") + ("%m" if "{mm}" in pattern else "") + (
        "%d" if "{dd}" in pattern else "")
    period_key = day.strftime(period) if period else ""
    stmt = pg_insert(NumberSequence).values(entity=ent.key, period=period_key, next_value=n + 1)
    stmt = stmt.on_conflict_do_update(index_elements=["entity", "period"],
                                      set_={"next_value": NumberSequence.next_value + n})
    last: int | None = session.scalar(stmt.returning(NumberSequence.next_value - 1))
    assert last is not None
    first = last - n + 1
    fixed = {"yyyy": day.strftime("%Y"), "yy": day.strftime("%y"), "mm": day.strftime("%m"), "dd": day.strftime("%d")}
    parts = _TOKEN.split(pattern)
    # split() gives text, token, width, text …: the pattern is formatted once per number without a regex.
    out = []
    for seq in range(first, last + 1):
        text = []
        for i in range(0, len(parts), 3):
            text.append(parts[i])
            if i + 1 < len(parts):
                token, width = parts[i + 1], parts[i + 2]
                text.append(str(seq).zfill(int(width or 0)) if token.startswith("seq") else fixed[token])
        out.append("".join(text))
    return out


# --------------------------------------------------------------------------- the import


def run(session: Session, viewer: Viewer, ent: Entity, open_table: Callable[[], tabular.Table], *,
        filename: str, mapping: Mapping[str, str] | None = None, dry_run: bool = False,
        skip_invalid: bool = False, progress: Progress | None = None) -> ImportResult:
    """Import the file ``open_table`` opens (see the module docstring); flushes, never commits.

    ``mapping`` is the user's choice for headers (header → field key or ``"ignore"``); other headers
    map by their labels, and headers that match nothing are left out (listed in ``ignored_columns``).
    Problems with the file itself raise :class:`~crm.records.tabular.FileRejected`; a mapping that
    cannot be used raises :class:`~crm.records.tabular.MappingRejected`; bad rows are reported in the
    result.
    """
    viewer.require(ent, "import")
    result = ImportResult(dry_run=dry_run)
    bad: set[int] = set()
    with open_table() as table:
        header_map = mapping_for(session, ent, table.headers, mapping)
        result.ignored_columns = [h for _i, h in header_map.unmatched] + [table.headers[i] for i in header_map.ignored]
        checker = _Checker(session, viewer, ent, table.headers, header_map)
        dups = _Duplicates(session, viewer, ent, checker)
        for batch in _batches(table.rows):
            rows = [checker.row(line, cells) for line, cells in batch]
            checker.resolve(rows)
            for r in rows:
                dups.in_file(r)
            dups.existing(rows)
            for r in rows:
                result.total += 1
                if r.errors:
                    bad.add(r.line)
                    result.bad_rows += 1
                    room = MAX_ERRORS - len(result.errors)
                    if room > 0:
                        result.errors.extend(r.errors[:room])
            if progress is not None:
                progress("checking", result.total)
    good = result.total - len(bad)
    if bad and not skip_invalid:
        result.skipped = result.total
        return result
    if dry_run or good == 0:
        result.imported = good if dry_run else 0
        result.skipped = result.total - result.imported
        return result
    result.imported = _write(session, viewer, ent, open_table, mapping, bad, good, progress, result)
    result.skipped = result.total - result.imported
    tenant_services.audit(session, viewer.actor, f"{ent.key}.imported", ent.key, None, after={
        "file": filename[:255], "records": result.imported, "skipped": result.skipped,
        "numbers": list(result.numbers) if result.numbers else None})
    session.flush()
    return result


def _batches(rows: Iterator[tabular.Row]) -> Iterator[list[tabular.Row]]:
    batch: list[tabular.Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _column_fallback(column: Any) -> Any:
    """What a NOT NULL column holds when an import leaves it empty: its default, as the table would."""
    if column.default is not None and column.default.is_scalar:
        return column.default.arg
    server = column.server_default
    if server is None:
        return None
    text = str(getattr(server.arg, "text", server.arg)).strip("'")
    python_type = column.type.python_type
    if python_type is bool:
        return text == "true"
    if python_type is int:
        return int(text)
    return text


def _write(session: Session, viewer: Viewer, ent: Entity, open_table: Callable[[], tabular.Table],
           mapping: Mapping[str, str] | None, bad: set[int], good: int, progress: Progress | None,
           result: ImportResult) -> int:
    """Second pass: the good rows again, now written in batches."""
    table_ = ent.model.__table__  # type: ignore[attr-defined]
    all_fields = definitions.fields(session, ent)
    search_keys = [f.key for f in all_fields if f.key in ent.search_fields or (f.custom and f.searchable)]
    now = utcnow()
    written = 0
    numbers: list[str] | None = None
    with open_table() as table:
        header_map = mapping_for(session, ent, table.headers, mapping)
        checker = _Checker(session, viewer, ent, table.headers, header_map)
        given_numbers = "number" in checker.mapped
        column_keys = sorted({f.key for f in checker.fields if not f.custom and f.key in table_.c}
                             - set(COMMON_COLUMNS))
        custom_fields = [f for f in checker.fields if f.custom]
        fallbacks = {k: _column_fallback(table_.c[k]) for k in column_keys if not table_.c[k].nullable}
        columns = [*COMMON_COLUMNS, *column_keys]
        schema = session.info["tenant"].schema
        quoted = ", ".join(f'"{c}"' for c in columns)
        copy_sql = f'COPY "{schema}"."{table_.name}" ({quoted}) FROM STDIN'  # names from the metadata
        for batch in _batches(table.rows):
            rows = [checker.row(line, cells) for line, cells in batch if line not in bad]
            checker.resolve(rows)
            if given_numbers:
                # Rows without a number of their own take one from the sequence, skipping those in use.
                missing = sum(1 for r in rows if not r.values.get("number"))
                fresh = iter(_free_numbers(session, ent, missing))
            else:
                if numbers is None:
                    numbers = _free_numbers(session, ent, good)
                fresh = iter(numbers[written:written + len(rows)])
            params = [_params(ent, r.values, column_keys, custom_fields, fallbacks, search_keys,
                              r.values.get("number") or next(fresh), viewer, checker, now) for r in rows]
            if params:
                _copy(session, copy_sql, params)
                first = result.numbers[0] if result.numbers else params[0][1]
                result.numbers = (first, params[-1][1])
                written += len(params)
            if progress is not None:
                progress("importing", written)
    return written


def _free_numbers(session: Session, ent: Entity, n: int) -> list[str]:
    """``n`` fresh numbers none of which a record has already (a file may have given that number)."""
    out: list[str] = []
    while len(out) < n:
        wanted = allocate_numbers(session, ent, n - len(out))
        model = ent.model
        taken = set(session.scalars(select(model.number).where(_any(model.number, wanted))))
        out.extend(x for x in wanted if x not in taken)
    return out


#: The columns every record gets from the import itself, in the order _params gives them.
COMMON_COLUMNS = ("id", "number", "owner_id", "department_id", "created_by", "updated_by", "created_at",
                  "updated_at", "version", "custom", "tags", "sort_key", "search_vector")


def _params(ent: Entity, values: dict[str, Any], column_keys: Sequence[str], custom_fields: Sequence[Field],
            fallbacks: Mapping[str, Any], search_keys: Sequence[str], number: str, viewer: Viewer,
            checker: _Checker, now: dt.datetime) -> tuple[Any, ...]:
    owner = values.get("owner_id") or viewer.user_id
    custom = {f.key: to_json(f, values[f.key]) for f in custom_fields if values.get(f.key) is not None}
    texts = [str(values[k]) for k in search_keys if values.get(k)]
    texts.append(number)
    if ent.extra_search is not None:
        texts.extend(ent.extra_search(_Values(values)))
    title = values.get(ent.title_field)
    row: list[Any] = [uuid7(), number, owner, checker.lookups.user_department.get(owner), viewer.user_id,
                      viewer.user_id, now, now, 1, Jsonb(custom), values.get("tags") or [],
                      search.sort_key(str(title or number)), _tsvector(search.document_tokens(texts))]
    for key in column_keys:
        value = values.get(key)
        row.append(fallbacks[key] if value is None and key in fallbacks else value)
    return tuple(row)


def _tsvector(tokens: Sequence[str]) -> str:
    """What ``search.to_vector(tokens)`` stores, in tsvector's text form (lexemes without positions),
    for COPY."""
    return " ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in tokens)


def _copy(session: Session, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY the rows in, inside the session's transaction (several times faster than INSERTs)."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


class _Values:
    """A row's values as attributes, for an entity's ``extra_search`` (written for records)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        return None
