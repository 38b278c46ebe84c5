"""Where a browser may be sent after signing in (``next=``): this site and this tenant only (finding 6).

After a genuine sign-in at ``localhost/t/acme/sign-in``, a ``next=`` naming ``/t/globex/…`` (or reaching it
through ``..``, percent-encoded dots or slashes, backslashes) showed the attacker's workspace under the
host the victim had just typed a password into.
"""

from __future__ import annotations

import pytest

from core.tenancy import NEXT_MAX_CHARS, local_path
from tests.conftest import PASSWORD, _csrf_from, host

#: Targets that must never be followed, whatever the site: another tenant, another host, or garbage.
REFUSED = {
    "another tenant": "/t/globex/home",
    "another tenant, bare prefix": "/t/globex",
    "dot-dot out of the prefix": "/../t/globex/home",
    "dot-dot deep": "/admin/users/../../../t/globex/admin/users",
    "dot-dot after our own prefix": "/t/acme/../globex/home",
    "encoded dots": "/%2e%2e/t/globex/home",
    "encoded dots, upper case": "/%2E%2E/t/globex/home",
    "encoded dots and slashes": "/%2e%2e%2ft%2fglobex%2fhome",
    "encoded t": "/%74/globex/home",
    "double-encoded dots": "/%252e%252e/t/globex/home",
    "backslashes": "\\t\\globex\\home",
    "backslash dot-dot": "/home\\..\\..\\t\\globex\\home",
    "encoded backslash": "/home%5c..%5c..%5ct%5cglobex",
    "a similar slug": "/t/acmex/home",
    "scheme-relative": "//evil.example/home",
    "backslash host": "/\\evil.example/home",
    "absolute URL": "https://evil.example/home",
    "javascript": "javascript:alert(1)",
    "no leading slash": "home",
    "tab": "/\t/evil.example",
    "line break": "/home\r\nSet-Cookie: x=y",
    "encoded line break": "/home%0d%0aSet-Cookie:%20x=y",
    "NUL": "/home\x00",
    "invalid UTF-8": "/%ff%fe",
    "too long": "/" + "a" * NEXT_MAX_CHARS,
    "empty": "",
}


@pytest.mark.parametrize("label", sorted(REFUSED))
@pytest.mark.parametrize("prefix", ["/t/acme", ""])
def test_next_targets_outside_this_tenant_are_refused(label, prefix):
    assert local_path(REFUSED[label], prefix) is None


@pytest.mark.parametrize(("target", "prefix", "expected"), [
    ("/admin/users", "/t/acme", "/t/acme/admin/users"),
    ("/t/acme/admin/users?q=a", "/t/acme", "/t/acme/admin/users?q=a"),
    ("/t/acme", "/t/acme", "/t/acme"),
    ("/admin/users/../roles", "/t/acme", "/t/acme/admin/roles"),
    ("/admin/./roles", "", "/admin/roles"),
    ("/%61dmin/users", "", "/admin/users"),
    ("/../../admin/users", "", "/admin/users"),
    ("/admin/users?q=李 雷", "", "/admin/users?q=%E6%9D%8E%20%E9%9B%B7"),
])
def test_next_targets_inside_this_tenant_are_kept_normalised(target, prefix, expected):
    assert local_path(target, prefix) == expected


def _sign_in(client, prefix: str, headers: dict[str, str], target: str):
    page = client.get(f"{prefix}/sign-in", headers=headers)
    return client.post(f"{prefix}/sign-in", headers=headers, data={
        "email": "admin@acme.test", "password": PASSWORD, "csrf_token": _csrf_from(page.get_data(as_text=True)),
        "next": target})


@pytest.mark.parametrize("label", ["another tenant", "dot-dot out of the prefix", "encoded dots and slashes",
                                   "encoded t", "backslashes", "dot-dot after our own prefix", "scheme-relative"])
@pytest.mark.parametrize("form", ["prefix", "host"])
def test_a_genuine_sign_in_never_lands_in_another_workspace(app, db, tenant, other_tenant, label, form):
    prefix, headers = ("/t/acme", {"Host": "localhost"}) if form == "prefix" else ("", host("acme"))
    signed = _sign_in(app.test_client(), prefix, headers, REFUSED[label])
    assert signed.status_code == 302
    assert signed.headers["Location"] == f"{prefix}/home", label


def test_a_genuine_next_is_followed(app, db, tenant):
    signed = _sign_in(app.test_client(), "/t/acme", {"Host": "localhost"}, "/admin/users?q=a")
    assert signed.status_code == 302
    assert signed.headers["Location"] == "/t/acme/admin/users?q=a"


def test_the_locale_switch_keeps_to_this_tenant_too(app, db, tenant, other_tenant):
    c = app.test_client()
    page = c.get("/t/acme/sign-in", headers={"Host": "localhost"})
    switched = c.post("/t/acme/locale", headers={"Host": "localhost"}, data={
        "locale": "zh", "next": "/%2e%2e/t/globex/sign-in", "csrf_token": _csrf_from(page.get_data(as_text=True))})
    assert switched.status_code == 302
    assert switched.headers["Location"] == "/t/acme/home"


# --------------------------------------------------------------------------- API writes without credentials


@pytest.mark.parametrize("credentials", ["none", "anonymous session", "invalid bearer"])
def test_api_writes_without_credentials_get_401_not_a_csrf_failure(app, db, tenant, credentials):
    """schemathesis flagged unauthenticated writes answering 400 ``csrf_failed``: a client with no
    credentials must learn that it needs some (401, the JSON error shape), on every unsafe API route."""
    from tests.probes import Values, cookie_header, cookie_value, fill_path, plan

    headers = dict(host("acme"))
    if credentials == "anonymous session":
        page = app.test_client(use_cookies=False).get("/sign-in", headers=headers)
        headers |= cookie_header(cookie_value(page, "courtyard_session") or "")
        headers["X-CSRF-Token"] = _csrf_from(page.get_data(as_text=True))
    elif credentials == "invalid bearer":
        headers["Authorization"] = "Bearer not-a-token"
    probes, _ = plan(app)
    writes = [p for p in probes if p.area == "api" and p.method not in ("GET", "HEAD", "OPTIONS")
              and p.variant is None]
    assert len(writes) >= 5
    for probe in writes:
        response = app.test_client(use_cookies=False).open(
            fill_path(probe.rule, Values.unknown()), method=probe.method, headers=headers, json={"name": "x"})
        assert response.status_code == 401, f"{probe}: {response.status_code} {response.get_data(as_text=True)}"
        body = response.get_json()
        assert set(body) == {"status", "code", "message"}, body
        assert body["status"] == 401
        assert body["code"] in ("not_authenticated", "invalid_token")


# --------------------------------------------------------------------------- regex validators


def test_validators_refuse_a_trailing_line_break():
    """``$`` matches before a final line break: ``validate_slug('evil\\n')`` passed."""
    from core.errors import ValidationFailed
    from core.tenancy import SLUG_RE, validate_slug
    from tenants.services import EMAIL_RE, clean_email

    assert validate_slug("evil") == "evil"
    for bad in ("evil\n", "evil\r\n", "\nevil"):
        with pytest.raises(ValidationFailed):
            validate_slug(bad)
        assert not SLUG_RE.fullmatch(bad)
    assert not EMAIL_RE.fullmatch("a@b.example\n")
    with pytest.raises(ValidationFailed):
        clean_email("a@b.example\nBcc: victim@c.example")


def test_a_slug_with_a_line_break_is_no_workspace(app, db, tenant):
    assert app.test_client().get("/t/acme%0A/sign-in").status_code == 404


# --------------------------------------------------------------------------- secrets are not cached


def test_pages_and_answers_holding_a_secret_are_never_cached(app, client, db, tenant):
    """A client secret shown once, or a reset / invitation token in the URL and form, must not be kept
    by the browser's cache or a proxy (``Cache-Control: no-store``)."""
    from tenants import services
    from tests.conftest import sign_in
    from tests.tenants.test_api import bearer, token
    from tests.tenants.test_views import post

    assert sign_in(client, "acme").status_code == 302
    created = post(client, "/admin/clients", {"name": "Reporting", "scopes": ["users.read"]})
    assert created.status_code == 200
    assert "cy_" in created.get_data(as_text=True)
    assert created.headers["Cache-Control"] == "no-store"
    assert client.get("/admin/clients", headers=host("acme")).headers["Cache-Control"] == "no-store"
    seen = []
    with db.transaction(tenant) as s:
        reset = services.request_password_reset(s, "admin@acme.test")
        assert reset is not None
        _invitation, invite = services.invite(s, services.actor_for(reset[0]), email="new@acme.test",
                                              role="sales", name="New")
    for path in (f"/reset/{reset[1].secret}", f"/invitation/{invite.secret}"):
        response = app.test_client().get(path, headers=host("acme"))
        assert response.status_code == 200, path
        seen.append((path.split("/")[1], response.headers.get("Cache-Control")))
    assert seen == [("reset", "no-store"), ("invitation", "no-store")]
    admin = token(app.test_client(), db, tenant)
    made = app.test_client().post("/api/v1/clients", headers=bearer(admin),
                                  json={"name": "Reporting 2", "scopes": ["users.read"]})
    assert made.status_code == 201
    assert made.get_json()["client_secret"]
    assert made.headers["Cache-Control"] == "no-store"
    # The token endpoint already says so (Authlib, RFC 6749 §5.1): checked so that it stays so.
    from tests.tenants.test_api import new_client, request_token

    client_id, secret = new_client(db, tenant, ["users.read"])
    issued = request_token(app.test_client(), "acme", client_id, secret)
    assert issued.status_code == 200
    assert "no-store" in issued.headers["Cache-Control"]


# --------------------------------------------------------------------------- OAuth error text


@pytest.mark.parametrize("style", ["basic", "post"])
@pytest.mark.parametrize("who", ["wrong secret", "unknown client"])
def test_a_bad_client_secret_gets_a_plain_sentence_not_a_python_tuple(app, db, tenant, style, who):
    from tenants.oauth import BAD_CLIENT
    from tests.tenants.test_api import new_client, request_token

    client_id, secret = new_client(db, tenant, ["users.read"])
    if who == "unknown client":
        client_id = "cy_nobody"
    response = request_token(app.test_client(), "acme", client_id, secret + "x", style=style)
    # RFC 6749 §5.2: 401 when the client tried Basic authentication.
    assert response.status_code in ((401,) if style == "basic" else (400, 401))
    body = response.get_json()
    assert body == {"error": "invalid_client", "error_description": BAD_CLIENT}
    assert "(" not in response.headers.get("WWW-Authenticate", "")
    revoke = app.test_client().post("/oauth/revoke", headers=host("acme"), data={
        "token": "x", "client_id": client_id, "client_secret": secret + "x"})
    assert revoke.get_json()["error_description"] == BAD_CLIENT


# --------------------------------------------------------------------------- API clients die with their creator


def test_a_client_does_not_outlive_the_admin_who_made_it_nor_the_client_that_made_it(app, db, tenant):
    """An API client outlived the admin who made it, and a client holding ``clients.manage`` could mint
    clients that outlived its own revocation. Now: deactivating a user revokes the clients they made,
    revoking a client revokes the clients it made, however deep, with every token of theirs."""
    from sqlalchemy import select

    from core.permissions import Actor, all_names
    from tenants import services
    from tenants.models import OAuthClient
    from tests.tenants.test_api import bearer

    everything = sorted(all_names())
    with db.transaction(tenant) as s:
        boss = services.find_user_by_email(s, "admin@acme.test")
        other = services.create_user(s, services.actor_for(boss), email="second@acme.test", name="Second",
                                     role="admin", password=PASSWORD)
        made_by_other = services.create_client(s, services.actor_for(other), tenant, name="Other's",
                                               scopes=everything)
        by_cli = services.create_client(s, Actor.system("cli"), tenant, name="From the CLI", scopes=everything)
        parent_token, _ = services.issue_token(s, made_by_other.client, everything, 3600)
        cli_token, _ = services.issue_token(s, by_cli.client, everything, 3600)
        other_id = other.id
    c = app.test_client()
    # Client → client → client, through the API.
    child = c.post("/api/v1/clients", headers=bearer(parent_token), json={"name": "Child", "scopes": everything})
    assert child.status_code == 201, child.get_data(as_text=True)
    child_token = c.post("/oauth/token", headers=host("acme"), data={
        "grant_type": "client_credentials", "client_id": child.get_json()["client_id"],
        "client_secret": child.get_json()["client_secret"]}).get_json()["access_token"]
    grandchild = c.post("/api/v1/clients", headers=bearer(child_token),
                        json={"name": "Grandchild", "scopes": ["users.read"]})
    assert grandchild.status_code == 201
    grandchild_token = c.post("/oauth/token", headers=host("acme"), data={
        "grant_type": "client_credentials", "client_id": grandchild.get_json()["client_id"],
        "client_secret": grandchild.get_json()["client_secret"]}).get_json()["access_token"]
    for tok in (parent_token, child_token, grandchild_token, cli_token):
        assert c.get("/api/v1/me", headers=bearer(tok)).status_code == 200

    # The client in the middle is revoked: its descendants go with it, its parent stays.
    revoked = c.delete(f"/api/v1/clients/{child.get_json()['client_id']}", headers=bearer(parent_token))
    assert revoked.status_code == 204
    assert c.get("/api/v1/me", headers=bearer(child_token)).status_code == 401
    assert c.get("/api/v1/me", headers=bearer(grandchild_token)).status_code == 401, "the grandchild outlived it"
    assert c.get("/api/v1/me", headers=bearer(parent_token)).status_code == 200

    # The admin who made the parent is deactivated: the parent goes too; the CLI's client stays.
    with db.transaction(tenant) as s:
        services.set_active(s, services.actor_for(services.find_user_by_email(s, "admin@acme.test")), other_id,
                            False)
    assert c.get("/api/v1/me", headers=bearer(parent_token)).status_code == 401, "the client outlived its admin"
    assert c.get("/api/v1/me", headers=bearer(cli_token)).status_code == 200
    with db.transaction(tenant) as s:
        rows = {r.name: r for r in s.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id))}
        assert rows["Child"].created_by_client == rows["Other's"].id
        assert rows["Grandchild"].created_by_client == rows["Child"].id
        assert rows["Other's"].created_by == other_id
        assert all(rows[n].revoked_at is not None for n in ("Other's", "Child", "Grandchild"))
        assert rows["From the CLI"].revoked_at is None
