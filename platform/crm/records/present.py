"""Records as people read them: labels for dictionary and choice values, names for users and records.

Resolved for a whole page of rows at once (one query per referenced entity, one for users), and only
through the viewer's scope: a contact's customer that the viewer may not see shows no name.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.records import definitions
from crm.records.entity import Entity, find_entity
from crm.records.fields import Field, FieldType, to_json
from crm.records.scope import Viewer, visible
from crm.records.services import title, user_names, value
from tenants.models import Department


def ref_titles(session: Session, viewer: Viewer, target_key: str, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Titles of the referenced records the viewer may see (others stay unnamed)."""
    if not ids:
        return {}
    if target_key == "departments":
        return dict(session.execute(select(Department.id, Department.name).where(Department.id.in_(ids)))
                    .all())
    target = find_entity(target_key)
    if target is None:
        return {}
    col = getattr(target.model, target.title_field)
    rows = session.execute(select(target.model.id, col).where(target.model.id.in_(ids), visible(target, viewer)))
    return {r[0]: str(r[1]) for r in rows}


def displays(session: Session, viewer: Viewer, ent: Entity, rows: Sequence[Any],
             fields: Sequence[Field]) -> list[dict[str, str]]:
    """For each row, every field's value as text in the viewer's language."""
    users: set[Any] = set()
    refs: dict[str, set[uuid.UUID]] = {}
    for row in rows:
        for f in fields:
            v = value(row, f)
            if v is None:
                continue
            if f.type == FieldType.USER:
                users.add(v)
            elif f.type == FieldType.REF and f.target:
                refs.setdefault(f.target, set()).add(v)
    names = user_names(session, users)
    titles = {key: ref_titles(session, viewer, key, ids) for key, ids in refs.items()}
    out = []
    for row in rows:
        shown: dict[str, str] = {}
        for f in fields:
            v = value(row, f)
            if f.type == FieldType.REF and f.target:
                shown[f.key] = titles.get(f.target, {}).get(v, "") if v is not None else ""
            else:
                shown[f.key] = definitions.display(session, f, v, viewer.locale, users=names)
        out.append(shown)
    return out


def as_json(ent: Entity, row: Any, fields: Sequence[Field], shown: dict[str, str] | None = None) -> dict[str, Any]:
    """The API's representation: built-in fields at the top level, custom ones under ``custom``,
    and (when given) the readable labels under ``display``."""
    out: dict[str, Any] = {"id": str(row.id), "version": row.version, "title": title(ent, row)}
    custom: dict[str, Any] = {}
    for f in fields:
        v = to_json(f, value(row, f))
        if f.custom:
            custom[f.key] = v
        else:
            out[f.key] = v
    out["custom"] = custom
    if shown is not None:
        out["display"] = {k: v for k, v in shown.items() if v}
    return out
