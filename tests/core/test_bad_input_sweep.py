"""Hostile input at every entry point of the URL map: a precise 4xx, never a 500, never a partial write.

The project's rule: "Every entry point rejects bad input with a precise message and a 4xx, never a 500
or a traceback, and never a partial write." This suite holds every rule of ``app.url_map`` (Flask's
static files aside) to it, for every method the rule allows, acting as acme's administrator: a bearer
token with every scope on /api/ (and the browser's session with its CSRF header), the signed-in
session with its CSRF token on pages, acme's own client credentials on /oauth/, an anonymous session
with its CSRF token on the public site. Each request starts from a valid one for that route
(tests/probes.py aims it at acme's real records) and spoils one thing:

- the JSON body: malformed, not an object, nested 100 000 deep, a 5 000-digit number, invalid UTF-8,
  the wrong content type, an unknown key; each field in turn missing, 10 000 characters long, with a
  NUL or a lone surrogate, 10**30, Infinity, a list, an object, null …;
- the form: each field the view reads in turn missing, 10 000 characters long, with a NUL, not valid
  UTF-8, repeated (for each action a form may carry); no or a wrong CSRF token; the whole body raw
  invalid UTF-8, JSON, multipart;
- the query: the parameters the view reads and the usual page/limit/before/cursor/next ones as -1, 0,
  10**20, "abc", a NUL, a malformed UUID, 10 000 characters, repeated; raw invalid UTF-8;
- each path parameter: a malformed or unknown UUID, 10 000 characters, NUL, invalid UTF-8, ``../``;
- headers: If-Match, X-Request-ID, Accept-Language and session cookie garbage, broken Basic
  credentials on /oauth/;
- oversize: 200 kB (far beyond any field, well within the 2 MiB body limit, so the app itself must
  answer) in each JSON field, form field and path parameter in turn, in every query parameter at once,
  and in each header a client may send (X-Request-ID, Accept-Language, If-Match, Cookie, Authorization …);
- the ``/t/<slug>/`` prefix: the valid request under ``/t/acme/`` and ``/t/globex/`` on acme's own host
  must be a 404 (finding 6).

For every answer: the status is below 500 and no traceback is shown; an /api/ error is the project's
JSON error (``{status, code, message[, errors]}``, /oauth/ may answer RFC 6749's ``{error}``); the
answer is not the database's safety net (the DataError handler, ``invalid_value``: the value reached
the database unchecked, and its message cannot say which field is wrong); a 4xx left every table of
acme's schema and of the shared schema as it was (row count and contents); and an accepted request
did not store a 10 000-character (or 200 kB) value, whole or truncated. Every request runs in a
savepoint that is rolled back afterwards, so each one meets the same seeded records, and the session
it uses is put back in Redis first (a probe of /sign-out or a successful sign-in would end it).

The fields a page reads are found by watching it: a request class whose form and query dicts record
the keys looked up. The routes are enumerated at collection time from an app built without servers,
so a new route is a new test case by itself; one the planner cannot aim fails (it never skips) until
tests/probes.py is taught about it.

The CRM's per-entity routes are generated from one code path (crm.records.api._register for
/api/v1/<entity>/…, crm.records.views._ROUTES for the pages), so one family, :data:`FULL_FAMILY`
(customers), gets every hostile variant above, and each other entity's generated route (one whose view
runs the very same code as its customers twin, checked by :func:`generated_twin`) gets a small
representative set: the valid request (with the token and the session on the API), the prefix checks,
each path parameter as a malformed id, an unknown id and 200 kB, and every body, form or query field
200 kB at once. A route of an entity that runs code of its own has no twin and is swept in full;
test_every_route_is_swept_in_full_or_is_a_generated_copy_of_one_that_is fails on a route that is
neither. (tests/tenants/test_isolation.py still probes every route of every entity.)

Passwords are hashed with argon2's cheapest parameters here: sign-in, reset, invitation and sign-up
posts each hash or verify one, hundreds of times.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import pytest
from argon2 import PasswordHasher
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing import Rule

from core import security
from core.db import Database
from core.sessions import COOKIE_NAME, PREFIXED_COOKIE_NAME
from core.settings import Settings
from core.tasks import TaskRuntime, configure_tasks, task_runtime
from courtyard.app import create_app
from tenants.context import CSRF_COOKIE_NAME
from tests.conftest import host
from tests.probes import (
    FORM_ACTIONS,
    PUBLIC_ROUTES,
    SKIPPED_METHODS,
    Caller,
    Probe,
    Seeded,
    Values,
    api_arguments,
    cookie_header,
    cookie_value,
    crm_entity,
    crm_route_name,
    csrf_in,
    fill_path,
    fresh_files,
    open_session,
    path_kind,
    plan,
    reset_rate_limits,
    seed,
)

#: Not swept: Flask's own static files.
NOT_SWEPT = frozenset({"static"})
#: The ``/t/<slug>/`` prefixes every route is tried under on acme's own host: its own, and one that does
#: not exist here (tests/tenants/test_isolation.py tries another tenant's, with that tenant's credentials).
TENANT_HOST_PREFIXES = ("acme", "globex")
#: Served on the bare domain (the public site), by an anonymous visitor.
PUBLIC_SITE_BLUEPRINT = "site"
PUBLIC_HOST = {"Host": "localhost"}

LONG = "x" * 10_000
#: Oversize: far beyond any field's limit, well within the body limit (2 MiB), so the app itself answers.
HUGE = "x" * 200_000
#: Pagination-style parameters every GET is tried with, whether or not the view reads them.
GENERIC_QUERY = ("page", "page_size", "per_page", "limit", "offset", "before", "after", "cursor", "next", "q")
QUERY_VALUES: dict[str, str] = {
    "-1": "-1", "0": "0", "10**20": str(10**20), "abc": "abc", "NUL": "a\x00b", "1e400": "1e400",
    "malformed UUID": "0000000g-0000-7000-8000-00000000000z", "10 000 chars": LONG, "empty": "",
}
#: Path parameter values, already URL-encoded.
PATH_VALUES: dict[str, str] = {
    "malformed UUID": "not-a-uuid", "nil UUID": "00000000-0000-0000-0000-000000000000",
    "10 000 chars": LONG, "NUL": "a%00b", "invalid UTF-8": "%FF%FE", "encoded surrogate": "%ED%A0%80",
    "dot-dot": "..%2F..%2Fetc%2Fpasswd", "space": "%20", "-1": "-1",
}
#: JSON values put in place of one field (raw JSON text).
FIELD_VALUES: dict[str, str] = {
    "10 000 chars": json.dumps(LONG), "NUL": '"a\\u0000b"', "lone surrogate": '"a\\ud800b"',
    "reversed surrogates": '"\\udc00\\ud800"', "10**30": str(10**30), "-1": "-1", "0": "0", "12.5": "12.5",
    "Infinity": "Infinity", "NaN": "NaN", "empty string": '""', "null": "null", "true": "true",
    "list": '["x"]', "list of long strings": json.dumps([LONG] * 3), "object": '{"a": "b"}',
    "nested 50 deep": "[" * 50 + "]" * 50,
}
#: Whole bodies sent in place of the JSON object (raw bytes, content type application/json).
BODIES: dict[str, bytes] = {
    "malformed JSON": b'{"name": ', "trailing comma": b'{"a": 1,}', "empty body": b"",
    "JSON number": b"42", "JSON string": b'"x"', "JSON null": b"null", "JSON true": b"true",
    "JSON array": b"[{}]", "nested 100 000 deep": b"[" * 100_000 + b"]" * 100_000,
    "object nested 5 000 deep": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "5 000-digit number": b'{"x": 1' + b"0" * 5_000 + b"}", "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "byte order mark": b'\xef\xbb\xbf{"name": "x"}', "UTF-16": '{"name": "x"}'.encode("utf-16"),
    "lone surrogate key": b'{"\\ud800": 1}', "NUL key": b'{"a\\u0000": 1}',
}
#: Headers sent 200 kB long, one at a time, on every route.
OVERSIZE_HEADERS = ("X-Request-ID", "Accept-Language", "If-Match", "If-None-Match", "Cookie", "Authorization",
                    "X-CSRF-Token", "User-Agent", "Referer", "X-Forwarded-For", "Content-Language")
HEADER_SHOTS: dict[str, dict[str, str]] = {
    "X-Request-ID with NUL": {"X-Request-ID": "a\x00b"},
    "X-Request-ID 10 000 chars": {"X-Request-ID": LONG},
    "X-Request-ID non-ASCII": {"X-Request-ID": "请求-é"},
    "Accept-Language garbage": {"Accept-Language": "zh;q=nan, en;q=1e999, *;q=-1, ;;,q="},
    "Accept-Language 10 000 chars": {"Accept-Language": LONG},
    "session cookie garbage": {"Cookie": f"{COOKIE_NAME}=a\x00b; {PREFIXED_COOKIE_NAME}={LONG}"},
}
IF_MATCH_VALUES = ('W/"abc"', 'W/"99999999999999999999999999"', '"-1"', 'W/"\u00b2"', "*", LONG, 'W/"1\x00"')
ERROR_KEYS = {"status", "code", "message"}
#: What the app's database safety net answers (core DataError → 400): input that reached the database.
SAFETY_NET_CODE = "invalid_value"


#: The one family of the CRM's generated routes swept with every hostile variant.
FULL_FAMILY = "customers"
#: What the other generated families get instead (see the module's docstring).
LIGHT_PATH_VALUES = ("malformed UUID", "nil UUID")

# --------------------------------------------------------------------------- the inventory, at collection


def _collection_app() -> Any:
    """The app, built without servers (nothing connects until a request): only its URL map is used."""
    settings = Settings(var_dir=Path(tempfile.gettempdir()) / "courtyard-sweep-collection",
                        database_url="postgresql://collect@/unused", redis_url="redis://unused.invalid/0",
                        secret_key="collection-only", base_domain="localhost")
    return create_app(settings)


def swept(app: Any) -> list[tuple[str, str]]:
    """Every (rule, method) of the URL map this suite sweeps."""
    return sorted((r.rule, m) for r in app.url_map.iter_rules() if r.endpoint not in NOT_SWEPT
                  for m in r.methods - SKIPPED_METHODS)


def _code(view: Any) -> tuple[Any, ...]:
    """What a view runs: its methods' code (a MethodView), or its code and the functions it closes over."""
    cls = getattr(view, "view_class", None)
    if cls is not None:
        return tuple(sorted((m, getattr(cls, m.lower()).__code__) for m in cls.methods))
    inner = inspect.unwrap(view)
    cells = tuple(c.cell_contents for c in inner.__closure__ or () if not isinstance(c.cell_contents, str))
    return inner.__code__, cells


def generated_twin(app: Any, rule: Rule) -> Rule | None:
    """The FULL_FAMILY route that ``rule`` is a generated copy of (the same path with the entity's key
    swapped, the same methods, a view running the same code), or None: ``rule`` is swept in full."""
    ent = crm_entity(rule.endpoint)
    if ent is None or ent.key == FULL_FAMILY:
        return None
    blueprint = rule.endpoint.partition(".")[0]
    endpoint = f"{blueprint}.{FULL_FAMILY}_{crm_route_name(ent, rule.endpoint)}"
    twins = [r for r in app.url_map.iter_rules() if r.endpoint == endpoint]
    if len(twins) != 1:
        return None
    twin = twins[0]
    if twin.methods != rule.methods or twin.rule != rule.rule.replace(f"/{ent.key}", f"/{FULL_FAMILY}", 1):
        return None
    if _code(app.view_functions[rule.endpoint]) != _code(app.view_functions[twin.endpoint]):
        return None
    return twin


ROUTES = swept(_collection_app())


# --------------------------------------------------------------------------- watching what a view reads


class _Watched(ImmutableMultiDict):
    """Form and query dicts that note which keys the app looks up."""

    read: ClassVar[set[str]] = set()

    def __getitem__(self, key):
        _Watched.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        _Watched.read.add(key)
        return super().__contains__(key)

    def get(self, key, *args, **kwargs):
        _Watched.read.add(key)
        return super().get(key, *args, **kwargs)

    def getlist(self, key, *args, **kwargs):
        _Watched.read.add(key)
        return super().getlist(key, *args, **kwargs)


# --------------------------------------------------------------------------- aiming


def area_of(rule: Rule) -> str:
    if rule.rule.startswith("/oauth/"):
        return "oauth"
    return "api" if rule.rule.startswith("/api/") else "page"


def aim(app: Any, rule: Rule, values: Values, raw: dict[str, str] | None = None) -> str:
    """The rule's path aimed at ``values`` (public routes: at their sample URL); LookupError if it cannot be."""
    if rule.endpoint in PUBLIC_ROUTES:
        sample = PUBLIC_ROUTES[rule.endpoint].split("?", 1)[0]
        endpoint, args = app.url_map.bind("localhost").match(sample, method="GET")
        if endpoint != rule.endpoint:
            msg = f"{rule.rule}: the PUBLIC_ROUTES sample {sample} belongs to {endpoint}"
            raise LookupError(msg)

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            return raw[name] if raw and name in raw else quote(str(args[name]), safe="/")

        return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", sub, rule.rule)
    unknown = sorted(n for n in rule.arguments if path_kind(rule, n) is None)
    if unknown:
        msg = (f"{rule.rule}: no value for path parameter(s) {unknown} (teach PATH_PARAM_KINDS / "
               f"ENDPOINT_PARAM_KINDS in tests/probes.py, or list the route in PUBLIC_ROUTES)")
        raise LookupError(msg)
    return fill_path(rule, values, raw)


# --------------------------------------------------------------------------- one request, and its checks


@dataclass
class Shot:
    label: str
    path: str
    method: str
    headers: dict[str, str]
    kwargs: dict[str, Any]
    #: The one status this shot must get (None: any 4xx or success will do).
    expect: int | None = None


#: A run of LONG's characters this long in a stored row: (part of) a 10 000-character value was kept.
LONG_RUN = LONG[:100]


def tables_of(connection: Any, schema: str | None) -> list[tuple[str, str]]:
    """The tables of the shared schema and of the tenant's schema (None: of every tenant schema)."""
    tables = connection.exec_driver_sql(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "AND (table_schema = 'shared' OR table_schema = %(schema)s "
        "OR (%(schema)s IS NULL AND table_schema LIKE 't\\_%%')) ORDER BY 1, 2", {"schema": schema}).all()
    assert len(tables) >= 8, tables
    return [(s, t) for s, t in tables]


# Identifiers straight from information_schema, quoted; no value is interpolated.
def snapshot_sql(tables: list[tuple[str, str]]) -> str:
    """One query: each table's row count and a digest of its rows, and which schemas exist."""
    return " UNION ALL ".join([
        *(f"SELECT '{s}.{t}', count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) "
          f'FROM "{s}"."{t}" r' for s, t in tables),
        "SELECT 'schemas', count(*), md5(string_agg(nspname, ',' ORDER BY nspname)) FROM pg_namespace"])


def long_value_sql(tables: list[tuple[str, str]]) -> str:
    """One query: the tables holding a row with LONG_RUN in it."""
    return " UNION ALL ".join(
        f"SELECT '{s}.{t}' FROM \"{s}\".\"{t}\" r WHERE strpos(r::text, '{LONG_RUN}') > 0" for s, t in tables)


def snapshot(connection: Any, sql: str) -> dict[str, tuple[int, str]]:
    return {name: (count, digest) for name, count, digest in connection.exec_driver_sql(sql).all()}


def error_shape_problem(response: Any, *, oauth: bool) -> str | None:
    """What is wrong with an error body of the API (None: it is the project's JSON error)."""
    body = response.get_json(silent=True) if response.is_json else None
    if not isinstance(body, dict):
        return f"the error is not a JSON object: {response.get_data(as_text=True)[:200]!r}"
    if oauth and isinstance(body.get("error"), str) and body["error"]:
        return None  # RFC 6749 §5.2
    keys = set(body)
    code, message = body.get("code"), body.get("message")
    checks = [
        (keys >= ERROR_KEYS and not keys - ERROR_KEYS - {"errors"},
         f"the error body has keys {sorted(keys)}, not status/code/message[/errors]"),
        (body.get("status") == response.status_code,
         f"the error body says status {body.get('status')!r} but the response is {response.status_code}"),
        (isinstance(code, str) and bool(code), f"the error code is {code!r}"),
        (isinstance(message, str) and bool(message.strip()), f"the error message is {message!r}"),
        (isinstance(body.get("errors", {}), dict), f"the field errors are {body.get('errors')!r}, not an object"),
    ]
    return next((problem for ok, problem in checks if not ok), None)


@dataclass
class Sweep:
    """Sends shots at one route and collects everything wrong with the answers."""

    app: Any
    connection: Any
    redis: Any
    acme: Seeded
    sql: str
    baseline: dict[str, tuple[int, str]]
    sessions: dict[str, bytes]
    callers: dict[str, Caller]
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    n: int = 0

    @classmethod
    def start(cls, app: Any, connection: Any, redis: Any, acme: Seeded) -> Sweep:
        own = (acme.client_id, acme.client_secret)
        admin_sid, admin_csrf = open_session(app, host("acme"), "", "admin@acme.test")
        page = app.test_client(use_cookies=False).get("/", headers=PUBLIC_HOST)
        # The public site's visitor has a CSRF cookie and no server-side session.
        public_sid, public_csrf = cookie_value(page, CSRF_COOKIE_NAME), csrf_in(page.get_data(as_text=True))
        assert public_sid
        keys = [app.session_interface._key(admin_sid)]
        sessions = {key: redis.get(key) for key in keys}
        assert all(sessions.values())
        admin = {**host("acme"), **cookie_header(admin_sid)}
        callers = {
            "token": Caller(app, redis, {**host("acme"), "Authorization": f"Bearer {acme.token}"}, own_client=own),
            "session": Caller(app, redis, admin, csrf=admin_csrf, own_client=own),
            "public": Caller(app, redis, {**PUBLIC_HOST, **cookie_header(public_sid)}, csrf=public_csrf,
                             own_client=own),
            "client": Caller(app, redis, host("acme"), own_client=own),
        }
        tables = tables_of(connection, acme.tenant.schema)
        sql = snapshot_sql(tables)
        baseline = snapshot(connection, sql)
        return cls(app, connection, redis, acme, sql, baseline, sessions, callers)

    def base(self, who: str, probe: Probe) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A valid request for ``probe``: path, headers, and the test client's keyword arguments."""
        caller = self.callers[who]
        self.n += 1
        headers = dict(caller.headers)
        kwargs = caller.arguments(probe, self.acme.values, self.n, headers)
        return aim(self.app, probe.rule, self.acme.values), headers, kwargs

    def fire(self, shot: Shot) -> Any:
        """Send one shot from the seeded state, check the answer, and undo whatever it wrote."""
        reset_rate_limits(self.redis)
        for key, value in self.sessions.items():
            self.redis.set(key, value, ex=3600)
        savepoint = self.connection.begin_nested()
        self.sent += 1
        where = f"{shot.method} {shot.path[:120]} [{shot.label}]"
        try:
            response = self.app.test_client(use_cookies=False).open(
                shot.path, method=shot.method, headers=shot.headers, **fresh_files(shot.kwargs))
            self.failures.extend(f"{where}: {problem}" for problem in self.problems(shot, response))
        except Exception as exc:  # an exception escaping the app is a finding, not the end of the sweep
            self.failures.append(f"{where}: raised {exc!r}"[:600])
            response = None
        finally:
            savepoint.rollback()
        return response

    def problems(self, shot: Shot, response: Any) -> Iterator[str]:
        status = response.status_code
        text = response.get_data(as_text=True)
        if status >= 500:
            yield f"answered {status}: {text[:300]!r}"
        if shot.expect is not None and status != shot.expect:
            yield f"answered {status}, not {shot.expect}: {text[:200]!r}"
        if "Traceback (most recent call last)" in text:
            yield "shows a traceback"
        path = shot.path.split("?", 1)[0]
        if status >= 400 and path.startswith(("/api/", "/oauth/")):
            problem = error_shape_problem(response, oauth=path.startswith("/oauth/"))
            if problem:
                yield problem
        body = response.get_json(silent=True) if response.is_json else None
        if (isinstance(body, dict) and body.get("code") == SAFETY_NET_CODE) or (
                f'data-code="{SAFETY_NET_CODE}"' in text):
            yield ("the value reached the database unchecked (answered by the DataError safety net, "
                   f"{status}): validate it where it comes in, with a message naming the field")
        if status < 400 and LONG_RUN in repr((shot.path, shot.headers, shot.kwargs)):
            # Every tenant schema: a sign-up stores its admin in a schema of its own.
            kept = [name for (name,) in self.connection.exec_driver_sql(
                long_value_sql(tables_of(self.connection, None))).all()]
            if kept:
                yield (f"answered {status} and stored (part of) a 10 000-character value in {kept}: "
                       "refuse it with a message instead of storing or truncating it")
        if 400 <= status < 500:
            after = snapshot(self.connection, self.sql)
            if after != self.baseline:
                changed = {t: f"{self.baseline.get(t, (0, ''))[0]}→{after.get(t, (0, ''))[0]} rows"
                           for t in sorted(set(after) | set(self.baseline)) if after.get(t) != self.baseline.get(t)}
                yield f"partial write: answered {status} but changed {changed}"

    def finish(self) -> None:
        assert snapshot(self.connection, self.sql) == self.baseline, "the savepoints did not undo the shots"
        assert self.sent > 0
        if self.failures:
            shown = "\n".join(self.failures[:60])
            more = f"\n… and {len(self.failures) - 60} more" if len(self.failures) > 60 else ""
            pytest.fail(f"{len(self.failures)} of {self.sent} hostile requests were mishandled:\n{shown}{more}",
                        pytrace=False)


# --------------------------------------------------------------------------- the batteries


def with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def encoded(params: Any) -> str:
    return urlencode(params, doseq=True)


def query_pairs(kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    query = kwargs.get("query_string") or {}
    return [(k, str(v)) for k, v in (query.items() if isinstance(query, dict) else query)]


def query_shots(path: str, method: str, headers: dict[str, str], kwargs: dict[str, Any],
                read: set[str], *, thorough: bool) -> Iterator[Shot]:
    """Hostile query strings: each parameter the view reads in turn, then the unread generic ones at once."""
    rest = {k: v for k, v in kwargs.items() if k != "query_string"}
    base = dict(query_pairs(kwargs))
    read = (read | set(base)) - {"csrf_token"}
    generic = [g for g in GENERIC_QUERY if g not in read]
    for label, value in QUERY_VALUES.items():
        if thorough:
            for name in sorted(read):
                yield Shot(f"query {name}={label}", with_query(path, encoded({**base, name: value})), method,
                           headers, rest)
            yield Shot(f"unread query parameters={label}", with_query(path, encoded(
                {**base, **dict.fromkeys(generic, value)})), method, headers, rest)
        else:
            yield Shot(f"every query parameter={label}", with_query(path, encoded(
                {**base, **dict.fromkeys([*generic, *read], value)})), method, headers, rest)
    for name in sorted(read) if thorough else []:
        yield Shot(f"query {name} repeated", with_query(path, encoded([*base.items(), (name, "1"), (name, "abc")])),
                   method, headers, rest)
    names = sorted(read) or list(GENERIC_QUERY[:2])
    yield Shot("query with %-encoded invalid UTF-8", with_query(path, "&".join(f"{n}=%FF%FE" for n in names)),
               method, headers, rest)
    raw = "&".join(f"{n}=\xff\xfe" for n in names)
    yield Shot("query with raw invalid UTF-8", path, method, headers,
               {**rest, "environ_overrides": {"QUERY_STRING": raw}})
    yield Shot("query of separators only", with_query(path, "&&=&=x&%"), method, headers, rest)


def path_shots(sweep: Sweep, rule: Rule, method: str, headers: dict[str, str],
               kwargs: dict[str, Any]) -> Iterator[Shot]:
    for name in sorted(rule.arguments):
        for label, value in PATH_VALUES.items():
            path = aim(sweep.app, rule, sweep.acme.values, {name: value})
            yield Shot(f"path <{name}> {label}", path, method, headers, kwargs)


def header_shots(path: str, method: str, headers: dict[str, str], kwargs: dict[str, Any],
                 *, if_match: bool) -> Iterator[Shot]:
    for label, extra in HEADER_SHOTS.items():
        yield Shot(label, path, method, {**headers, **extra}, kwargs)
    for value in IF_MATCH_VALUES if if_match else ():
        yield Shot(f"If-Match {value[:20]!r}", path, method, {**headers, "If-Match": value}, kwargs)


def raw_json(body: dict[str, Any], key: str, token: str) -> bytes:
    """``body`` as JSON text with ``key``'s value replaced by the raw JSON ``token``."""
    marker = "\x01hostile\x01"
    return json.dumps({**body, key: marker}).replace(json.dumps(marker), token).encode()


def body_shots(path: str, method: str, headers: dict[str, str], kwargs: dict[str, Any]) -> Iterator[Shot]:
    """Whole bodies in place of the JSON object, and the wrong content types."""
    rest = {k: v for k, v in kwargs.items() if k != "json"}
    body = kwargs.get("json") if isinstance(kwargs.get("json"), dict) else {}
    for label, data in BODIES.items():
        yield Shot(label, path, method, headers, {**rest, "data": data, "content_type": "application/json"})
    text = json.dumps(body).encode()
    for label, content_type in (("text/plain", "text/plain"), ("no content type", ""),
                                ("JSON with charset=utf-16", "application/json; charset=utf-16"),
                                ("form-encoded content type", "application/x-www-form-urlencoded")):
        yield Shot(f"JSON body sent as {label}", path, method, headers,
                   {**rest, "data": text, "content_type": content_type})
    yield Shot("a real form instead of JSON", path, method, headers,
               {**rest, "data": {k: str(v) for k, v in body.items()}})
    yield Shot("multipart instead of JSON", path, method, headers,
               {**rest, "data": {"file": (io.BytesIO(text), "body.json")}, "content_type": "multipart/form-data"})
    yield Shot("an array holding the body", path, method, headers, {**rest, "json": [body]})
    yield Shot("an empty object", path, method, headers, {**rest, "json": {}})
    yield Shot("an unknown key", path, method, headers, {**rest, "json": {**body, "__unknown__": 1}})
    yield Shot("a duplicated key", path, method, headers, {
        **rest, "data": text[:-1] + b", " + text[1:] if body else b"{}", "content_type": "application/json"})


def field_shots(path: str, method: str, headers: dict[str, str], kwargs: dict[str, Any]) -> Iterator[Shot]:
    """Each field of the JSON body in turn: missing, or one of FIELD_VALUES."""
    rest = {k: v for k, v in kwargs.items() if k != "json"}
    body = kwargs["json"]
    for key in body:
        yield Shot(f"field {key} missing", path, method, headers,
                   {**rest, "json": {k: v for k, v in body.items() if k != key}})
        for label, token in FIELD_VALUES.items():
            yield Shot(f"field {key}={label}", path, method, headers,
                       {**rest, "data": raw_json(body, key, token), "content_type": "application/json"})


def form_pairs(form: dict[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in form.items():
        pairs.extend((key, str(v)) for v in (value if isinstance(value, list) else [value]))
    return pairs


def form_shots(path: str, method: str, headers: dict[str, str], form: dict[str, Any], fields: set[str],
               rest: dict[str, Any]) -> Iterator[Shot]:
    """Each field the view reads in turn: missing, 10 000 characters, NUL, not UTF-8, repeated."""
    pairs = form_pairs(form)
    urlencoded = "application/x-www-form-urlencoded"
    for name in sorted(fields):
        others = [(k, v) for k, v in pairs if k != name]
        yield Shot(f"form {name} missing", path, method, headers, {**rest, "data": dict(others)})
        for label, value in (("10 000 chars", LONG), ("NUL", "a\x00b"), ("empty", ""), ("unknown", "no-such-thing")):
            yield Shot(f"form {name} {label}", path, method, headers,
                       {**rest, "data": encoded([*others, (name, value)]), "content_type": urlencoded})
        yield Shot(f"form {name} repeated", path, method, headers, {**rest, "data": encoded(
            [*pairs, (name, "no-such-thing"), (name, LONG)]), "content_type": urlencoded})
        yield Shot(f"form {name} %-encoded invalid UTF-8", path, method, headers, {
            **rest, "data": encoded(others) + f"&{name}=%FF%FE", "content_type": urlencoded})
        yield Shot(f"form {name} raw invalid UTF-8", path, method, headers, {
            **rest, "data": encoded(others).encode() + f"&{name}=".encode() + b"\xff\xfe\xed\xa0\x80",
            "content_type": urlencoded})


def whole_form_shots(path: str, method: str, headers: dict[str, str], form: dict[str, Any],
                     rest: dict[str, Any]) -> Iterator[Shot]:
    pairs = form_pairs(form)
    without_csrf = [(k, v) for k, v in pairs if k != "csrf_token"]
    urlencoded = "application/x-www-form-urlencoded"
    yield Shot("form without its CSRF token", path, method, headers, {**rest, "data": dict(without_csrf)})
    yield Shot("form with a wrong CSRF token", path, method, headers,
               {**rest, "data": {**dict(without_csrf), "csrf_token": "forged"}})
    yield Shot("empty form", path, method, headers, {**rest, "data": b"", "content_type": urlencoded})
    yield Shot("form body entirely raw invalid UTF-8", path, method, headers,
               {**rest, "data": b"\xff\xfe=\xff&\x00=\xed\xa0\x80", "content_type": urlencoded})
    yield Shot("form sent as JSON", path, method, headers, {**rest, "json": dict(pairs)})
    yield Shot("form sent as malformed JSON", path, method, headers,
               {**rest, "data": b'{"a": ', "content_type": "application/json"})
    yield Shot("form as multipart with files for fields", path, method, headers, {**rest, "data": {
        **dict(pairs), **{k: (io.BytesIO(b"\x00\xff"), "f.bin") for k, _ in without_csrf[:3]}},
        "content_type": "multipart/form-data"})


def oversize_shots(sweep: Sweep, rule: Rule, path: str, method: str, headers: dict[str, str],
                   kwargs: dict[str, Any], read: set[str]) -> Iterator[Shot]:
    """200 kB in every place the route takes input: each body field, form field and path parameter in
    turn, every query parameter at once, and each header a client may send."""
    rest = {k: v for k, v in kwargs.items() if k not in ("query_string", "json", "data")}
    query = query_pairs(kwargs)
    body = {k: v for k, v in kwargs.items() if k in ("json", "data", "content_type")}
    names = sorted((read | {k for k, _ in query}) - {"csrf_token"}) or list(GENERIC_QUERY)
    yield Shot("oversize: every query parameter 200 kB", with_query(path, encoded(
        [*[(k, v) for k, v in query if k not in names], *((n, HUGE) for n in names)])), method, headers,
        {**rest, **body})
    plain = with_query(path, encoded(query))
    if isinstance(kwargs.get("json"), dict):
        for key in kwargs["json"]:
            yield Shot(f"oversize: field {key} 200 kB", plain, method, headers,
                       {**rest, "json": {**kwargs["json"], key: HUGE}})
        yield Shot("oversize: a list of 200 kB strings in every field", plain, method, headers,
                   {**rest, "json": dict.fromkeys(kwargs["json"], [HUGE] * 5)})
        yield Shot("oversize: 200 kB unknown key", plain, method, headers,
                   {**rest, "json": {**kwargs["json"], HUGE: 1}})
    elif isinstance(kwargs.get("data"), dict):
        form = kwargs["data"]
        fields = (read | set(form)) - {"csrf_token"}
        for name in sorted(fields):
            yield Shot(f"oversize: form {name} 200 kB", plain, method, headers,
                       {**rest, "data": encoded([*form_pairs({k: v for k, v in form.items() if k != name}),
                                                 (name, HUGE)]),
                        "content_type": "application/x-www-form-urlencoded"})
    for name in sorted(rule.arguments):
        yield Shot(f"oversize: path <{name}> 200 kB", with_query(aim(sweep.app, rule, sweep.acme.values,
                                                                    {name: HUGE}), encoded(query)),
                   method, headers, {**rest, **body})
    for header in OVERSIZE_HEADERS:
        value = f"{'Bearer ' if header == 'Authorization' else ''}{HUGE}"
        if header == "Cookie":
            value = f"{COOKIE_NAME}={HUGE}; {PREFIXED_COOKIE_NAME}={HUGE}; other={HUGE}"
        yield Shot(f"oversize: header {header} 200 kB", plain, method, {**headers, header: value}, {**rest, **body})


# --------------------------------------------------------------------------- sweeping one route


def prefix_shots(sweep: Sweep, rule: Rule, method: str, who: str) -> Iterator[Shot]:
    """The route's valid request under ``/t/<slug>/`` on a tenant's host: always a 404 (finding 6)."""
    probe = Probe(rule, method, area_of(rule), ("post", "own") if area_of(rule) == "oauth" else None)
    path, headers, kwargs = sweep.base(who, probe)
    for slug in TENANT_HOST_PREFIXES:
        yield Shot(f"under /t/{slug}/ on acme's host", f"/t/{slug}{path}", method, {**headers, **host("acme")},
                   kwargs, expect=404)


def sweep_light(sweep: Sweep, rule: Rule, method: str) -> None:
    """A generated copy of a fully swept route: the representative shots of the module's docstring."""
    area = area_of(rule)
    for who in ("token", "session") if area == "api" else ("session",):
        path, headers, kwargs = sweep.base(who, Probe(rule, method, area))
        sweep.fire(Shot(f"the valid request ({who})", path, method, headers, kwargs))
    for shot in prefix_shots(sweep, rule, method, who):
        sweep.fire(shot)
    query = query_pairs(kwargs)
    rest = {k: v for k, v in kwargs.items() if k != "query_string"}
    for name in sorted(rule.arguments):
        for label, value in [*((v, PATH_VALUES[v]) for v in LIGHT_PATH_VALUES), ("200 kB", HUGE)]:
            sweep.fire(Shot(f"path <{name}> {label}", with_query(aim(sweep.app, rule, sweep.acme.values, {name: value}),
                                                                  encoded(query)), method, headers, rest))
    names = {k for k, _ in query} or set(GENERIC_QUERY)
    sweep.fire(Shot("every query parameter 200 kB", with_query(path, encoded(dict.fromkeys(sorted(names), HUGE))),
                    method, headers, rest))
    body = {k: v for k, v in rest.items() if k not in ("json", "data", "content_type")}
    if isinstance(kwargs.get("json"), dict) and kwargs["json"]:
        sweep.fire(Shot("every field 200 kB", with_query(path, encoded(query)), method, headers,
                        {**body, "json": dict.fromkeys(kwargs["json"], HUGE)}))
    elif isinstance(kwargs.get("data"), dict):
        form = kwargs["data"]
        pairs = [(k, v if k == "csrf_token" else HUGE) for k, v in form_pairs(form)]
        sweep.fire(Shot("every form field 200 kB", path, method, headers,
                        {**body, "data": encoded(pairs), "content_type": "application/x-www-form-urlencoded"}))


def sweep_route(sweep: Sweep, rule: Rule, method: str) -> None:
    area = area_of(rule)
    if generated_twin(sweep.app, rule) is not None:
        sweep_light(sweep, rule, method)
        return
    public_site = rule.endpoint.split(".", 1)[0] == PUBLIC_SITE_BLUEPRINT
    who = {"api": "token", "oauth": "client"}.get(area, "public" if public_site else "session")
    for shot in prefix_shots(sweep, rule, method, who):
        sweep.fire(shot)
    if area == "api":
        sweep_api(sweep, rule, method)
    elif area == "oauth":
        sweep_form(sweep, rule, method, "client", [("post", "own")], oauth=True)
    elif method == "GET":
        sweep_get(sweep, rule, "public" if public_site else "session", Probe(rule, method, "page"))
    else:
        sweep_form(sweep, rule, method, "public" if public_site else "session", list(FORM_ACTIONS), oauth=False)


def observe(sweep: Sweep, shot: Shot) -> set[str]:
    """Send ``shot`` and return the form / query keys the app looked up while answering it."""
    _Watched.read = set()
    sweep.fire(shot)
    return set(_Watched.read)


def sweep_get(sweep: Sweep, rule: Rule, who: str, probe: Probe, extra_read: frozenset[str] = frozenset()) -> None:
    path, headers, kwargs = sweep.base(who, probe)
    read = observe(sweep, Shot("the valid request", path, "GET", headers, kwargs)) | extra_read
    for shot in query_shots(path, "GET", headers, kwargs, read, thorough=True):
        sweep.fire(shot)
    query_path = with_query(path, encoded(query_pairs(kwargs)))
    rest = {k: v for k, v in kwargs.items() if k != "query_string"}
    for shot in path_shots(sweep, rule, "GET", headers, {**rest, "query_string": kwargs.get("query_string")}):
        sweep.fire(shot)
    for shot in header_shots(query_path, "GET", headers, rest, if_match=False):
        sweep.fire(shot)
    for shot in oversize_shots(sweep, rule, path, "GET", headers, kwargs, read):
        sweep.fire(shot)


def sweep_api(sweep: Sweep, rule: Rule, method: str) -> None:
    arguments = api_arguments(sweep.app, rule, method)
    fields = {name for location, schema in arguments if location == "query"
              for name, f in schema.fields.items() if not f.dump_only}
    if method == "GET":
        sweep_get(sweep, rule, "token", Probe(rule, method, "api"), frozenset(fields))
        path, headers, kwargs = sweep.base("session", Probe(rule, method, "api"))
        sweep.fire(Shot("the valid request, with the session", path, method, headers, kwargs))
        return
    for who in ("token", "session"):
        path, headers, kwargs = sweep.base(who, Probe(rule, method, "api"))
        sweep.fire(Shot(f"the valid request ({who})", path, method, headers, kwargs))
        for shot in body_shots(path, method, headers, kwargs):
            sweep.fire(Shot(f"{shot.label} ({who})", shot.path, shot.method, shot.headers, shot.kwargs))
        if who == "session":
            continue
        if isinstance(kwargs.get("json"), dict):
            for shot in field_shots(path, method, headers, kwargs):
                sweep.fire(shot)
        for shot in path_shots(sweep, rule, method, headers, kwargs):
            sweep.fire(shot)
        for shot in query_shots(path, method, headers, kwargs, fields, thorough=False):
            sweep.fire(shot)
        for shot in header_shots(path, method, headers, kwargs, if_match=True):
            sweep.fire(shot)
        for shot in oversize_shots(sweep, rule, path, method, headers, kwargs, fields):
            sweep.fire(shot)


def sweep_form(sweep: Sweep, rule: Rule, method: str, who: str, variants: list[Any], *, oauth: bool) -> None:
    """Form posts: for each action the view distinguishes, every field it reads, spoiled in turn."""
    for index, variant in enumerate(variants):
        path, headers, kwargs = sweep.base(who, Probe(rule, method, "oauth" if oauth else "page", variant))
        form = dict(kwargs.pop("data"))
        rest = kwargs
        read = observe(sweep, Shot(f"the valid request (action {variant})", path, method, headers,
                                   {**rest, "data": form}))
        if index > 0 and "action" not in read:
            break  # the view reads no action: the other variants are the same request
        fields = (read | (set(form) if oauth else set())) - {"csrf_token"}
        label = f"action {variant}: " if variant and not oauth else ""
        for shot in form_shots(path, method, headers, form, fields, rest):
            sweep.fire(Shot(label + shot.label, shot.path, shot.method, shot.headers, shot.kwargs))
        if index > 0:
            continue
        for shot in whole_form_shots(path, method, headers, form, rest):
            sweep.fire(shot)
        for shot in path_shots(sweep, rule, method, headers, {**rest, "data": form}):
            sweep.fire(shot)
        for shot in query_shots(path, method, headers, {**rest, "data": form}, set(), thorough=False):
            sweep.fire(shot)
        for shot in header_shots(path, method, headers, {**rest, "data": form}, if_match=False):
            sweep.fire(shot)
        for shot in oversize_shots(sweep, rule, path, method, headers, {**rest, "data": form}, fields):
            sweep.fire(shot)
        if oauth:
            bare = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}
            for label, credentials in (("Basic credentials with a NUL", b"a\x00b:secret"),
                                       ("Basic credentials 10 000 chars", f"{LONG}:{LONG}".encode()),
                                       ("Basic credentials not UTF-8", b"\xff\xfe:\xed\xa0\x80")):
                token = base64.b64encode(credentials).decode()
                sweep.fire(Shot(label, path, method, {**headers, "Authorization": f"Basic {token}"},
                                {**rest, "data": bare}))
            sweep.fire(Shot("Basic credentials not base64", path, method,
                            {**headers, "Authorization": "Basic %%%not base64%%%"}, {**rest, "data": bare}))


# --------------------------------------------------------------------------- the tests


def _cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(security, "_hasher", hasher)
    monkeypatch.setattr(security, "_DUMMY_HASH", hasher.hash("courtyard-dummy-password"))


@pytest.fixture
def fast_passwords(monkeypatch):
    """argon2 at its cheapest for this module: hundreds of sign-in, reset and sign-up posts hash or verify."""
    _cheap_passwords(monkeypatch)


@pytest.fixture(scope="module")
def _module_connection(engine) -> Iterator[Any]:
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture(scope="module")
def _seeded_acme(app, engine, settings, _module_connection) -> Seeded:
    """acme, provisioned and seeded once per module and worker (a tenant and its CRM records take
    seconds, the sweep has hundreds of cases) inside the module's transaction; each test runs in a
    savepoint of it (:func:`connection`), rolled back afterwards."""
    database = Database(engine, connection=_module_connection)
    previous, previous_tasks = app.extensions["courtyard"].db, task_runtime()
    app.extensions["courtyard"].db = database
    configure_tasks(TaskRuntime(db=database, mailer=app.extensions["courtyard"].mailer, settings=settings))
    try:
        with pytest.MonkeyPatch.context() as mp:
            _cheap_passwords(mp)  # a hash keeps its parameters: verifying it stays cheap too
            seeded = seed(database, "acme", "Acme 艾克米", word="Acme",
                          people=[("wile.coyote@acme.test", "Wile E. Coyote 威利"),
                                  ("road.runner@acme.test", "Road Runner 哔哔")],
                          departments=("Skunkworks 臭鼬工厂", "Night Shift 夜班"),
                          role=("skunk_ops", "Skunk Ops 臭鼬组"), app=app)
    finally:
        app.extensions["courtyard"].db = previous
        configure_tasks(previous_tasks)
    return seeded


@pytest.fixture
def connection(_module_connection, _seeded_acme) -> Iterator[Any]:
    """This module's tests share the seeded acme, each one in a savepoint of the module's transaction."""
    savepoint = _module_connection.begin_nested()
    yield _module_connection
    savepoint.rollback()


@pytest.fixture
def acme(db, fast_passwords, _seeded_acme) -> Seeded:
    return _seeded_acme


def test_the_sweep_covers_every_rule_of_the_url_map(app):
    """The cases collected from the server-less app are exactly the live app's rules and methods."""
    assert swept(app) == ROUTES
    assert len(ROUTES) >= 35
    areas = {area_of(r) for r in app.url_map.iter_rules() if r.endpoint not in NOT_SWEPT}
    assert areas == {"api", "oauth", "page"}


def test_every_route_is_swept_in_full_or_is_a_generated_copy_of_one_that_is(app):
    rules = {(r.rule, m): r for r in app.url_map.iter_rules() for m in r.methods - SKIPPED_METHODS}
    light = {}
    for key in ROUTES:
        twin = generated_twin(app, rules[key])
        if twin is None:
            continue  # swept in full
        light[key] = twin
        assert (twin.rule, key[1]) in ROUTES, f"{key}: its twin {twin.rule} is not swept"
        assert generated_twin(app, twin) is None, f"{key}: its twin {twin.rule} is not swept in full"
    # Each entity but the fully swept one is a generated family; the fully swept one is all there.
    families = {crm_entity(rules[k].endpoint).key for k in light}
    others = {e.key for r in rules.values() if (e := crm_entity(r.endpoint)) is not None} - {FULL_FAMILY}
    assert others
    assert families == others
    # Routes an area adds to one entity only (a customer's relationships) have no copies: swept in full.
    own = {"crm.customers_relate", "crm.customers_unrelate"}
    full = {k for k in ROUTES if (e := crm_entity(rules[k].endpoint)) is not None and e.key == FULL_FAMILY
            and rules[k].endpoint not in own}
    assert {(t.rule, k[1]) for k, t in light.items()} == full, "a customers route no other family copies"


def test_a_route_running_code_of_its_own_is_not_taken_for_a_generated_copy(app):
    """The twin check looks at the code a view runs, not only its name."""
    from flask import Flask

    probe_app = Flask("probe")
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("crm.customers_list", "crm.contacts_list", "crm_api.customers_item",
                             "crm_api.contacts_item"):
            probe_app.add_url_rule(rule.rule, rule.endpoint, app.view_functions[rule.endpoint],
                                   methods=sorted(rule.methods))
    by_endpoint = {r.endpoint: r for r in probe_app.url_map.iter_rules()}
    assert generated_twin(probe_app, by_endpoint["crm.contacts_list"]) is by_endpoint["crm.customers_list"]
    assert generated_twin(probe_app, by_endpoint["crm_api.contacts_item"]) is by_endpoint["crm_api.customers_item"]
    probe_app.view_functions["crm.contacts_list"] = lambda: "contacts of their own"
    assert generated_twin(probe_app, by_endpoint["crm.contacts_list"]) is None


def test_a_route_the_sweep_cannot_aim_fails_instead_of_being_skipped():
    from flask import Flask

    probe_app = Flask("probe")
    probe_app.add_url_rule("/api/v1/widgets/<uuid:widget_id>", "widgets", lambda widget_id: "")
    rule = next(r for r in probe_app.url_map.iter_rules() if r.endpoint == "widgets")
    with pytest.raises(LookupError, match="widget_id"):
        aim(probe_app, rule, Values.unknown())
    assert swept(probe_app) == [("/api/v1/widgets/<uuid:widget_id>", "GET")]


@pytest.mark.parametrize(("rule_text", "method"), ROUTES, ids=[f"{m} {r}" for r, m in ROUTES])
def test_hostile_input_gets_a_4xx_and_writes_nothing(app, db, connection, redis_client, acme, monkeypatch,
                                                    rule_text, method):
    rule = next((r for r in app.url_map.iter_rules() if r.rule == rule_text and method in r.methods), None)
    assert rule is not None, f"{method} {rule_text} is no longer in the URL map"
    _probes, problems = plan(app)
    mine = [p for p in problems if p.startswith((f"{rule.rule}:", f"{method} {rule.rule} ("))]
    try:
        aim(app, rule, acme.values)
    except LookupError as exc:
        mine.append(str(exc))
    if mine:
        pytest.fail("the sweep cannot aim this route:\n" + "\n".join(mine), pytrace=False)
    monkeypatch.setattr(app, "request_class", type("WatchedRequest", (app.request_class,),
                                                   {"parameter_storage_class": _Watched}))
    sweep = Sweep.start(app, connection, redis_client, acme)
    sweep_route(sweep, rule, method)
    sweep.finish()
