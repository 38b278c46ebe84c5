"""The tenant admin's pages for the CRM's configuration: fields, dictionaries, numbering (crm.configure).

Thin: every rule is in :mod:`crm.records.configuration`; a refused form is shown again with what was
typed and every message beside its field.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from core.errors import DomainError, NotFound, ValidationFailed
from core.i18n import _, current_locale
from core.permissions import Actor
from crm.records import configuration as config
from crm.records import seeds
from crm.records.entity import Entity, entities, find_entity
from crm.records.fields import CUSTOM_TYPES, TYPE_LABELS, FieldType
from crm.records.permissions import CONFIGURE
from crm.records.services import check_pattern
from tenants.context import current_actor, db_session, permission_required

bp = Blueprint("config", __name__, url_prefix="/settings")

FIELD_FORM = ("key", "type", "label_en", "label_zh", "default", "options")


def _actor() -> Actor:
    actor = current_actor()
    assert actor is not None  # guaranteed by permission_required
    return actor


def _locale() -> str:
    return current_locale().language


def _entity_arg(raw: str | None) -> Entity:
    all_ = entities()
    if not all_:
        raise NotFound(_("There are no record types yet."))
    ent = find_entity(raw) if raw else all_[0]
    if ent is None:
        raise NotFound(_("There is no such record type."))
    return ent


def _field_data(form: MultiDict[str, str], *, new: bool) -> dict[str, Any]:
    data: dict[str, Any] = {k: form.get(k, "") for k in FIELD_FORM if new or k != "key"}
    data["required"] = form.get("required") == "1"
    data["unique"] = form.get("unique") == "1"
    if data.get("type") not in (FieldType.CHOICE, FieldType.MULTI) and not (data.get("options") or "").strip():
        data.pop("options", None)  # the hidden options box of a non-choice type
    if new:
        data["entity"] = form.get("entity", "")
    return data


def _fields_page(ent: Entity, *, form: Any = None, field_errors: Any = None, error: Any = None,
                 status: int = 200) -> tuple[str, int]:
    session = db_session()
    rows = config.list_fields(session, _actor(), ent.key)
    return render_template(
        "crm/settings/fields.html", ent=ent, entities=entities(), builtin=list(ent.fields),
        rows=rows, types=[(t.value, TYPE_LABELS[t]) for t in CUSTOM_TYPES], type_labels=TYPE_LABELS,
        field_types=FieldType, form=form or {}, field_errors=field_errors or {}, error=error,
        max_fields=config.MAX_FIELDS, nav_active="fields"), status


@bp.route("/fields", methods=["GET", "POST"])
@permission_required(CONFIGURE)
def fields() -> Any:
    """An entity's fields: the built-in ones (read-only) and the custom ones (add, edit, order, hide)."""
    session, actor = db_session(), _actor()
    if request.method == "GET":
        return _fields_page(_entity_arg(request.args.get("entity")))
    form = request.form
    ent = _entity_arg(form.get("entity") or None)
    action = form.get("action") or ""
    try:
        if action in ("deactivate", "activate"):
            row = config.set_field_active(session, actor, form.get("id"), action == "activate")
            flash(_("%(name)s is hidden; its values are kept.", name=row.label_en) if action == "deactivate"
                  else _("%(name)s is back.", name=row.label_en))
        elif action in ("up", "down"):
            config.move_field(session, actor, form.get("id"), -1 if action == "up" else 1)
        elif action == "order":
            config.reorder_fields(session, actor, ent.key, form.getlist("ids"))
        elif action:
            raise ValidationFailed(_("Unknown action."), field_errors={"action": [_("Unknown action.")]})
        else:
            row = config.create_field(session, actor, _field_data(form, new=True))
            flash(_("%(name)s added.", name=row.label_zh if _locale() == "zh" else row.label_en))
    except DomainError as exc:
        session.rollback()
        if isinstance(exc, NotFound):
            raise
        return _fields_page(ent, form=form if not action else None, field_errors=exc.field_errors if not action
                            else {}, error=exc.message, status=exc.status)
    return redirect(url_for("config.fields", entity=ent.key))


@bp.route("/fields/<field_id>", methods=["GET", "POST"])
@permission_required(CONFIGURE)
def field_edit(field_id: str) -> Any:
    """Edit one custom field: labels, required, unique, default, options; the type while unused."""
    session, actor = db_session(), _actor()
    row = config.get_field(session, actor, field_id)
    ent = _entity_arg(row.entity)
    in_use = config.values_in_use(session, ent, row.key)
    form: Any = {"type": row.type, "label_en": row.label_en, "label_zh": row.label_zh,
                 "default": "" if row.default is None else (", ".join(row.default) if isinstance(row.default, list)
                                                           else str(row.default).lower()
                                                           if isinstance(row.default, bool) else str(row.default)),
                 "options": config.options_text(row.options or []), "required": "1" if row.required else "",
                 "unique": "1" if row.is_unique else ""}
    field_errors: Any = {}
    error = None
    status = 200
    if request.method == "POST":
        try:
            version = request.form.get("version", "")
            config.update_field(session, actor, row.id, _field_data(request.form, new=False),
                                expected_version=int(version) if version.isdigit() and len(version) < 12 else None)
            flash(_("Saved."))
            return redirect(url_for("config.fields", entity=ent.key))
        except DomainError as exc:
            session.rollback()
            row = config.get_field(session, actor, field_id)
            form, field_errors, error, status = request.form, exc.field_errors, exc.message, exc.status
    return render_template("crm/settings/field_edit.html", ent=ent, row=row, in_use=in_use, form=form,
                           field_errors=field_errors, error=error, nav_active="fields",
                           types=[(t.value, TYPE_LABELS[t]) for t in CUSTOM_TYPES]), status


def _dictionaries_page(kind: str, *, form: Any = None, field_errors: Any = None, error: Any = None,
                       edit: Any = None, status: int = 200) -> tuple[str, int]:
    session, actor = db_session(), _actor()
    kinds = config.kinds(session, actor)
    rows = config.items(session, actor, kind)
    current = next(k for k in kinds if k.key == kind)
    return render_template("crm/settings/dictionaries.html", kinds=kinds, kind=current, tree=config.tree(rows),
                           edit=edit, form=form or {}, field_errors=field_errors or {}, error=error,
                           nav_active="fields"), status


@bp.route("/dictionaries", methods=["GET", "POST"])
@permission_required(CONFIGURE)
def dictionaries() -> Any:
    """Dictionaries on the left, the chosen one's items (regions as a tree) on the right."""
    session, actor = db_session(), _actor()
    if request.method == "GET":
        kind = request.args.get("kind") or next(iter(seeds.KINDS))
        config.items(session, actor, kind)  # an unknown kind is a 404 before anything is drawn
        edit = None
        if request.args.get("edit"):
            edit = config.get_item(session, actor, kind, request.args.get("edit"))
        return _dictionaries_page(kind, edit=edit)
    form = request.form
    kind = form.get("kind", "")
    config.items(session, actor, kind)
    action = form.get("action") or ""
    item_id = form.get("id") or None
    try:
        if action in ("deactivate", "activate"):
            config.update_item(session, actor, kind, item_id, {"active": action == "activate"})
        elif action in ("up", "down"):
            config.move_item(session, actor, kind, item_id, -1 if action == "up" else 1)
        elif action == "delete":
            deleted = config.remove_item(session, actor, kind, item_id)
            flash(_("Deleted.") if deleted else _("Records use this item, so it was deactivated instead."))
        elif action:
            raise ValidationFailed(_("Unknown action."), field_errors={"action": [_("Unknown action.")]})
        else:
            data = {k: form.get(k, "") for k in ("label_en", "label_zh", "parent_id", "order")}
            if item_id:
                config.update_item(session, actor, kind, item_id, data)
            else:
                config.add_item(session, actor, kind, {**data, "code": form.get("code", "")})
            flash(_("Saved."))
    except DomainError as exc:
        session.rollback()
        if isinstance(exc, NotFound):
            raise
        edit = config.get_item(session, actor, kind, item_id) if item_id and not action else None
        return _dictionaries_page(kind, form=form if not action else None,
                                  field_errors=exc.field_errors if not action else {}, error=exc.message,
                                  edit=edit, status=exc.status)
    return redirect(url_for("config.dictionaries", kind=kind))


@bp.route("/numbers", methods=["GET", "POST"])
@permission_required(CONFIGURE)
def numbers() -> Any:
    """Each record type's number format, with the next number it would give."""
    session, actor = db_session(), _actor()
    form: Any = {}
    field_errors: dict[str, Any] = {}
    error = None
    status = 200
    if request.method == "POST":
        key = request.form.get("entity", "")
        try:
            config.set_format(session, actor, key, request.form.get("pattern", ""))
            flash(_("Saved."))
            return redirect(url_for("config.numbers"))
        except DomainError as exc:
            session.rollback()
            form = request.form
            field_errors = {f"{key}.{k}": v for k, v in exc.field_errors.items()}
            error, status = exc.message, exc.status
    return render_template("crm/settings/numbers.html", formats=config.formats(session, actor), form=form,
                           field_errors=field_errors, error=error, nav_active="fields"), status


@bp.get("/numbers/preview")
@permission_required(CONFIGURE)
def number_preview() -> Response:
    """The live preview of a format as it is typed: the next number, or why the format is refused."""
    session = db_session()
    config.require(_actor())
    ent = _entity_arg(request.args.get("entity"))
    try:
        pattern = config.check_format(session, ent, request.args.get("pattern", ""))
        check_pattern(pattern)
    except DomainError as exc:
        messages = [str(m) for msgs in exc.field_errors.values() for m in msgs] or [str(exc.message)]
        return jsonify(ok=False, error=str(exc.message), hint=" ".join(messages))
    return jsonify(ok=True, preview=config.preview(session, ent, pattern))


def register(app: Flask) -> None:
    app.register_blueprint(bp)
