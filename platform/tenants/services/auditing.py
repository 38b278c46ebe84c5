"""The tenant's audit trail: who changed what, written by every service that changes something."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.permissions import Actor
from tenants import permissions as perms
from tenants.models import AuditEntry
from tenants.services.common import require


def snapshot(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = str(value) if isinstance(value, (uuid.UUID, dt.datetime)) else value
    return out


def audit(session: Session, actor: Actor, action: str, entity_type: str, entity_id: object | None,
          before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEntry:
    entry = AuditEntry(
        actor_id=actor.id if isinstance(actor.id, uuid.UUID) else None,
        actor_label=actor.label[:254],
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        before=before,
        after=after,
        request_id=actor.request_id,
        ip=actor.ip,
    )
    session.add(entry)
    return entry


def list_audit(session: Session, actor: Actor, *, limit: int = 50, before_id: uuid.UUID | None = None,
               entity_type: str | None = None) -> list[AuditEntry]:
    require(actor, perms.AUDIT_READ)
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(max(limit, 1), 500))
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if entity_type:
        stmt = stmt.where(AuditEntry.entity_type == entity_type)
    return list(session.scalars(stmt))
