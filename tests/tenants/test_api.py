"""The REST API under /api/v1 and OAuth 2 (client credentials) at /oauth/*.

Every answer is checked against the error contract: JSON ``{status, code, message, errors?}`` whose
``status`` is the HTTP status, and never a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from core.db import uuid7
from core.permissions import Actor, all_names
from tenants import services
from tenants.models import AuditEntry, OAuthToken, User
from tests.conftest import PASSWORD, csrf_of, host, sign_in

ERROR_KEYS = {"status", "code", "message", "errors"}


# --------------------------------------------------------------------------- helpers


def checked(response):
    """Every API answer: never a 500, and errors in the one JSON shape."""
    assert response.status_code != 500, response.get_data(as_text=True)
    if response.status_code >= 400 and not response.headers.get("Content-Type", "").startswith("text/html"):
        body = response.get_json()
        assert isinstance(body, dict), response.get_data(as_text=True)
        if "error" in body and response.request.path.endswith(("/oauth/token", "/oauth/revoke")):
            return response  # RFC 6749 §5.2 error bodies on the OAuth endpoints
        assert {"status", "code", "message"} <= body.keys() <= ERROR_KEYS, body
        assert body["status"] == response.status_code
        assert isinstance(body["code"], str)
        assert isinstance(body["message"], str)
        assert body["message"]
    return response


def assert_error(response, status: int, code: str | None = None) -> dict[str, Any]:
    checked(response)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    if code is not None:
        assert body["code"] == code, body
    return body


def new_client(db, tenant, scopes, name: str = "integration") -> tuple[str, str]:
    with db.transaction(tenant) as s:
        made = services.create_client(s, Actor.system("test"), tenant, name=name, scopes=scopes)
        return made.client.client_id, made.secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def request_token(client, slug: str, client_id: str, secret: str, *, style: str = "basic",
                  scope: str | None = None):
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    headers = host(slug)
    if style == "basic":
        headers |= basic(client_id, secret)
    else:
        data |= {"client_id": client_id, "client_secret": secret}
    return checked(client.post("/oauth/token", headers=headers, data=data))


def token(client, db, tenant, scopes=None, *, slug: str = "acme") -> str:
    client_id, secret = new_client(db, tenant, sorted(scopes or all_names()))
    response = request_token(client, slug, client_id, secret)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def bearer(tok: str, slug: str = "acme") -> dict[str, str]:
    return {**host(slug), "Authorization": f"Bearer {tok}"}


def api(client, method: str, path: str, tok: str, slug: str = "acme", **kwargs):
    headers = bearer(tok, slug) | kwargs.pop("headers", {})
    return checked(client.open(path, method=method, headers=headers, **kwargs))


@pytest.fixture
def admin_token(client, db, tenant) -> str:
    return token(client, db, tenant)


# --------------------------------------------------------------------------- OAuth: tokens


@pytest.mark.parametrize("style", ["basic", "post"])
def test_client_credentials_token_with_either_client_auth_method(client, db, tenant, settings, style):
    client_id, secret = new_client(db, tenant, ["users.read", "audit.read"])
    response = request_token(client, "acme", client_id, secret, style=style)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] == settings.token_ttl_s
    assert set(body["scope"].split()) == {"users.read", "audit.read"}
    assert response.headers["Cache-Control"] == "no-store"
    me = api(client, "GET", "/api/v1/me", body["access_token"])
    assert me.status_code == 200
    assert me.get_json() == {"kind": "client", "label": f"client:{client_id}", "tenant": "acme",
                             "permissions": ["audit.read", "users.read"], "user": None}
    # Only a digest is kept: the token itself is nowhere in the control plane.
    with db.transaction() as s:
        stored = s.scalars(select(OAuthToken.token_digest)).all()
    assert body["access_token"] not in stored
    assert len(stored) == 1


def test_token_requests_are_rate_limited_per_tenant_and_address(app, client, db, tenant, other_tenant):
    client_id, secret = new_client(db, tenant, ["users.read"])
    limit = app.extensions["courtyard"].settings.token_requests_per_minute
    codes = [request_token(client, "acme", client_id, "wrong-" + str(i)).status_code for i in range(limit)]
    assert set(codes) == {401}
    refused = request_token(client, "acme", client_id, secret)
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "rate_limited"
    # Another tenant's endpoint keeps its own budget.
    other_id, other_secret = new_client(db, other_tenant, ["users.read"])
    assert request_token(client, "globex", other_id, other_secret).status_code == 200


def test_token_endpoint_refuses_bad_client_credentials_and_grants(client, db, tenant):
    client_id, secret = new_client(db, tenant, ["users.read"])
    wrong = request_token(client, "acme", client_id, secret + "x")
    assert wrong.status_code == 401
    assert wrong.get_json()["error"] == "invalid_client"
    unknown = request_token(client, "acme", "cy_nobody", secret)
    assert unknown.status_code == 401
    assert unknown.get_json()["error"] == "invalid_client"
    posted = request_token(client, "acme", client_id, "nope", style="post")
    assert posted.status_code in (400, 401)
    assert posted.get_json()["error"] == "invalid_client"
    grant = checked(client.post("/oauth/token", headers=host("acme") | basic(client_id, secret),
                                data={"grant_type": "password", "username": "a", "password": "b"}))
    assert grant.status_code == 400
    assert grant.get_json()["error"] == "unsupported_grant_type"
    # Tokens are issued on a tenant's host only: the public site has no clients.
    bare = checked(client.post("/oauth/token", headers={"Host": "localhost"} | basic(client_id, secret),
                               data={"grant_type": "client_credentials"}))
    assert bare.status_code == 404
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(OAuthToken)) == 0


def test_requested_scopes_are_narrowed_to_what_the_client_holds(client, db, tenant):
    client_id, secret = new_client(db, tenant, ["users.read", "audit.read"])
    response = request_token(client, "acme", client_id, secret, scope="users.read users.manage")
    assert response.status_code == 200, response.get_data(as_text=True)
    tok = response.get_json()["access_token"]
    assert response.get_json()["scope"] == "users.read"
    assert api(client, "GET", "/api/v1/me", tok).get_json()["permissions"] == ["users.read"]
    assert_error(api(client, "GET", "/api/v1/audit-log", tok), 403, "forbidden")


def test_unknown_or_unheld_scopes_are_invalid_scope(client, db, tenant):
    client_id, secret = new_client(db, tenant, ["users.read"])
    unknown = request_token(client, "acme", client_id, secret, scope="users.read launch.missiles")
    assert unknown.status_code == 400
    assert unknown.get_json()["error"] == "invalid_scope"
    assert "launch.missiles" in unknown.get_json()["error_description"]
    unheld = request_token(client, "acme", client_id, secret, scope="users.manage")
    assert unheld.status_code == 400
    assert unheld.get_json()["error"] == "invalid_scope"


def test_oauth_refusals_carry_rfc_6749_error_members(client, tenant):
    nul = client.post("/oauth/token", headers=host("acme"),
                      data={"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"})
    assert nul.status_code == 422
    body = nul.get_json()
    assert body["error"] == "invalid_request"
    assert "NUL" in body["error_description"]


def test_scopes_limit_what_a_token_may_do(client, db, tenant):
    tok = token(client, db, tenant, ["users.read"])
    assert api(client, "GET", "/api/v1/users", tok).status_code == 200
    assert api(client, "GET", "/api/v1/roles", tok).status_code == 200
    assert api(client, "GET", "/api/v1/departments", tok).status_code == 200
    refused = [
        ("POST", "/api/v1/users", {"email": "new@acme.test"}),
        ("POST", "/api/v1/departments", {"name": "Sales"}),
        ("PUT", "/api/v1/roles/sales/permissions", {"permissions": []}),
        ("GET", "/api/v1/audit-log", None),
        ("GET", "/api/v1/clients", None),
        ("POST", "/api/v1/clients", {"name": "x", "scopes": ["users.read"]}),
    ]
    for method, path, body in refused:
        response = api(client, method, path, tok, json=body)
        body_out = assert_error(response, 403, "forbidden")
        assert "permission" in body_out["message"], (method, path)
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


def test_revocation_endpoint_ends_a_token(client, db, tenant):
    client_id, secret = new_client(db, tenant, ["users.read"])
    tok = request_token(client, "acme", client_id, secret).get_json()["access_token"]
    other = request_token(client, "acme", client_id, secret).get_json()["access_token"]
    assert api(client, "GET", "/api/v1/me", tok).status_code == 200
    revoked = checked(client.post("/oauth/revoke", headers=host("acme") | basic(client_id, secret),
                                  data={"token": tok, "token_type_hint": "access_token"}))
    assert revoked.status_code == 200
    assert_error(api(client, "GET", "/api/v1/me", tok), 401, "invalid_token")
    # Only that token: the client's other token still works.
    assert api(client, "GET", "/api/v1/me", other).status_code == 200
    # RFC 7009: revoking again (or an unknown token) is not an error.
    again = checked(client.post("/oauth/revoke", headers=host("acme") | basic(client_id, secret),
                                data={"token": tok}))
    assert again.status_code == 200
    # A revocation needs the client's credentials.
    anonymous = checked(client.post("/oauth/revoke", headers=host("acme"), data={"token": other}))
    assert anonymous.status_code in (400, 401)
    assert api(client, "GET", "/api/v1/me", other).status_code == 200


def test_a_client_cannot_revoke_another_clients_token(client, db, tenant):
    a_id, a_secret = new_client(db, tenant, ["users.read"], name="a")
    b_id, b_secret = new_client(db, tenant, ["users.read"], name="b")
    tok_a = request_token(client, "acme", a_id, a_secret).get_json()["access_token"]
    response = checked(client.post("/oauth/revoke", headers=host("acme") | basic(b_id, b_secret),
                                   data={"token": tok_a}))
    assert response.status_code != 500
    assert api(client, "GET", "/api/v1/me", tok_a).status_code == 200


def test_revoking_the_client_revokes_its_tokens(client, db, tenant, admin_token):
    client_id, secret = new_client(db, tenant, ["users.read"], name="doomed")
    tok = request_token(client, "acme", client_id, secret).get_json()["access_token"]
    assert api(client, "GET", "/api/v1/users", tok).status_code == 200
    listed = api(client, "GET", "/api/v1/clients", admin_token).get_json()
    assert client_id in {c["client_id"] for c in listed}
    assert all("client_secret" not in c for c in listed)
    assert api(client, "DELETE", f"/api/v1/clients/{client_id}", admin_token).status_code == 204
    assert_error(api(client, "GET", "/api/v1/users", tok), 401, "invalid_token")
    refused = request_token(client, "acme", client_id, secret)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_client"
    listed = api(client, "GET", "/api/v1/clients", admin_token).get_json()
    assert next(c for c in listed if c["client_id"] == client_id)["revoked_at"] is not None
    assert_error(api(client, "DELETE", "/api/v1/clients/cy_nobody", admin_token), 404, "not_found")


def test_clients_created_through_the_api_show_their_secret_once(client, db, tenant, admin_token):
    created = api(client, "POST", "/api/v1/clients", admin_token, json={"name": "CRM sync", "scopes": ["users.read"]})
    assert created.status_code == 201
    body = created.get_json()
    assert body["scopes"] == ["users.read"]
    issued = request_token(client, "acme", body["client_id"], body["client_secret"])
    assert issued.status_code == 200
    unknown = api(client, "POST", "/api/v1/clients", admin_token, json={"name": "x", "scopes": ["root"]})
    assert "scopes" in assert_error(unknown, 422, "validation_failed")["errors"]


def test_an_expired_token_is_401(client, db, tenant):
    tok = token(client, db, tenant, ["users.read"])
    assert api(client, "GET", "/api/v1/me", tok).status_code == 200
    with db.transaction() as s:
        # Well in the past: the check compares with the database's now(), which in this rolled-back test
        # transaction is the time the test started.
        s.execute(update(OAuthToken).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    body = assert_error(api(client, "GET", "/api/v1/me", tok), 401, "invalid_token")
    assert "expired" in body["message"]


def test_a_token_works_only_on_its_own_tenant(client, db, tenant, other_tenant):
    tok = token(client, db, tenant, ["users.read"])
    assert api(client, "GET", "/api/v1/users", tok).status_code == 200
    prefixed = checked(client.get("/t/acme/api/v1/users", headers={"Host": "localhost",
                                                                   "Authorization": f"Bearer {tok}"}))
    assert prefixed.status_code == 200
    unknown_object = assert_error(api(client, "GET", f"/api/v1/users/{uuid7()}", tok), 404, "not_found")
    for response in (
        api(client, "GET", "/api/v1/users", tok, slug="globex"),
        api(client, "GET", "/api/v1/me", tok, slug="globex"),
        checked(client.get("/t/globex/api/v1/users", headers={"Host": "localhost", "Authorization": f"Bearer {tok}"})),
    ):
        body = assert_error(response, 404, "not_found")
        assert body.keys() == unknown_object.keys()
    # The public site is no tenant at all.
    assert_error(checked(client.get("/api/v1/me", headers={"Host": "localhost", "Authorization": f"Bearer {tok}"})),
                 404, "not_found")
    # A token of globex's client cannot be had with acme's client on globex's host.
    client_id, secret = new_client(db, tenant, ["users.read"])
    there = request_token(client, "globex", client_id, secret)
    assert there.status_code == 401
    assert there.get_json()["error"] == "invalid_client"


def test_authorization_header_must_be_a_bearer_token(client, tenant):
    for value in ("Token abc", "Bearer ", "Bearer not-a-token", "Basic dXNlcjpwYXNz"):
        response = checked(client.get("/api/v1/me", headers=host("acme") | {"Authorization": value}))
        assert_error(response, 401)
    assert_error(checked(client.get("/api/v1/me", headers=host("acme"))), 401, "not_authenticated")


# --------------------------------------------------------------------------- the OpenAPI document and docs


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_is_valid_and_lists_every_api_route(client, app, tenant):
    response = client.get("/api/v1/openapi.json", headers=host("acme"))
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] == "Courtyard API"
    assert doc["info"]["version"] == "v1"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}
    # Every reference resolves.
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref
    # Every /api/ route of the URL map is documented with its methods, and each operation is well formed.
    expected: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and not rule.endpoint.startswith("api-docs."):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
            expected.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert expected
    assert set(doc["paths"]) == set(expected)
    for path, methods in expected.items():
        item = doc["paths"][path]
        assert methods <= set(item), path
        declared_in_path = set(re.findall(r"{([^}]+)}", path))
        for method in methods:
            op = item[method]
            assert op.get("summary"), f"{method} {path} has no summary"
            assert any(code.startswith("2") for code in op["responses"]), f"{method} {path}"
            params = [p for p in op.get("parameters", []) + item.get("parameters", []) if p.get("in") == "path"]
            assert {p["name"] for p in params} == declared_in_path, f"{method} {path}"
    assert {"/api/v1/users", "/api/v1/users/{user_id}", "/api/v1/departments", "/api/v1/audit-log",
            "/api/v1/clients", "/api/v1/roles/{key}/permissions", "/api/v1/me"} <= set(doc["paths"])


def test_openapi_error_schema_is_the_shape_errors_really_have(client, tenant):
    doc = client.get("/api/v1/openapi.json", headers=host("acme")).get_json()
    ref = doc["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"]["$ref"]
    props = _resolve(doc, ref)["properties"]
    actual = assert_error(checked(client.get("/api/v1/me", headers=host("acme"))), 401)
    type_of = {int: "integer", str: "string", dict: "object"}
    for key, value in actual.items():
        assert key in props, key
        assert props[key]["type"] == type_of[type(value)], (key, props[key])


def test_swagger_ui_is_served_from_local_assets(client, tenant):
    response = client.get("/api/v1/docs", headers=host("acme"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page.lower()
    assert "/api/v1/openapi.json" in page
    # An intranet install has no internet: no absolute URLs at all, no CDN.
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", page), page
    assert "cdn" not in page.lower()
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/vendor/swagger-ui-dist/"), asset
        fetched = client.get(asset, headers=host("acme"))
        assert fetched.status_code == 200, asset
        assert len(fetched.get_data()) > 1000, asset


# --------------------------------------------------------------------------- users


def test_users_create_list_read_and_update(client, db, tenant, admin_token):
    created = api(client, "POST", "/api/v1/users", admin_token,
                  json={"email": "Li.Lei@Acme.test", "name": "李雷", "role": "sales"})
    assert created.status_code == 201, created.get_data(as_text=True)
    user = created.get_json()
    assert user["email"] == "li.lei@acme.test"
    assert user["name"] == "李雷"
    assert user["role"] == "sales"
    assert user["version"] == 1
    assert uuid.UUID(user["id"]).version == 7
    listed = api(client, "GET", "/api/v1/users", admin_token, query_string={"q": "李"})
    assert [u["email"] for u in listed.get_json()] == ["li.lei@acme.test"]
    assert "X-Pagination" in listed.headers
    one = api(client, "GET", f"/api/v1/users/{user['id']}", admin_token)
    assert one.status_code == 200
    assert one.headers["ETag"] == 'W/"1"'
    changed = api(client, "PATCH", f"/api/v1/users/{user['id']}", admin_token,
                  json={"name": "Li Lei 李雷", "role": "manager", "locale": "zh"}, headers={"If-Match": 'W/"1"'})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert changed.get_json()["role"] == "manager"
    assert changed.get_json()["locale"] == "zh"
    assert changed.headers["ETag"] == f'W/"{changed.get_json()["version"]}"'
    assert changed.get_json()["version"] > 1
    off = api(client, "PATCH", f"/api/v1/users/{user['id']}", admin_token, json={"active": False})
    assert off.get_json()["active"] is False
    inactive = api(client, "GET", "/api/v1/users", admin_token, query_string={"active": "false"}).get_json()
    assert [u["id"] for u in inactive] == [user["id"]]
    duplicate = api(client, "POST", "/api/v1/users", admin_token, json={"email": "li.lei@acme.test"})
    assert "email" in assert_error(duplicate, 409, "email_taken")["errors"]
    assert_error(api(client, "GET", f"/api/v1/users/{uuid7()}", admin_token), 404, "not_found")
    assert_error(api(client, "PATCH", f"/api/v1/users/{uuid7()}", admin_token, json={"name": "x"}), 404, "not_found")
    assert_error(checked(client.get("/api/v1/users/not-a-uuid", headers=bearer(admin_token))), 404)


def test_patch_with_a_stale_if_match_is_a_412_and_changes_nothing(client, db, tenant, admin_token):
    user = api(client, "POST", "/api/v1/users", admin_token, json={"email": "han.meimei@acme.test"}).get_json()
    path = f"/api/v1/users/{user['id']}"
    etag = api(client, "GET", path, admin_token).headers["ETag"]
    first = api(client, "PATCH", path, admin_token, json={"name": "First"}, headers={"If-Match": etag})
    assert first.status_code == 200
    assert first.headers["ETag"] != etag
    # A second writer still holding the old ETag loses, and nothing of its change lands.
    second = api(client, "PATCH", path, admin_token, json={"name": "Second"}, headers={"If-Match": etag})
    assert_error(second, 412, "version_conflict")
    assert api(client, "GET", path, admin_token).get_json()["name"] == "First"
    stale_active = api(client, "PATCH", path, admin_token, json={"active": False}, headers={"If-Match": etag})
    assert_error(stale_active, 412, "version_conflict")
    assert api(client, "GET", path, admin_token).get_json()["active"] is True
    assert_error(api(client, "PATCH", path, admin_token, json={"name": "x"}, headers={"If-Match": "yesterday"}),
                 400, "bad_if_match")
    current = api(client, "GET", path, admin_token).headers["ETag"]
    assert api(client, "PATCH", path, admin_token, json={"name": "Third"},
               headers={"If-Match": current}).status_code == 200


def test_the_last_admin_cannot_be_demoted_or_deactivated(client, db, tenant, admin_token):
    admin = api(client, "GET", "/api/v1/users", admin_token).get_json()[0]
    path = f"/api/v1/users/{admin['id']}"
    assert_error(api(client, "PATCH", path, admin_token, json={"role": "sales"}), 409, "last_admin")
    assert_error(api(client, "PATCH", path, admin_token, json={"active": False}), 409, "last_admin")
    assert api(client, "GET", path, admin_token).get_json()["role"] == "admin"


# --------------------------------------------------------------------------- departments


def test_departments_create_move_and_delete(client, db, tenant, admin_token):
    def create(name, parent=None):
        response = api(client, "POST", "/api/v1/departments", admin_token, json={"name": name, "parent_id": parent})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    sales = create("销售部 Sales")
    north = create("华北 North", sales["id"])
    east = create("华东 East", sales["id"])
    service = create("Service")
    tree = api(client, "GET", "/api/v1/departments", admin_token).get_json()
    assert {d["id"] for d in tree} == {sales["id"], north["id"], east["id"], service["id"]}
    order = [d["id"] for d in tree]
    # Tree order: a department comes after its parent, with its siblings.
    assert order.index(sales["id"]) < order.index(north["id"])
    assert order.index(sales["id"]) < order.index(east["id"])
    assert abs(order.index(north["id"]) - order.index(east["id"])) == 1
    # Move North under Service.
    moved = api(client, "PUT", f"/api/v1/departments/{north['id']}", admin_token,
                json={"name": "华北 North", "parent_id": service["id"]})
    assert moved.status_code == 200
    assert moved.get_json()["parent_id"] == service["id"]
    # A department under itself or under its own descendant: refused, nothing moves.
    for parent in (sales["id"], east["id"]):
        refused = api(client, "PUT", f"/api/v1/departments/{sales['id']}", admin_token,
                      json={"name": "销售部 Sales", "parent_id": parent})
        assert "parent_id" in assert_error(refused, 422, "validation_failed")["errors"]
    tree = {d["id"]: d for d in api(client, "GET", "/api/v1/departments", admin_token).get_json()}
    assert tree[sales["id"]]["parent_id"] is None
    assert tree[east["id"]]["parent_id"] == sales["id"]
    unknown_parent = api(client, "POST", "/api/v1/departments", admin_token,
                         json={"name": "Orphan", "parent_id": str(uuid7())})
    assert_error(unknown_parent, 422, "validation_failed")
    assert_error(api(client, "PUT", f"/api/v1/departments/{uuid7()}", admin_token,
                     json={"name": "x", "parent_id": None}), 404, "not_found")
    # A department with sub-departments stays; an empty one goes, and its users lose it.
    assert_error(api(client, "DELETE", f"/api/v1/departments/{sales['id']}", admin_token), 409,
                 "department_has_children")
    user = api(client, "POST", "/api/v1/users", admin_token,
               json={"email": "east@acme.test", "department_id": east["id"]}).get_json()
    assert api(client, "DELETE", f"/api/v1/departments/{east['id']}", admin_token).status_code == 204
    assert api(client, "GET", f"/api/v1/users/{user['id']}", admin_token).get_json()["department_id"] is None
    assert api(client, "DELETE", f"/api/v1/departments/{sales['id']}", admin_token).status_code == 204
    assert_error(api(client, "DELETE", f"/api/v1/departments/{sales['id']}", admin_token), 404, "not_found")
    remaining = {d["id"] for d in api(client, "GET", "/api/v1/departments", admin_token).get_json()}
    assert remaining == {north["id"], service["id"]}


def test_department_names_are_unique_among_siblings(client, tenant, admin_token):
    parent = api(client, "POST", "/api/v1/departments", admin_token, json={"name": "Sales"}).get_json()
    assert api(client, "POST", "/api/v1/departments", admin_token,
               json={"name": "East", "parent_id": parent["id"]}).status_code == 201
    twin = api(client, "POST", "/api/v1/departments", admin_token, json={"name": "East", "parent_id": parent["id"]})
    assert_error(twin, 409)


# --------------------------------------------------------------------------- roles


def test_role_permissions_are_replaced_and_the_admin_role_is_locked(client, db, tenant, admin_token):
    roles = {r["key"]: r for r in api(client, "GET", "/api/v1/roles", admin_token).get_json()}
    assert {"admin", "manager", "sales", "service"} <= set(roles)
    put = api(client, "PUT", "/api/v1/roles/sales/permissions", admin_token,
              json={"permissions": ["users.read", "audit.read", "users.read"]})
    assert put.status_code == 200
    assert put.get_json()["permissions"] == ["audit.read", "users.read"]
    roles = {r["key"]: r for r in api(client, "GET", "/api/v1/roles", admin_token).get_json()}
    assert roles["sales"]["permissions"] == ["audit.read", "users.read"]
    locked = api(client, "PUT", "/api/v1/roles/admin/permissions", admin_token, json={"permissions": []})
    assert_error(locked, 409, "admin_role_locked")
    unknown_perm = api(client, "PUT", "/api/v1/roles/sales/permissions", admin_token,
                       json={"permissions": ["launch.missiles"]})
    assert "permissions" in assert_error(unknown_perm, 422, "validation_failed")["errors"]
    assert_error(api(client, "PUT", "/api/v1/roles/nobody/permissions", admin_token, json={"permissions": []}),
                 404, "not_found")
    roles = {r["key"]: r for r in api(client, "GET", "/api/v1/roles", admin_token).get_json()}
    assert roles["sales"]["permissions"] == ["audit.read", "users.read"]


# --------------------------------------------------------------------------- audit


def test_audit_log_records_who_changed_what_before_and_after(client, db, tenant, admin_token):
    user = api(client, "POST", "/api/v1/users", admin_token, json={"email": "wang@acme.test", "name": "王"}).get_json()
    patched = api(client, "PATCH", f"/api/v1/users/{user['id']}", admin_token,
                  json={"name": "王芳", "role": "service"}, headers={"X-Request-ID": "req-audit-1"})
    assert patched.status_code == 200
    assert patched.headers["X-Request-ID"] == "req-audit-1"
    entries = api(client, "GET", "/api/v1/audit-log", admin_token, query_string={"entity_type": "user"}).get_json()
    newest = entries[0]
    assert newest["action"] == "user.updated"
    assert newest["entity_id"] == user["id"]
    assert newest["before"]["name"] == "王"
    assert newest["after"]["name"] == "王芳"
    assert newest["before"]["role_id"] != newest["after"]["role_id"]
    assert newest["actor_label"].startswith("client:cy_")
    assert newest["request_id"] == "req-audit-1"
    assert entries[1]["action"] == "user.created"
    assert entries[1]["before"] is None
    assert entries[1]["after"]["email"] == "wang@acme.test"
    dept = api(client, "POST", "/api/v1/departments", admin_token, json={"name": "Ops"}).get_json()
    api(client, "PUT", f"/api/v1/departments/{dept['id']}", admin_token, json={"name": "Operations", "parent_id": None})
    log = api(client, "GET", "/api/v1/audit-log", admin_token, query_string={"entity_type": "department"}).get_json()
    assert log[0]["before"] == {"name": "Ops", "parent_id": None}
    assert log[0]["after"] == {"name": "Operations", "parent_id": None}
    # Paging backwards: ?before=<id> gives strictly older entries.
    everything = api(client, "GET", "/api/v1/audit-log", admin_token, query_string={"limit": 500}).get_json()
    older = api(client, "GET", "/api/v1/audit-log", admin_token,
                query_string={"before": everything[1]["id"], "limit": 500}).get_json()
    assert [e["id"] for e in older] == [e["id"] for e in everything[2:]]
    # A refused change writes no audit entry.
    with db.transaction(tenant) as s:
        count = s.scalar(select(func.count()).select_from(AuditEntry))
    api(client, "PATCH", f"/api/v1/users/{user['id']}", admin_token, json={"role": "nope"})
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == count


# --------------------------------------------------------------------------- sessions and CSRF


def test_session_api_calls_need_the_csrf_header_for_unsafe_methods(client, db, tenant):
    assert sign_in(client, "acme").status_code == 302
    csrf = csrf_of(client, "acme")
    me = checked(client.get("/api/v1/me", headers=host("acme")))
    assert me.status_code == 200
    assert me.get_json()["kind"] == "user"
    assert me.get_json()["user"]["email"] == "admin@acme.test"
    body = {"name": "Sales"}
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        refused = checked(client.post("/api/v1/departments", headers=host("acme") | headers, json=body))
        assert_error(refused, 400, "csrf_failed")
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.entity_type == "department")) == 0
    created = checked(client.post("/api/v1/departments", headers=host("acme") | {"X-CSRF-Token": csrf}, json=body))
    assert created.status_code == 201
    dept = created.get_json()["id"]
    assert_error(checked(client.delete(f"/api/v1/departments/{dept}", headers=host("acme"))), 400, "csrf_failed")
    admin_id = me.get_json()["user"]["id"]
    assert_error(checked(client.patch(f"/api/v1/users/{admin_id}", headers=host("acme"), json={"name": "x"})),
                 400, "csrf_failed")
    assert checked(client.delete(f"/api/v1/departments/{dept}",
                                 headers=host("acme") | {"X-CSRF-Token": csrf})).status_code == 204
    # The audit entry names the signed-in user.
    log = checked(client.get("/api/v1/audit-log", headers=host("acme"))).get_json()
    assert log[0]["action"] == "department.deleted"
    assert log[0]["actor_label"] == "admin@acme.test"


def test_without_a_session_or_token_the_api_is_401(client, tenant):
    for method, path in (("GET", "/api/v1/users"), ("GET", "/api/v1/me"), ("GET", "/api/v1/audit-log")):
        assert_error(checked(client.open(path, method=method, headers=host("acme"))), 401, "not_authenticated")


# --------------------------------------------------------------------------- bad input


def test_malformed_json_is_a_400_json_error(client, tenant, admin_token):
    response = api(client, "POST", "/api/v1/departments", admin_token, data='{"name": "Sales",',
                   content_type="application/json")
    assert_error(response, 400)
    assert response.is_json


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(client, db, tenant, admin_token, content_type):
    response = api(client, "POST", "/api/v1/departments", admin_token, data="name=Sales", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.entity_type == "department")) == 0


def test_a_body_over_the_limit_is_413(client, tenant, admin_token, settings):
    huge = '{"name": "' + "x" * (settings.max_body_bytes + 10) + '"}'
    response = api(client, "POST", "/api/v1/departments", admin_token, data=huge, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


def test_unknown_fields_are_422_with_field_errors_and_nothing_is_written(client, db, tenant, admin_token):
    response = api(client, "POST", "/api/v1/users", admin_token,
                   json={"email": "ok@acme.test", "nickname": "Bob", "is_admin": True})
    body = assert_error(response, 422, "validation_failed")
    assert set(body["errors"]) == {"nickname", "is_admin"}
    patched = api(client, "PATCH", f"/api/v1/users/{uuid7()}", admin_token, json={"password_hash": "x"})
    assert "password_hash" in assert_error(patched, 422)["errors"]
    query = api(client, "GET", "/api/v1/audit-log", admin_token, query_string={"limit": "many"})
    assert "limit" in assert_error(query, 422)["errors"]
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@acme.test", "spaces in@acme.test"])
def test_an_invalid_email_is_422_on_the_email_field(client, db, tenant, admin_token, email):
    body = assert_error(api(client, "POST", "/api/v1/users", admin_token, json={"email": email}), 422)
    assert "email" in body["errors"]
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


def test_wrong_types_and_missing_fields_are_422(client, tenant, admin_token):
    assert "name" in assert_error(api(client, "POST", "/api/v1/departments", admin_token, json={}), 422)["errors"]
    wrong = api(client, "POST", "/api/v1/departments", admin_token, json={"name": 5, "parent_id": "x"})
    assert set(assert_error(wrong, 422)["errors"]) == {"name", "parent_id"}
    assert_error(api(client, "POST", "/api/v1/departments", admin_token, json=["not", "an", "object"]), 422)


def test_unknown_routes_and_methods_answer_json(client, tenant, admin_token):
    assert_error(api(client, "GET", "/api/v1/nothing-here", admin_token), 404, "not_found")
    assert_error(api(client, "DELETE", "/api/v1/users", admin_token), 405, "method_not_allowed")


def test_an_unknown_tenant_host_is_404(client, tenant, admin_token):
    for headers, path in (({"Host": "nosuch.localhost"}, "/api/v1/me"), ({"Host": "localhost"}, "/t/nosuch/api/v1/me")):
        response = checked(client.get(path, headers=headers | {"Authorization": f"Bearer {admin_token}"}))
        assert_error(response, 404)
    token_there = checked(client.post("/oauth/token", headers={"Host": "nosuch.localhost"},
                                      data={"grant_type": "client_credentials"}))
    assert_error(token_there, 404)


@pytest.fixture
def statements(engine):
    """SQL sent to PostgreSQL while the fixture is active (to prove what was not touched)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_suspended_tenant_is_refused_before_its_data_is_touched(client, db, tenant, admin_token, statements):
    users = api(client, "GET", "/api/v1/users", admin_token)
    assert users.status_code == 200
    # The control: a normal request does reach the tenant's schema, so the check below can fail.
    assert any(tenant.schema in s for s in statements)
    admin_id = users.get_json()[0]["id"]
    with db.transaction() as s:
        services.set_status(s, "acme", "suspended")
    statements.clear()
    for method, path, body in (("GET", "/api/v1/users", None), ("PATCH", f"/api/v1/users/{admin_id}", {"name": "x"}),
                               ("GET", "/api/v1/me", None)):
        assert_error(api(client, method, path, admin_token, json=body), 403, "tenant_suspended")
    page = client.get("/sign-in", headers=host("acme"))
    assert page.status_code == 403
    token_request = checked(client.post("/oauth/token", headers=host("acme"),
                                        data={"grant_type": "client_credentials"}))
    assert_error(token_request, 403, "tenant_suspended")
    # (The tenant lookup itself goes straight to the driver, outside any transaction: it is not in
    # `statements`, and a refused request may send nothing else at all.)
    assert not [s for s in statements if tenant.schema in s]
    with db.transaction() as s:
        services.set_status(s, "acme", "active")
    assert api(client, "GET", f"/api/v1/users/{admin_id}", admin_token).get_json()["name"] != "x"


def test_a_deleted_tenant_is_answered_without_a_500(client, db, tenant, admin_token):
    with db.transaction() as s:
        services.delete_tenant(s, "acme")
    for method, path in (("GET", "/api/v1/users"), ("GET", "/api/v1/me"), ("DELETE", f"/api/v1/departments/{uuid7()}")):
        body = assert_error(api(client, method, path, admin_token), 410, "tenant_deleted")
        assert "deleted" in body["message"]
    for path in ("/sign-in", "/home", "/"):
        page = client.get(path, headers=host("acme"))
        assert page.status_code == 410, path
    assert_error(checked(client.post("/oauth/token", headers=host("acme"),
                                     data={"grant_type": "client_credentials"})), 410, "tenant_deleted")
    assert_error(checked(client.get("/t/acme/api/v1/me", headers={"Host": "localhost"})), 410, "tenant_deleted")


def test_a_disabled_user_session_no_longer_reaches_the_api(client, db, tenant, admin_token):
    created = api(client, "POST", "/api/v1/users", admin_token,
                  json={"email": "temp@acme.test", "password": PASSWORD, "role": "sales"}).get_json()
    browser = client.application.test_client()
    assert sign_in(browser, "acme", "temp@acme.test").status_code == 302
    assert checked(browser.get("/api/v1/me", headers=host("acme"))).status_code == 200
    api(client, "PATCH", f"/api/v1/users/{created['id']}", admin_token, json={"active": False})
    assert_error(checked(browser.get("/api/v1/me", headers=host("acme"))), 401, "not_authenticated")


def test_the_caller_is_settled_before_the_body_is_read(client, db, tenant, other_tenant, admin_token):
    """Another tenant's token gets its 404, and no token its 401, even when the body is wrong too."""
    theirs = token(client, db, other_tenant, slug="globex")
    bad = {"bogus": 1}
    assert_error(api(client, "POST", "/api/v1/users", theirs, json=bad), 404, "not_found")
    assert_error(api(client, "GET", "/api/v1/audit-log", theirs, query_string={"limit": "x"}), 404, "not_found")
    assert_error(api(client, "POST", "/api/v1/users", "not-a-token", json=bad), 401, "invalid_token")
    # No credentials at all: 401, not a CSRF failure (there is no signed-in session to protect).
    assert_error(checked(client.post("/api/v1/users", headers=host("acme"), json=bad)), 401, "not_authenticated")
    assert_error(checked(client.get("/api/v1/audit-log?limit=x", headers=host("acme"))), 401, "not_authenticated")
    # With the right token the same body is judged on its fields.
    assert "bogus" in assert_error(api(client, "POST", "/api/v1/users", admin_token, json=bad), 422)["errors"]


def test_a_user_manager_cannot_create_or_promote_anyone_to_a_bigger_role(client, db, tenant):
    # The sales role's own functions (its CRM areas) are within this client's; the admin's are not.
    from core.permissions import default_grants

    limited = token(client, db, tenant, ["users.read", "users.manage", *default_grants("sales")])
    created = api(client, "POST", "/api/v1/users", limited,
                  json={"email": "mole@acme.test", "role": "admin", "password": "a long enough secret"})
    assert created.status_code == 403
    assert created.get_json()["code"] == "forbidden"
    ok = api(client, "POST", "/api/v1/users", limited,
             json={"email": "clerk@acme.test", "role": "sales", "password": "a long enough secret"})
    assert ok.status_code == 201
    promoted = api(client, "PATCH", f"/api/v1/users/{ok.get_json()['id']}", limited, json={"role": "admin"})
    assert promoted.status_code == 403
    with db.transaction(tenant) as s:
        assert services.find_user_by_email(s, "mole@acme.test") is None
        assert services.find_user_by_email(s, "clerk@acme.test").role.key == "sales"


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("GET", "/api/v1/users?q=%00", {}),
    ("POST", "/api/v1/departments", {"json": {"name": "Bad\u0000Name"}}),
    ("PATCH", "/api/v1/users/{me}", {"headers": {"If-Match": 'W/"\u00b2"'}, "json": {"name": "x"}}),
])
def test_nul_bytes_and_odd_digits_are_a_4xx_never_a_500(client, db, tenant, admin_token, method, path, kwargs):
    with db.transaction(tenant) as s:
        me = services.find_user_by_email(s, "admin@acme.test").id
    response = api(client, method, path.format(me=me), admin_token, **kwargs)
    assert 400 <= response.status_code < 500
    assert response.get_json()["code"] in ("invalid_value", "bad_if_match", "validation_failed")


def test_a_nul_in_the_tenant_path_is_a_404(client, tenant):
    assert client.get("/t/a%00b/sign-in").status_code == 404


def test_each_workspace_has_its_own_api_quota(app, client, db, tenant, other_tenant):
    acme_token, globex_token = token(client, db, tenant), token(client, db, other_tenant, slug="globex")
    runtime = app.extensions["courtyard"]
    previous = runtime.settings
    runtime.settings = previous.with_overrides(api_requests_per_minute=3)
    try:
        answers = [api(client, "GET", "/api/v1/me", acme_token) for _ in range(4)]
        globex = api(client, "GET", "/api/v1/me", globex_token, slug="globex")
    finally:
        runtime.settings = previous
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    limited = answers[3]
    assert_error(limited, 429, "rate_limited")
    # When the next call fits as the window slides: up to two windows away, never 0.
    assert 1 <= int(limited.headers["Retry-After"]) <= 120
    assert limited.headers["Retry-After"] == limited.headers["X-RateLimit-Reset"]
    assert "too many API requests" in limited.get_json()["message"]
    assert globex.status_code == 200, "another workspace's calls do not spend acme's quota"
    assert globex.headers["X-RateLimit-Remaining"] == "2"
