"""The route planner shared by the suites that sweep every rule of the URL map.

:func:`plan` turns ``app.url_map`` into probes (one per rule and method, and per form action), and
reports what it cannot aim: a path parameter it knows no record for, an OAuth endpoint it has no recipe
for. :class:`Values` holds one value per record kind (a tenant's real ones from :func:`seed`, or ones
that never existed), :func:`fill_path` and :func:`fill_schema` aim a probe at them, and :class:`Caller`
sends a probe with a valid body, query or form. A suite that uses these covers new routes on its own,
and fails (never skips) on a route it cannot aim until this module is taught about it.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from marshmallow import Schema, validate
from marshmallow import fields as mf
from sqlalchemy import select
from werkzeug.routing import Rule

from core.db import uuid7
from core.permissions import all_names
from core.security import new_secret
from core.sessions import COOKIE_NAME, PREFIXED_COOKIE_NAME
from core.tenancy import BoundTenant
from crm.records import attachments as crm_attachments
from crm.records import configuration, notifications, preferences
from crm.records import services as crm_services
from crm.records.entity import Entity, entities, find_entity
from crm.records.fields import FieldType
from crm.records.import_jobs import ImportJob
from crm.records.models import RecordShare, SavedView
from crm.records.scope import viewer_for
from tenants import services
from tenants.context import CSRF_COOKIE_NAME, PREFIXED_CSRF_COOKIE_NAME
from tenants.models import AuditEntry, Role, User
from tests.conftest import PASSWORD, provision

# --------------------------------------------------------------------------- the plan

#: Routes anyone may fetch on any host (they hold no tenant data); each with a sample URL that is
#: still fetched as globex, to check it carries nothing of acme either.
PUBLIC_ROUTES: dict[str, str] = {
    "static": "/static/app.css",
    "vendor": "/static/vendor/tabler/css/tabler.min.css",
    "health.healthz": "/healthz",
    "health.readyz": "/readyz",
    "api-docs.openapi_json": "/api/v1/openapi.json",
    "api-docs.openapi_swagger_ui": "/api/v1/docs",
}

#: What a path parameter names: the kind of record its value is taken from.
PATH_PARAM_KINDS = {"user_id": "user", "department_id": "department", "key": "role", "client_id": "client",
                    "invitation_id": "invitation", "token_id": "personal_token", "field_id": "custom_field",
                    "item_id": "dictionary_item", "kind": "dictionary_kind",
                    "job_id": "import_job",
                    "notification_id": "notification",
                    "relation_id": "relation"}
#: Kinds whose values are the platform's vocabulary, the same in every tenant (a dictionary's kind): a
#: route aimed only at them is no record of anyone's, and answers alike on every tenant.
SHARED_KINDS = frozenset({"dictionary_kind"})
#: Parameters whose meaning depends on the route.
ENDPOINT_PARAM_KINDS = {("staff.reset", "token"): "reset_token", ("staff.accept", "token"): "invite_token",
                        ("calendar.feed", "token"): "calendar_token"}
#: API routes about the calling person (their bell): a machine client's token gets an empty answer.
PERSONAL_API_PREFIXES = ("/api/v1/notifications",)
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


#: The CRM's generated routes (crm_api.<entity>_<name>, crm.<entity>_<name>): a path parameter names a
#: record of the endpoint's entity, or what hangs off it (kind "<entity>" + suffix).
CRM_BLUEPRINTS = frozenset({"crm", "crm_api"})
CRM_PARAM_SUFFIXES = {"record_id": "", "share_id": ".share", "file_id": ".file", "view_id": ".view"}
#: Per entity, the kinds seed() fills: a live record, a second one (merge), one in the recycle bin,
#: a share, an attachment, a saved view; the live record's title (searched for) and ETag.
CRM_KIND_SUFFIXES = ("", ".other", ".deleted", ".share", ".file", ".view", ".name", ".etag")


def crm_entity(endpoint: str) -> Entity | None:
    """The CRM entity a generated endpoint belongs to (the longest entity key it starts with)."""
    blueprint, _, name = endpoint.partition(".")
    if blueprint not in CRM_BLUEPRINTS:
        return None
    keys = [e.key for e in entities() if name.startswith(e.key + "_")]
    return find_entity(max(keys, key=len)) if keys else None


def path_kind(rule: Rule, name: str) -> str | None:
    ent = crm_entity(rule.endpoint)
    if ent is not None and name in CRM_PARAM_SUFFIXES:
        return ent.key + CRM_PARAM_SUFFIXES[name]
    return ENDPOINT_PARAM_KINDS.get((rule.endpoint, name)) or PATH_PARAM_KINDS.get(name)


def aims_at_records(rule: Rule) -> bool:
    """The rule names a tenant's own record in its path (not only shared vocabulary)."""
    return any(path_kind(rule, name) not in SHARED_KINDS for name in rule.arguments)


def api_arguments(app, rule: Rule, method: str) -> list[tuple[str, Schema]]:
    view = app.view_functions[rule.endpoint]
    func_ = getattr(getattr(view, "view_class", None), method.lower(), view)
    params = (getattr(func_, "_apidoc", {}).get("arguments") or {}).get("parameters", [])
    out = []
    for p in params:
        schema = p["schema"]
        out.append((p["in"], schema() if isinstance(schema, type) else schema))
    return out


def _plan_api(app, rule: Rule, method: str, problems: list[str]) -> list[Probe]:
    arguments = api_arguments(app, rule, method)
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
            if path_kind(rule, name) is None:
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
        crm = {}
        for ent in entities():
            crm |= {ent.key + suffix: str(uuid7()) for suffix in CRM_KIND_SUFFIXES}
            crm |= {f"{ent.key}.name": "Nowhere " + new_secret(6), f"{ent.key}.etag": 'W/"1"'}
        return cls({"user": str(uuid7()), "department": str(uuid7()), "audit": str(uuid7()),
                    "role": "no_such_role", "client": "cy_" + new_secret(12), "client_secret": new_secret(32),
                    "token": new_secret(32), "reset_token": new_secret(), "invite_token": new_secret(),
                    "invitation": str(uuid7()), "personal_token": str(uuid7()), "custom_field": str(uuid7()),
                    "dictionary_item": str(uuid7()), "dictionary_kind": "industry",
                    "import_job": str(uuid7()),
                    "notification": str(uuid7()), "calendar_token": new_secret(32), "relation": str(uuid7()), **crm})

    def normalise(self, text: str) -> str:
        for kind, value in self.slots.items():
            # As is, URL-encoded, and a query's form of it encoded again (a sign-in link's ``next``).
            for form in (value, quote(value, safe=""), quote(quote_plus(value), safe="")):
                text = text.replace(form, f"<{kind}>")
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


def _field_value(name: str, fld: mf.Field, values: Values, n: int) -> Any:
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


def crm_value(ent: Entity, key: str, n: int) -> Any:
    """A valid value for one of the entity's own fields (text, a choice, a date or time)."""
    f = ent.field(key)
    assert f is not None, key
    if f.choices:
        return f.choices[0].value
    if f.type == FieldType.DATETIME:
        return "2026-01-05T09:30:00+00:00"
    if f.type == FieldType.DATE:
        return "2026-01-05"
    return f"Probe 探针 {n}"


def crm_record_body(ent: Entity, values: Values, n: int) -> dict[str, Any]:
    """A valid new record of ``ent``: its required fields, and the customer / contact it is about."""
    body: dict[str, Any] = {}
    for f in ent.fields:
        if f.readonly:
            continue
        if f.type == FieldType.REF and f.key in ("customer_id", "contact_id") and f.target in values.slots:
            body[f.key] = values[f.target]
        elif f.required:
            body[f.key] = crm_value(ent, f.key, n)
    return body


def crm_route_name(ent: Entity, endpoint: str) -> str:
    """``customers_item`` → ``item``: the generated route's name within its entity's family."""
    return endpoint.partition(".")[2][len(ent.key) + 1:]


def crm_api_arguments(ent: Entity, probe: Probe, values: Values, n: int, headers: dict[str, str]) -> dict[str, Any]:
    """A valid call of a generated CRM API route (they take bodies the schemas only document)."""
    name, key = crm_route_name(ent, probe.rule.endpoint), ent.key
    if probe.method == "GET":
        # Lists search for the seeded record by its title: a list, a count and a search in one.
        return {"query_string": {"q": values[f"{key}.name"]}} if name == "collection" else {}
    if name == "collection":
        return {"json": crm_record_body(ent, values, n)}
    if name == "item" and probe.method == "PATCH":
        headers["If-Match"] = values[f"{key}.etag"]
        return {"json": {ent.title_field: f"Probe 探针 {n}"}}
    if name == "bulk":
        return {"json": {"action": "tag", "ids": [values[key]], "tags": ["probe"]}}
    if name == "merge":
        return {"json": {"keep": values[key], "drop": values[f"{key}.other"]}}
    if name == "shares":
        return {"json": {"user_id": values["user"], "access": "read"}}
    return {}


def crm_page_form(ent: Entity, probe: Probe, values: Values, n: int) -> dict[str, Any]:
    """What a generated CRM form post sends besides the generic fields: a valid record, the records a
    bulk action, merge or transfer names, a saved view's parameters, a file."""
    name, key = crm_route_name(ent, probe.rule.endpoint), ent.key
    form: dict[str, Any] = {k: str(v) for k, v in crm_record_body(ent, values, n).items()}
    form |= {"ids": [values[key]], "other": values[f"{key}.other"], "take": ["tags"], "owner_id": values["user"],
             "version": re.sub(r"\D", "", values[f"{key}.etag"]), "tags": "probe", "access": "read",
             "p:q": "probe"}
    if name == "upload":
        form["file"] = (ProbeFile(b"probe file\n"), "probe.txt")
    return form


class ProbeFile(io.BytesIO):
    """An uploaded file that can be sent again (the test client closes what it sends)."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.content = content


def fresh_files(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each ProbeFile of its form replaced by a new one, unread and open."""
    data = kwargs.get("data")
    if not isinstance(data, dict) or not any(isinstance(v, tuple) and isinstance(v[0], ProbeFile)
                                             for v in data.values()):
        return kwargs
    return {**kwargs, "data": {k: (ProbeFile(v[0].content), *v[1:]) if isinstance(v, tuple) and isinstance(
        v[0], ProbeFile) else v for k, v in data.items()}}


def fill_path(rule: Rule, values: Values, raw: dict[str, str] | None = None) -> str:
    """The rule's path aimed at ``values``; ``raw`` gives some parameters as-is (already URL-encoded)."""

    def sub(match: re.Match[str]) -> str:
        if raw and match.group(1) in raw:
            return raw[match.group(1)]
        kind = path_kind(rule, match.group(1))
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
    #: A personal token of its admin (the /me/tokens routes belong to users, not to API clients).
    personal_token: str = ""


def crm_entities_in_order() -> list[Entity]:
    """Every entity, the ones others refer to (customers, then contacts) first."""
    return sorted(entities(), key=lambda e: (e.key != "customers", e.key != "contacts"))


def seed_crm(s, actor, app, word: str, owner_id, share_with) -> tuple[dict[str, str], set[str]]:
    """For each CRM entity: a live record (about the customer and contact), a second one, one in the
    recycle bin, a share of the live one, an attachment on it (through the app's storage) and a saved
    view; their ids and names as Values slots, and the markers that only this tenant may see."""
    rt = app.extensions["courtyard"]
    v = viewer_for(s, actor)
    slots: dict[str, str] = {}
    private: set[str] = set()
    for ent in crm_entities_in_order():
        key = ent.key
        rows = {}
        for suffix, title in (("", "甲"), (".other", "乙"), (".deleted", "丙")):
            body = crm_record_body(ent, Values(slots), 0)
            body[ent.title_field] = f"{word} {ent.label_en} {title}"
            rows[suffix] = crm_services.create(s, v, ent, body)
            slots[key + suffix] = str(rows[suffix].id)
            private |= {str(rows[suffix].id), body[ent.title_field]}
        crm_services.delete_records(s, v, ent, [rows[".deleted"].id])
        live = rows[""]
        crm_services.share(s, v, ent, live.id, user_id=share_with)
        share_id = s.scalar(select(RecordShare.id).where(RecordShare.entity == key, RecordShare.record_id == live.id))
        filename, content = f"{word}-{key}-notes.txt", f"{word} {key} file 文件\n"
        file = crm_attachments.upload(s, v, ent, live, io.BytesIO(content.encode()), filename=filename,
                                      declared_type="text/plain", storage=rt.storage, settings=rt.settings)
        view = SavedView(entity=key, name=f"{word} {key} view 视图", owner_id=owner_id, shared=False,
                         spec={"params": [["sort", "-updated_at"]]})
        s.add(view)
        s.flush()
        slots |= {f"{key}.share": str(share_id), f"{key}.file": str(file.id), f"{key}.view": str(view.id),
                  f"{key}.name": f"{word} {ent.label_en} 甲", f"{key}.etag": f'W/"{live.version}"'}
        private |= {str(share_id), str(file.id), str(view.id), filename, content.strip(), view.name}
    return slots, private


def seed(db, slug: str, name: str, *, word: str, people: list[tuple[str, str]], departments: tuple[str, str],
         role: tuple[str, str], app) -> Seeded:
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
        crm_slots, crm_private = seed_crm(s, actor, app, word, admin_id, users[0].id)
        invitation, invite = services.invite(s, actor, email=f"invitee@{slug}.test", role="sales",
                                             name=f"{word} Invitee")
        issued = services.request_password_reset(s, people[0][0])
        assert issued is not None
        new = services.create_client(s, actor, tenant, name=f"{word} integration", scopes=sorted(all_names()))
        token, _row = services.issue_token(s, new.client, new.client.scopes, 3600)
        personal = services.create_personal_token(s, actor, tenant, user_id=admin_id, name=f"{word} laptop 笔记本")
        field = configuration.create_field(s, actor, {"entity": "customers", "type": "text",
                                                      "label_en": f"{word} Rating", "label_zh": f"{word} 评级"})
        item = configuration.add_item(s, actor, "industry", {"label_en": f"{word} Mining",
                                                             "label_zh": f"{word} 采矿"})
        configuration.set_format(s, actor, "customers", f"{word.upper()}-{{seq:05}}")
        # An import job of the workspace's API client (the token's own; the admin has none).
        job = ImportJob(entity="customers", filename=f"{word}.csv", size=9, data=b"name\nProbe", status="done",
                        result={"total": 1, "imported": 1, "skipped": 0, "errors": []})
        s.add(job)
        s.flush()
        note = notifications.notify(s, admin_id, "general", f"{word} notification 通知")
        assert note is not None
        calendar_token = preferences.new_calendar_token(s, admin_id)
        audit_ids = [str(e.id) for e in s.scalars(select(AuditEntry))]
        role_ids = [str(r.id) for r in s.scalars(select(Role))]
        emails = [u.email for u in s.scalars(select(User))]
        names = [u.name for u in s.scalars(select(User))]
    values = Values({"user": str(users[0].id), "department": str(child.id), "audit": audit_ids[-1],
                     "role": role[0], "client": new.client.client_id, "client_secret": new.secret, "token": token,
                     "reset_token": issued[1].secret, "invite_token": invite.secret,
                     "invitation": str(invitation.id), "personal_token": str(personal.token.id),
                     "custom_field": str(field.id), "dictionary_item": str(item.id), "dictionary_kind": "industry",
                     "import_job": str(job.id),
                     "notification": str(note.id), "calendar_token": calendar_token,
                     "relation": str(uuid7()), **crm_slots})
    private = {personal.token.name, personal.token.prefix, f"{word}.csv",
               *(v for k, v in values.slots.items() if k not in SHARED_KINDS), str(admin_id), str(parent.id),
               str(users[1].id), str(invitation.id),
               *audit_ids, *role_ids, *emails, *names, f"invitee@{slug}.test", *departments, role[1],
               str(tenant.id), tenant.id.hex, f"{word} Rating", f"{word} Mining",
               f"{word.upper()}-{{seq:05}}", f"{word} notification 通知", *crm_private}
    # ETags are version numbers, the same in every tenant: not a marker.
    private -= {v for k, v in values.slots.items() if k.endswith(".etag")}
    return Seeded(slug, tenant, values, new.client.client_id, new.secret, token, private,
                  public={name, word, slug}, personal_token=personal.secret)


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
    """The value as every session and CSRF cookie: a session id or an anonymous visitor's CSRF nonce
    (each cookie ignores a value that is not its own)."""
    names = (COOKIE_NAME, PREFIXED_COOKIE_NAME, CSRF_COOKIE_NAME, PREFIXED_CSRF_COOKIE_NAME)
    return {"Cookie": "; ".join(f"{name}={sid}" for name in names)}


def open_session(app, headers: dict[str, str], prefix: str, email: str | None = None) -> tuple[str, str]:
    """A browser's credentials (cookie value, CSRF token): an anonymous visitor's CSRF cookie (no
    server-side session), or a session signed in as ``email``."""
    c = app.test_client(use_cookies=False)
    page = c.get(prefix + "/sign-in", headers=headers)
    assert page.status_code == 200
    name = PREFIXED_COOKIE_NAME if prefix else COOKIE_NAME
    sid = cookie_value(page, PREFIXED_CSRF_COOKIE_NAME if prefix else CSRF_COOKIE_NAME)
    csrf = csrf_in(page.get_data(as_text=True))
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
        kwargs = self.arguments(probe, values, n, headers)
        self.sent.append(path + json.dumps(kwargs, ensure_ascii=False, default=str)
                         + headers.get("Authorization", ""))
        reset_rate_limits(self.redis)
        response = self.app.test_client(use_cookies=False).open(path, method=probe.method, headers=headers,
                                                                **kwargs)
        assert response.status_code != 500, f"{probe} answered 500: {response.get_data(as_text=True)[:500]}"
        return response

    def arguments(self, probe: Probe, values: Values, n: int, headers: dict[str, str]) -> dict[str, Any]:
        """Query, JSON or form for one probe (``headers`` gains the CSRF or client-auth header)."""
        kwargs: dict[str, Any] = {}
        if probe.area == "api":
            if self.csrf:
                headers["X-CSRF-Token"] = self.csrf
            for location, schema in api_arguments(self.app, probe.rule, probe.method):
                data = {"__probe__": "1"} if probe.variant == "garbage" else fill_schema(schema, values, n)
                if location == "query":
                    kwargs["query_string"] = {k: str(v).lower() if isinstance(v, bool) else v for k, v in data.items()}
                else:
                    kwargs["json"] = data
            if (ent := crm_entity(probe.rule.endpoint)) is not None:
                kwargs |= crm_api_arguments(ent, probe, values, n, headers)
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
            if (ent := crm_entity(probe.rule.endpoint)) is not None:
                # A CRM list reads every parameter as a filter: only the search for the seeded record.
                kwargs["query_string"] = {"q": values[f"{ent.key}.name"]}
                if crm_route_name(ent, probe.rule.endpoint) == "merge":
                    kwargs["query_string"]["other"] = values[f"{ent.key}.other"]
            elif probe.rule.endpoint == "crm.search":
                kwargs["query_string"] = {"q": values["customers.name"]}
        else:
            form = {"id": values["department"], "parent_id": values["department"],
                    "department_id": values["department"], "user_id": values["user"], "role": values["role"],
                    "client_id": values["client"], "token": values["token"], "name": "Probe 探针",
                    "company": "Probe", "slug": "probe-slug", "email": PROBE_EMAIL, "password": PASSWORD,
                    # Not the caller's real password: a probe must not lock its own caller out.
                    "current_password": "not " + PASSWORD, "new_password": PASSWORD + "!",
                    "permissions": ["users.read"],
                    "scopes": ["users.read"], "locale": "en", "next": "/home"}
            if (ent := crm_entity(probe.rule.endpoint)) is not None:
                form |= crm_page_form(ent, probe, values, n)
                if crm_route_name(ent, probe.rule.endpoint) in ("share", "bulk"):
                    del form["department_id"]  # a share names one user or one department
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


def reset_rate_limits(redis) -> None:
    # Probes repeat failed sign-ins and resets on purpose, and call the API many times; throttling or an
    # exhausted API quota would make twin probes differ.
    keys = [*redis.scan_iter("LIMITS:*"), *redis.scan_iter("rq:*")]
    if keys:
        redis.delete(*keys)
