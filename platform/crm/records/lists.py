"""List specs: filters on any field, sort, search, columns and keyset pages, for pages and the API alike.

A list is described by query parameters, the same on a page and in the API, and the same a saved view
stores: ``q`` (search), ``sort`` (``name`` or ``-updated_at``), ``columns``, ``after`` / ``before``
(keyset cursors), ``limit``, and one parameter per filter: ``<field>`` for equality (repeat it for "any
of"), ``<field>__<op>`` for the others (``contains``, ``gte``, ``lte``, ``within``, ``empty`` …).
Everything starts from :func:`crm.records.scope.visible`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, DateTime, Numeric, Select, and_, cast, func, literal, not_, or_, select, true, tuple_
from sqlalchemy.orm import Session

from core.db import utcnow
from core.errors import ValidationFailed
from core.i18n import Message, Text, _l, shown
from crm.records import search
from crm.records.entity import Entity
from crm.records.fields import Field, FieldType, Invalid, convert, from_json, to_json
from crm.records.scope import Viewer, visible

RESERVED = frozenset({"q", "sort", "columns", "after", "before", "limit", "view", "format", "page", "csrf_token",
                      "deleted"})
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
COUNT_BOUND = 10_000
MAX_FILTER_VALUES = 50
MAX_PARAMS = 60
WITHIN = ("today", "yesterday", "this_week", "last_week", "this_month", "last_month", "this_quarter",
          "this_year", "last_7_days", "last_30_days", "next_7_days", "next_30_days")

TEXTUAL = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.EMAIL, FieldType.PHONE, FieldType.URL)
ORDERED = (FieldType.NUMBER, FieldType.MONEY, FieldType.DATE, FieldType.DATETIME)
DISCRETE = (FieldType.CHOICE, FieldType.DICT, FieldType.USER, FieldType.REF, FieldType.BOOL)
OPS: dict[str, tuple[FieldType, ...]] = {
    "eq": TEXTUAL + ORDERED + DISCRETE,
    "ne": TEXTUAL + ORDERED + DISCRETE,
    "contains": TEXTUAL,
    "startswith": TEXTUAL,
    "gt": ORDERED, "gte": ORDERED, "lt": ORDERED, "lte": ORDERED,
    "within": (FieldType.DATE, FieldType.DATETIME),
    "has": (FieldType.MULTI, FieldType.TAGS),
    "empty": tuple(FieldType),
}


@dataclass(frozen=True, slots=True)
class Filter:
    field: Field
    op: str
    values: tuple[Any, ...]


@dataclass(slots=True)
class ListQuery:
    filters: list[Filter] = field(default_factory=list)
    q: str = ""
    sort: str = ""
    desc: bool = False
    columns: list[str] = field(default_factory=list)
    after: str | None = None
    before: str | None = None
    limit: int = DEFAULT_LIMIT
    #: The parameters as given (minus the cursor): what links to other pages and saved views carry.
    params: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Page:
    rows: list[Any]
    next_cursor: str | None
    prev_cursor: str | None


def _error(errors: dict[str, list[Text]], key: str, message: Message) -> None:
    errors.setdefault(key, []).append(message)


def parse(params: Iterable[tuple[str, str]], fields: Sequence[Field],  # noqa: PLR0912, PLR0915
          entity: Entity) -> ListQuery:
    """A list query from (name, value) pairs (a query string's items), every mistake reported at once."""
    by_key = {f.key: f for f in fields}
    lq = ListQuery()
    errors: dict[str, list[Text]] = {}
    grouped: dict[tuple[str, str], list[str]] = {}
    for n, (name, value) in enumerate(params):
        if n >= MAX_PARAMS:
            raise ValidationFailed(_l("Too many list parameters (at most %(max)d).", max=MAX_PARAMS))
        if len(name) > 80 or len(value) > 400:
            _error(errors, shown(name), _l("This parameter is too long."))
            continue
        if name in ("after", "before"):
            setattr(lq, name, value or None)
            continue
        if name == "csrf_token":
            continue
        lq.params.append((name, value))
        if name == "q":
            lq.q = value.strip()
        elif name == "sort":
            key = value.removeprefix("-")
            f = by_key.get(key)
            if key and (f is None or not f.sortable or f.type in (FieldType.MULTI, FieldType.TAGS)):
                _error(errors, "sort", _l("Cannot sort by '%(field)s'.", field=shown(key)))
            else:
                lq.sort, lq.desc = key, value.startswith("-")
        elif name == "columns":
            cols = [c for c in value.split(",") if c][:40]
            unknown = [c for c in cols if c not in by_key]
            if unknown:
                _error(errors, "columns", _l("Unknown column '%(field)s'.", field=shown(unknown[0])))
            lq.columns = [c for c in cols if c in by_key]
        elif name == "limit":
            if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                _error(errors, "limit", _l("limit is a number from 1 to %(max)d.", max=MAX_LIMIT))
            else:
                lq.limit = int(value)
        elif name in RESERVED:
            continue
        else:
            key, _, op = name.partition("__")
            grouped.setdefault((key, op or "eq"), []).append(value)
    for (key, op), values in grouped.items():
        f = by_key.get(key)
        if f is None:
            _error(errors, key, _l("Unknown field '%(field)s'.", field=shown(key)))
            continue
        if op not in OPS or f.type not in OPS[op]:
            _error(errors, key, _l("'%(op)s' does not apply to this field.", op=shown(op)))
            continue
        if len(values) > MAX_FILTER_VALUES:
            _error(errors, key, _l("At most %(max)d values.", max=MAX_FILTER_VALUES))
            continue
        try:
            lq.filters.append(Filter(f, op, tuple(_filter_value(f, op, v) for v in values if v != "" or
                                                  op == "empty")))
        except Invalid as exc:
            _error(errors, key, exc.message)
    if errors:
        raise ValidationFailed(_l("The list's filters are not usable."), field_errors=dict(errors))
    if not lq.sort:
        lq.sort, lq.desc = entity.title_field, False
    return lq


def _filter_value(f: Field, op: str, raw: str) -> Any:
    if op == "empty":
        return raw.strip().lower() not in ("0", "false", "no")
    if op == "within":
        if raw not in WITHIN:
            raise Invalid(_l("'%(value)s' is not a period.", value=shown(raw)))
        return raw
    if op in ("contains", "startswith"):
        return raw.strip()[:200]
    if f.type in (FieldType.USER, FieldType.REF) and raw == "me":
        return "me"
    if f.type in (FieldType.DICT, FieldType.MULTI, FieldType.TAGS):
        return raw.strip()
    plain = Field(f.key, f.type, f.label_en, f.label_zh, choices=f.choices, max_length=f.limit)
    return convert(plain, raw)


def expression(entity: Entity, f: Field) -> Any:
    """The SQL expression of a field: the column, or its typed value inside ``custom``."""
    model = entity.model
    if not f.custom:
        return getattr(model, f.key)
    raw = model.custom[f.key]
    if f.type in (FieldType.NUMBER, FieldType.MONEY):
        return cast(raw.astext, Numeric)
    if f.type == FieldType.DATE:
        return cast(raw.astext, Date)
    if f.type == FieldType.DATETIME:
        return cast(raw.astext, DateTime(timezone=True))
    if f.type in (FieldType.MULTI,):
        return raw
    if f.type == FieldType.BOOL:
        return raw
    return raw.astext


def _period(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """[start, end) of a named period around ``today``."""
    if name == "today":
        return today, today + dt.timedelta(days=1)
    if name == "yesterday":
        return today - dt.timedelta(days=1), today
    if name in ("this_week", "last_week"):
        start = today - dt.timedelta(days=today.weekday())
        if name == "last_week":
            start -= dt.timedelta(days=7)
        return start, start + dt.timedelta(days=7)
    if name in ("this_month", "last_month"):
        start = today.replace(day=1)
        if name == "last_month":
            start = (start - dt.timedelta(days=1)).replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return start, end
    if name == "this_quarter":
        start = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
        end_month = start.month + 3
        end = start.replace(year=start.year + (end_month > 12), month=(end_month - 1) % 12 + 1)
        return start, end
    if name == "this_year":
        return today.replace(month=1, day=1), today.replace(year=today.year + 1, month=1, day=1)
    days = {"last_7_days": -7, "last_30_days": -30, "next_7_days": 7, "next_30_days": 30}[name]
    if days < 0:
        return today + dt.timedelta(days=days + 1), today + dt.timedelta(days=1)
    return today, today + dt.timedelta(days=days)


def condition(entity: Entity, flt: Filter, viewer: Viewer, *,  # noqa: PLR0912 - one branch per operator
              today: dt.date | None = None) -> Any:
    f, op = flt.field, flt.op
    expr = expression(entity, f)
    values = [viewer.user_id if v == "me" else v for v in flt.values]
    if op == "empty":
        wanted = values[0] if values else True
        blank = expr.is_(None)
        if f.type in (FieldType.MULTI, FieldType.TAGS) and not f.custom:
            blank = or_(expr.is_(None), func.cardinality(expr) == 0)
        elif f.type in TEXTUAL and not f.custom:
            blank = or_(expr.is_(None), expr == "")
        return blank if wanted else not_(blank)
    if not values:
        return true()
    if f.custom and f.type in (FieldType.CHOICE, FieldType.DICT, FieldType.USER, FieldType.BOOL) and op == "eq":
        # Containment uses the GIN index on custom (jsonb_path_ops).
        model = entity.model
        # A dict, not cast(json.dumps(...), JSONB): the JSONB bind type would encode that text once more,
        # and a JSON string never contains an object (the filter matched nothing).
        return or_(*(model.custom.contains({f.key: to_json(f, v)}) for v in values))
    if op == "has":
        if f.custom:
            return or_(*(entity.model.custom.contains({f.key: [v]}) for v in values))
        return expr.overlap(list(values))
    if op == "within":
        start, end = _period(str(values[0]), today or utcnow().date())
        if f.type == FieldType.DATETIME:
            return and_(expr >= dt.datetime.combine(start, dt.time(), dt.UTC),
                        expr < dt.datetime.combine(end, dt.time(), dt.UTC))
        return and_(expr >= start, expr < end)
    if op == "contains":
        return or_(*(expr.icontains(v, autoescape=True) for v in values))
    if op == "startswith":
        return or_(*(expr.istartswith(v, autoescape=True) for v in values))
    if f.custom and f.type in (FieldType.USER, FieldType.REF, FieldType.CHOICE, FieldType.DICT):
        values = [str(v) for v in values]
    if op == "eq":
        return expr.in_(values) if len(values) > 1 else expr == values[0]
    if op == "ne":
        return or_(expr.is_(None), expr.not_in(values))
    compare = {"gt": expr.__gt__, "gte": expr.__ge__, "lt": expr.__lt__, "lte": expr.__le__}[op]
    return and_(*(compare(v) for v in values))


def base_query(entity: Entity, viewer: Viewer, lq: ListQuery, *, deleted: bool = False) -> Select[Any]:
    """The records this viewer may see that match the query, unordered: lists, counts, exports."""
    stmt = select(entity.model).where(visible(entity, viewer, deleted=deleted))
    for flt in lq.filters:
        stmt = stmt.where(condition(entity, flt, viewer))
    if lq.q:
        match = search.matches(cast_column(entity.model.search_vector), lq.q)
        if match is None:
            raise ValidationFailed(_l("Type at least one letter, digit or character to search."),
                                   field_errors={"q": [_l("Nothing to search for.")]})
        stmt = stmt.where(match)
    return stmt


def cast_column(attr: Any) -> Any:
    """An ORM attribute where a column expression is expected (typing only: they are used alike)."""
    return attr


def _sort_expr(entity: Entity, fields: Mapping[str, Field], lq: ListQuery) -> Any:
    if lq.sort == entity.title_field:
        return entity.model.sort_key
    return expression(entity, fields[lq.sort])


def encode_cursor(value: Any, ident: Any, f: Field | None) -> str:
    raw = json.dumps([to_json(f, value) if f else value, str(ident)], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, f: Field | None) -> tuple[Any, str]:
    try:
        if len(cursor) > 800:
            raise ValueError
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, ident = raw
        import uuid as _uuid

        _uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(_l("The page cursor is not valid; start from the first page."),
                               field_errors={"after": [_l("Not a cursor this list gave.")]}) from None
    if f is not None and value is not None:
        value = from_json(f, value)
    return value, ident


def page(session: Session, entity: Entity, viewer: Viewer, lq: ListQuery, fields: Sequence[Field],
         *, deleted: bool = False) -> Page:
    """One keyset page: sorted by the chosen field then id, NULLs last, forwards or backwards."""
    by_key = {f.key: f for f in fields}
    model = entity.model
    sort = _sort_expr(entity, by_key, lq)
    sort_field = None if lq.sort == entity.title_field else by_key[lq.sort]
    backwards = lq.before is not None and lq.after is None
    desc = lq.desc != backwards  # walking backwards flips the order, then the page is reversed
    stmt = base_query(entity, viewer, lq, deleted=deleted)
    cursor = lq.before if backwards else lq.after
    if cursor:
        value, ident = decode_cursor(cursor, sort_field)
        stmt = stmt.where(_after(sort, model.id, value, ident, desc=desc, nulls_next=not backwards,
                                 nullable=_nullable(entity, sort_field)))
    order_sort = sort.desc() if desc else sort.asc()
    # NULLs stay at the end of the list whichever way it is walked.
    order_sort = order_sort.nulls_first() if backwards else order_sort.nulls_last()
    stmt = stmt.order_by(order_sort, model.id.desc() if desc else model.id.asc()).limit(lq.limit + 1)
    rows = list(session.scalars(stmt))
    more = len(rows) > lq.limit
    rows = rows[:lq.limit]
    if backwards:
        rows.reverse()

    def key(row: Any) -> str:
        if sort_field is None:
            value = row.sort_key
        elif sort_field.custom:
            value = from_json(sort_field, row.custom.get(sort_field.key))
        else:
            value = getattr(row, sort_field.key)
        return encode_cursor(value, row.id, sort_field)

    if not rows:
        return Page(rows, None, None)
    if backwards:
        return Page(rows, key(rows[-1]), key(rows[0]) if more else None)
    return Page(rows, key(rows[-1]) if more else None, key(rows[0]) if cursor else None)


def _nullable(entity: Entity, f: Field | None) -> bool:
    """Whether the sort column can hold NULL (the title sorts by ``sort_key``, which never does)."""
    if f is None:
        return False
    if f.custom:
        return True
    column = entity.model.__table__.c.get(f.key)  # type: ignore[attr-defined]
    return column is None or bool(column.nullable)


def _after(sort: Any, ident_col: Any, value: Any, ident: str, *, desc: bool, nulls_next: bool,
           nullable: bool = True) -> Any:
    """Rows strictly after (value, ident) in the walk's order (sort, id).

    NULL sort values sit at the end of the list: after every value when walking forwards
    (``nulls_next``), before every value when walking backwards.

    The bound is a row comparison, ``(sort, id) > (value, ident)``: a B-tree on (sort, id) starts the
    scan there, where the spelled-out ``sort > v OR (sort = v AND id > i)`` makes PostgreSQL read the
    index from its start and filter (bench/crm.py: 64,000 rows read for a rep's page 51). For the same
    reason ``OR sort IS NULL`` is left out when the column cannot be NULL.
    """
    later_id = ident_col < ident if desc else ident_col > ident
    if value is None:
        among_nulls = and_(sort.is_(None), later_id)
        return among_nulls if nulls_next else or_(among_nulls, sort.is_not(None))
    # Each side typed as its column (a cursor carries the id as text, a date as a date).
    pair, bound = tuple_(sort, ident_col), tuple_(literal(value, sort.type), literal(ident, ident_col.type))
    beyond = pair < bound if desc else pair > bound
    return or_(beyond, sort.is_(None)) if nulls_next and nullable else beyond


def count(session: Session, entity: Entity, viewer: Viewer, lq: ListQuery, *, deleted: bool = False,
          bound: int = COUNT_BOUND) -> tuple[int, bool]:
    """How many match: exact up to ``bound``, else (bound, False) to be shown as "10,000+"."""
    inner = base_query(entity, viewer, lq, deleted=deleted).with_only_columns(entity.model.id).limit(bound + 1)
    n = session.scalar(select(func.count()).select_from(inner.subquery())) or 0
    return (bound, False) if n > bound else (n, True)
