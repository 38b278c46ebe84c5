"""The permission probe: one sales rep walks every route at a colleague's private records.

Two reps of acme, A and B, in the same department with the built-in sales role, whose data scope is
their own records. The role is granted every CRM function (delete, transfer, merge, import … as well),
so that each route gets past the function check and the data scope alone has to keep B's records from
A. B holds records of every entity (a customer, a contact of it, an activity and a task on it, a second
one of each, one in the recycle bin), a share of each, an attachment on each and a saved view per list;
B also owns a contact, an activity and a task on A's own customer (created by the admin).

Every route of the URL map (from tests/probes.py's planner, so new routes are walked by themselves) is
sent with A's signed-in browser session, the pages and the API alike:

1. aimed at B's records (their ids in the path and bodies, their titles as ``q`` of every list and of
   the global search): no marker of B's (ids, titles, file names and contents, view names, share ids)
   in any answer; every route naming one of B's records answers 404 (never 403: a rep never learns
   that a colleague's private record exists); nothing of B's changes;
2. aimed at A's own records: the detail pages, related lists, timelines, histories, lists and searches
   show A's records but nothing of B's, not even B's records hanging off A's customer.

Every probe runs in a savepoint that is rolled back afterwards, so each one meets the seeded records.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from sqlalchemy import select

from core.permissions import all_names
from crm.records.entity import entities
from crm.records.models import Attachment, RecordShare, SavedView
from crm.records.scope import viewer_for
from crm.records.services import create
from tenants import services
from tenants.models import Department, Role
from tests.conftest import PASSWORD, host, provision
from tests.probes import (
    CRM_PARAM_SUFFIXES,
    Caller,
    Values,
    cookie_header,
    crm_entities_in_order,
    crm_entity,
    crm_record_body,
    open_session,
    plan,
    seed_crm,
)

REP_A, REP_B = "rep.a@acme.test", "rep.b@acme.test"


def _crm_actions() -> list[str]:
    return sorted(n for n in all_names() if n.split(".", 1)[0] in {e.key for e in entities()})


@pytest.fixture
def reps(app, db) -> dict[str, Any]:
    tenant, admin_id = provision(db, "acme", name="Acme 艾克米")
    with db.transaction(tenant) as s:
        admin = services.actor_for(services.get_user(s, admin_id), request_id="probe-seed")
        dept = Department(name="华东区 East")
        s.add(dept)
        s.flush()
        a = services.create_user(s, admin, email=REP_A, name="Rep A 张三", role="sales", password=PASSWORD,
                                 department_id=dept.id)
        b = services.create_user(s, admin, email=REP_B, name="Rep B 李四", role="sales", password=PASSWORD,
                                 department_id=dept.id)
        sales = s.scalar(select(Role).where(Role.key == "sales"))
        assert sales is not None
        assert sales.data_scope == "own"
        services.set_role_permissions(s, admin, "sales", sorted({*sales.permissions, *_crm_actions()}))
        s.flush()
        s.expire_all()
        mine, _ = seed_crm(s, services.actor_for(a), app, "Alpha", a.id, admin_id)
        theirs, markers = seed_crm(s, services.actor_for(b), app, "Bravo", b.id, admin_id)
        # B's records hanging off A's own customer: A's related lists and timelines must leave them out.
        everything = viewer_for(s, admin)
        intruders = []
        for ent in crm_entities_in_order():
            if ent.key == "customers":
                continue
            body = crm_record_body(ent, Values(mine), 0)
            body[ent.title_field] = f"Bravo intruder {ent.label_en}"
            row = create(s, everything, ent, {**body, "owner_id": b.id})
            intruders.append(row)
            markers |= {str(row.id), body[ent.title_field]}
        assert all(r.owner_id == b.id for r in intruders)
    return {"tenant": tenant, "a": a.id, "b": b.id, "mine": mine, "theirs": theirs, "markers": markers}


def fingerprint(db, tenant, owner) -> dict[str, Any]:
    """B's records and everything hanging off records: what A must not be able to change."""
    s = db.session(tenant)
    try:
        return {
            "records": sorted((ent.key, str(r.id), r.version, r.deleted_at is None, str(r.owner_id), tuple(r.tags),
                               json.dumps(r.custom, sort_keys=True), str(getattr(r, ent.title_field)))
                              for ent in entities() for r in s.scalars(select(ent.model)) if r.owner_id == owner),
            "shares": sorted((str(r.id), str(r.record_id), str(r.user_id), r.access)
                             for r in s.scalars(select(RecordShare))),
            "files": sorted((str(f.id), str(f.record_id), f.deleted_at is None) for f in s.scalars(select(Attachment))),
            "views": sorted((str(v.id), v.version, v.name) for v in s.scalars(select(SavedView))
                            if v.owner_id == owner),
        }
    finally:
        s.close()


def shown(response, markers: set[str]) -> set[str]:
    body = response.get_data(as_text=True)
    text = "\n".join([body, html.unescape(body), *(f"{k}: {v}" for k, v in response.headers.items())])
    return {m for m in markers if m in text}


def names_a_crm_record(rule) -> bool:
    return crm_entity(rule.endpoint) is not None and any(a in CRM_PARAM_SUFFIXES for a in rule.arguments)


def rep_a_caller(app, redis_client) -> Caller:
    def signed_in() -> tuple[dict[str, str], str]:
        sid, csrf = open_session(app, host("acme"), "", REP_A)
        return {**host("acme"), **cookie_header(sid)}, csrf

    headers, csrf = signed_in()
    return Caller(app, redis_client, headers, csrf=csrf, renew=signed_in)


def walk(app, db, connection, caller: Caller, values: Values, markers: set[str], *, check) -> int:
    probes, problems = plan(app)
    assert problems == []
    sent = 0
    for n, probe in enumerate(probes):
        if probe.area == "oauth":
            continue  # client credentials: no rep's business
        savepoint = connection.begin_nested()
        try:
            response = caller.send(probe, values, n)  # asserts it is not a 500
            sent += 1
            leaked = shown(response, markers) - caller.known(markers)
            assert not leaked, f"{probe} showed B's {sorted(leaked)}"
            check(probe, response)
        finally:
            savepoint.rollback()
    return sent


def test_a_rep_aimed_at_a_colleagues_records_finds_nothing(app, db, connection, redis_client, reps):
    tenant, b = reps["tenant"], reps["b"]
    before = fingerprint(db, tenant, b)
    assert all(before[k] for k in ("records", "views", "files", "shares")), before
    values = Values(Values.unknown().slots | reps["theirs"])

    def check(probe, response) -> None:
        if names_a_crm_record(probe.rule):
            assert response.status_code == 404, (
                f"{probe}: {response.status_code}, not 404 {response.get_data(as_text=True)[:300]}")
        if probe.method != "GET":
            assert fingerprint(db, tenant, b) == before, f"{probe} changed B's records"

    sent = walk(app, db, connection, rep_a_caller(app, redis_client), values, reps["markers"], check=check)
    assert sent >= len([r for r in app.url_map.iter_rules() if names_a_crm_record(r)])
    assert fingerprint(db, tenant, b) == before


def test_a_rep_on_their_own_records_sees_nothing_of_a_colleagues(app, db, connection, redis_client, reps):
    values = Values(Values.unknown().slots | reps["mine"])
    caller = rep_a_caller(app, redis_client)
    seen: set[str] = set()

    def check(probe, response) -> None:
        if names_a_crm_record(probe.rule) and probe.method == "GET" and response.status_code == 200:
            seen.add(probe.rule.endpoint)

    walk(app, db, connection, caller, values, reps["markers"], check=check)
    # The control: A's own detail pages, related lists, timelines and histories were really shown.
    for ent in entities():
        assert {f"crm.{ent.key}_detail", f"crm_api.{ent.key}_item", f"crm_api.{ent.key}_timeline",
                f"crm_api.{ent.key}_history"} <= seen, ent.key
    fresh = rep_a_caller(app, redis_client)  # the walk's last probe signed out
    page = app.test_client(use_cookies=False).get(f"/customers/{reps['mine']['customers']}?tab=related",
                                                   headers=fresh.headers)
    assert page.status_code == 200
    assert "Alpha Contact 甲" in page.get_data(as_text=True)
