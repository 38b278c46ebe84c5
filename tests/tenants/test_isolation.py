"""Cross-tenant isolation over every route of the URL map (DESIGN rule 3 and "Tests").

Two tenants hold data (departments, users, a custom role, an invitation, a reset link, an API client
and token, audit entries). Every rule of ``app.url_map`` is probed, for every method, three ways:

(a) on globex's host, signed in as globex's admin (and with globex's own token), aimed at acme's ids;
(b) with one tenant's bearer token and OAuth client on the other tenant's host and ``/t/`` prefix;
(c) with acme's session cookie and its CSRF token sent to globex's host and to ``/t/globex/``.

The assertions: nothing of the other tenant shows up in any answer; another tenant's token gets the
404 of an unknown object; another tenant's ids answer exactly like ids that never existed; another
tenant's session is worth exactly as much as no session; the other tenant's data is unchanged
afterwards; nothing answers 500. A rule the planner cannot aim (an unknown path parameter, an
unknown body field type, a new OAuth endpoint) makes the suite fail until it is taught or listed as
public in :data:`PUBLIC_ROUTES`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from core.db import uuid7
from core.sessions import PREFIXED_COOKIE_NAME
from crm.records.entity import entities
from crm.records.models import Attachment, RecordShare, SavedView
from tenants import services
from tenants.context import PREFIXED_CSRF_COOKIE_NAME
from tenants.models import AuditEntry, Department, Invitation, OAuthClient, PasswordReset, Role, User
from tests.conftest import PASSWORD, host
from tests.probes import (
    PERSONAL_API_PREFIXES,
    PUBLIC_ROUTES,
    SKIPPED_METHODS,
    Caller,
    Probe,
    Seeded,
    Values,
    aims_at_records,
    cookie_header,
    cookie_value,
    csrf_in,
    fill_path,
    open_session,
    plan,
    seed,
)

# The planner (which rules exist, how to aim each, how to send a probe) lives in tests/probes.py, shared
# with the other route-sweeping suites.

# --------------------------------------------------------------------------- the two tenants


@pytest.fixture
def two(app, db) -> dict[str, Seeded]:
    acme = seed(db, "acme", "Acme 艾克米", word="Acme",
                people=[("wile.coyote@acme.test", "Wile E. Coyote 威利"),
                        ("road.runner@acme.test", "Road Runner 哔哔")],
                departments=("Skunkworks 臭鼬工厂", "Night Shift 夜班"), role=("skunk_ops", "Skunk Ops 臭鼬组"),
                app=app)
    globex = seed(db, "globex", "Globex 环球", word="Globex",
                  people=[("hank.scorpio@globex.test", "Hank Scorpio 汉克"), ("homer.j@globex.test", "Homer J 荷马")],
                  departments=("Hammock District 吊床区", "Cypress Creek 柏溪"), role=("doom_desk", "Doom Desk 末日台"),
                  app=app)
    return {"acme": acme, "globex": globex}


def fingerprint(db, seeded: Seeded) -> dict[str, Any]:
    """Everything another tenant might have changed: rows with their versions, secrets' validity."""
    s = db.session(seeded.tenant)
    try:
        return {
            "users": sorted((str(u.id), u.version, u.active, u.password_hash, str(u.department_id), u.role_id.hex)
                            for u in s.scalars(select(User))),
            "departments": sorted((str(d.id), d.version, d.name, str(d.parent_id))
                                  for d in s.scalars(select(Department))),
            "roles": sorted((r.key, r.version, tuple(r.permissions)) for r in s.scalars(select(Role))),
            "invitations": sorted((str(i.id), i.version, i.accepted_at is None, i.revoked_at is None)
                                  for i in s.scalars(select(Invitation))),
            "resets": sorted((str(p.id), p.used_at is None) for p in s.scalars(select(PasswordReset))),
            "audit": s.scalar(select(func.count()).select_from(AuditEntry)),
            "clients": sorted((c.client_id, c.revoked_at is None) for c in s.scalars(
                select(OAuthClient).where(OAuthClient.tenant_id == seeded.tenant.id))),
            "token_live": services.check_token(s, seeded.token) is not None,
            "personal_token_live": services.check_personal_token(s, seeded.tenant,
                                                                 seeded.personal_token) is not None,
            "invite_open": services.open_invitation(s, seeded.values["invite_token"]) is not None,
            "crm": sorted((ent.key, str(r.id), r.version, r.deleted_at is None, str(r.owner_id), tuple(r.tags))
                          for ent in entities() for r in s.scalars(select(ent.model))),
            "shares": sorted((str(r.id), r.access) for r in s.scalars(select(RecordShare))),
            "files": sorted((str(a.id), a.deleted_at is None) for a in s.scalars(select(Attachment))),
            "views": sorted((str(v.id), v.version) for v in s.scalars(select(SavedView))),
        }
    finally:
        s.close()


def haystack(response) -> str:
    body = response.get_data(as_text=True)
    parts = [body, html.unescape(body)]
    parts += [f"{k}: {v}" for k, v in response.headers.items() if k != "Set-Cookie"]
    if response.is_json:
        parts.append(json.dumps(response.get_json(silent=True), ensure_ascii=False))
    return "\n".join(parts)


def shown(response, markers: set[str]) -> set[str]:
    text = haystack(response)
    return {m for m in markers if m in text}


NEW_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def twin_view(response, values: Values) -> tuple[Any, ...]:
    """What must match between a probe aimed at real records and its twin aimed at unknown ones."""
    body: Any = None
    if response.status_code >= 400 and response.is_json:
        body = values.normalise(json.dumps(response.get_json(), sort_keys=True, ensure_ascii=False))
    # A record the probe itself created (a saved view) has a new id each time.
    location = NEW_ID.sub("<new id>", values.normalise(response.headers.get("Location", "")))
    return response.status_code, location, body


def assert_invalid_client(probe: Probe, response) -> None:
    """RFC 6749 §5.2: an unknown client is ``invalid_client``, 401 when it authenticated with Basic."""
    assert response.status_code == (401 if probe.variant[0] == "basic" else 400), (
        f"{probe}: {response.status_code} {response.get_data(as_text=True)}")
    assert response.get_json()["error"] == "invalid_client"


# --------------------------------------------------------------------------- the route inventory


def test_every_rule_is_probed_or_listed_as_public(app):
    probes, problems = plan(app)
    assert problems == []
    rules = list(app.url_map.iter_rules())
    endpoints = {r.endpoint for r in rules}
    assert set(PUBLIC_ROUTES) <= endpoints, f"stale PUBLIC_ROUTES entries: {set(PUBLIC_ROUTES) - endpoints}"
    expected = {(r.rule, m) for r in rules if r.endpoint not in PUBLIC_ROUTES for m in r.methods - SKIPPED_METHODS}
    assert {p.key for p in probes} == expected
    # The inventory is not trivially small: the staff pages, the API and OAuth are all in it.
    areas = {p.area for p in probes}
    assert areas == {"api", "oauth", "page"}
    assert len(expected) >= 30


def test_a_new_rule_is_refused_until_the_suite_can_aim_it(app):
    """The planner's guard works: an unknown path parameter or OAuth endpoint is reported."""
    from flask import Flask

    probe_app = Flask("probe")
    probe_app.add_url_rule("/api/v1/widgets/<uuid:widget_id>", "widgets", lambda widget_id: "")
    probe_app.add_url_rule("/oauth/introspect", "oauth.introspect", lambda: "", methods=["POST"])
    _probes, problems = plan(probe_app)
    assert any("<widget_id>" in p for p in problems)
    assert any("/oauth/introspect" in p for p in problems)


# --------------------------------------------------------------------------- (a) globex acting, acme's ids


@pytest.mark.parametrize("via", ["session", "token"])
def test_globex_aimed_at_acme_records_sees_nothing_of_acme(app, db, redis_client, two, via):
    acme, globex = two["acme"], two["globex"]
    before = fingerprint(db, acme)
    if via == "session":
        def signed_in() -> tuple[dict[str, str], str]:
            sid, csrf = open_session(app, host("globex"), "", "admin@globex.test")
            return {**host("globex"), **cookie_header(sid)}, csrf

        headers, csrf = signed_in()
        caller = Caller(app, redis_client, headers, csrf=csrf, own_client=(globex.client_id, globex.client_secret),
                        renew=signed_in)
    else:
        caller = Caller(app, redis_client, {**host("globex"), "Authorization": f"Bearer {globex.token}"},
                        own_client=(globex.client_id, globex.client_secret))
    markers = acme.private | acme.public
    probes, _ = plan(app)
    seen: set[tuple[str, str]] = set()
    for n, probe in enumerate(probes):
        unknown = Values.unknown()
        real = caller.send(probe, acme.values, n)
        twin = caller.send(probe, unknown, n)
        seen.add(probe.key)
        known = caller.known(markers)
        assert shown(real, markers) <= known, f"{probe} showed acme data: {shown(real, markers) - known}"
        assert shown(twin, markers) <= known, f"{probe} showed acme data: {shown(twin, markers) - known}"
        assert twin_view(real, acme.values) == twin_view(twin, unknown), f"{probe}: acme's ids are not like unknown ids"
        if probe.area == "api" and aims_at_records(probe.rule) and probe.variant != "garbage":
            # An id of another tenant is simply not there.
            assert real.status_code == 404, f"{probe}: {real.status_code} {real.get_data(as_text=True)}"
            assert real.get_json()["code"] == "not_found"
        if probe.area == "oauth" and probe.variant[1] == "slot":
            # acme's client is an unknown client on globex's host.
            assert_invalid_client(probe, real)
    assert seen == {p.key for p in probes}
    # The public routes too carry nothing of acme.
    for path in PUBLIC_ROUTES.values():
        response = app.test_client(use_cookies=False).get(path, headers=caller.headers)
        assert response.status_code == 200, path
        assert not shown(response, markers), path
    assert fingerprint(db, acme) == before


# --------------------------------------------------------------------------- (b) tokens on the wrong host


@pytest.mark.parametrize("form", ["host", "prefix"])
@pytest.mark.parametrize(("attacker", "victim"), [("globex", "acme"), ("acme", "globex")])
def test_a_token_of_another_tenant_gets_the_404_of_an_unknown_object(app, db, redis_client, two, attacker, victim,
                                                                     form):
    them, us = two[attacker], two[victim]
    before = {slug: fingerprint(db, s) for slug, s in two.items()}
    base, prefix = (host(victim), "") if form == "host" else ({"Host": "localhost"}, f"/t/{victim}")
    with_token = Caller(app, redis_client, {**base, "Authorization": f"Bearer {them.token}"}, prefix=prefix,
                        own_client=(them.client_id, them.client_secret))
    anonymous = Caller(app, redis_client, dict(base), prefix=prefix, own_client=(them.client_id, them.client_secret))
    # What "an unknown object" looks like to the victim's own token.
    own = app.test_client(use_cookies=False).get(f"{prefix}/api/v1/users/{uuid7()}",
                                                 headers={**base, "Authorization": f"Bearer {us.token}"})
    assert own.status_code == 404
    unknown_shape = own.get_json()
    probes, _ = plan(app)
    for n, probe in enumerate(probes):
        if probe.area == "oauth" and probe.variant[1] == "slot":
            continue  # the attacker holds only its own client's secret
        unknown = Values.unknown()
        real = with_token.send(probe, us.values, n)
        known = with_token.known(us.private)
        if probe.area == "api":
            body = real.get_json()
            assert real.status_code == 404, f"{probe}: {real.status_code} {body}"
            assert body.keys() == unknown_shape.keys()
            assert (body["status"], body["code"]) == (unknown_shape["status"], unknown_shape["code"])
            twin = with_token.send(probe, unknown, n)
            assert twin_view(real, us.values) == twin_view(twin, unknown), str(probe)
        elif probe.area == "oauth":
            # The attacker's client is unknown on the victim's host, whatever it asks for.
            assert_invalid_client(probe, real)
            twin = with_token.send(probe, unknown, n)
            assert twin_view(real, us.values) == twin_view(twin, unknown), str(probe)
        else:
            # Pages ignore bearer tokens: the token buys exactly what an anonymous visitor gets.
            anon = anonymous.send(probe, us.values, n)
            assert twin_view(real, us.values) == twin_view(anon, us.values), str(probe)
            assert shown(real, us.private) - known <= shown(anon, us.private), str(probe)
            continue
        assert shown(real, us.private) <= known, f"{probe} showed {victim} data: {shown(real, us.private) - known}"
    assert {slug: fingerprint(db, s) for slug, s in two.items()} == before


# --------------------------------------------------------------------------- (c) a session on the wrong site


@pytest.mark.parametrize("form", ["host", "prefix"])
def test_acme_session_on_globex_is_worth_no_session(app, db, redis_client, two, form):
    acme, globex = two["acme"], two["globex"]
    acme_sid, acme_csrf = open_session(app, host("acme"), "", "admin@acme.test")
    if form == "host":
        base, prefix = host("globex"), ""
    else:
        # The /t/ form: the same sid under both cookie names, as if the browser had sent it.
        acme_sid, acme_csrf = open_session(app, {"Host": "localhost"}, "/t/acme", "admin@acme.test")
        base, prefix = {"Host": "localhost"}, "/t/globex"
    anon_sid, anon_csrf = open_session(app, base, prefix)
    before = {slug: fingerprint(db, s) for slug, s in two.items()}  # after signing in (it stamps last_login_at)
    with_acme = Caller(app, redis_client, {**base, **cookie_header(acme_sid)}, prefix=prefix, csrf=acme_csrf,
                       own_client=(acme.client_id, acme.client_secret))
    anonymous = Caller(app, redis_client, {**base, **cookie_header(anon_sid)}, prefix=prefix, csrf=anon_csrf,
                       own_client=(acme.client_id, acme.client_secret))
    acme_markers = acme.private | acme.public
    # Aimed at globex's records, with the one-time links acme's holder has: acme's own. (globex's links
    # work for whoever holds them, by design, and would be used up by the first of the two probes.)
    aim = Values(globex.values.slots | {k: acme.values[k] for k in ("reset_token", "invite_token")})
    probes, _ = plan(app)
    for n, probe in enumerate(probes):
        if probe.area == "oauth" and probe.variant[1] == "slot":
            continue
        real = with_acme.send(probe, aim, n)
        anon = anonymous.send(probe, aim, n)
        assert twin_view(real, aim) == twin_view(anon, aim), (
            f"{probe}: acme's session changed the answer: {real.status_code} vs {anon.status_code}")
        if real.is_json and anon.is_json:
            assert real.get_json() == anon.get_json(), str(probe)
        known = with_acme.known(acme_markers)
        assert shown(real, acme_markers) <= known, f"{probe} showed acme data: {shown(real, acme_markers) - known}"
        assert shown(real, globex.private) <= shown(anon, globex.private), str(probe)
        if probe.area == "api":
            assert real.status_code == 401, f"{probe}: {real.get_data(as_text=True)}"
    assert {slug: fingerprint(db, s) for slug, s in two.items()} == before


# --------------------------------------------------------------------------- (d) the /t/ prefix on a tenant's host


@pytest.mark.parametrize("slug", ["globex", "acme"])
def test_every_route_under_a_t_prefix_on_a_tenant_host_is_a_404(app, db, connection, redis_client, two, slug):
    """Finding 6: ``acme.<domain>/t/globex/…`` served globex (a globex token got 200 there) under acme's name.

    The prefix form belongs to the bare domain: on a tenant's host every route under any ``/t/<slug>/``
    answers 404, with the token, the session and the client credentials of the named tenant, and changes
    nothing. Its own slug too (the same site twice under two names serves no one).
    """
    them = two[slug]
    # Every probe is answered before the database is asked: the test's own transaction would sit idle
    # past the server's idle timeout. (SET is undone with the test's rollback.)
    connection.exec_driver_sql("SET idle_in_transaction_session_timeout = 0")
    sid, csrf = open_session(app, {"Host": "localhost"}, f"/t/{slug}", f"admin@{slug}.test")
    before = {name: fingerprint(db, seeded) for name, seeded in two.items()}
    own = (them.client_id, them.client_secret)
    callers = {
        "token": Caller(app, redis_client, {**host("acme"), "Authorization": f"Bearer {them.token}"},
                        prefix=f"/t/{slug}", own_client=own),
        "session": Caller(app, redis_client, {**host("acme"), **cookie_header(sid)}, prefix=f"/t/{slug}",
                          csrf=csrf, own_client=own),
    }
    probes, _ = plan(app)
    for n, probe in enumerate(probes):
        for who, caller in callers.items():
            response = caller.send(probe, them.values, n)
            assert response.status_code == 404, (
                f"{who} {probe} under /t/{slug}/ on acme's host: {response.status_code} "
                f"{response.get_data(as_text=True)[:300]}")
            markers = (them.private | them.public) - caller.known(them.private | them.public)
            assert not shown(response, markers), f"{probe}: {shown(response, markers)}"
    for path in PUBLIC_ROUTES.values():
        for caller in callers.values():
            response = app.test_client(use_cookies=False).get(f"/t/{slug}{path}", headers=caller.headers)
            assert response.status_code == 404, f"/t/{slug}{path}: {response.status_code}"
    assert {name: fingerprint(db, seeded) for name, seeded in two.items()} == before
    # The control: the same prefix on the bare domain is that tenant's site.
    assert app.test_client(use_cookies=False).get(
        f"/t/{slug}/api/v1/me", headers={"Host": "localhost", "Authorization": f"Bearer {them.token}"}
    ).status_code == 200


# --------------------------------------------------------------------------- pointed checks


def test_markers_are_visible_to_their_own_tenant(app, two):
    """The control: with its own token on its own host, every API GET shows the tenant's own data."""
    probes, _ = plan(app)
    gets = [p for p in probes if p.area == "api" and p.method == "GET"]
    assert gets
    for seeded in two.values():
        for probe in gets:
            path = fill_path(probe.rule, seeded.values)
            # A user's own routes are asked with the admin's personal token (an API client has none).
            secret = seeded.personal_token if path.startswith("/api/v1/me/") else seeded.token
            response = app.test_client(use_cookies=False).get(
                path, headers={**host(seeded.slug), "Authorization": f"Bearer {secret}"})
            assert response.status_code == 200, f"{probe}: {response.get_data(as_text=True)}"
            if not probe.rule.rule.startswith(PERSONAL_API_PREFIXES):  # a client has no bell of its own
                assert shown(response, seeded.private), f"{probe} showed nothing of {seeded.slug}"
            other = two["globex" if seeded.slug == "acme" else "acme"]
            assert not shown(response, other.private | other.public), str(probe)


def test_other_tenant_credentials_do_not_sign_in_or_send_mail(app, db, two, settings):
    outbox = settings.outbox_dir
    before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    c = app.test_client()
    page = c.get("/sign-in", headers=host("globex"))
    csrf = csrf_in(page.get_data(as_text=True))
    response = c.post("/sign-in", headers=host("globex"),
                      data={"email": "admin@acme.test", "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 401
    assert c.get("/home", headers=host("globex")).status_code == 302
    forgot = c.post("/forgot", headers=host("globex"), data={"email": "wile.coyote@acme.test", "csrf_token": csrf})
    assert forgot.status_code == 200
    after = set(outbox.glob("*.eml")) if outbox.exists() else set()
    assert after == before, "a reset mail went out for an address globex does not know"
    # The same request on acme's own host does send one: the check above could fail.
    c2 = app.test_client()
    csrf2 = csrf_in(c2.get("/forgot", headers=host("acme")).get_data(as_text=True))
    assert c2.post("/forgot", headers=host("acme"),
                   data={"email": "wile.coyote@acme.test", "csrf_token": csrf2}).status_code == 200
    sent = set(outbox.glob("*.eml")) - after
    assert len(sent) == 1
    assert "wile.coyote@acme.test" in next(iter(sent)).read_text()


def test_a_prefixed_session_cookie_is_scoped_to_its_tenant_path(app, two):
    c = app.test_client(use_cookies=False)
    page = c.get("/t/acme/sign-in", headers={"Host": "localhost"})
    sid = cookie_value(page, PREFIXED_CSRF_COOKIE_NAME)
    assert cookie_value(page, PREFIXED_COOKIE_NAME) is None  # reading a page opens no session
    signed = c.post("/t/acme/sign-in", headers={"Host": "localhost", **cookie_header(sid)},
                    data={"email": "admin@acme.test", "password": PASSWORD,
                          "csrf_token": csrf_in(page.get_data(as_text=True))})
    assert signed.status_code == 302
    header = next(h for h in signed.headers.getlist("Set-Cookie") if h.startswith(PREFIXED_COOKIE_NAME + "="))
    assert "Path=/t/acme/" in header
    assert "HttpOnly" in header
