"""The REST API of the CRM's configuration: custom fields, dictionaries, number formats (crm.configure).

Bodies are read with the identity API's JSON reader and checked by :mod:`crm.records.configuration`,
which reports every mistake at once, field by field, with the same messages as the pages.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Api
from marshmallow import Schema, fields, validate

from core.errors import DomainError
from core.i18n import _l, current_locale
from core.permissions import Actor
from crm.records import configuration as config
from crm.records.api import json_response
from crm.records.entity import entities
from crm.records.fields import CUSTOM_TYPES
from crm.records.models import CustomField
from tenants.api import ApiBlueprint, etag, expected_version, guard, read_json
from tenants.context import api_actor, db_session

blp = ApiBlueprint("crm_config_api", __name__, url_prefix="/api/v1",
                   description="CRM configuration: custom fields, dictionaries, number formats")
guard(blp)

FIELDS_TAG = "Custom fields"
DICT_TAG = "Dictionaries"
NUMBERS_TAG = "Number formats"

_OPTION = {"type": "object", "required": ["label_en"], "properties": {
    "value": {"type": "string", "maxLength": 40, "description": "What records store; made from the label if left out"},
    "label_en": {"type": "string", "maxLength": 100}, "label_zh": {"type": "string", "maxLength": 100}}}
_FIELD_BODY = {"type": "object", "properties": {
    "entity": {"type": "string", "description": "The record type (customers, contacts …); POST only"},
    "key": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$",
            "description": "POST only; made from the English label if left out; fixed afterwards"},
    "type": {"type": "string", "enum": [t.value for t in CUSTOM_TYPES],
             "description": "Changes only while no record holds a value"},
    "label_en": {"type": "string", "maxLength": 100}, "label_zh": {"type": "string", "maxLength": 100},
    "required": {"type": "boolean"}, "unique": {"type": "boolean"},
    "default": {"description": "A value of the field's type, checked like a record's value"},
    "options": {"type": "array", "maxItems": config.MAX_OPTIONS, "items": _OPTION,
                "description": "choice and multi only; an option that live records use cannot be removed"},
    "order": {"type": "integer", "minimum": 0, "maximum": 9999}}}
_ITEM_BODY = {"type": "object", "properties": {
    "code": {"type": "string", "maxLength": 40, "description": "What records store; POST only, made from the "
                                                               "English label if left out"},
    "label_en": {"type": "string", "maxLength": 100}, "label_zh": {"type": "string", "maxLength": 100},
    "parent_id": {"type": ["string", "null"], "format": "uuid", "description": "Regions only: the item above"},
    "order": {"type": "integer", "minimum": 0, "maximum": 9999}, "active": {"type": "boolean"}}}


class FieldOut(Schema):
    id = fields.UUID()
    entity = fields.String()
    key = fields.String()
    type = fields.String()
    label_en = fields.String()
    label_zh = fields.String()
    required = fields.Boolean()
    unique = fields.Boolean()
    default = fields.Raw(allow_none=True)
    options = fields.List(fields.Dict())
    order = fields.Integer()
    active = fields.Boolean()
    version = fields.Integer()


class FieldQuery(Schema):
    entity = fields.String(validate=validate.Length(max=40),
                           metadata={"description": "The record type whose custom fields to list (customers, "
                                                    "contacts …); every record type's if left out"})


class TreeQuery(Schema):
    flat = fields.Boolean(load_default=False, metadata={"description": "true: a flat list in tree order, each "
                                                                       "with its depth"})


class FormatIn(Schema):
    entity = fields.String(required=True, validate=validate.Length(max=40))
    pattern = fields.String(required=True, validate=validate.Length(max=60), metadata={
        "description": "Fixed text with {seq} or {seq:05}, optionally {yyyy}, {yy}, {mm}, {dd}; empty: the default"})


def _actor() -> Actor:
    actor = api_actor()
    config.require(actor)
    return actor


def _body() -> dict[str, Any]:
    data = read_json(request.get_data(cache=True))
    if not isinstance(data, dict):
        raise DomainError(_l("The body must be a JSON object."), code="invalid_json")
    return data


def _version() -> int:
    version = expected_version()
    if version is None:
        raise DomainError(_l('Send If-Match with the ETag you were given (W/"<version>").'),
                          code="if_match_required")
    return version


def field_json(row: CustomField) -> dict[str, Any]:
    return {"id": str(row.id), "entity": row.entity, "key": row.key, "type": row.type, "label_en": row.label_en,
            "label_zh": row.label_zh, "required": row.required, "unique": row.is_unique, "default": row.default,
            "options": row.options or [], "order": row.sort_order, "active": row.active, "version": row.version}


def _one_field(row: CustomField, status: int = 200) -> Response:
    return json_response(field_json(row), status, {"ETag": etag(row.version)})


@blp.route("/custom-fields")
class CustomFields(MethodView):
    @blp.doc(tags=[FIELDS_TAG])
    @blp.arguments(FieldQuery, location="query")
    @blp.response(200, FieldOut(many=True))
    def get(self, args: dict[str, Any]) -> Response:
        """Custom fields, active and deactivated, in their order (of one record type, or of all)."""
        session, actor = db_session(), _actor()
        keys = [args["entity"]] if "entity" in args else [e.key for e in entities()]
        rows = [r for key in keys for r in config.list_fields(session, actor, key)]
        return json_response({"items": [field_json(r) for r in rows]})

    @blp.doc(tags=[FIELDS_TAG], requestBody={"content": {"application/json": {"schema": {
        **_FIELD_BODY, "required": ["entity", "type"]}}}})
    @blp.response(201, FieldOut)
    def post(self) -> Response:
        """Define a custom field (at most 100 per record type, deactivated ones included)."""
        return _one_field(config.create_field(db_session(), _actor(), _body()), 201)


@blp.route("/custom-fields/<field_id>")
class CustomFieldItem(MethodView):
    @blp.doc(tags=[FIELDS_TAG])
    @blp.response(200, FieldOut)
    def get(self, field_id: str) -> Response:
        """One custom field; its ETag is the version a PATCH sends in If-Match."""
        return _one_field(config.get_field(db_session(), _actor(), field_id))

    @blp.doc(tags=[FIELDS_TAG], requestBody={"content": {"application/json": {"schema": _FIELD_BODY}}},
             parameters=[{"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string"}}])
    @blp.response(200, FieldOut)
    def patch(self, field_id: str) -> Response:
        """Change labels, required, unique, default, options or order; a stale If-Match answers 412."""
        session, actor = db_session(), _actor()
        row = config.get_field(session, actor, field_id)  # another tenant's id: 404 before anything else
        return _one_field(config.update_field(session, actor, row.id, _body(), expected_version=_version()))

    @blp.doc(tags=[FIELDS_TAG])
    @blp.response(200, FieldOut)
    def delete(self, field_id: str) -> Response:
        """Deactivate: hidden from forms, lists and the API, its values kept (PATCH-free reactivation:
        POST /custom-fields/<id>/activate)."""
        return _one_field(config.set_field_active(db_session(), _actor(), field_id, False))


@blp.route("/custom-fields/<field_id>/activate")
class CustomFieldActivate(MethodView):
    @blp.doc(tags=[FIELDS_TAG])
    @blp.response(200, FieldOut)
    def post(self, field_id: str) -> Response:
        """Bring a deactivated field back, with the values records kept."""
        return _one_field(config.set_field_active(db_session(), _actor(), field_id, True))


@blp.route("/custom-fields/order")
class CustomFieldOrder(MethodView):
    @blp.doc(tags=[FIELDS_TAG], requestBody={"content": {"application/json": {"schema": {
        "type": "object", "required": ["entity", "ids"], "properties": {
            "entity": {"type": "string"},
            "ids": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": config.MAX_FIELDS}}}}}})
    @blp.response(200, FieldOut(many=True))
    def put(self) -> Response:
        """Put every custom field of a record type in a new order."""
        data = _body()
        rows = config.reorder_fields(db_session(), _actor(), data.get("entity"), data.get("ids"))  # type: ignore[arg-type]
        return json_response({"items": [field_json(r) for r in rows]})


@blp.route("/dictionaries")
class Dictionaries(MethodView):
    @blp.doc(tags=[DICT_TAG])
    @blp.response(200)
    def get(self) -> Response:
        """Every dictionary (customer nature, group, industry, source, level, region) with its items, flat in
        tree order (each with its depth): what an integration needs to map codes and labels in one call."""
        session, actor = db_session(), _actor()
        locale = current_locale().language
        return json_response({"items": [
            {"kind": k.key, "label_en": k.label_en, "label_zh": k.label_zh, "tree": k.tree, "count": k.count,
             "items": [{**config.item_json(r, locale), "depth": depth}
                       for depth, r in config.tree(config.items(session, actor, k.key))]}
            for k in config.kinds(session, actor)]})


@blp.route("/dictionaries/<kind>")
class DictionaryItems(MethodView):
    @blp.doc(tags=[DICT_TAG])
    @blp.arguments(TreeQuery, location="query")
    @blp.response(200)
    def get(self, args: dict[str, Any], kind: str) -> Response:
        """A dictionary's items, active and not: nested under their parents, or flat in tree order."""
        rows = config.items(db_session(), _actor(), kind)
        locale = current_locale().language
        if args["flat"]:
            return json_response({"items": [{**config.item_json(r, locale), "depth": depth}
                                            for depth, r in config.tree(rows)]})
        return json_response({"items": config.nested(rows, locale)})

    @blp.doc(tags=[DICT_TAG], requestBody={"content": {"application/json": {"schema": _ITEM_BODY}}})
    @blp.response(201)
    def post(self, kind: str) -> Response:
        """Add an item (at most 1,000 per dictionary)."""
        row = config.add_item(db_session(), _actor(), kind, _body())
        return json_response(config.item_json(row, current_locale().language), 201, {"ETag": etag(row.version)})


@blp.route("/dictionaries/<kind>/<item_id>")
class DictionaryItem(MethodView):
    @blp.doc(tags=[DICT_TAG], requestBody={"content": {"application/json": {"schema": _ITEM_BODY}}},
             parameters=[{"in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"}}])
    @blp.response(200)
    def patch(self, kind: str, item_id: str) -> Response:
        """Rename, reorder, move (regions) or (de)activate an item; its code never changes."""
        session, actor = db_session(), _actor()
        row = config.get_item(session, actor, kind, item_id)  # another tenant's id: 404 before the body
        row = config.update_item(session, actor, kind, row.id, _body(), expected_version=expected_version())
        return json_response(config.item_json(row, current_locale().language), 200, {"ETag": etag(row.version)})

    @blp.doc(tags=[DICT_TAG])
    @blp.response(200)
    def delete(self, kind: str, item_id: str) -> Response:
        """Deactivate an item: records keep it and show its label; it is no longer offered."""
        actor = _actor()
        row = config.update_item(db_session(), actor, kind, item_id, {"active": False})
        return json_response(config.item_json(row, current_locale().language), 200, {"ETag": etag(row.version)})


def _format_json(f: config.Format) -> dict[str, Any]:
    return {"entity": f.entity.key, "pattern": f.pattern, "default": f.entity.number_format,
            "custom": f.custom, "next": f.preview}


@blp.route("/number-formats")
class NumberFormats(MethodView):
    @blp.doc(tags=[NUMBERS_TAG])
    @blp.response(200)
    def get(self) -> Response:
        """Each record type's number format and the next number it would give."""
        return json_response({"items": [_format_json(f) for f in config.formats(db_session(), _actor())]})

    @blp.doc(tags=[NUMBERS_TAG])
    @blp.arguments(FormatIn)
    @blp.response(200)
    def put(self, args: dict[str, Any]) -> Response:
        """Set one record type's format (an empty pattern restores the default)."""
        return json_response(_format_json(config.set_format(db_session(), _actor(), args["entity"],
                                                            args["pattern"])))


def register(api: Api) -> None:
    api.register_blueprint(blp)
