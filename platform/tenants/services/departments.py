"""The department tree."""

from __future__ import annotations

import uuid

from sqlalchemy import any_, func, literal, select, update
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import AdvisoryLock, advisory_xact_lock
from core.errors import Conflict, NotFound, ValidationFailed
from core.i18n import _l, shown
from core.permissions import Actor
from tenants import permissions as perms
from tenants.models import Department, User
from tenants.services.auditing import audit, snapshot
from tenants.services.common import _uid, clean_name, require


def get_department(session: Session, department_id: uuid.UUID) -> Department:
    dept = session.get(Department, department_id)
    if dept is None:
        raise ValidationFailed(_l("No such department."),
                               field_errors={"department_id": [_l("Unknown department.")]})
    return dept


def list_departments(session: Session) -> list[Department]:
    return list(session.scalars(select(Department).order_by(Department.sort_order, Department.name)))


def department_tree(session: Session) -> list[tuple[int, Department]]:
    """Departments in tree order with their depth, for indented lists and selects.

    Every department is listed once, whatever the table holds: one that cannot be reached from the top
    (its line of parents loops, which writes through this module prevent but a restored backup or a hand
    edit can plant) is listed at the top level after the others, so it stays visible and can be moved.
    """
    depts = list_departments(session)
    children: dict[uuid.UUID | None, list[Department]] = {}
    for d in depts:
        children.setdefault(d.parent_id, []).append(d)
    out: list[tuple[int, Department]] = []
    seen: set[uuid.UUID] = set()

    def walk(root: Department) -> None:
        # An explicit stack: the depth is the data's to choose, not Python's recursion limit's.
        stack = [(0, root)]
        while stack:
            depth, dept = stack.pop()
            if dept.id in seen:
                continue
            seen.add(dept.id)
            out.append((depth, dept))
            stack.extend((depth + 1, child) for child in reversed(children.get(dept.id, [])))

    for top in children.get(None, []):
        walk(top)
    for dept in depts:
        if dept.id not in seen:
            walk(dept)
    return out


#: How far up a department's line of parents a check follows. Deeper chains are refused as parents, so
#: every walk over the tree, in SQL or in Python, is bounded.
MAX_DEPARTMENT_DEPTH = 64


def _lock_department_tree(session: Session) -> None:
    # One change to a tenant's tree at a time: two moves checked against the same snapshot ("A under B"
    # and "B under A") would both pass and leave a cycle. Held until the transaction ends.
    advisory_xact_lock(session, AdvisoryLock.DEPARTMENT_TREE, session.info["tenant"].schema)


def _check_parent(session: Session, parent_id: uuid.UUID, moving_id: uuid.UUID | None) -> None:
    """``parent_id`` may take a child (``moving_id``, when an existing department moves): it exists, the
    department is not among its ancestors, and its ancestry reaches the top within the depth bound.

    Asked of the database (a recursive query with a cycle guard and a depth bound) under the tree lock,
    so it reads the committed tree as it is now, not the snapshot a request started with.
    """
    d, step = Department.__table__.alias("d"), Department.__table__.alias("step")
    up = (select(d.c.id, d.c.parent_id, literal(1).label("depth"), pg_array([d.c.id]).label("seen"))
          .where(d.c.id == parent_id).cte("up", recursive=True))
    up = up.union_all(
        select(step.c.id, step.c.parent_id, up.c.depth + 1, up.c.seen.op("||")(step.c.id))
        .where(step.c.id == up.c.parent_id, up.c.depth < MAX_DEPARTMENT_DEPTH, step.c.id != any_(up.c.seen)))
    found, loops, rooted = session.execute(select(
        func.count(), func.coalesce(func.bool_or(up.c.id == moving_id), False),
        func.coalesce(func.bool_or(up.c.parent_id.is_(None)), False))).one()
    if not found:
        raise ValidationFailed(_l("No such department."), field_errors={"department_id": [_l("Unknown department.")]})
    if loops:
        raise ValidationFailed(_l("A department cannot be moved under itself."),
                               field_errors={"parent_id": [_l("Would create a cycle.")]})
    if not rooted:
        raise ValidationFailed(_l("The chosen parent is not reachable from the top level within %(depth)s levels; "
                                  "move it to the top level first.", depth=MAX_DEPARTMENT_DEPTH),
                               field_errors={"parent_id": [_l("Not reachable from the top level.")]})


def save_department(session: Session, actor: Actor, *, name: str, parent_id: uuid.UUID | None,
                    department_id: uuid.UUID | None = None) -> Department:
    require(actor, perms.DEPARTMENTS_MANAGE)
    name = clean_name(name)
    _lock_department_tree(session)
    dept: Department | None = None
    if department_id is not None:
        # Read again under the lock: a copy loaded earlier in this request may predate a move just committed.
        dept = session.get(Department, department_id, populate_existing=True)
        if dept is None:
            raise NotFound(_l("No such department."))
    if parent_id is not None:
        _check_parent(session, parent_id, department_id)
    else:
        # (parent_id, name) is unique, but PostgreSQL treats NULLs as distinct: the top level is checked here.
        stmt = select(Department.id).where(Department.parent_id.is_(None), Department.name == name)
        if department_id is not None:
            stmt = stmt.where(Department.id != department_id)
        if session.scalar(stmt.limit(1)) is not None:
            raise Conflict(_l("A department named '%(name)s' already exists there.", name=shown(name)),
                           field_errors={"name": [_l("Already exists at this level.")]})
    if dept is None:
        dept = Department(name=name, parent_id=parent_id, created_by=_uid(actor), updated_by=_uid(actor))
        session.add(dept)
        action, before = "department.created", None
    else:
        before = snapshot(dept, ("name", "parent_id"))
        dept.name, dept.parent_id, dept.updated_by = name, parent_id, _uid(actor)
        action = "department.updated"
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(_l("A department named '%(name)s' already exists there.", name=shown(name)),
                       field_errors={"name": [_l("Already exists at this level.")]}) from None
    audit(session, actor, action, "department", dept.id, before=before, after=snapshot(dept, ("name", "parent_id")))
    return dept


def delete_department(session: Session, actor: Actor, department_id: uuid.UUID) -> None:
    require(actor, perms.DEPARTMENTS_MANAGE)
    _lock_department_tree(session)
    dept = session.get(Department, department_id, populate_existing=True)
    if dept is None:
        raise NotFound(_l("No such department."))
    if session.scalar(select(func.count()).select_from(Department).where(Department.parent_id == dept.id)):
        raise Conflict(_l("Move or delete its sub-departments first."), code="department_has_children")
    session.execute(update(User).where(User.department_id == dept.id).values(department_id=None))
    before = snapshot(dept, ("name", "parent_id"))
    session.delete(dept)
    session.flush()
    audit(session, actor, "department.deleted", "department", department_id, before=before)
