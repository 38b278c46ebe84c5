"""Rules of customers beyond the generic record lifecycle: relationships and the customer's org chart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound, ValidationFailed
from core.i18n import _l
from crm.accounts.models import CONTACTS, CUSTOMERS, RELATION_KINDS, Contact, Customer, CustomerRelation
from crm.records import services as records
from crm.records.scope import Viewer, visible
from tenants import services as tenant_services

MAX_RELATIONS = 200
MAX_ORG = 500


@dataclass
class Relation:
    id: uuid.UUID
    kind: str
    kind_label: str
    other_id: uuid.UUID
    other_name: str
    note: str
    outgoing: bool


def relations(session: Session, viewer: Viewer, customer: Customer) -> list[Relation]:
    """The customer's relationships with customers the viewer may see (others are not named)."""
    rows = list(session.scalars(select(CustomerRelation).where(
        or_(CustomerRelation.from_id == customer.id, CustomerRelation.to_id == customer.id)).limit(MAX_RELATIONS)))
    others = {r.to_id if r.from_id == customer.id else r.from_id for r in rows}
    names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(others),
                                                                          visible(CUSTOMERS, viewer))).all())
    labels = {c.value: c.label(viewer.locale) for c in RELATION_KINDS}
    out = []
    for r in rows:
        other = r.to_id if r.from_id == customer.id else r.from_id
        if other in names:
            out.append(Relation(r.id, r.kind, labels.get(r.kind, r.kind), other, names[other], r.note,
                                r.from_id == customer.id))
    return out


def relate(session: Session, viewer: Viewer, customer_id: uuid.UUID | str, other_id: uuid.UUID | str, kind: str,
           note: str = "") -> CustomerRelation:
    customer = records.get_for_edit(session, viewer, CUSTOMERS, customer_id)
    other = records.get(session, viewer, CUSTOMERS, other_id)
    if other.id == customer.id:
        raise ValidationFailed(_l("A customer cannot be related to itself."),
                               field_errors={"other_id": [_l("Choose another customer.")]})
    if kind not in {c.value for c in RELATION_KINDS}:
        raise ValidationFailed(_l("Choose a kind of relationship."), field_errors={"kind": [_l("Unknown kind.")]})
    note = (note or "").strip()
    if len(note) > 300:
        raise ValidationFailed(_l("At most %(max)d characters.", max=300), field_errors={"note": [
            _l("At most %(max)d characters.", max=300)]})
    exists = session.scalar(select(CustomerRelation.id).where(CustomerRelation.from_id == customer.id,
                                                              CustomerRelation.to_id == other.id,
                                                              CustomerRelation.kind == kind))
    if exists is not None:
        raise Conflict(_l("This relationship is already recorded."), code="duplicate_relation")
    row = CustomerRelation(from_id=customer.id, to_id=other.id, kind=kind, note=note, created_by=viewer.user_id,
                           updated_by=viewer.user_id)
    session.add(row)
    session.flush()
    tenant_services.audit(session, viewer.actor, "customers.related", "customers", customer.id, None,
                          {"kind": kind, "other": other.name})
    return row


def unrelate(session: Session, viewer: Viewer, customer_id: uuid.UUID | str, relation_id: uuid.UUID) -> None:
    customer = records.get_for_edit(session, viewer, CUSTOMERS, customer_id)
    gone = session.execute(delete(CustomerRelation).where(
        CustomerRelation.id == relation_id,
        or_(CustomerRelation.from_id == customer.id, CustomerRelation.to_id == customer.id)))
    if not gone.rowcount:  # type: ignore[attr-defined]
        raise NotFound(_l("Not found."))
    tenant_services.audit(session, viewer.actor, "customers.unrelated", "customers", customer.id,
                          {"relation": str(relation_id)}, None)


@dataclass
class OrgNode:
    contact: Contact
    role_label: str
    children: list[OrgNode] = field(default_factory=list)


def org_chart(session: Session, viewer: Viewer, customer: Customer) -> dict[str, list[OrgNode]]:
    """The customer's contacts the viewer may see, as trees by who reports to whom, grouped by the
    contact's department (a contact whose manager is not visible starts a tree of its own)."""
    contacts = list(session.scalars(select(Contact).where(Contact.customer_id == customer.id,
                                                          visible(CONTACTS, viewer))
                                    .order_by(Contact.sort_key).limit(MAX_ORG)))
    field_ = CONTACTS.field("decision_role")
    nodes: dict[Any, OrgNode] = {}
    for c in contacts:
        choice = field_.choice(c.decision_role) if field_ and c.decision_role else None
        nodes[c.id] = OrgNode(c, choice.label(viewer.locale) if choice else "")
    roots: dict[str, list[OrgNode]] = {}
    for node in nodes.values():
        boss = node.contact.reports_to_id
        if boss in nodes and boss != node.contact.id and not _cycle(nodes, node.contact.id):
            nodes[boss].children.append(node)
        else:
            roots.setdefault(node.contact.department or "", []).append(node)
    return dict(sorted(roots.items(), key=lambda kv: (kv[0] == "", kv[0])))


def _cycle(nodes: dict[Any, OrgNode], start: Any) -> bool:
    """Whether following reports_to from ``start`` comes back to it (bad data must not hide contacts)."""
    seen = {start}
    current = nodes[start].contact.reports_to_id
    while current in nodes:
        if current in seen:
            return True
        seen.add(current)
        current = nodes[current].contact.reports_to_id
    return False
