"""Files attached to any record, kept in object storage (core.storage), seen only through the record.

Whoever may see the record may list and download its files; whoever may change it may add and delete
them. The storage key is the tenant and the attachment's own id, never the file's name.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from flask import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow, uuid7
from core.errors import NotFound, PermissionDenied, ValidationFailed
from core.i18n import _l
from core.settings import Settings
from core.storage import Readable, Storage, download_headers, sniff, with_head
from crm.records.entity import Entity
from crm.records.history import TimelineItem, register_source
from crm.records.models import Attachment
from crm.records.scope import Viewer
from crm.records.services import can_edit, register_link, user_names
from tenants import services as tenant_services

MAX_FILES_PER_RECORD = 500
MAX_NAME = 255


def _clean_name(filename: str) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_NAME]
    if not name or name in (".", ".."):
        raise ValidationFailed(_l("The file needs a name."), field_errors={"file": [_l("The file needs a name.")]})
    return name


def upload(session: Session, viewer: Viewer, ent: Entity, record: Any, stream: Readable, *, filename: str,
           declared_type: str, storage: Storage, settings: Settings) -> Attachment:
    if not can_edit(session, viewer, ent, record):
        raise PermissionDenied(_l("You may see this record but not change it."), code="read_only")
    count = len(list(session.scalars(select(Attachment.id).where(
        Attachment.entity == ent.key, Attachment.record_id == record.id, Attachment.deleted_at.is_(None))
        .limit(MAX_FILES_PER_RECORD))))
    if count >= MAX_FILES_PER_RECORD:
        raise ValidationFailed(_l("A record holds at most %(max)d files.", max=MAX_FILES_PER_RECORD))
    name = _clean_name(filename)
    head, full = with_head(stream)
    content_type = sniff(head, name, declared_type[:100] or None, settings.attachment_types)
    ident = uuid7()
    tenant = session.info["tenant"]
    key = f"{tenant.id.hex}/{ident.hex}"
    # The upload happens before the row exists: a failed upload leaves no row; a row whose
    # transaction then fails leaves an orphan object, which costs space but shows nothing.
    stored = storage.put(key, full, content_type=content_type, max_bytes=settings.attachment_max_bytes)
    row = Attachment(id=ident, entity=ent.key, record_id=record.id, filename=name, content_type=stored.content_type,
                     size=stored.size, sha256=stored.sha256, storage_key=key, created_by=viewer.user_id,
                     updated_by=viewer.user_id)
    session.add(row)
    session.flush()
    tenant_services.audit(session, viewer.actor, f"{ent.key}.file_added", ent.key, record.id, None,
                          {"file": name, "size": stored.size})
    return row


def for_record(session: Session, viewer: Viewer, ent: Entity, record: Any) -> list[Attachment]:
    """The record's files (the caller already found the record through the viewer's scope)."""
    return list(session.scalars(select(Attachment).where(
        Attachment.entity == ent.key, Attachment.record_id == record.id, Attachment.deleted_at.is_(None))
        .order_by(Attachment.id.desc()).limit(MAX_FILES_PER_RECORD)))


def _one(session: Session, ent: Entity, record: Any, file_id: uuid.UUID) -> Attachment:
    row = session.get(Attachment, file_id)
    if row is None or row.entity != ent.key or row.record_id != record.id or row.deleted_at is not None:
        raise NotFound(_l("Not found."))
    return row


def download(session: Session, viewer: Viewer, ent: Entity, record: Any, file_id: uuid.UUID, *, storage: Storage,
             inline: bool = False) -> Response:
    row = _one(session, ent, record, file_id)
    reader = storage.open(row.storage_key)
    headers = {**download_headers(row.content_type, row.filename, inline=inline), "Content-Length": str(reader.size),
               "Cache-Control": "private, no-store"}
    return Response(reader, headers=headers, direct_passthrough=True)


def remove(session: Session, viewer: Viewer, ent: Entity, record: Any, file_id: uuid.UUID) -> None:
    """Hide the file at once; the stored object goes with the record's purge (or the file purge)."""
    if not can_edit(session, viewer, ent, record):
        raise PermissionDenied(_l("You may see this record but not change it."), code="read_only")
    row = _one(session, ent, record, file_id)
    row.deleted_at = utcnow()
    tenant_services.audit(session, viewer.actor, f"{ent.key}.file_deleted", ent.key, record.id,
                          {"file": row.filename}, None)


@register_source
def _timeline(session: Session, viewer: Viewer, ent: Entity, record: Any, limit: int) -> list[TimelineItem]:
    rows = for_record(session, viewer, ent, record)[:limit]
    names = user_names(session, [r.created_by for r in rows])
    return [TimelineItem(r.created_at if isinstance(r.created_at, dt.datetime) else utcnow(), "attachment",
                         r.filename, f"{r.size:,} B", f"files/{r.id}", names.get(r.created_by, ""),
                         {"content_type": r.content_type}) for r in rows]


register_link(Attachment, "entity", "record_id")
