"""Export the records of a list as CSV or ``.xlsx``: what the viewer may see, with the list's filters.

The list is described by the same query parameters as the list page and the API (``q``, ``sort``,
``columns``, one parameter per filter; :mod:`crm.records.lists`), and its records come from the same
:func:`crm.records.lists.base_query`, so the data scope, filters and search of the list apply as they
are. Columns are the list's chosen columns, or every field. Values are written as people read them:
labels of choices and dictionaries in the chosen language, user names, the titles of records referred
to; numbers and dates stay typed (the writers format them, and a workbook keeps them as numbers and dates).

Exporting is two steps, so that a web view can check everything (permission, parameters) and write the
audit entry in the request's transaction, then stream the rows through a session of its own:
:func:`prepare`, then :func:`chunks` (bytes) over :func:`rows`. Rows are read through a server-side
cursor (``yield_per``): memory does not grow with the list.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from core.errors import ValidationFailed
from core.i18n import _l, shown
from crm.records import definitions, lists, tabular
from crm.records.entity import Entity, find_entity
from crm.records.fields import Field, FieldType
from crm.records.scope import Viewer, visible
from crm.records.services import value
from tenants import services as tenant_services
from tenants.models import Department, User

FORMATS = ("csv", "xlsx")
Format = Literal["csv", "xlsx"]
#: Rows fetched from the server-side cursor at a time (and whose references are looked up together).
CHUNK = 1000
MIMETYPES = {"csv": "text/csv; charset=utf-8",
             "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
#: Typed values the writers format themselves (a workbook keeps them as numbers and dates).
TYPED = (FieldType.NUMBER, FieldType.MONEY, FieldType.DATE, FieldType.DATETIME)


@dataclass(slots=True)
class Export:
    entity: Entity
    viewer: Viewer
    query: lists.ListQuery
    columns: list[Field]
    format: Format
    filename: str
    params: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mimetype(self) -> str:
        return MIMETYPES[self.format]

    @property
    def headers(self) -> list[str]:
        return [f.label(self.viewer.locale) for f in self.columns]


def check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ValidationFailed(_l("Export as csv or xlsx, not '%(value)s'.", value=shown(fmt)),
                               field_errors={"format": [_l("csv or xlsx")]})
    return "xlsx" if fmt == "xlsx" else "csv"


def prepare(session: Session, viewer: Viewer, ent: Entity, params: Iterable[tuple[str, str]], *,
            fmt: str = "csv", today: dt.date | None = None) -> Export:
    """Check the permission and the list's parameters (422 for a mistake), and write the audit entry."""
    viewer.require(ent, "export")
    chosen = check_format(fmt)
    fields = definitions.fields(session, ent)
    pairs = [(k, v) for k, v in params if k not in ("format", "csrf_token")]
    lq = lists.parse(pairs, fields, ent)
    by_key = {f.key: f for f in fields}
    columns = [by_key[k] for k in lq.columns] if lq.columns else [f for f in fields if f.key != "department_id"]
    stamp = (today or utcnow().date()).isoformat()
    filename = f"{ent.key}-{stamp}.{chosen}"
    tenant_services.audit(session, viewer.actor, f"{ent.key}.exported", ent.key, None, after={
        "format": chosen, "columns": [f.key for f in columns], "list": [list(p) for p in lq.params][:40]})
    return Export(ent, viewer, lq, columns, chosen, filename, list(lq.params))


def _ordered(export: Export, fields: Sequence[Field]) -> Any:
    ent, lq = export.entity, export.query
    stmt = lists.base_query(ent, export.viewer, lq)
    if lq.sort == ent.title_field:
        sort: Any = ent.model.sort_key
    else:
        sort = lists.expression(ent, {f.key: f for f in fields}[lq.sort])
    order = sort.desc() if lq.desc else sort.asc()
    return stmt.order_by(order.nulls_last(), ent.model.id.desc() if lq.desc else ent.model.id.asc())


def rows(session: Session, export: Export) -> Iterator[list[Any]]:
    """The export's rows, as values for the writers, read CHUNK at a time from a server-side cursor."""
    fields = definitions.fields(session, export.entity)
    locale = export.viewer.locale
    users = dict(session.execute(select(User.id, User.name)).all())
    departments = dict(session.execute(select(Department.id, Department.name)).all())
    stmt = _ordered(export, fields).execution_options(yield_per=CHUNK)
    for partition in session.scalars(stmt).partitions():
        titles = _ref_titles(session, export, partition)
        for record in partition:
            out: list[Any] = []
            for f in export.columns:
                raw = value(record, f)
                if raw is None or raw in ([], ""):
                    out.append(None)
                elif f.type in TYPED:
                    out.append(raw)
                elif f.type == FieldType.REF:
                    out.append(departments.get(raw, "") if f.key == "department_id" else titles.get(raw, ""))
                else:
                    out.append(definitions.display(session, f, raw, locale, users=users))
            yield out
        for record in partition:  # the identity map would keep every record read so far
            session.expunge(record)


def _ref_titles(session: Session, export: Export, partition: Sequence[Any]) -> dict[uuid.UUID, str]:
    """Titles (or numbers) of the records this chunk refers to that the viewer may see."""
    wanted: dict[str, set[uuid.UUID]] = {}
    for f in export.columns:
        if f.type != FieldType.REF or not f.target or f.key == "department_id":
            continue
        ids = {v for r in partition if isinstance(v := value(r, f), uuid.UUID)}
        if ids:
            wanted.setdefault(f.target, set()).update(ids)
    out: dict[uuid.UUID, str] = {}
    for key, ids in wanted.items():
        target = find_entity(key)
        if target is None:
            continue
        title = getattr(target.model, target.title_field)
        for ident, name, number in session.execute(select(target.model.id, title, target.model.number).where(
                target.model.id.in_(ids), visible(target, export.viewer))):
            out[ident] = str(name or number or "")
    return out


def chunks(export: Export, data: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """The file's bytes, streamed (CSV in UTF-8 with a BOM, or a workbook)."""
    if export.format == "xlsx":
        return tabular.write_xlsx(export.headers, data, sheet_title=export.entity.plural(export.viewer.locale)[:31])
    return tabular.write_csv(export.headers, data)
