"""REST API of import and export, for every entity: /api/v1/<entity>/import, /api/v1/<entity>/export and
/api/v1/import-jobs/<id>. Thin: the rules are in crm.records.importing, import_jobs and exporting.

The routes of each entity are made when the API is registered (every entity is known by then)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Api
from marshmallow import fields, validate

from core.errors import NotFound, ValidationFailed
from core.i18n import _l, current_locale
from crm.records import exporting, import_jobs
from crm.records.entity import Entity, entities, find_entity
from crm.records.scope import Viewer, viewer_for
from tenants.api import ApiBlueprint, guard
from tenants.context import api_actor, current_tenant, db_session, runtime
from tenants.schemas import StrictSchema

blp = ApiBlueprint("records_io", __name__, url_prefix="/api/v1", description="Import and export of CRM records")
guard(blp)

#: Room for the JSON around the base64 of the largest file an import takes.
JSON_OVERHEAD = 64 * 1024


class ImportIn(StrictSchema):
    filename = fields.String(required=True, validate=validate.Length(min=1, max=255),
                             metadata={"description": "The file's name; its extension says CSV or xlsx."})
    content = fields.String(required=True, metadata={"description": "The file's bytes, base64-encoded."})
    mapping = fields.Dict(keys=fields.String(validate=validate.Length(max=300)),
                          values=fields.String(validate=validate.Length(max=40)), load_default=dict,
                          validate=validate.Length(max=import_jobs.MAX_MAPPING),
                          metadata={"description": "Header → field key (or \"ignore\") for headers the labels "
                                                   "do not match."})
    dry_run = fields.Boolean(load_default=False, metadata={"description": "Check every row, write nothing."})
    skip_invalid = fields.Boolean(load_default=False, metadata={"description": "Import the good rows and skip "
                                                                                "the bad ones."})


class RowErrorOut(StrictSchema):
    line = fields.Integer()
    field = fields.String()
    message = fields.String()


class ResultOut(StrictSchema):
    total = fields.Integer()
    imported = fields.Integer()
    skipped = fields.Integer()
    bad_rows = fields.Integer()
    dry_run = fields.Boolean()
    errors = fields.List(fields.Nested(RowErrorOut))
    ignored_columns = fields.List(fields.String())
    numbers = fields.List(fields.String(), allow_none=True)


class JobOut(StrictSchema):
    id = fields.String()
    entity = fields.String()
    filename = fields.String()
    size = fields.Integer()
    status = fields.String(metadata={"description": "uploaded, queued, running, done or failed"})
    phase = fields.String(metadata={"description": "checking or importing, while running"})
    progress = fields.Integer(metadata={"description": "rows done in the phase"})
    dry_run = fields.Boolean()
    skip_invalid = fields.Boolean()
    result = fields.Nested(ResultOut, allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


def _entity(key: str) -> Entity:
    ent = find_entity(key)
    if ent is None:
        raise NotFound(_l("Not found."))
    return ent


def _viewer() -> Viewer:
    return viewer_for(db_session(), api_actor(), locale=current_locale().language)


@blp.before_request
def _room_for_files() -> None:
    # An import body carries a whole file: it may be larger than other requests (still bounded).
    if request.endpoint in _IMPORT_ENDPOINTS and request.method == "POST":
        settings = runtime().settings
        request.max_content_length = max(settings.max_body_bytes,
                                         settings.import_max_bytes * 4 // 3 + JSON_OVERHEAD)


_IMPORT_ENDPOINTS: set[str] = set()


class _Import(MethodView):
    entity_key = ""

    @blp.arguments(ImportIn)
    @blp.response(202, JobOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Import a CSV or xlsx file (UTF-8 or GB18030) as records; answered with the job, which runs in the
        background (poll /import-jobs/<id>). Every bad row is reported with its line and field; nothing is
        imported while any row is bad unless skip_invalid."""
        ent = _entity(self.entity_key)
        viewer = _viewer()
        viewer.require(ent, "import")
        settings = runtime().settings
        content = data["content"]
        if len(content) > settings.import_max_bytes * 4 // 3 + 4:
            raise ValidationFailed(_l("The file is larger than the import limit."),
                                   field_errors={"content": [_l("The file is larger than the import limit.")]})
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed(_l("The content is not base64."),
                                   field_errors={"content": [_l("Send the file's bytes base64-encoded.")]}) from None
        session = db_session()
        job, table = import_jobs.create(session, viewer, ent, raw, data["filename"], mapping=data["mapping"],
                                        max_rows=settings.import_max_rows, max_bytes=settings.import_max_bytes)
        table.close()
        import_jobs.start(session, viewer, job, dry_run=data["dry_run"], skip_invalid=data["skip_invalid"])
        return import_jobs.as_json(job)


class _Export(MethodView):
    entity_key = ""

    @blp.response(200, description="The file (text/csv in UTF-8 with a BOM, or an xlsx workbook).")
    def get(self) -> Response:
        """Export what the caller may see, with a list's parameters (q, sort, columns, one parameter per
        filter, as the list takes them) and format=csv or xlsx."""
        ent = _entity(self.entity_key)
        viewer = _viewer()
        plan = exporting.prepare(db_session(), viewer, ent, list(request.args.items(multi=True)),
                                 fmt=request.args.get("format", "csv"))
        return stream(plan)


@blp.route("/import-jobs/<uuid:job_id>")
class ImportJobItem(MethodView):
    @blp.response(200, JobOut)
    def get(self, job_id: uuid.UUID) -> dict[str, Any]:
        """An import job's status, progress and, once done, its result (the caller's own jobs only)."""
        return import_jobs.as_json(import_jobs.get(db_session(), _viewer(), job_id))


def _entity_routes() -> None:
    """/<entity>/import and /<entity>/export for every entity, as routes of their own (an entity is not
    an id: a parameter would answer another workspace's probe as its own)."""
    for ent in entities():
        name = ent.key.title().replace("_", "")
        importer = type(f"{name}Import", (_Import,), {"entity_key": ent.key})
        exporter = type(f"{name}Export", (_Export,), {"entity_key": ent.key})
        blp.route(f"/{ent.key}/import", endpoint=f"{ent.key}_import")(importer)
        blp.route(f"/{ent.key}/export", endpoint=f"{ent.key}_export")(exporter)
        _IMPORT_ENDPOINTS.add(f"records_io.{ent.key}_import")


def stream(plan: exporting.Export) -> Response:
    """The export as a streamed download, read through a session of its own: the request's session is
    committed (with the audit entry) before the first byte is sent."""
    tenant = current_tenant()
    database = runtime().db

    def generate() -> Iterator[bytes]:
        session = database.session(tenant)
        try:
            yield from exporting.chunks(plan, exporting.rows(session, plan))
        finally:
            session.rollback()
            session.close()

    # Not stream_with_context: the generator needs nothing of the request, and a request context held
    # open until the client has read the whole file would outlive the request's own session.
    response = Response(generate(), mimetype=plan.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{plan.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def register(api: Api) -> None:
    if not _IMPORT_ENDPOINTS:
        _entity_routes()
    api.register_blueprint(blp)
