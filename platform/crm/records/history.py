"""A record's history (its audit entries made readable) and its timeline (everything about it, newest first).

Audit entries store field keys and JSON values; they are turned into the reader's words here: field
labels in their language (custom fields too, also ones deactivated since), dictionary and choice
labels, user names and record titles, Chinese as Chinese.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.records import definitions
from crm.records.entity import Entity
from crm.records.fields import Field, FieldType, from_json
from crm.records.scope import Viewer
from crm.records.services import user_names
from tenants.models import AuditEntry

HISTORY_LIMIT = 200

ACTIONS: dict[str, tuple[str, str]] = {
    "created": ("created", "创建"), "updated": ("changed", "修改"), "deleted": ("deleted", "删除"),
    "restored": ("restored", "恢复"), "transferred": ("transferred", "转移"), "shared": ("shared", "共享"),
    "unshared": ("stopped sharing", "取消共享"), "merged": ("merged another record into this one", "合并了另一条记录"),
    "merged_into": ("was merged into another record", "被合并到另一条记录"), "imported": ("imported", "导入"),
}


def _display(session: Session, viewer: Viewer, f: Field | None, raw: Any, names: dict[Any, str]) -> str:
    if raw is None or raw in ([], ""):
        return ""
    if f is None:
        return raw if isinstance(raw, str) else str(raw)
    val = from_json(f, raw)
    if f.type == FieldType.REF and f.target and val is not None:
        from crm.records.present import ref_titles

        return ref_titles(session, viewer, f.target, {val}).get(val, "—")
    return definitions.display(session, f, val, viewer.locale, users=names)


def entries(session: Session, viewer: Viewer, ent: Entity, record: Any, *,
            limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    rows = list(session.scalars(select(AuditEntry).where(AuditEntry.entity_type == ent.key,
                                                         AuditEntry.entity_id == str(record.id))
                                .order_by(AuditEntry.id.desc()).limit(limit)))
    fields = {f.key: f for f in definitions.fields(session, ent, include_inactive=True)}
    wanted: set[Any] = {r.actor_id for r in rows if r.actor_id}
    for r in rows:
        for side in (r.before or {}, r.after or {}):
            for k, v in side.items():
                if k in fields and fields[k].type == FieldType.USER and isinstance(v, str):
                    with contextlib.suppress(ValueError):
                        wanted.add(uuid.UUID(v))
    names = user_names(session, wanted)
    zh = viewer.locale == "zh"
    out = []
    for r in rows:
        action = r.action.split(".", 1)[-1]
        en_word, zh_word = ACTIONS.get(action, (action, action))
        changes = []
        keys = list(dict.fromkeys([*(r.before or {}), *(r.after or {})]))
        for k in keys:
            if k in ("moved", "merged", "into", "title"):
                continue
            f = fields.get(k)
            label = f.label(viewer.locale) if f else k
            changes.append({"field": k, "label": label,
                            "before": _display(session, viewer, f, (r.before or {}).get(k), names),
                            "after": _display(session, viewer, f, (r.after or {}).get(k), names)})
        other = (r.after or {}).get("merged") or (r.after or {}).get("into")
        out.append({"id": str(r.id), "at": r.at.isoformat(), "actor": names.get(r.actor_id, r.actor_label),
                    "action": action, "summary": zh_word if zh else en_word, "changes": changes,
                    "other": other if isinstance(other, dict) else None})
    return out


@dataclass(frozen=True, slots=True)
class TimelineItem:
    at: dt.datetime
    kind: str  # activity | task | change | attachment | …
    title: str
    body: str
    link: str
    actor: str
    extra: dict[str, Any]


#: Sources of a record's timeline: each returns its newest items for (entity, record) that the viewer
#: may see, through the scope of its own entity. Areas register theirs (activities, tasks, attachments).
TimelineSource = Callable[[Session, Viewer, Entity, Any, int], list[TimelineItem]]
SOURCES: list[TimelineSource] = []


def register_source(source: TimelineSource) -> TimelineSource:
    SOURCES.append(source)
    return source


def _changes(session: Session, viewer: Viewer, ent: Entity, record: Any, limit: int) -> list[TimelineItem]:
    items = []
    for e in entries(session, viewer, ent, record, limit=limit):
        body = "; ".join(f"{c['label']}: {c['before'] or '—'} → {c['after'] or '—'}" for c in e["changes"][:6])
        items.append(TimelineItem(dt.datetime.fromisoformat(e["at"]), "change", e["summary"], body, "", e["actor"],
                                  {"action": e["action"]}))
    return items


def timeline(session: Session, viewer: Viewer, ent: Entity, record: Any, *, limit: int = 50,
             kinds: set[str] | None = None) -> list[TimelineItem]:
    """Everything about the record, newest first: each source's newest ``limit``, merged."""
    items: list[TimelineItem] = []
    for source in [*SOURCES, _changes]:
        items.extend(source(session, viewer, ent, record, limit))
    if kinds:
        items = [i for i in items if i.kind in kinds]
    items.sort(key=lambda i: i.at, reverse=True)
    return items[:limit]
