"""Imports as jobs: the uploaded file kept in the tenant's ``import_jobs`` table, run by a Celery worker.

A job is created with the upload (:func:`create`; the file is checked to be a readable table at once,
so a broken file is refused before anything is queued), then started (:func:`start`), which queues
``crm.run_import`` through the transactional outbox: the task runs only if the start committed, and it
is handed to the broker at least once.

The task is idempotent. The whole import and the job's "done" mark are one transaction: a worker killed
halfway rolls everything back, its message is delivered again (``acks_late``, ``reject_on_worker_lost``)
and the job runs from the start; a job already done is not run again, and a transaction-level advisory
lock keeps two workers from running one job at once. Progress is written by short transactions of
their own, so pages can poll it while the import's transaction is still open.

The file stays in the row until the import has written its records (a dry run keeps it, for the real
import that follows); it is bounded by ``COURTYARD_IMPORT_MAX_BYTES``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from celery import shared_task
from sqlalchemy import BigInteger, Index, LargeBinary, String, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import AdvisoryLock, TenantBase, TenantRecord, utcnow
from core.errors import DomainError, NotFound, ValidationFailed
from core.i18n import _l, shown
from core.tasks import send_after_commit, task_runtime
from crm.records import importing, tabular
from crm.records.entity import Entity, find_entity
from crm.records.scope import Viewer, viewer_for
from tenants import archive
from tenants import services as tenant_services
from tenants.errors import InvalidArchive
from tenants.models import User

log = logging.getLogger(__name__)

STATUSES = ("uploaded", "queued", "running", "done", "failed")
MAX_FILENAME = 255
MAX_MAPPING = 200
TASK = "crm.run_import"


class ImportJob(TenantRecord, TenantBase):
    """One uploaded file and what became of it."""

    __tablename__ = "import_jobs"

    entity: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(MAX_FILENAME))
    size: Mapped[int] = mapped_column(BigInteger)
    #: The uploaded bytes; NULL once the import wrote its records.
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    #: The user's choice for headers the labels did not match: header → field key or "ignore".
    mapping: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    dry_run: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    skip_invalid: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    status: Mapped[str] = mapped_column(String(16), default="uploaded", server_default="uploaded")
    #: "checking" or "importing", and the rows done in that phase (written while the job runs).
    phase: Mapped[str] = mapped_column(String(16), default="", server_default="")
    progress: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: ImportResult.as_json() once done, with ``bad_rows``, ``dry_run`` and ``ignored_columns``.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(String(500))
    finished_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_import_jobs_created_by", "created_by", "created_at"),)


def _entity(key: str) -> Entity:
    ent = find_entity(key)
    if ent is None:
        raise NotFound(_l("Not found."))
    return ent


def open_table(data: bytes, filename: str, max_rows: int, max_bytes: int) -> tabular.Table:
    return tabular.read_table(data, filename, max_rows=max_rows, max_bytes=max_bytes)


def check_mapping(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    """A user's header mapping, bounded and of strings (its headers and fields are checked by tabular)."""
    if not mapping:
        return {}
    if len(mapping) > MAX_MAPPING or not all(isinstance(k, str) and isinstance(v, str) and len(k) <= 300
                                              and len(v) <= 40 for k, v in mapping.items()):
        raise ValidationFailed(_l("The column mapping is not usable."),
                               field_errors={"mapping": [_l("Map each header (text) to a field key.")]})
    return dict(mapping)


def create(session: Session, viewer: Viewer, ent: Entity, data: bytes, filename: str, *, max_rows: int,
           max_bytes: int, mapping: Mapping[str, Any] | None = None) -> tuple[ImportJob, tabular.Table]:
    """Keep an uploaded file as a job; the file is opened once here, so a broken one is refused now.

    Returns the job and the opened table (its headers and first rows, for the mapping and preview
    pages); the caller closes the table.
    """
    viewer.require(ent, "import")
    name = filename.strip()[:MAX_FILENAME] or "upload.csv"
    if len(data) > max_bytes:
        raise tabular.FileRejected(_l("The file is too large (%(size)s); the limit is %(limit)s.",
                                      size=f"{len(data) / 1_048_576:.1f} MB", limit=f"{max_bytes / 1_048_576:.1f} MB"),
                                   code="file_too_large")
    table = open_table(data, name, max_rows, max_bytes)
    try:
        importing.mapping_for(session, ent, table.headers, check_mapping(mapping))
    except DomainError:
        table.close()
        raise
    job = ImportJob(entity=ent.key, filename=name, size=len(data), data=data, mapping=check_mapping(mapping),
                    created_by=viewer.user_id, updated_by=viewer.user_id)
    session.add(job)
    session.flush()
    return job, table


def get(session: Session, viewer: Viewer, job_id: uuid.UUID | str) -> ImportJob:
    """The job if it is the viewer's own (anyone else's does not exist for them)."""
    try:
        ident = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(_l("Not found.")) from None
    job = session.get(ImportJob, ident)
    if job is None or job.created_by != viewer.user_id or viewer.user_id is None:
        raise NotFound(_l("Not found."))
    ent = find_entity(job.entity)
    if ent is None or not viewer.can(ent, "import"):
        raise NotFound(_l("Not found."))
    return job


def start(session: Session, viewer: Viewer, job: ImportJob, *, dry_run: bool, skip_invalid: bool,
          mapping: Mapping[str, Any] | None = None) -> ImportJob:
    """Queue the job's run (it starts once this unit of work commits)."""
    if job.status in ("queued", "running"):
        raise ValidationFailed(_l("This import is already running."), code="import_running")
    if job.data is None:
        raise ValidationFailed(_l("This file was imported already; upload it again to import it again."),
                               code="import_done")
    if mapping is not None:
        job.mapping = check_mapping(mapping)
    job.dry_run, job.skip_invalid = dry_run, skip_invalid
    job.status, job.phase, job.progress, job.result, job.error = "queued", "", 0, None, None
    job.updated_by = viewer.user_id
    session.flush()
    tenant = session.info["tenant"]
    send_after_commit(session, TASK, str(tenant.id), str(job.id), tenant_id=tenant.id)
    return job


def as_json(job: ImportJob) -> dict[str, Any]:
    return {"id": str(job.id), "entity": job.entity, "filename": job.filename, "size": job.size,
            "status": job.status, "phase": job.phase, "progress": job.progress, "dry_run": job.dry_run,
            "skip_invalid": job.skip_invalid, "result": job.result, "error": job.error,
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


def result_json(result: importing.ImportResult) -> dict[str, Any]:
    return {**result.as_json(), "bad_rows": result.bad_rows, "dry_run": result.dry_run,
            "ignored_columns": result.ignored_columns, "numbers": list(result.numbers) if result.numbers else None}


# --------------------------------------------------------------------------- the task


def run(session: Session, job_id: uuid.UUID, *, max_rows: int, max_bytes: int,
        report: Any = None) -> importing.ImportResult | None:
    """Run the job in the session's transaction (the caller commits); None when there is nothing to do.

    ``report(phase, rows)`` is told the progress; it must write outside this transaction.
    """
    if not session.scalar(select(func.pg_try_advisory_xact_lock(int(AdvisoryLock.IMPORT_JOB),
                                                                func.hashtext(str(job_id))))):
        log.info("import job %s is being run by another worker", job_id)
        return None
    row = session.execute(select(ImportJob.entity, ImportJob.filename, ImportJob.data, ImportJob.mapping,
                                 ImportJob.dry_run, ImportJob.skip_invalid, ImportJob.status,
                                 ImportJob.created_by).where(ImportJob.id == job_id)).one_or_none()
    if row is None or row.status not in ("queued", "running") or row.data is None:
        return None  # done already (a second delivery), or never started
    user = session.get(User, row.created_by) if row.created_by else None
    ent = find_entity(row.entity)
    data: bytes = row.data
    try:
        if user is None or not user.active or ent is None:
            raise ValidationFailed(_l("The user who started this import can no longer import."))
        viewer = viewer_for(session, tenant_services.actor_for(user), locale=user.locale or "en")
        result = importing.run(session, viewer, ent, lambda: open_table(data, row.filename, max_rows, max_bytes),
                               filename=row.filename, mapping=row.mapping, dry_run=row.dry_run,
                               skip_invalid=row.skip_invalid, progress=report)
    except DomainError as exc:
        # The file or the mapping (or the user's rights) stopped it: no retry will do better.
        session.rollback()
        session.execute(update(ImportJob).where(ImportJob.id == job_id).values(
            status="failed", error=str(exc.message)[:500], finished_at=utcnow(), version=ImportJob.version + 1))
        return None
    written = result.imported > 0 and not result.dry_run
    session.execute(update(ImportJob).where(ImportJob.id == job_id).values(
        status="done", result=result_json(result), finished_at=utcnow(), version=ImportJob.version + 1,
        phase="", **({"data": None} if written else {})))
    return result


@shared_task(name=TASK, acks_late=True, reject_on_worker_lost=True)
def run_import(tenant_id: str, job_id: str) -> None:
    """Run one import job (see the module docstring: idempotent, progress in its own transactions)."""
    from tenants.tasks import TenantGone, tenant_unit

    rt = task_runtime()
    settings = rt.settings
    ident = uuid.UUID(job_id)

    def report(phase: str, rows: int) -> None:
        with tenant_unit(tenant_id) as (side, _tenant):
            side.execute(update(ImportJob).where(ImportJob.id == ident, ImportJob.status.in_(("queued", "running")))
                         .values(status="running", phase=phase, progress=rows))

    try:
        with tenant_unit(tenant_id) as (session, _tenant):
            run(session, ident, max_rows=settings.import_max_rows, max_bytes=settings.import_max_bytes,
                report=report)
    except TenantGone:
        log.info("import job dropped: tenant no longer active")


# --------------------------------------------------------------------------- the tenant archive


@archive.row_check("import_jobs")
def _check_import_jobs(session: Session) -> None:
    bad = session.scalar(select(ImportJob.id).where(
        (ImportJob.version < 1) | ImportJob.status.not_in(STATUSES) | (ImportJob.size < 0)
        | (ImportJob.progress < 0) | ((ImportJob.data.is_not(None)) & (func.octet_length(ImportJob.data)
                                                                       != ImportJob.size))).limit(1))
    if bad is not None:
        raise InvalidArchive(_l("Table %(table)s, row %(row)s: %(field)s: %(reason)s", table="import_jobs",
                                        row=str(bad), field="status",
                                        reason=_l("a status, size or progress the application never writes.")))
    known = {e for (e,) in session.execute(select(ImportJob.entity).distinct())}
    unknown = sorted(k for k in known if find_entity(k) is None)
    if unknown:
        raise InvalidArchive(_l("Table %(table)s: unknown entity '%(value)s'.", table="import_jobs",
                                        value=shown(unknown[0])))
