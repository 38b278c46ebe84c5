"""The pages of every CRM entity: list, detail (360°), form, and the record actions, generated per entity.

Thin: each view parses the request, calls crm.records services, and renders. Rules (scope,
validation, duplicates, numbers) live in the services; the same list query the API takes drives the
list page, its count, its export link and its saved views.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, url_for
from sqlalchemy import func, select

from core.errors import DomainError, NotFound, PreconditionFailed, ValidationFailed
from core.i18n import _, _l, current_locale
from core.tenancy import local_path
from crm.records import attachments, definitions, history, lists, present, services
from crm.records.entity import Entity, entities, entity, find_entity
from crm.records.fields import Field, FieldType
from crm.records.models import SavedView
from crm.records.scope import Viewer, viewer_for, visible
from tenants.context import current_actor, db_session, login_required, runtime
from tenants.models import Department, User

crm = Blueprint("crm", __name__)

#: How many rows each related list shows on a record page before "view all".
RELATED_LIMIT = 10
SEARCH_PER_ENTITY = 5
SECTIONS: dict[str, tuple[str, str]] = {
    "main": ("Details", "基本信息"), "contact": ("Contact and address", "联系方式"),
    "finance": ("Billing", "开票信息"), "org": ("Organisation", "组织关系"), "personal": ("Personal", "个人信息"),
    "other": ("Other", "其他"), "custom": ("More fields", "自定义字段"),
}


def viewer() -> Viewer:
    if "crm_viewer" not in g:
        actor = current_actor()
        assert actor is not None  # login_required ran first
        g.crm_viewer = viewer_for(db_session(), actor, locale=current_locale().language)
    return g.crm_viewer  # type: ignore[no-any-return]


def _next(default: str) -> str:
    return local_path(request.values.get("next"), request.script_root) or default


def _form_data(fields: list[Field]) -> dict[str, Any]:
    """The submitted values of the form's fields (multi-values as lists, unchecked boxes as False)."""
    data: dict[str, Any] = {}
    for f in fields:
        if f.readonly:
            continue
        if f.type == FieldType.BOOL:
            if f"{f.key}__present" in request.form:
                data[f.key] = f.key in request.form
        elif f.type == FieldType.MULTI:
            if f.key in request.form or f"{f.key}__present" in request.form:
                data[f.key] = request.form.getlist(f.key)
        elif f.key in request.form:
            data[f.key] = request.form[f.key]
    return data


def _sections(fields: tuple[Field, ...]) -> list[tuple[str, list[Field]]]:
    grouped: dict[str, list[Field]] = {}
    for f in fields:
        if f.key in ("number", "department_id", "created_at", "updated_at", "related_entity", "related_id"):
            continue
        grouped.setdefault("custom" if f.custom else f.section, []).append(f)
    order = list(SECTIONS)
    return sorted(grouped.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def section_label(key: str) -> str:
    en, zh = SECTIONS.get(key, (key, key))
    return zh if current_locale().language == "zh" else en


def _ref_options(v: Viewer, fields: tuple[Field, ...], values: dict[str, Any]) -> dict[str, str]:
    """Titles of the records and users a form's pickers currently hold (so the picker shows a name)."""
    out: dict[str, str] = {}
    session = db_session()
    for f in fields:
        raw = values.get(f.key)
        try:
            ident = raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)) if raw else None
        except ValueError:
            continue
        if ident is None:
            continue
        if f.type == FieldType.USER:
            out[f.key] = services.user_names(session, [ident]).get(ident, "")
        elif f.type == FieldType.REF and f.target:
            out[f.key] = present.ref_titles(session, v, f.target, {ident}).get(ident, "")
    return out


def _users() -> list[User]:
    return list(db_session().scalars(select(User).where(User.active).order_by(User.name).limit(500)))


def _departments() -> list[Department]:
    return list(db_session().scalars(select(Department).order_by(Department.name).limit(500)))


def _dictionaries(fields: tuple[Field, ...]) -> dict[str, list[Any]]:
    session = db_session()
    return {f.target: definitions.dictionary(session, f.target) for f in fields
            if f.type == FieldType.DICT and f.target}


# --------------------------------------------------------------------------- lists


def _saved_views(ent: Entity, v: Viewer) -> list[SavedView]:
    from sqlalchemy import or_

    return list(db_session().scalars(
        select(SavedView).where(SavedView.entity == ent.key, or_(SavedView.owner_id == v.user_id, SavedView.shared))
        .order_by(SavedView.sort_order, SavedView.name).limit(50)))


def list_page(ent: Entity) -> Any:
    v = viewer()
    v.require(ent, "view")
    session = db_session()
    if (view_id := request.args.get("view")) and len(request.args) == 1:
        saved = next((s for s in _saved_views(ent, v) if str(s.id) == view_id), None)
        if saved is None:
            raise NotFound(_l("No such saved view."))
        params = [(k, val) for k, val in saved.spec.get("params", []) if isinstance(k, str) and isinstance(val, str)]
        target = url_for(f"crm.{ent.key}_list") + "?" + urlencode([*params, ("view", view_id)])
        return redirect(target)
    fields = definitions.fields(session, ent)
    by_key = {f.key: f for f in fields}
    args = [(k, val) for k, val in request.args.items(multi=True) if k != "view"]
    error = None
    try:
        lq = lists.parse(args, fields, ent)
        pg = lists.page(session, ent, v, lq, fields)
        total, exact = lists.count(session, ent, v, lq)
    except ValidationFailed as exc:
        error = exc
        lq = lists.parse([], fields, ent)
        pg = lists.page(session, ent, v, lq, fields)
        total, exact = lists.count(session, ent, v, lq)
    columns = [by_key[c] for c in (lq.columns or list(ent.list_columns)) if c in by_key]
    shown = present.displays(session, v, ent, pg.rows, fields)
    template = "crm/_list_rows.html" if request.headers.get("HX-Request") and request.headers.get(
        "HX-Target") == "record-rows" else "crm/list.html"
    return render_template(
        template, entity=ent, rows=list(zip(pg.rows, shown, strict=True)), page=pg, total=total, exact=exact,
        columns=columns, fields=fields, lq=lq, params=lq.params, saved_views=_saved_views(ent, v),
        current_view=request.args.get("view"), filter_fields=_filter_fields(ent, fields),
        dictionaries=_dictionaries(tuple(fields)), users=_users(), allowed=_can(ent, v), error=error,
        nav_active=ent.key, quick_filters=_quick_filters(ent))


def _filter_fields(ent: Entity, fields: tuple[Field, ...]) -> list[Field]:
    """The fields offered in the filter bar: the list's own key classifications first (by their list
    order), the owner, then the other discrete fields, dates, and the rest."""
    rank = {FieldType.DICT: 1, FieldType.CHOICE: 1, FieldType.USER: 1, FieldType.BOOL: 2, FieldType.DATE: 3,
            FieldType.DATETIME: 3, FieldType.TAGS: 4, FieldType.MULTI: 4}
    usable = [f for f in fields if f.type not in (FieldType.LONGTEXT,) and f.key not in ("related_entity",
                                                                                          "related_id")]

    def order(f: Field) -> tuple[int, int, int, bool]:
        listed = f.list_order if f.list_order and f.type in (FieldType.DICT, FieldType.CHOICE) else 99
        owner = 0 if f.key == "owner_id" else 1
        return (0 if listed < 99 else owner, listed, rank.get(f.type, 5), f.custom)

    return sorted(usable, key=order)


def _quick_filters(ent: Entity) -> list[tuple[str, list[tuple[str, str]]]]:
    """Predefined views every list has (like Salesforce's "My accounts", "Recently viewed")."""
    zh = current_locale().language == "zh"
    out = [(("全部" if zh else "All"), []), (("我的" if zh else "Mine"), [("owner_id", "me")]),
           (("本周新建" if zh else "Created this week"), [("created_at__within", "this_week")]),
           (("最近更新" if zh else "Recently updated"), [("sort", "-updated_at")])]
    if ent.key == "tasks":
        out[1:1] = [(("我的未完成" if zh else "My open tasks"), [("owner_id", "me"), ("status", "open"),
                                                                ("sort", "due_at")])]
    return out


def _can(ent: Entity, v: Viewer) -> dict[str, bool]:
    return {a: v.can(ent, a) for a in ("view", "create", "edit", "delete", "export", "import", "transfer", "merge")}


# --------------------------------------------------------------------------- record pages


def _related(ent: Entity, v: Viewer, record: Any) -> list[dict[str, Any]]:
    """The related lists of a record page: each child entity's rows the viewer may see."""
    session = db_session()
    out = []
    for child in ent.children:
        target = find_entity(child.entity)
        if target is None or not v.can(target, "view"):
            continue
        col = getattr(target.model, child.column)
        stmt = select(target.model).where(col == record.id, visible(target, v))
        total = session.scalar(select(func.count()).select_from(stmt.with_only_columns(target.model.id)
                                                                 .limit(1000).subquery())) or 0
        order = target.model.updated_at.desc()
        rows = list(session.scalars(stmt.order_by(order).limit(RELATED_LIMIT)))
        fields = definitions.fields(session, target)
        by_key = {f.key: f for f in fields}
        cols = [by_key[c] for c in target.list_columns if c in by_key and c != child.column][:4]
        shown = present.displays(session, v, target, rows, fields)
        label = target.plural(v.locale)
        if child.entity == ent.key and child.column == "parent_id":
            label = "下属公司" if v.locale == "zh" else "Subsidiaries"
        if child.entity == ent.key and child.column == "reports_to_id":
            label = "下属" if v.locale == "zh" else "Direct reports"
        out.append({"entity": target, "column": child.column, "label": label, "rows": list(zip(rows, shown,
                                                                                                strict=True)),
                    "columns": cols, "total": total, "can_create": v.can(target, "create")})
    return out


#: Panels an area adds to its entity's overview tab (the customer's org chart and relationships):
#: each returns the template to include and its context.
Panel = Callable[[Viewer, Any], tuple[str, dict[str, Any]]]
PANELS: dict[str, list[Panel]] = {}


def add_panel(entity_key: str, panel: Panel) -> Panel:
    PANELS.setdefault(entity_key, []).append(panel)
    return panel


PLACEHOLDERS: dict[str, list[tuple[str, str, str]]] = {
    # Related sections later issues fill (sales: opportunities, quotes, orders; service: tickets).
    "customers": [("Opportunities", "商机", "target-arrow"), ("Orders", "订单", "receipt"),
                  ("Tickets", "服务工单", "lifebuoy")],
}


def detail_page(ent: Entity, record_id: str) -> Any:
    v = viewer()
    session = db_session()
    record = services.get(session, v, ent, record_id)
    fields = definitions.fields(session, ent)
    shown = present.displays(session, v, ent, [record], fields)[0]
    tab = request.args.get("tab", "overview")
    if tab not in ("overview", "timeline", "related", "history", "files"):
        tab = "overview"
    return render_template(
        "crm/detail.html", entity=ent, record=record, shown=shown, fields=fields, sections=_sections(fields),
        related=_related(ent, v, record), timeline=history.timeline(session, v, ent, record, limit=50),
        history=history.entries(session, v, ent, record) if tab == "history" else [],
        files=attachments.for_record(session, v, ent, record), tab=tab, allowed=_can(ent, v),
        editable=services.can_edit(session, v, ent, record), shares=services.shares(session, v, ent, record),
        users=_users(), departments=_departments(), placeholders=PLACEHOLDERS.get(ent.key, []), nav_active=ent.key,
        owner_name=services.user_names(session, [record.owner_id]).get(record.owner_id, ""),
        max_upload=runtime().settings.attachment_max_bytes,
        panels=[panel(v, record) for panel in PANELS.get(ent.key, [])] if tab == "overview" else [])


def _render_form(ent: Entity, *, record: Any | None, values: dict[str, Any], error: DomainError | None = None,
                 duplicates: list[Any] | None = None, status: int = 200) -> tuple[str, int]:
    v = viewer()
    fields = definitions.fields(db_session(), ent)
    editable_fields = tuple(f for f in fields if not f.readonly)
    return render_template(
        "crm/form.html", entity=ent, record=record, values=values, sections=_sections(editable_fields),
        error=error.message if error else None, field_errors=error.field_errors if error else {},
        duplicates=duplicates or [], ref_names=_ref_options(v, editable_fields, values),
        dictionaries=_dictionaries(fields), users=_users(), nav_active=ent.key,
        next=request.values.get("next", ""), can_transfer=v.can(ent, "transfer"),
        labels={f.key: f.label(v.locale) for f in fields}), status


def new_page(ent: Entity) -> Any:
    v = viewer()
    v.require(ent, "create")
    fields = definitions.fields(db_session(), ent)
    values: dict[str, Any] = {f.key: f.default for f in fields if f.default is not None}
    # Prefill from the query: "add a contact" on a customer page passes customer_id.
    for f in fields:
        if not f.readonly and (raw := request.args.get(f.key)) is not None:
            values[f.key] = raw[:200]
    if ent.key == "activities" and "occurred_at" not in values:
        from core.db import utcnow

        values["occurred_at"] = utcnow().replace(second=0, microsecond=0)
    if request.method == "GET":
        return _render_form(ent, record=None, values=values)
    data = _form_data(list(fields))
    confirm = request.form.get("confirm_duplicates") == "1"
    try:
        record = services.create(db_session(), v, ent, data, allow_duplicates=confirm)
    except services.PossibleDuplicates as exc:
        return _render_form(ent, record=None, values=data, error=exc, duplicates=_dupe_rows(ent, v, exc.records),
                            status=409)
    except ValidationFailed as exc:
        return _render_form(ent, record=None, values=data, error=exc, status=422)
    flash(_("%(what)s created.", what=ent.label(v.locale)), "success")
    return redirect(_next(url_for(f"crm.{ent.key}_detail", record_id=record.id)))


def _dupe_rows(ent: Entity, v: Viewer, rows: list[Any]) -> list[dict[str, str]]:
    return [{"id": str(r.id), "title": services.title(ent, r), "number": r.number or "",
             "url": url_for(f"crm.{ent.key}_detail", record_id=r.id)} for r in rows]


def edit_page(ent: Entity, record_id: str) -> Any:
    v = viewer()
    session = db_session()
    record = services.get_for_edit(session, v, ent, record_id)
    fields = definitions.fields(session, ent)
    if request.method == "GET":
        return _render_form(ent, record=record, values=services.values(record, fields))
    data = _form_data(list(fields))
    version = request.form.get("version", "")
    try:
        services.update(session, v, ent, record.id, data,
                        expected_version=int(version) if version.isdigit() else None)
    except (ValidationFailed, PreconditionFailed) as exc:
        return _render_form(ent, record=record, values={**services.values(record, fields), **data}, error=exc,
                            status=exc.status)
    flash(_("Saved."), "success")
    return redirect(_next(url_for(f"crm.{ent.key}_detail", record_id=record.id)))


def duplicates_fragment(ent: Entity) -> Any:
    """While typing a name (htmx): "3 similar customers: …" before saving."""
    v = viewer()
    data = {k: request.args.get(k, "")[:200] for k in (ent.title_field, *ent.duplicate_fields)}
    exclude = request.args.get("exclude")
    try:
        ex = uuid.UUID(exclude) if exclude else None
    except ValueError:
        ex = None
    rows = services.find_duplicates(db_session(), v, ent, data, exclude=ex)
    return render_template("crm/_duplicates.html", entity=ent, duplicates=_dupe_rows(ent, v, rows))


def _back(ent: Entity, record_id: Any) -> Any:
    return redirect(_next(url_for(f"crm.{ent.key}_detail", record_id=record_id)))


def delete_action(ent: Entity, record_id: str) -> Any:
    services.delete_records(db_session(), viewer(), ent, [record_id])
    flash(_("Moved to the recycle bin; it can be restored for 30 days."), "success")
    return redirect(url_for(f"crm.{ent.key}_list"))


def restore_action(ent: Entity, record_id: str) -> Any:
    services.restore(db_session(), viewer(), ent, record_id)
    flash(_("Restored."), "success")
    return _back(ent, record_id)


def transfer_action(ent: Entity, record_id: str) -> Any:
    services.transfer(db_session(), viewer(), ent, [record_id], request.form.get("owner_id", "")[:40])
    flash(_("Transferred."), "success")
    return _back(ent, record_id)


def _uuid_field(name: str) -> uuid.UUID | None:
    raw = request.form.get(name, "")[:40]
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationFailed(_l("Choose from the list."),
                               field_errors={name: [_l("Choose from the list.")]}) from None


def share_action(ent: Entity, record_id: str) -> Any:
    services.share(db_session(), viewer(), ent, record_id, user_id=_uuid_field("user_id"),
                   department_id=_uuid_field("department_id"), access=request.form.get("access", "read")[:8])
    flash(_("Shared."), "success")
    return _back(ent, record_id)


def unshare_action(ent: Entity, record_id: str, share_id: uuid.UUID) -> Any:
    services.unshare(db_session(), viewer(), ent, record_id, share_id)
    flash(_("Sharing stopped."), "success")
    return _back(ent, record_id)


def merge_page(ent: Entity, record_id: str) -> Any:
    """Merge another record into this one: pick it (search), compare side by side, choose values, merge."""
    v = viewer()
    v.require(ent, "merge")
    session = db_session()
    keep = services.get_for_edit(session, v, ent, record_id)
    fields = definitions.fields(session, ent)
    other_id = request.values.get("other", "")[:40]
    other = services.get_for_edit(session, v, ent, other_id) if other_id else None
    if request.method == "POST" and other is not None:
        take = [k for k in request.form.getlist("take") if isinstance(k, str)][:100]
        services.merge(session, v, ent, keep.id, other.id, take=take)
        flash(_("Merged. Everything related to the other record now belongs to this one."), "success")
        return _back(ent, keep.id)
    candidates = services.find_duplicates(session, v, ent, services.values(keep, fields), exclude=keep.id,
                                          limit=10)
    rows = [keep, other] if other is not None else [keep]
    shown = present.displays(session, v, ent, rows, fields)
    return render_template("crm/merge.html", entity=ent, keep=keep, other=other, fields=[
        f for f in fields if not f.readonly], shown=shown, candidates=_dupe_rows(ent, v, candidates),
        nav_active=ent.key)


def bulk_action(ent: Entity) -> Any:
    v = viewer()
    session = db_session()
    ids = request.form.getlist("ids")[: services.MAX_BULK + 1]
    action = request.form.get("action", "")
    if action == "delete":
        n = services.delete_records(session, v, ent, ids)
    elif action == "transfer":
        n = services.transfer(session, v, ent, ids, request.form.get("owner_id", "")[:40])
    elif action in ("tag", "untag"):
        n = services.bulk_tag(session, v, ent, ids, request.form.get("tags", "")[:400], remove=action == "untag")
    elif action == "set":
        key = request.form.get("field", "")[:40]
        n = services.bulk_set(session, v, ent, ids, key, request.form.get("value", "")[:2000])
    elif action == "share":
        n = 0
        for rid in services._bounded_ids(ids):
            services.share(session, v, ent, rid, user_id=_uuid_field("user_id"),
                           department_id=_uuid_field("department_id"), access=request.form.get("access", "read")[:8])
            n += 1
    else:
        raise ValidationFailed(_l("Choose an action."), field_errors={"action": [_l("Choose an action.")]})
    flash(_("Done: %(num)s records.", num=n), "success")
    return redirect(_next(url_for(f"crm.{ent.key}_list")))


def save_view_action(ent: Entity) -> Any:
    """Save the list's current filters, sort and columns under a name (personal, or shared if allowed)."""
    v = viewer()
    v.require(ent, "view")
    name = request.form.get("name", "").strip()
    if not 1 <= len(name) <= 100:
        raise ValidationFailed(_l("Give the view a name of at most 100 characters."),
                               field_errors={"name": [_l("Required.")]})
    fields = definitions.fields(db_session(), ent)
    params = [(k, val) for k, val in request.form.items(multi=True) if k.startswith("p:")]
    pairs = [(k[2:], val) for k, val in params][:lists.MAX_PARAMS]
    lists.parse(pairs, fields, ent)  # refuse a view that could not be shown
    shared = request.form.get("shared") == "1" and v.can(ent, "transfer")
    view = SavedView(entity=ent.key, name=name, owner_id=v.user_id, shared=shared, spec={"params": pairs})
    db_session().add(view)
    db_session().flush()
    return redirect(url_for(f"crm.{ent.key}_list", view=view.id))


def delete_view_action(ent: Entity, view_id: uuid.UUID) -> Any:
    v = viewer()
    view = db_session().get(SavedView, view_id)
    if view is None or view.entity != ent.key or (view.owner_id != v.user_id and not (
            view.shared and v.can(ent, "transfer"))):
        raise NotFound(_l("No such saved view."))
    db_session().delete(view)
    return redirect(url_for(f"crm.{ent.key}_list"))


def upload_action(ent: Entity, record_id: str) -> Any:
    v = viewer()
    settings = runtime().settings
    # Attachments may be larger than ordinary bodies; this route alone raises the limit.
    request.max_content_length = settings.attachment_max_bytes + 64 * 1024
    record = services.get(db_session(), v, ent, record_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ValidationFailed(_l("Choose a file to upload."), field_errors={"file": [_l("Required.")]})
    attachments.upload(db_session(), v, ent, record, upload.stream, filename=upload.filename,
                       declared_type=upload.mimetype or "", storage=runtime().storage, settings=settings)
    flash(_("File attached."), "success")
    return redirect(url_for(f"crm.{ent.key}_detail", record_id=record.id, tab="files"))


def download_action(ent: Entity, record_id: str, file_id: uuid.UUID) -> Any:
    v = viewer()
    record = services.get(db_session(), v, ent, record_id)
    return attachments.download(db_session(), v, ent, record, file_id, storage=runtime().storage,
                                inline=request.args.get("inline") == "1")


def delete_file_action(ent: Entity, record_id: str, file_id: uuid.UUID) -> Any:
    v = viewer()
    record = services.get(db_session(), v, ent, record_id)
    attachments.remove(db_session(), v, ent, record, file_id)
    flash(_("File deleted."), "success")
    return redirect(url_for(f"crm.{ent.key}_detail", record_id=record.id, tab="files"))


# --------------------------------------------------------------------------- across entities


@crm.get("/search")
@login_required
def search() -> Any:
    """The top bar's search: every entity the user may see, a few of each, with "see all" links."""
    v = viewer()
    q = request.args.get("q", "").strip()[:200]
    groups = []
    error = None
    if q:
        session = db_session()
        for ent in entities():
            if not v.can(ent, "view"):
                continue
            fields = definitions.fields(session, ent)
            try:
                lq = lists.parse([("q", q), ("limit", str(SEARCH_PER_ENTITY))], fields, ent)
                pg = lists.page(session, ent, v, lq, fields)
                total, exact = lists.count(session, ent, v, lq, bound=1000)
            except ValidationFailed as exc:
                error = exc.message
                break
            if pg.rows:
                by_key = {f.key: f for f in fields}
                cols = [by_key[c] for c in ent.list_columns if c in by_key][:4]
                groups.append({"entity": ent, "rows": list(zip(pg.rows, present.displays(session, v, ent, pg.rows,
                                                                                         fields), strict=True)),
                               "total": total, "exact": exact, "columns": cols})
    if request.headers.get("HX-Request"):
        return render_template("crm/_search_results.html", q=q, groups=groups, error=error)
    return render_template("crm/search.html", q=q, groups=groups, error=error, nav_active="search")


@crm.get("/recycle-bin")
@login_required
def recycle_bin() -> Any:
    v = viewer()
    session = db_session()
    groups = []
    for ent in entities():
        if not v.can(ent, "view"):
            continue
        fields = definitions.fields(session, ent)
        lq = lists.parse([("sort", "-updated_at"), ("limit", "50")], fields, ent)
        pg = lists.page(session, ent, v, lq, fields, deleted=True)
        if pg.rows:
            groups.append({"entity": ent, "rows": pg.rows, "can_restore": v.can(ent, "delete")})
    return render_template("crm/recycle_bin.html", groups=groups, nav_active="recycle-bin")


# --------------------------------------------------------------------------- registration


def _bind(fn: Callable[..., Any], ent_key: str) -> Callable[..., Any]:
    def view(**kwargs: Any) -> Any:
        return fn(entity(ent_key), **kwargs)

    view.__name__ = f"{ent_key}_{fn.__name__}"
    view.__doc__ = fn.__doc__
    return login_required(view)


_ROUTES: list[tuple[str, str, Callable[..., Any], tuple[str, ...]]] = [
    ("", "list", list_page, ("GET",)),
    ("/new", "new", new_page, ("GET", "POST")),
    ("/duplicates", "duplicates", duplicates_fragment, ("GET",)),
    ("/bulk", "bulk", bulk_action, ("POST",)),
    ("/views", "save_view", save_view_action, ("POST",)),
    ("/views/<uuid:view_id>/delete", "delete_view", delete_view_action, ("POST",)),
    ("/<record_id>", "detail", detail_page, ("GET",)),
    ("/<record_id>/edit", "edit", edit_page, ("GET", "POST")),
    ("/<record_id>/delete", "delete", delete_action, ("POST",)),
    ("/<record_id>/restore", "restore", restore_action, ("POST",)),
    ("/<record_id>/transfer", "transfer", transfer_action, ("POST",)),
    ("/<record_id>/share", "share", share_action, ("POST",)),
    ("/<record_id>/shares/<uuid:share_id>/delete", "unshare", unshare_action, ("POST",)),
    ("/<record_id>/merge", "merge", merge_page, ("GET", "POST")),
    ("/<record_id>/files", "upload", upload_action, ("POST",)),
    ("/<record_id>/files/<uuid:file_id>", "download", download_action, ("GET",)),
    ("/<record_id>/files/<uuid:file_id>/delete", "delete_file", delete_file_action, ("POST",)),
]
_done: set[str] = set()


def register(app: Flask) -> None:
    for ent in entities():
        if ent.key in _done:
            continue
        for suffix, name, fn, methods in _ROUTES:
            crm.add_url_rule(f"/{ent.key}{suffix}", endpoint=f"{ent.key}_{name}", view_func=_bind(fn, ent.key),
                             methods=list(methods))
        _done.add(ent.key)
    app.register_blueprint(crm)
    app.jinja_env.globals.update(crm_entities=entities, section_label=section_label, FieldType=FieldType,
                                 has_endpoint=lambda name: name in app.view_functions)
