"""Pages of import and export, for every entity: the import wizard (upload → columns and preview → check →
import, or skip bad rows and import; progress polled with htmx) and the list's export download.

Thin over crm.records.import_jobs, importing and exporting. The list page links to the export with its
own query string (``url_for("records_io_pages.<entity>_export", **request.args)``), so the export
carries the list's filters, search, sort and columns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound as HttpNotFound

from core.errors import DomainError, ValidationFailed
from core.i18n import _l, current_locale
from crm.records import api_io, exporting, import_jobs, importing, tabular
from crm.records.entity import Entity, entities, find_entity
from crm.records.scope import Viewer, viewer_for
from tenants.context import current_actor, db_session, login_required, runtime

pages = Blueprint("records_io_pages", __name__)
#: Rows shown in the preview beside their problems.
PREVIEW_ROWS = 10
_UPLOAD_ENDPOINTS: set[str] = set()


def _viewer() -> Viewer:
    actor = current_actor()
    assert actor is not None  # login_required
    return viewer_for(db_session(), actor, locale=current_locale().language)


def _entity(key: str) -> Entity:
    ent = find_entity(key)
    if ent is None:
        raise HttpNotFound
    return ent


@login_required
def upload(entity_key: str) -> Any:
    ent = _entity(entity_key)
    viewer = _viewer()
    viewer.require(ent, "import")
    settings = runtime().settings
    error: Any = None
    if request.method == "POST":
        sent = request.files.get("file")
        if sent is None or not sent.filename:
            error = _l("Choose a CSV or Excel file to import.")
        else:
            data = sent.stream.read(settings.import_max_bytes + 1)
            try:
                job, table = import_jobs.create(db_session(), viewer, ent, data, sent.filename,
                                                max_rows=settings.import_max_rows, max_bytes=settings.import_max_bytes)
                table.close()
            except DomainError as exc:
                error = exc.message
            else:
                return redirect(url_for("records_io_pages.job", job_id=job.id))
    return render_template("crm/import_upload.html", entity=ent, error=error,
                           limit_mb=settings.import_max_bytes // (1 << 20), max_rows=settings.import_max_rows,
                           fields=importing.importable_fields(db_session(), ent)), 422 if error else 200


def _preview(job: import_jobs.ImportJob, ent: Entity, viewer: Viewer, chosen: dict[str, str]) -> dict[str, Any]:
    """Headers with their fields (matched or chosen), and the first rows with their problems (a check of
    those rows alone: duplicates within the whole file show in the full check)."""
    settings = runtime().settings
    data = job.data or b""
    session = db_session()
    with import_jobs.open_table(data, job.filename, settings.import_max_rows, settings.import_max_bytes) as table:
        headers = table.headers
        mapping = importing.mapping_for(session, ent, headers, chosen)
        rows = list(itertools.islice(table.rows, PREVIEW_ROWS))
    sample = b""
    problems: dict[int, list[importing.RowError]] = {}
    if rows:
        sample = "\n".join([",".join(_csv(h) for h in headers)] + [",".join(_csv(c) for c in cells)
                                                                    for _line, cells in rows]).encode()
        result = importing.run(session, viewer, ent, lambda: tabular.read_table(
            sample, "preview.csv", max_rows=PREVIEW_ROWS, max_bytes=len(sample) + 1), filename=job.filename,
            mapping=chosen, dry_run=True)
        lines = [line for line, _cells in rows]
        for error in result.errors:  # the sample's lines are 2, 3 …: back to the file's own
            index = error.line - 2
            if 0 <= index < len(lines):
                problems.setdefault(lines[index], []).append(error)
    return {"headers": headers, "mapping": mapping, "rows": rows, "problems": problems}


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _chosen(form: Any, headers: list[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for index, header in enumerate(headers):
        key = form.get(f"map-{index}")
        if key:
            chosen[header] = key
    return chosen


@login_required
def job(job_id: str) -> Any:
    viewer = _viewer()
    session = db_session()
    found = import_jobs.get(session, viewer, job_id)
    ent = _entity(found.entity)
    if request.method == "POST":
        action = request.form.get("action", "")
        if action not in ("check", "import", "skip"):
            raise ValidationFailed(_l("Choose to check the file, to import it, or to skip bad rows and import."),
                                   field_errors={"action": [_l("check, import or skip")]})
        if found.status in ("queued", "running") or found.data is None:
            raise ValidationFailed(_l("This file is being imported or was imported already."), code="import_done")
        with import_jobs.open_table(found.data, found.filename, runtime().settings.import_max_rows,
                                    runtime().settings.import_max_bytes) as table:
            chosen = _chosen(request.form, table.headers)
        import_jobs.start(session, viewer, found, dry_run=action == "check", skip_invalid=action == "skip",
                          mapping=chosen)
        return redirect(url_for("records_io_pages.job", job_id=found.id))
    context: dict[str, Any] = {"job": found, "entity": ent, "running": found.status in ("queued", "running")}
    if request.headers.get("HX-Request") and context["running"]:
        return render_template("crm/import_progress.html", **context)
    if found.data is not None and not context["running"]:
        context.update(_preview(found, ent, viewer, dict(found.mapping or {})))
        context["fields"] = importing.importable_fields(session, ent)
    return render_template("crm/import_job.html", **context)


@login_required
def export(entity_key: str) -> Response:
    ent = _entity(entity_key)
    plan = exporting.prepare(db_session(), _viewer(), ent, list(request.args.items(multi=True)),
                             fmt=request.args.get("format", "csv"))
    return api_io.stream(plan)


def _room_for_uploads() -> None:
    # Runs before the app's input guard reads the form: an upload may be larger than other requests.
    if request.endpoint in _UPLOAD_ENDPOINTS and request.method == "POST":
        settings = runtime().settings
        request.max_content_length = max(settings.max_body_bytes, settings.import_max_bytes + (64 << 10))


def _bound(view: Callable[[str], Any], key: str) -> Callable[[], Any]:
    """The view of one entity (a route of its own, with no parameter for the entity)."""

    def entity_view() -> Any:
        return view(key)

    return entity_view


def register(app: Flask) -> None:
    if not _UPLOAD_ENDPOINTS:
        for ent in entities():
            pages.add_url_rule(f"/{ent.key}/import", f"{ent.key}_import", _bound(upload, ent.key),
                               methods=["GET", "POST"])
            pages.add_url_rule(f"/{ent.key}/export", f"{ent.key}_export", _bound(export, ent.key))
            _UPLOAD_ENDPOINTS.add(f"records_io_pages.{ent.key}_import")
        pages.add_url_rule("/import-jobs/<job_id>", "job", job, methods=["GET", "POST"])
    app.register_blueprint(pages)
    app.before_request_funcs.setdefault(None, []).insert(0, _room_for_uploads)

