"""Requests for different tenants, interleaved on the same small pool, never see each other's data.

The real app runs in a threaded werkzeug server on 127.0.0.1 with an engine of two pooled
connections, so every connection serves both tenants over and over; a thread pool fires API calls
for both tenants at once (reads, and writes that commit), and every answer must hold its own
tenant's records only. Everything is committed for real (``committed_db``) and dropped afterwards.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from core.db import Database, make_engine
from core.permissions import Actor, all_names
from courtyard.app import create_app
from tenants import services
from tenants.models import Department
from tests.conftest import provision, unique_slug

ROUNDS = 12
WRITES_PER_TENANT = 8
WORKERS = 8


@dataclass
class Workspace:
    slug: str
    tenant: Any
    token: str
    emails: set[str]
    user_ids: set[str]
    department_ids: set[str]
    department_names: set[str]
    client_id: str
    markers: set[str] = field(default_factory=set)


def make_workspace(db: Database, word: str) -> Workspace:
    slug = unique_slug(word)
    tenant, admin_id = provision(db, slug, name=f"{word.title()} {slug}")
    with db.transaction(tenant) as s:
        actor = Actor.system("concurrency-test")
        dept_names = {f"{word}-{kind}" for kind in ("sales", "service", "东区")}
        depts = [services.save_department(s, actor, name=name, parent_id=None) for name in sorted(dept_names)]
        users = [services.create_user(s, actor, email=f"{word}{i}@{slug}.test", name=f"{word} person {i}",
                                      department_id=depts[i % len(depts)].id) for i in range(4)]
        made = services.create_client(s, actor, tenant, name=f"{word} client", scopes=sorted(all_names()))
        token, _row = services.issue_token(s, made.client, made.client.scopes, 3600)
        emails = {u.email for u in users} | {f"admin@{slug}.test"}
        user_ids = {str(u.id) for u in users} | {str(admin_id)}
        ws = Workspace(slug, tenant, token, emails, user_ids, {str(d.id) for d in depts}, dept_names,
                       made.client.client_id)
    ws.markers = {slug, str(tenant.id), tenant.id.hex, ws.client_id, *emails, *user_ids, *ws.department_ids,
                  *dept_names}
    return ws


@pytest.fixture
def live(settings, committed_db, redis_client) -> Iterator[tuple[int, dict[str, Workspace]]]:
    spaces = {w: make_workspace(committed_db, w) for w in ("north", "south")}
    assert settings.database_url is not None
    # Two connections for all request threads: every pooled connection serves both tenants in turn.
    engine = make_engine(settings.database_url, pool_size=2, max_overflow=0)
    app = create_app(settings, engine=engine, redis=redis_client)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="courtyard-live", daemon=True)
    thread.start()
    try:
        yield server.server_port, spaces
    finally:
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()
        engine.dispose()


def call(port: int, slug: str, token: str, method: str, path: str, body: dict[str, Any] | None = None,
         ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": f"{slug}.localhost:{port}", "Authorization": f"Bearer {token}",
                   "X-Request-ID": uuid.uuid4().hex}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read().decode()
        assert response.getheader("X-Request-ID") == headers["X-Request-ID"]
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def test_interleaved_requests_for_two_tenants_never_see_each_others_data(live, committed_db):
    port, spaces = live
    north, south = spaces["north"], spaces["south"]
    other = {"north": south, "south": north}

    def job(word: str, kind: str, i: int) -> tuple[str, str, int, Any]:
        ws = spaces[word]
        if kind == "users":
            status, body = call(port, ws.slug, ws.token, "GET", "/api/v1/users?page_size=100")
        elif kind == "departments":
            status, body = call(port, ws.slug, ws.token, "GET", "/api/v1/departments")
        elif kind == "me":
            status, body = call(port, ws.slug, ws.token, "GET", "/api/v1/me")
        elif kind == "user":
            user_id = sorted(ws.user_ids)[i % len(ws.user_ids)]
            status, body = call(port, ws.slug, ws.token, "GET", f"/api/v1/users/{user_id}")
        elif kind == "foreign":
            # Another tenant's record, asked for with this tenant's own token: not there.
            user_id = sorted(other[word].user_ids)[i % len(other[word].user_ids)]
            status, body = call(port, ws.slug, ws.token, "GET", f"/api/v1/users/{user_id}")
        elif kind == "audit":
            status, body = call(port, ws.slug, ws.token, "GET", "/api/v1/audit-log?limit=200")
        else:
            status, body = call(port, ws.slug, ws.token, "POST", "/api/v1/departments",
                                {"name": f"{word}-new-{i}", "parent_id": None})
        return word, kind, status, body

    kinds = ("users", "departments", "me", "user", "foreign", "audit")
    jobs: list[tuple[str, str, int]] = []
    for i in range(ROUNDS):
        for kind in kinds:
            jobs += [("north", kind, i), ("south", kind, i)]
    for i in range(WRITES_PER_TENANT):
        jobs.insert(i * len(jobs) // WRITES_PER_TENANT, ("north", "write", i))
        jobs.insert(i * len(jobs) // WRITES_PER_TENANT + 1, ("south", "write", i))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda j: job(*j), jobs))

    assert len(results) == len(jobs)
    for word, kind, status, body in results:
        ws, them = spaces[word], other[word]
        text = json.dumps(body, ensure_ascii=False)
        leaked = {m for m in them.markers if m in text}
        assert not leaked, f"{word} {kind} saw the other tenant's {leaked}"
        if kind == "foreign":
            assert status == 404, body
            assert body["code"] == "not_found"
            continue
        assert status == (201 if kind == "write" else 200), (word, kind, body)
        if kind == "users":
            assert {u["email"] for u in body} == ws.emails
        elif kind == "departments":
            names = {d["name"] for d in body}
            assert ws.department_names <= names
            assert all(n.startswith(word) for n in names), names
        elif kind == "me":
            assert body["tenant"] == ws.slug
            assert body["label"] == f"client:{ws.client_id}"
        elif kind == "user":
            assert body["id"] in ws.user_ids
            assert body["email"] in ws.emails
        elif kind == "audit":
            assert body
            assert all(e["entity_id"] not in them.user_ids | them.department_ids for e in body)
        else:
            assert body["name"].startswith(f"{word}-new-")

    # Every write landed in its own tenant's schema, and only there.
    for word, ws in spaces.items():
        with committed_db.transaction(ws.tenant) as s:
            names = set(s.scalars(select(Department.name)))
        assert names == ws.department_names | {f"{word}-new-{i}" for i in range(WRITES_PER_TENANT)}
