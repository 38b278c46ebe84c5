"""The department tree stays a tree: concurrent moves are serialised, and a cycle already in the table
(planted by hand or by a restored backup) neither hangs a request nor hides its departments."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from core.errors import ValidationFailed
from core.i18n import _l
from core.permissions import Actor
from tenants import services
from tenants.models import Department
from tests.conftest import provision, sign_in, unique_slug
from tests.races import second_waits_for_first
from tests.tenants.test_api import api, assert_error, token

ACTOR = Actor.system("tree-test")


def roots_of(parents: dict[uuid.UUID, uuid.UUID | None]) -> dict[uuid.UUID, bool]:
    """For each department: does its line of parents reach the top (bounded by the table's size)?"""
    reached = {}
    for start in parents:
        cursor: uuid.UUID | None = start
        for _ in range(len(parents) + 1):
            if cursor is None:
                break
            cursor = parents[cursor]
        reached[start] = cursor is None
    return reached


def test_two_crossing_moves_at_once_leave_no_cycle(committed_db, engine):
    tenant, _ = provision(committed_db, unique_slug("tree"))
    with committed_db.transaction(tenant) as s:
        a = services.save_department(s, ACTOR, name="A", parent_id=None).id
        b = services.save_department(s, ACTOR, name="B", parent_id=None).id

    # Transaction 1 moves A under B and stays open; transaction 2, on its own connection, moves B under A.
    first = committed_db.session(tenant)
    services.save_department(first, ACTOR, name="A", parent_id=b, department_id=a)

    def second() -> str:
        with committed_db.transaction(tenant) as s2:
            services.save_department(s2, ACTOR, name="B", parent_id=a, department_id=b)
        return "moved"

    # Without the tree lock the second simply finishes (and leaves a cycle) instead of waiting.
    waited, result = second_waits_for_first(first, second, engine)
    assert waited, "the second move did not wait for the first"
    assert isinstance(result, ValidationFailed), result
    assert result.field_errors == {"parent_id": [_l("Would create a cycle.")]}
    with committed_db.transaction(tenant) as s:
        parents = {row[0]: row[1] for row in s.execute(select(Department.id, Department.parent_id))}
    assert parents == {a: b, b: None}
    assert all(roots_of(parents).values())


def plant_cycle(connection, tenant) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Departments A and B, each the other's parent, and C at the top, written straight in SQL."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    table = f"{tenant.schema}.departments"
    connection.execute(text(f"INSERT INTO {table} (id, name, version) VALUES (:a, 'Loop A', 1), "
                            f"(:b, 'Loop B', 1), (:c, 'Plain C', 1)"), {"a": a, "b": b, "c": c})
    connection.execute(text(f"UPDATE {table} SET parent_id = :b WHERE id = :a"), {"a": a, "b": b})
    connection.execute(text(f"UPDATE {table} SET parent_id = :a WHERE id = :b"), {"a": a, "b": b})
    return a, b, c


def test_a_planted_cycle_cannot_hang_a_request_or_hide_its_departments(client, db, connection, tenant):
    admin_token = token(client, db, tenant)
    a, b, c = plant_cycle(connection, tenant)
    listed = api(client, "GET", "/api/v1/departments", admin_token)
    assert listed.status_code == 200
    assert {d["id"] for d in listed.get_json()} == {str(a), str(b), str(c)}
    # Moving a department under one whose ancestry loops: refused (it would vanish with them), at once.
    refused = assert_error(api(client, "PUT", f"/api/v1/departments/{c}", admin_token,
                               json={"name": "Plain C", "parent_id": str(a)}), 422)
    assert refused["errors"] == {"parent_id": ["Not reachable from the top level."]}
    # Moving a looped one under its own partner: refused as a cycle.
    assert_error(api(client, "PUT", f"/api/v1/departments/{b}", admin_token,
                     json={"name": "Loop B", "parent_id": str(a)}), 422)
    # The way out: move one of them to the top; the other then hangs under it again.
    assert api(client, "PUT", f"/api/v1/departments/{a}", admin_token,
               json={"name": "Loop A", "parent_id": None}).status_code == 200
    tree = [(d["id"], d["parent_id"]) for d in api(client, "GET", "/api/v1/departments", admin_token).get_json()]
    assert tree.index((str(b), str(a))) > tree.index((str(a), None))


def test_the_departments_page_shows_a_planted_cycle(client, connection, tenant):
    plant_cycle(connection, tenant)
    sign_in(client, "acme")
    page = client.get("/admin/departments", headers={"Host": "acme.localhost"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for name in ("Loop A", "Loop B", "Plain C"):
        assert name in html


def test_a_parent_deeper_than_the_bound_is_refused(db, tenant):
    with db.transaction(tenant) as s:
        parent = None
        for depth in range(services.MAX_DEPARTMENT_DEPTH + 1):  # the deepest is one level beyond the bound
            parent = services.save_department(s, ACTOR, name=f"Level {depth}", parent_id=parent).id
        with pytest.raises(ValidationFailed) as refused:
            services.save_department(s, ACTOR, name="Too deep", parent_id=parent)
    assert refused.value.field_errors == {"parent_id": [_l("Not reachable from the top level.")]}
