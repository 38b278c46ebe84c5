"""User lists page and filter in SQL with a bounded page, and searches take % and _ literally."""

from __future__ import annotations

import json
import re

from sqlalchemy import event

from core.permissions import Actor
from tenants import services
from tests.conftest import host, sign_in
from tests.tenants.test_api import api, assert_error, token

ACTOR = Actor.system("list-test")
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def add_users(db, tenant, names: list[str], *, inactive_every: int = 0) -> None:
    with db.transaction(tenant) as s:
        for i, name in enumerate(names):
            user = services.create_user(s, ACTOR, email=f"u{i}@acme.test", name=name)
            if inactive_every and i % inactive_every == 0:
                services.set_active(s, ACTOR, user.id, active=False)


def test_the_api_filters_and_pages_in_the_database(client, db, engine, tenant):
    add_users(db, tenant, [f"Person {i:03d}" for i in range(30)], inactive_every=3)
    tok = token(client, db, tenant)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        first = api(client, "GET", "/api/v1/users", tok, query_string={"active": "false", "page_size": 4})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert first.status_code == 200
    assert [u["name"] for u in first.get_json()] == ["Person 000", "Person 003", "Person 006", "Person 009"]
    assert json.loads(first.headers["X-Pagination"])["total"] == 10
    listing = [s for s in statements if "FROM" in s and "users" in s and "LIMIT" in s]
    assert listing, statements
    assert all("active IS false" in s or "active IS %(active_1)s" in s for s in listing), listing
    last = api(client, "GET", "/api/v1/users", tok, query_string={"active": "false", "page_size": 4, "page": 3})
    assert [u["name"] for u in last.get_json()] == ["Person 024", "Person 027"]
    assert_error(api(client, "GET", "/api/v1/users", tok, query_string={"page_size": 1000}), 422)


def test_a_search_for_percent_or_underscore_finds_only_those_characters(client, db, tenant):
    add_users(db, tenant, ["100% Sales", "100 Sales", "a_b", "axb", "back\\slash"])
    tok = token(client, db, tenant)

    def found(q: str) -> list[str]:
        return sorted(u["name"] for u in api(client, "GET", "/api/v1/users", tok, query_string={"q": q}).get_json())

    assert found("%") == ["100% Sales"]
    assert found("a_b") == ["a_b"]
    assert found("\\") == ["back\\slash"]
    assert found("100") == ["100 Sales", "100% Sales"]


def test_the_users_page_pages_instead_of_stopping(client, db, tenant):
    add_users(db, tenant, [f"Member {i:03d}" for i in range(60)])  # and the admin: 61 users
    sign_in(client, "acme")
    first = client.get("/admin/users", headers=host("acme")).get_data(as_text=True)
    assert len(re.findall(r"Member \d{3}", first)) == 50
    assert 'rel="next"' in first
    second = client.get("/admin/users?page=2", headers=host("acme")).get_data(as_text=True)
    assert len(re.findall(r"Member \d{3}", second)) == 10
    assert 'rel="prev"' in second
    assert 'rel="next"' not in second
    # The pager's own words are catalog messages with their numbers filled in, in either language.
    assert 'Page 2 of 2 · <span id="users-total">61 users</span>' in second
    chinese = client.get("/admin/users?page=2", headers={**host("acme"), **ZH}).get_data(as_text=True)
    assert '第 2 页，共 2 页 · <span id="users-total">61 位用户</span>' in chinese
    assert "上一页" in chinese
    for bad in ("0", "abc", "9" * 20):
        assert client.get(f"/admin/users?page={bad}", headers=host("acme")).status_code == 400
    refused = client.get("/admin/users?page=0", headers={**host("acme"), **ZH}).get_data(as_text=True)
    assert "页码必须是从 1 开始的整数。" in refused
