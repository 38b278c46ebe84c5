"""The REST API of every CRM entity under /api/v1/<entity>, generated from the entity registry.

Each entity gets the same routes (list with the pages' filters, sorts, search and keyset pages; get;
create; PATCH with If-Match; delete to the recycle bin; bulk actions; merge; restore; shares; history;
timeline), documented per entity in the OpenAPI from its fields. Bodies are read with the identity
API's JSON reader and checked by :func:`crm.records.services.clean`, so the API refuses exactly what
a form refuses, with the same messages, field by field.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Api
from marshmallow import Schema, fields

from core.errors import DomainError, ValidationFailed
from core.i18n import _l, rendered
from crm.records import definitions, history, lists, present, services
from crm.records.entity import Entity, entities
from crm.records.fields import Field, FieldType
from crm.records.scope import Viewer, viewer_for
from tenants.api import ApiBlueprint, etag, expected_version, guard, read_json
from tenants.context import api_actor, db_session

blp = ApiBlueprint("crm_api", __name__, url_prefix="/api/v1", description="CRM records")
guard(blp)

_TYPES: dict[FieldType, Any] = {
    FieldType.NUMBER: lambda: fields.Float(allow_none=True),
    FieldType.MONEY: lambda: fields.String(allow_none=True, metadata={"format": "decimal"}),
    FieldType.DATE: lambda: fields.Date(allow_none=True),
    FieldType.DATETIME: lambda: fields.DateTime(allow_none=True),
    FieldType.BOOL: lambda: fields.Boolean(allow_none=True),
    FieldType.USER: lambda: fields.UUID(allow_none=True),
    FieldType.REF: lambda: fields.UUID(allow_none=True),
    FieldType.MULTI: lambda: fields.List(fields.String(), allow_none=True),
    FieldType.TAGS: lambda: fields.List(fields.String(), allow_none=True),
}


def _schema_field(f: Field) -> Any:
    made = _TYPES.get(f.type, lambda: fields.String(allow_none=True))()
    made.metadata = {**made.metadata, "description": f"{f.label_en} / {f.label_zh}" + (
        f" (one of: {', '.join(c.value for c in f.choices)})" if f.choices else "") + (
        f" (a code of the '{f.target}' dictionary, or its label)" if f.type == FieldType.DICT else "")}
    if f.readonly:
        made.dump_only = True
    return made


def _schemas(ent: Entity) -> tuple[type[Schema], type[Schema], type[Schema]]:
    name = ent.key.title().replace("_", "")
    own = {f.key: _schema_field(f) for f in ent.fields}
    custom = fields.Dict(metadata={"description": "Custom fields of this workspace, by key (GET "
                                                  "/api/v1/custom-fields lists them)."})
    base = {**own, "custom": custom}
    record_out = Schema.from_dict({**base, "id": fields.UUID(), "version": fields.Integer(), "title": fields.String(),
                                   "display": fields.Dict(metadata={"description": "Values as people read them "
                                                                                   "(labels, names)."})},
                                  name=f"{name}Out")
    record_in = Schema.from_dict({k: v for k, v in base.items() if not getattr(v, "dump_only", False)},
                                 name=f"{name}In")
    page_out = Schema.from_dict({"items": fields.List(fields.Nested(record_out)), "next_cursor": fields.String(),
                                 "prev_cursor": fields.String(), "count": fields.Integer(),
                                 "count_exact": fields.Boolean()}, name=f"{name}Page")
    return record_in, record_out, page_out


def viewer() -> Viewer:
    from core.i18n import current_locale

    return viewer_for(db_session(), api_actor(), locale=current_locale().language)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(rendered(data), ensure_ascii=False, default=str)
    return Response(body, status=status, headers=headers, mimetype="application/json")


def _json_object() -> dict[str, Any]:
    """The request body, which must be one JSON object (read and refused as the identity API does)."""
    data = read_json(request.get_data(cache=True))
    if not isinstance(data, dict):
        raise DomainError(_l("The body must be a JSON object."), code="invalid_json")
    return data


def _body() -> dict[str, Any]:
    """Field values: built-in ones at the top level, custom ones there too or under ``custom``."""
    data = _json_object()
    custom = data.pop("custom", None)
    if custom is not None:
        if not isinstance(custom, dict):
            raise ValidationFailed(_l("'custom' must be an object."), field_errors={"custom": [_l("An object.")]})
        data.update(custom)
    return data


def one(ent: Entity, v: Viewer, row: Any, status: int = 200) -> Response:
    session = db_session()
    flds = definitions.fields(session, ent)
    shown = present.displays(session, v, ent, [row], flds)[0]
    return json_response(present.as_json(ent, row, flds, shown), status, {"ETag": etag(row.version)})


def _page(ent: Entity, *, deleted: bool = False) -> Response:
    session, v = db_session(), viewer()
    flds = definitions.fields(session, ent)
    lq = lists.parse(request.args.items(multi=True), flds, ent)
    pg = lists.page(session, ent, v, lq, flds, deleted=deleted)
    n, exact = lists.count(session, ent, v, lq, deleted=deleted)
    shown = present.displays(session, v, ent, pg.rows, flds)
    return json_response({"items": [present.as_json(ent, r, flds, s) for r, s in zip(pg.rows, shown, strict=True)],
                          "next_cursor": pg.next_cursor, "prev_cursor": pg.prev_cursor, "count": n,
                          "count_exact": exact})


LIST_DOC = ("Filter with `<field>=value` (repeat for any of), `<field>__<op>=value` (ops: ne, contains, "
            "startswith, gt, gte, lt, lte, within (today, this_week, this_month, this_quarter, last_30_days …), "
            "has, empty), custom fields included by key; `q` searches (Chinese words of any length, pinyin, "
            "English); `sort=field` or `sort=-field`; `limit` (≤ 200); `after` / `before` take the cursors of "
            "the previous answer. `count` is exact up to 10,000, then `count_exact` is false.")


def _bulk_ids(data: dict[str, Any]) -> list[Any]:
    ids = data.get("ids")
    if not isinstance(ids, list):
        raise ValidationFailed(_l("'ids' must be a list of record ids."), field_errors={"ids": [_l("A list.")]})
    return ids


def _do_bulk(ent: Entity, data: dict[str, Any]) -> dict[str, Any]:
    session, v = db_session(), viewer()
    action = data.get("action")
    ids = _bulk_ids(data)
    if action == "delete":
        return {"deleted": services.delete_records(session, v, ent, ids)}
    if action == "transfer":
        return {"transferred": services.transfer(session, v, ent, ids, str(data.get("owner_id") or ""))}
    if action == "set":
        key = data.get("field")
        if not isinstance(key, str):
            raise ValidationFailed(_l("Name the field to set."), field_errors={"field": [_l("Required.")]})
        return {"updated": services.bulk_set(session, v, ent, ids, key, data.get("value"))}
    if action in ("tag", "untag"):
        return {"updated": services.bulk_tag(session, v, ent, ids, data.get("tags"), remove=action == "untag")}
    if action == "share":
        count = 0
        for rid in services._bounded_ids(ids):
            services.share(session, v, ent, rid, user_id=_uuid_or_none(data.get("user_id")),
                           department_id=_uuid_or_none(data.get("department_id")),
                           access=str(data.get("access") or "read"))
            count += 1
        return {"shared": count}
    raise ValidationFailed(_l("Unknown bulk action; use delete, transfer, set, tag, untag or share."),
                           field_errors={"action": [_l("Unknown action.")]})


def _uuid_or_none(raw: Any) -> uuid.UUID | None:
    if raw in (None, ""):
        return None
    try:
        return uuid.UUID(str(raw)[:40])
    except ValueError:
        raise ValidationFailed(_l("'%(value)s' is not an id.", value=str(raw)[:40])) from None


def _register(ent: Entity) -> None:
    record_in, record_out, page_out = _schemas(ent)
    key = ent.key
    tag = ent.plural_en

    @blp.route(f"/{key}", endpoint=f"{key}_collection")
    class Collection(MethodView):
        @blp.doc(tags=[tag], description=LIST_DOC)
        @blp.response(200, page_out)
        def get(self) -> Response:
            """List the records you may see."""
            return _page(ent)

        @blp.doc(tags=[tag], requestBody={"content": {"application/json": {"schema": record_in}}},
                 parameters=[{"in": "query", "name": "allow_duplicates", "schema": {"type": "boolean"},
                              "description": "false: answer 409 with similar records instead of creating."}])
        @blp.response(201, record_out)
        def post(self) -> Response:
            """Create a record (custom fields by key, at the top level or under `custom`)."""
            v = viewer()
            allow = request.args.get("allow_duplicates", "true").lower() not in ("false", "0", "no")
            row = services.create(db_session(), v, ent, _body(), allow_duplicates=allow)
            return one(ent, v, row, 201)

    @blp.route(f"/{key}/<record_id>", endpoint=f"{key}_item")
    class Item(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(200, record_out)
        def get(self, record_id: str) -> Response:
            """One record; its ETag is the version a PATCH must send in If-Match."""
            v = viewer()
            return one(ent, v, services.get(db_session(), v, ent, record_id))

        @blp.doc(tags=[tag], requestBody={"content": {"application/json": {"schema": record_in}}},
                 parameters=[{"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string"}}])
        @blp.response(200, record_out)
        def patch(self, record_id: str) -> Response:
            """Change some fields. If-Match is required: a stale version answers 412 and changes nothing."""
            v = viewer()
            # A record the caller may not see is a 404 whatever the headers say (never a hint it exists).
            services.get(db_session(), v, ent, record_id)
            version = expected_version()
            if version is None:
                raise DomainError(_l('Send If-Match with the ETag of the record you changed (W/"<version>").'),
                                  code="if_match_required")
            row = services.update(db_session(), v, ent, record_id, _body(), expected_version=version)
            return one(ent, v, row)

        @blp.doc(tags=[tag])
        @blp.response(204)
        def delete(self, record_id: str) -> Response:
            """Move the record to the recycle bin (restorable for 30 days)."""
            services.delete_records(db_session(), viewer(), ent, [record_id])
            return Response(status=204)

    @blp.route(f"/{key}/bulk", endpoint=f"{key}_bulk")
    class Bulk(MethodView):
        @blp.doc(tags=[tag], requestBody={"content": {"application/json": {"schema": {
            "type": "object", "required": ["action", "ids"], "properties": {
                "action": {"type": "string", "enum": ["delete", "transfer", "set", "tag", "untag", "share"]},
                "ids": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 1000},
                "owner_id": {"type": "string"}, "field": {"type": "string"}, "value": {},
                "tags": {"type": "array", "items": {"type": "string"}}, "user_id": {"type": "string"},
                "department_id": {"type": "string"}, "access": {"type": "string", "enum": ["read", "edit"]}}}}}})
        @blp.response(200)
        def post(self) -> Response:
            """One action on up to 1,000 records: all of them, or none if any may not be changed by you."""
            data = _json_object()
            return json_response(_do_bulk(ent, data))

    @blp.route(f"/{key}/merge", endpoint=f"{key}_merge")
    class Merge(MethodView):
        @blp.doc(tags=[tag], requestBody={"content": {"application/json": {"schema": {
            "type": "object", "required": ["keep", "drop"], "properties": {
                "keep": {"type": "string"}, "drop": {"type": "string"},
                "take": {"type": "array", "items": {"type": "string"}}}}}}})
        @blp.response(200, record_out)
        def post(self) -> Response:
            """Merge `drop` into `keep`: related records move, empty fields are filled, `drop` is deleted."""
            data = _json_object()
            take = data.get("take") or []
            if not isinstance(take, list) or not all(isinstance(t, str) for t in take):
                raise ValidationFailed(_l("'take' is a list of field keys."))
            v = viewer()
            row = services.merge(db_session(), v, ent, str(data.get("keep") or ""), str(data.get("drop") or ""),
                                 take=take[:100])
            return one(ent, v, row)

    @blp.route(f"/{key}/<record_id>/restore", endpoint=f"{key}_restore")
    class Restore(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(200, record_out)
        def post(self, record_id: str) -> Response:
            """Take a record back out of the recycle bin."""
            v = viewer()
            return one(ent, v, services.restore(db_session(), v, ent, record_id))

    @blp.route(f"/{key}/deleted", endpoint=f"{key}_deleted")
    class Deleted(MethodView):
        @blp.doc(tags=[tag, "Recycle bin"], description=LIST_DOC)
        @blp.response(200, page_out)
        def get(self) -> Response:
            """The recycle bin of this entity (records deleted in the last 30 days that you may see)."""
            return _page(ent, deleted=True)

    @blp.route(f"/{key}/<record_id>/history", endpoint=f"{key}_history")
    class History(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(200)
        def get(self, record_id: str) -> Response:
            """Every change of the record, newest first, with field labels and readable values."""
            session, v = db_session(), viewer()
            row = services.get(session, v, ent, record_id)
            return json_response({"items": history.entries(session, v, ent, row)})

    @blp.route(f"/{key}/<record_id>/shares", endpoint=f"{key}_shares")
    class Shares(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(200)
        def get(self, record_id: str) -> Response:
            """Who the record is shared with."""
            session, v = db_session(), viewer()
            row = services.get(session, v, ent, record_id)
            return json_response({"items": [
                {"id": str(s.id), "user_id": str(s.user_id) if s.user_id else None,
                 "department_id": str(s.department_id) if s.department_id else None, "access": s.access}
                for s in services.shares(session, v, ent, row)]})

        @blp.doc(tags=[tag], requestBody={"content": {"application/json": {"schema": {
            "type": "object", "properties": {"user_id": {"type": "string"}, "department_id": {"type": "string"},
                                             "access": {"type": "string", "enum": ["read", "edit"]}}}}}})
        @blp.response(204)
        def post(self, record_id: str) -> Response:
            """Share with one user or one department, to read or to edit."""
            data = _json_object()
            services.share(db_session(), viewer(), ent, record_id, user_id=_uuid_or_none(data.get("user_id")),
                           department_id=_uuid_or_none(data.get("department_id")),
                           access=str(data.get("access") or "read")[:8])
            return Response(status=204)

    @blp.route(f"/{key}/<record_id>/shares/<uuid:share_id>", endpoint=f"{key}_share")
    class Share(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(204)
        def delete(self, record_id: str, share_id: uuid.UUID) -> Response:
            """Stop sharing."""
            services.unshare(db_session(), viewer(), ent, record_id, share_id)
            return Response(status=204)

    @blp.route(f"/{key}/<record_id>/timeline", endpoint=f"{key}_timeline")
    class Timeline(MethodView):
        @blp.doc(tags=[tag])
        @blp.response(200)
        def get(self, record_id: str) -> Response:
            """Activities, tasks, attachments and changes of the record, newest first."""
            session, v = db_session(), viewer()
            row = services.get(session, v, ent, record_id)
            return json_response({"items": [
                {"at": i.at.isoformat(), "kind": i.kind, "title": i.title, "body": i.body, "link": i.link,
                 "actor": i.actor} for i in history.timeline(session, v, ent, row)]})

    for cls in (Collection, Item, Bulk, Merge, Restore, Deleted, History, Shares, Share, Timeline):
        cls.__name__ = f"{ent.key.title()}{cls.__name__}"


_generated: set[str] = set()


def register(api: Api) -> None:
    # The blueprint is module-level and apps are made more than once (tests): add each entity's
    # routes to it once.
    for ent in entities():
        if ent.key not in _generated:
            _register(ent)
            _generated.add(ent.key)
    api.register_blueprint(blp)
