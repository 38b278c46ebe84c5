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

import base64
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from marshmallow import Schema, validate
from marshmallow import fields as mf
from sqlalchemy import func, select
from werkzeug.routing import Rule

from core.db import uuid7
from core.permissions import all_names
from core.security import new_secret
from core.sessions import COOKIE_NAME, PREFIXED_COOKIE_NAME
from core.tenancy import BoundTenant
from tenants import services
from tenants.models import AuditEntry, Department, Invitation, OAuthClient, PasswordReset, Role, User
from tests.conftest import PASSWORD, host, provision

# --------------------------------------------------------------------------- the plan

#: Routes anyone may fetch on any host (they hold no tenant data); each with a sample URL that is
#: still fetched as globex, to check it carries nothing of acme either.
PUBLIC_ROUTES: dict[str, str] = {
    "static": "/static/app.css",
    "vendor": "/static/vendor/bootstrap/css/bootstrap.min.css",
    "health.healthz": "/healthz",
    "health.readyz": "/readyz",
    "api-docs.openapi_json": "/api/v1/openapi.json",
    "api-docs.openapi_swagger_ui": "/api/v1/docs",
}

#: What a path parameter names: the kind of record its value is taken from.
PATH_PARAM_KINDS = {"user_id": "user", "department_id": "department", "key": "role", "client_id": "client",
                    "invitation_id": "invitation"}
#: Parameters whose meaning depends on the route.
ENDPOINT_PARAM_KINDS = {("staff.reset", "token"): "reset_token", ("staff.accept", "token"): "invite_token"}
#: JSON / query fields holding ids, by name; other UUID fields get a random id.
UUID_FIELD_KINDS = {"department_id": "department", "parent_id": "department", "user_id": "user",
                    "before": "audit"}
#: The OAuth endpoints and how to call them (client authentication, not bearer tokens).
OAUTH_ENDPOINTS = frozenset({"oauth.token", "oauth.revoke"})
#: Form posts are sent once per action a form may carry, so every branch of a view is reached.
FORM_ACTIONS = (None, "delete", "revoke", "deactivate", "activate")
#: Probed last: it ends the session every other probe relies on.
SESSION_ENDING = frozenset({"staff.sign_out"})
PROBE_EMAIL = "probe@example.org"
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Probe:
    rule: Rule
    method: str
    area: str  # api | oauth | page
    variant: Any = None

    @property
    def key(self) -> tuple[str, str]:
        return self.rule.rule, self.method

    def __str__(self) -> str:
        return f"{self.method} {self.rule.rule} [{self.variant}]"


def _path_kind(rule: Rule, name: str) -> str | None:
    return ENDPOINT_PARAM_KINDS.get((rule.endpoint, name)) or PATH_PARAM_KINDS.get(name)


def _api_arguments(app, rule: Rule, method: str) -> list[tuple[str, Schema]]:
    view = app.view_functions[rule.endpoint]
    func_ = getattr(getattr(view, "view_class", None), method.lower(), view)
    params = (getattr(func_, "_apidoc", {}).get("arguments") or {}).get("parameters", [])
    out = []
    for p in params:
        schema = p["schema"]
        out.append((p["in"], schema() if isinstance(schema, type) else schema))
    return out


def _plan_api(app, rule: Rule, method: str, problems: list[str]) -> list[Probe]:
    arguments = _api_arguments(app, rule, method)
    for location, schema in arguments:
        try:
            fill_schema(schema, Values.unknown(), 0)
        except LookupError as exc:
            problems.append(f"{method} {rule.rule} ({location}): {exc}")
    probes = [Probe(rule, method, "api")]
    if arguments:
        # The same call with arguments no schema accepts: who may call is settled before they are read.
        probes.append(Probe(rule, method, "api", "garbage"))
    return probes


def plan(app) -> tuple[list[Probe], list[str]]:
    """Every (rule, method) outside PUBLIC_ROUTES as probes, and what the planner cannot aim."""
    probes: list[Probe] = []
    problems: list[str] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ROUTES:
            continue
        for name in sorted(rule.arguments):
            if _path_kind(rule, name) is None:
                problems.append(f"{rule.rule}: no record kind for path parameter <{name}> "
                                f"(teach PATH_PARAM_KINDS / ENDPOINT_PARAM_KINDS, or list it in PUBLIC_ROUTES)")
        for method in sorted(rule.methods - SKIPPED_METHODS):
            if rule.rule.startswith("/oauth/"):
                if rule.endpoint not in OAUTH_ENDPOINTS:
                    problems.append(f"{rule.rule}: an OAuth endpoint the isolation suite has no recipe for")
                    continue
                probes.extend(Probe(rule, method, "oauth", (style, whose))
                              for style in ("basic", "post") for whose in ("slot", "own"))
            elif rule.rule.startswith("/api/"):
                probes.extend(_plan_api(app, rule, method, problems))
            elif method == "GET":
                probes.append(Probe(rule, method, "page"))
            else:
                probes.extend(Probe(rule, method, "page", action) for action in FORM_ACTIONS)
    probes.sort(key=lambda p: (p.rule.endpoint in SESSION_ENDING, p.rule.rule, p.method))
    return probes, problems


# --------------------------------------------------------------------------- values aimed at records


@dataclass
class Values:
    """One value per record kind: a tenant's real ones, or ones that never existed anywhere."""

    slots: dict[str, str]

    def __getitem__(self, kind: str) -> str:
        return self.slots[kind]

    @classmethod
    def unknown(cls) -> Values:
        return cls({"user": str(uuid7()), "department": str(uuid7()), "audit": str(uuid7()),
                    "role": "no_such_role", "client": "cy_" + new_secret(12), "client_secret": new_secret(32),
                    "token": new_secret(32), "reset_token": new_secret(), "invite_token": new_secret(),
                    "invitation": str(uuid7())})

    def normalise(self, text: str) -> str:
        for kind, value in self.slots.items():
            text = text.replace(value, f"<{kind}>").replace(quote(value, safe=""), f"<{kind}>")
        return text


def _string_value(name: str, fld: mf.Field, values: Values, n: int) -> str:
    for v in fld.validators:
        if isinstance(v, validate.OneOf):
            return str(next(iter(v.choices)))
    fixed = {"email": f"probe-{n}@example.org", "role": values["role"], "client_id": values["client"],
             "password": PASSWORD, "locale": "en", "q": "a", "entity_type": "user", "token": values["token"]}
    return fixed.get(name, "Probe 探针")


def fill_schema(schema: Schema, values: Values, n: int) -> dict[str, Any]:
    """A valid body for a schema, with every id field aimed at ``values`` (LookupError if unfillable)."""
    out: dict[str, Any] = {}
    for name, fld in schema.fields.items():
        if fld.dump_only:
            continue
        key = fld.data_key or name
        out[key] = _field_value(name, fld, values, n)
    return out


def _field_value(name: str, fld: mf.Field, values: Values, n: int) -> Any:  # noqa: PLR0911 - one per type
    if isinstance(fld, mf.UUID):
        kind = UUID_FIELD_KINDS.get(name)
        return values[kind] if kind else str(uuid7())
    if isinstance(fld, mf.Email):
        return f"probe-{n}@example.org"
    if isinstance(fld, mf.String):
        return _string_value(name, fld, values, n)
    if isinstance(fld, mf.Boolean):
        return True
    if isinstance(fld, mf.Integer):
        for v in fld.validators:
            if isinstance(v, validate.Range):
                return max(v.min or 1, min(v.max or 50, 50))
        return 50
    if isinstance(fld, mf.List) and isinstance(fld.inner, mf.String):
        return ["users.read"] if name in ("permissions", "scopes") else ["Probe"]
    if isinstance(fld, mf.Dict):
        return {}
    if isinstance(fld, mf.Nested):
        return fill_schema(fld.schema, values, n)
    msg = f"no probe value for field {name!r} of type {type(fld).__name__}"
    raise LookupError(msg)


def fill_path(rule: Rule, values: Values) -> str:
    def sub(match: re.Match[str]) -> str:
        kind = _path_kind(rule, match.group(1))
        assert kind is not None
        return quote(values[kind], safe="")

    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", sub, rule.rule)


# --------------------------------------------------------------------------- the two tenants


@dataclass
class Seeded:
    slug: str
    tenant: BoundTenant
    values: Values
    client_id: str
    client_secret: str
    token: str
    #: Anything that identifies this tenant's data: never shown to anyone acting for another tenant.
    private: set[str] = field(default_factory=set)
    #: Its branding, which its own public pages (sign-in) show to anybody on its host.
    public: set[str] = field(default_factory=set)


def seed(db, slug: str, name: str, *, word: str, people: list[tuple[str, str]], departments: tuple[str, str],
         role: tuple[str, str]) -> Seeded:
    tenant, admin_id = provision(db, slug, name=name)
    with db.transaction(tenant) as s:
        admin = services.get_user(s, admin_id)
        actor = services.actor_for(admin, request_id=f"seed-{slug}")
        # A name of its own, so that the admin's name is a marker and not the word "admin".
        services.update_user(s, actor, admin_id, name=f"{word} Boss 老板")
        parent = services.save_department(s, actor, name=departments[0], parent_id=None)
        child = services.save_department(s, actor, name=departments[1], parent_id=parent.id)
        services.create_role(s, actor, key=role[0], name=role[1], permissions=["users.read"])
        users = [services.create_user(s, actor, email=email, name=person, role=role[0], department_id=child.id)
                 for email, person in people]
        services.update_user(s, actor, users[1].id, name=people[1][1] + " II", locale="zh")
        invitation, invite = services.invite(s, actor, email=f"invitee@{slug}.test", role="sales",
                                             name=f"{word} Invitee")
        issued = services.request_password_reset(s, people[0][0])
        assert issued is not None
        new = services.create_client(s, actor, tenant, name=f"{word} integration", scopes=sorted(all_names()))
        token, _row = services.issue_token(s, new.client, new.client.scopes, 3600)
        audit_ids = [str(e.id) for e in s.scalars(select(AuditEntry))]
        role_ids = [str(r.id) for r in s.scalars(select(Role))]
        emails = [u.email for u in s.scalars(select(User))]
        names = [u.name for u in s.scalars(select(User))]
    values = Values({"user": str(users[0].id), "department": str(child.id), "audit": audit_ids[-1],
                     "role": role[0], "client": new.client.client_id, "client_secret": new.secret, "token": token,
                     "reset_token": issued[1].secret, "invite_token": invite.secret,
                     "invitation": str(invitation.id)})
    private = {*values.slots.values(), str(admin_id), str(parent.id), str(users[1].id), str(invitation.id),
               *audit_ids, *role_ids, *emails, *names, f"invitee@{slug}.test", *departments, role[1],
               str(tenant.id), tenant.id.hex}
    return Seeded(slug, tenant, values, new.client.client_id, new.secret, token, private,
                  public={name, word, slug})


@pytest.fixture
def two(db) -> dict[str, Seeded]:
    acme = seed(db, "acme", "Acme 艾克米", word="Acme",
                people=[("wile.coyote@acme.test", "Wile E. Coyote 威利"),
                        ("road.runner@acme.test", "Road Runner 哔哔")],
                departments=("Skunkworks 臭鼬工厂", "Night Shift 夜班"), role=("skunk_ops", "Skunk Ops 臭鼬组"))
    globex = seed(db, "globex", "Globex 环球", word="Globex",
                  people=[("hank.scorpio@globex.test", "Hank Scorpio 汉克"), ("homer.j@globex.test", "Homer J 荷马")],
                  departments=("Hammock District 吊床区", "Cypress Creek 柏溪"), role=("doom_desk", "Doom Desk 末日台"))
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
            "invite_open": services.open_invitation(s, seeded.values["invite_token"]) is not None,
        }
    finally:
        s.close()


# --------------------------------------------------------------------------- sending probes


def cookie_value(response, name: str) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1] or None
    return None


def csrf_in(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def cookie_header(sid: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={sid}; {PREFIXED_COOKIE_NAME}={sid}"}


def open_session(app, headers: dict[str, str], prefix: str, email: str | None = None) -> tuple[str, str]:
    """A server-side session (id, CSRF token): anonymous, or signed in as ``email``."""
    c = app.test_client(use_cookies=False)
    page = c.get(prefix + "/sign-in", headers=headers)
    assert page.status_code == 200
    name = PREFIXED_COOKIE_NAME if prefix else COOKIE_NAME
    sid, csrf = cookie_value(page, name), csrf_in(page.get_data(as_text=True))
    assert sid
    if email is None:
        return sid, csrf
    signed = c.post(prefix + "/sign-in", headers={**headers, **cookie_header(sid)},
                    data={"email": email, "password": PASSWORD, "csrf_token": csrf})
    assert signed.status_code == 302, signed.get_data(as_text=True)
    sid = cookie_value(signed, name)
    assert sid
    home = c.get(prefix + "/home", headers={**headers, **cookie_header(sid)})
    assert home.status_code == 200
    return sid, csrf_in(home.get_data(as_text=True))


@dataclass
class Caller:
    """Who sends the probes: a fixed set of headers (host, cookie, token), a URL prefix, a CSRF token."""

    app: Any
    redis: Any
    headers: dict[str, str]
    prefix: str = ""
    csrf: str | None = None
    own_client: tuple[str, str] | None = None
    #: Opens a fresh session (headers, CSRF token) before each probe of a session-ending route.
    renew: Callable[[], tuple[dict[str, str], str]] | None = None
    sent: list[str] = field(default_factory=list)

    def send(self, probe: Probe, values: Values, n: int):
        if self.renew is not None and probe.rule.endpoint in SESSION_ENDING:
            self.headers, self.csrf = self.renew()
        path = self.prefix + fill_path(probe.rule, values)
        headers = dict(self.headers)
        kwargs = self._arguments(probe, values, n, headers)
        self.sent.append(path + json.dumps(kwargs, ensure_ascii=False, default=str)
                         + headers.get("Authorization", ""))
        _reset_rate_limits(self.redis)
        response = self.app.test_client(use_cookies=False).open(path, method=probe.method, headers=headers,
                                                                **kwargs)
        assert response.status_code != 500, f"{probe} answered 500: {response.get_data(as_text=True)[:500]}"
        return response

    def _arguments(self, probe: Probe, values: Values, n: int, headers: dict[str, str]) -> dict[str, Any]:
        """Query, JSON or form for one probe (``headers`` gains the CSRF or client-auth header)."""
        kwargs: dict[str, Any] = {}
        if probe.area == "api":
            if self.csrf:
                headers["X-CSRF-Token"] = self.csrf
            for location, schema in _api_arguments(self.app, probe.rule, probe.method):
                data = {"__probe__": "1"} if probe.variant == "garbage" else fill_schema(schema, values, n)
                if location == "query":
                    kwargs["query_string"] = {k: str(v).lower() if isinstance(v, bool) else v for k, v in data.items()}
                else:
                    kwargs["json"] = data
        elif probe.area == "oauth":
            style, whose = probe.variant
            client_id, secret = (values["client"], values["client_secret"]) if whose == "slot" else self.own_client
            form = ({"grant_type": "client_credentials", "scope": "users.read"} if probe.rule.endpoint == "oauth.token"
                    else {"token": values["token"], "token_type_hint": "access_token"})
            if style == "basic":
                pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
                headers["Authorization"] = f"Basic {pair}"
            else:
                form |= {"client_id": client_id, "client_secret": secret}
            kwargs["data"] = form
        elif probe.method == "GET":
            kwargs["query_string"] = {"before": values["audit"], "q": "a", "next": "/home"}
        else:
            form = {"id": values["department"], "parent_id": values["department"],
                    "department_id": values["department"], "user_id": values["user"], "role": values["role"],
                    "client_id": values["client"], "token": values["token"], "name": "Probe 探针",
                    "company": "Probe", "slug": "probe-slug", "email": PROBE_EMAIL, "password": PASSWORD,
                    # Not the caller's real password: a probe must not lock its own caller out.
                    "current_password": "not " + PASSWORD, "new_password": PASSWORD + "!",
                    "permissions": ["users.read"],
                    "scopes": ["users.read"], "locale": "en", "next": "/home"}
            if probe.variant:
                form["action"] = probe.variant
            if self.csrf:
                form["csrf_token"] = self.csrf
            kwargs["data"] = form
        return kwargs

    def known(self, markers: set[str]) -> set[str]:
        """Markers this caller put into its own requests (echoing them back reveals nothing)."""
        sent = "\n".join(self.sent)
        return {m for m in markers if m in sent}


def _reset_rate_limits(redis) -> None:
    # Probes repeat failed sign-ins and resets on purpose; throttling would make twin probes differ.
    keys = list(redis.scan_iter("rl:*"))
    if keys:
        redis.delete(*keys)


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


def twin_view(response, values: Values) -> tuple[Any, ...]:
    """What must match between a probe aimed at real records and its twin aimed at unknown ones."""
    body: Any = None
    if response.status_code >= 400 and response.is_json:
        body = values.normalise(json.dumps(response.get_json(), sort_keys=True, ensure_ascii=False))
    return response.status_code, values.normalise(response.headers.get("Location", "")), body


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
        if probe.area == "api" and probe.rule.arguments and probe.variant != "garbage":
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


# --------------------------------------------------------------------------- pointed checks


def test_markers_are_visible_to_their_own_tenant(app, two):
    """The control: with its own token on its own host, every API GET shows the tenant's own data."""
    probes, _ = plan(app)
    gets = [p for p in probes if p.area == "api" and p.method == "GET"]
    assert gets
    for seeded in two.values():
        for probe in gets:
            path = fill_path(probe.rule, seeded.values)
            response = app.test_client(use_cookies=False).get(
                path, headers={**host(seeded.slug), "Authorization": f"Bearer {seeded.token}"})
            assert response.status_code == 200, f"{probe}: {response.get_data(as_text=True)}"
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
    sid = cookie_value(page, PREFIXED_COOKIE_NAME)
    signed = c.post("/t/acme/sign-in", headers={"Host": "localhost", **cookie_header(sid)},
                    data={"email": "admin@acme.test", "password": PASSWORD,
                          "csrf_token": csrf_in(page.get_data(as_text=True))})
    assert signed.status_code == 302
    header = next(h for h in signed.headers.getlist("Set-Cookie") if h.startswith(PREFIXED_COOKIE_NAME + "="))
    assert "Path=/t/acme/" in header
    assert "HttpOnly" in header
