"""Activities and tasks on a record's timeline, each through its own entity's scope."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from crm.activities.models import ACTIVITIES, TASKS, Activity, Task
from crm.records.entity import Entity
from crm.records.fields import Field
from crm.records.history import TimelineItem, register_source
from crm.records.scope import Viewer, visible
from crm.records.services import user_names


def _about(model: type[Activity] | type[Task], ent: Entity, record: Any) -> Any:
    if ent.key == "customers":
        return model.customer_id == record.id
    if ent.key == "contacts":
        return model.contact_id == record.id
    return (model.related_entity == ent.key) & (model.related_id == record.id)


def _choice(f: Field | None, value: str, locale: str) -> str:
    c = f.choice(value) if f else None
    return c.label(locale) if c else value


@register_source
def activities(session: Session, viewer: Viewer, ent: Entity, record: Any, limit: int) -> list[TimelineItem]:
    if not viewer.can(ACTIVITIES, "view"):
        return []
    rows = list(session.scalars(select(Activity).where(_about(Activity, ent, record), visible(ACTIVITIES, viewer))
                                .order_by(Activity.occurred_at.desc()).limit(limit)))
    names = user_names(session, [r.owner_id for r in rows])
    kind = ACTIVITIES.field("kind")
    return [TimelineItem(r.occurred_at, "activity", r.subject, r.body or "", f"/activities/{r.id}",
                         names.get(r.owner_id, ""), {"kind": r.kind, "kind_label": _choice(kind, r.kind, viewer.locale),
                                                     "next_follow_up": r.next_follow_up})
            for r in rows]


@register_source
def tasks(session: Session, viewer: Viewer, ent: Entity, record: Any, limit: int) -> list[TimelineItem]:
    if not viewer.can(TASKS, "view"):
        return []
    rows = list(session.scalars(select(Task).where(_about(Task, ent, record), visible(TASKS, viewer))
                                .order_by(Task.created_at.desc()).limit(limit)))
    names = user_names(session, [r.owner_id for r in rows])
    status = TASKS.field("status")
    return [TimelineItem(r.completed_at or r.created_at or utcnow(), "task", r.title, r.body or "",
                         f"/tasks/{r.id}", names.get(r.owner_id, ""),
                         {"status": r.status, "status_label": _choice(status, r.status, viewer.locale),
                          "due_at": r.due_at}) for r in rows]
