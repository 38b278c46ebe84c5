"""The request side of tenancy: resolve the tenant once, bind one session, know who is acting.

Resolution (DESIGN rule 3): in single-tenant (intranet) mode always the configured tenant; otherwise
the ``/t/<slug>/`` prefix, then the host's sub-domain. The public site (sign-up) is what remains.
Health probes are answered without resolving any tenant. Staff pages and the API call
:func:`current_tenant`, which answers 404 on the public site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import quote

from flask import Flask, Request, Response, current_app, g, request, session
from redis import Redis
from werkzeug.wrappers import Request as WzRequest

from core.db import CourtyardSession, Database, bind_tenant, text_problem
from core.errors import DomainError, NotAuthenticated, NotFound, PermissionDenied, ValidationFailed
from core.i18n import LOCALE_NAMES, _l
from core.logs import request_id_var, tenant_var
from core.mail import Mailer
from core.permissions import Actor
from core.ratelimit import QuotaLimiter, RateLimiter
from core.security import digest
from core.settings import Settings
from core.storage import Storage
from core.tenancy import SLUG_RE, BoundTenant, slug_from_host
from tenants import services
from tenants.errors import TenantNotFound
from tenants.models import User

F = TypeVar("F", bound=Callable[..., Any])
PATH_PREFIX_KEY = "courtyard.path_slug"
#: Answered the same on every host, before (and without) any tenant lookup.
TENANTLESS_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "static", "vendor"})
#: Set by :class:`QueryStringMiddleware` on a request whose query string was not UTF-8.
BAD_QUERY_KEY = "courtyard.bad_query"
#: What a client-supplied X-Request-ID may be: visible ASCII, as logs and the audit trail carry it.
REQUEST_ID_RE = re.compile(r"[!-~]{1,64}")
#: A visitor's chosen language (the session's once signed in).
LOCALE_COOKIE_NAME = "courtyard_locale"
FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


@dataclass(slots=True)
class Runtime:
    """What the app holds for the request side: built once by the app factory."""

    settings: Settings
    db: Database
    redis: Redis
    mailer: Mailer
    limiter: RateLimiter
    quota: QuotaLimiter
    storage: Storage


def runtime(app: Flask | None = None) -> Runtime:
    return cast(Runtime, (app or current_app).extensions["courtyard"])


class PathPrefixMiddleware:
    """Serves ``/t/<slug>/...`` as the tenant's own site.

    The prefix moves into SCRIPT_NAME, so every route is declared once and ``url_for`` builds links
    that stay inside the tenant's prefix (and its cookie path).
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/t/"):
            slug, _, rest = path[3:].partition("/")
            if slug:
                environ[PATH_PREFIX_KEY] = slug
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + f"/t/{slug}"
                environ["PATH_INFO"] = "/" + rest
        return self.app(environ, start_response)


class QueryStringMiddleware:
    """A query string that is not UTF-8 never reaches Flask as such.

    Werkzeug decodes ``request.args`` and ``request.full_path`` strictly, so raw non-UTF-8 bytes in the
    query (which browsers never send, but any client can) would make every reader of them raise,
    the error page and the request log included. The bytes are percent-encoded here, and the request
    is marked so that :func:`refuse_unusable_input` answers it with a 400 that says why.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        query = environ.get("QUERY_STRING", "")
        if query and not query.isascii():
            raw = query.encode("latin-1", "replace")  # WSGI strings carry the bytes as latin-1
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                environ["QUERY_STRING"] = quote(raw, safe="&=+%;,/?:@!$'()*~")
                environ[BAD_QUERY_KEY] = True
        return self.app(environ, start_response)


def requested_slug(req: WzRequest, settings: Settings) -> str | None:
    if settings.single_tenant:
        # An intranet install serves its one company whatever name or IP it is reached by.
        return settings.single_tenant
    slug = req.environ.get(PATH_PREFIX_KEY)
    if slug:
        return str(slug)
    slug = slug_from_host(req.host, settings.base_domain)
    if slug:
        return slug
    return settings.single_tenant


def _prefix_on_tenant_host(req: WzRequest, settings: Settings) -> bool:
    """A ``/t/<slug>/`` path reached through a tenant's own host (``acme.<domain>/t/globex/``).

    The prefix form belongs to the bare domain. On a tenant's host it would serve another tenant under
    this one's name (and its cookies' scope), so every such path answers 404, whatever the slug. In
    single-tenant mode every host is the tenant's own.
    """
    if not req.environ.get(PATH_PREFIX_KEY):
        return False
    return bool(settings.single_tenant) or slug_from_host(req.host, settings.base_domain) is not None


def db_session() -> CourtyardSession:
    """The request's one session, opened on first use and committed at the request boundary."""
    if "db" not in g:
        g.db = runtime().db.session()
        tenant = g.get("tenant")
        if tenant is not None:
            bind_tenant(g.db, tenant)
    return cast(CourtyardSession, g.db)


def resolve_tenant() -> None:
    rt = runtime()
    # A correlation id, logged and kept in the audit trail: one that is not visible ASCII is replaced.
    offered = request.headers.get("X-Request-ID", "")[:64]
    g.request_id = offered if REQUEST_ID_RE.fullmatch(offered) else uuid.uuid4().hex
    request_id_var.set(g.request_id)
    g.tenant = None
    g.actor = None
    g.user = None
    tenant_var.set(None)
    if _prefix_on_tenant_host(request, rt.settings):
        raise NotFound(_l("Not found."))
    if request.endpoint in TENANTLESS_ENDPOINTS:
        return
    slug = requested_slug(request, rt.settings)
    if slug is None:
        return
    if not SLUG_RE.fullmatch(slug):
        raise TenantNotFound(_l("No such workspace."))
    bearer = _bearer_token()
    # Outside the request's transaction: what follows (quota and rate limits in Redis) must not run
    # while a transaction is open. The request's session starts one when a view first needs it.
    with rt.db.reading() as conn:
        if bearer and services.is_personal_token(bearer):
            found, personal = services.lookup_tenant_and_personal_token(conn, slug, bearer)
            g.personal_info, g.token_checked = personal, True
        elif bearer:
            found, token = services.lookup_tenant_and_token(conn, slug, bearer)
            g.token_info, g.token_checked = token, True
        else:
            found = services.lookup_tenant(conn, slug)
    # usable() raises for unknown (404) and suspended/deleted (403/410) tenants: answered before
    # the tenant's schema is touched.
    tenant = services.usable(found)
    bind_tenant(db_session(), tenant)
    g.tenant = tenant
    tenant_var.set(tenant.slug)


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and len(token) <= 512 else None


def current_tenant() -> BoundTenant:
    tenant = g.get("tenant")
    if tenant is None:
        raise NotFound(_l("Not found."))
    return cast(BoundTenant, tenant)


def current_user() -> User | None:
    """The signed-in staff user of this tenant, or None (sessions of other tenants count as none)."""
    if "user_loaded" in g:
        return cast(User | None, g.user)
    g.user_loaded = True
    g.user = None
    tenant = g.get("tenant")
    if tenant is None:
        return None
    if session.get("tenant_id") != str(tenant.id) or "user_id" not in session:
        return None
    try:
        user_id = uuid.UUID(session["user_id"])
    except (ValueError, TypeError):
        return None
    user = db_session().get(User, user_id)
    if user is None or not user.active or session.get("pw") != password_mark(user):
        # Deactivated, deleted, or the password changed since this session signed in: it ends here.
        session.clear()
        return None
    g.user = user
    return user


def current_actor() -> Actor | None:
    if g.get("actor") is not None:
        return cast(Actor, g.actor)
    user = current_user()
    if user is None:
        return None
    g.actor = services.actor_for(user, request_id=g.get("request_id"), ip=request.remote_addr)
    return cast(Actor, g.actor)


def sign_in(user: User, tenant: BoundTenant) -> None:
    """A fresh session id at every sign-in (no fixation), bound to this tenant only."""
    locale = session.get("locale") or request.cookies.get(LOCALE_COOKIE_NAME)
    if locale not in LOCALE_NAMES:  # the cookie is the client's to write
        locale = None
    session.clear()
    assert hasattr(session, "rotate")
    session.rotate()
    session["tenant_id"] = str(tenant.id)
    session["user_id"] = str(user.id)
    session["csrf"] = secrets.token_urlsafe(24)
    session["pw"] = password_mark(user)
    session["locale"] = user.locale or locale
    g.user_loaded = True
    g.user = user
    g.actor = None


def password_mark(user: User) -> str:
    """A short fingerprint of the password hash kept in the session: changing or resetting the
    password changes it, which ends every other session of that user."""
    return digest(user.password_hash or "")[:16]


def refresh_password_mark(user: User) -> None:
    """Keep the session that changed the password signed in."""
    session["pw"] = password_mark(user)


def sign_out() -> None:
    session.clear()
    g.user = None
    g.actor = None


def login_required(view: F) -> F:
    """Staff pages: a signed-in user of this tenant, else the sign-in page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_tenant()
        if current_user() is None:
            from flask import redirect, url_for

            return redirect(url_for("staff.sign_in", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return cast(F, wrapper)


def permission_required(permission: str) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = current_actor()
            if actor is None or not actor.can(permission):
                raise PermissionDenied(_l("You do not have access to this page."))
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def api_actor() -> Actor:
    """The actor of an API call: a bearer token of this tenant, or the browser session.

    An OAuth token of another tenant answers the same 404 as an unknown object (DESIGN rule 3); an
    unknown, expired or revoked token answers 401. A personal token (``cyp_…``) acts as its user; one of
    another tenant is looked up with the tenant and so answers exactly as an unknown token does (401).
    """
    tenant = current_tenant()
    if g.get("actor") is not None:
        return cast(Actor, g.actor)
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated(_l("Use 'Authorization: Bearer <token>'."), code="invalid_token")
        if services.is_personal_token(token.strip()):
            return _personal_token_actor(tenant, token.strip())
        # Usually already checked with the tenant lookup, in the same query.
        checked = g.get("token_checked")
        info = g.get("token_info") if checked else services.check_token(db_session(), token.strip())
        if info is None:
            raise NotAuthenticated(_l("The access token is invalid, expired or revoked."), code="invalid_token")
        if info.tenant_id != tenant.id:
            raise NotFound(_l("Not found."))
        g.actor = Actor(id=None, label=f"{services.CLIENT_ACTOR_PREFIX}{info.client_id}", permissions=info.scopes,
                        kind="client", request_id=g.get("request_id"), ip=request.remote_addr)
        return cast(Actor, g.actor)
    actor = current_actor()
    if actor is None:
        raise NotAuthenticated(_l("Sign in or send a bearer token."))
    return actor


def _personal_token_actor(tenant: BoundTenant, secret: str) -> Actor:
    """The user a personal token stands for, read now: exactly the actor their signed-in session gives."""
    # Usually already checked with the tenant lookup, in the same query.
    checked = g.get("token_checked")
    info = g.get("personal_info") if checked else services.check_personal_token(db_session(), tenant, secret)
    user = db_session().get(User, info.user_id) if info is not None and info.tenant_id == tenant.id else None
    if info is None or user is None or not user.active:
        raise NotAuthenticated(_l("The access token is invalid, expired or revoked."), code="invalid_token")
    if info.stale:
        # Outside the request's transaction, at most once a minute: concurrent calls with one token must
        # not queue behind each other's row lock for as long as each request lasts.
        with runtime().db.reading() as conn:
            services.touch_personal_token(conn, info.token_id)
    g.user_loaded, g.user = True, user
    g.actor = services.actor_for(user, request_id=g.get("request_id"), ip=request.remote_addr)
    return cast(Actor, g.actor)


#: The anonymous CSRF cookie, named like the session cookies (see core.sessions.cookie_name).
CSRF_COOKIE_NAME = "courtyard_csrf"
PREFIXED_CSRF_COOKIE_NAME = "courtyard_tenant_csrf"
#: Nonces are ``new_secret(24)``: 32 URL-safe characters.
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def _csrf_cookie_name(script_root: str) -> str:
    return PREFIXED_CSRF_COOKIE_NAME if script_root else CSRF_COOKIE_NAME


def _anonymous_csrf(nonce: str) -> str:
    """The form token for a visitor without a session: an HMAC of the nonce in their cookie.

    A signed double-submit cookie instead of a session: a sign-in page, a 404 or any anonymous page
    with a form (the language switch is on every page) then costs Redis nothing. The cookie alone is
    not the token (a page cannot read it: HttpOnly) and a token cannot be made without the secret key.
    """
    # Bound to the site too (host and /t/<slug> prefix): a token made for one workspace's page is no
    # use on another's, even with the same nonce.
    key = runtime().settings.secret_key.encode()
    site = f"{request.host}\0{request.script_root}\0".encode("utf-8", "surrogatepass")
    return hmac.new(key, b"courtyard csrf\0" + site + nonce.encode(), hashlib.sha256).hexdigest()


def _csrf_nonce(req: Request) -> str | None:
    nonce = req.cookies.get(_csrf_cookie_name(req.script_root), "")
    return nonce if _NONCE_RE.fullmatch(nonce) else None


def check_csrf(req: Request) -> bool:
    """Unsafe methods from a browser must echo the session's token, or, without a session, the token
    derived from their CSRF cookie (form field or header)."""
    sent = req.form.get("csrf_token") if req.mimetype in (
        "application/x-www-form-urlencoded", "multipart/form-data") else None
    sent = sent or req.headers.get("X-CSRF-Token")
    if not sent:
        return False
    expected = session.get("csrf")
    if not expected:
        nonce = _csrf_nonce(req)
        expected = _anonymous_csrf(nonce) if nonce else None
    # Compared as bytes: compare_digest refuses str holding non-ASCII (a TypeError, i.e. a 500).
    return bool(expected and hmac.compare_digest(str(expected).encode(),
                                                 str(sent).encode("utf-8", "surrogatepass")))


def csrf_token() -> str:
    """The token a rendered form carries; creates no session (see :func:`_anonymous_csrf`)."""
    token = session.get("csrf")
    if token:
        return str(token)
    nonce = g.get("csrf_nonce") or _csrf_nonce(request)
    if nonce is None:
        nonce = g.csrf_new_nonce = secrets.token_urlsafe(24)
    g.csrf_nonce = nonce
    return _anonymous_csrf(nonce)


def _set_csrf_cookie(response: Response) -> None:
    nonce = g.get("csrf_new_nonce")
    if nonce is None:
        return
    # A browser-session cookie: it costs the server nothing, so it needs no expiry of its own.
    response.set_cookie(_csrf_cookie_name(request.script_root), nonce, path=request.script_root + "/",
                        secure=runtime().settings.secure_cookies, httponly=True, samesite="Lax")


def finish_request(response: Response) -> Response:
    """Commit the request's unit of work; a failed commit becomes the response, never a silent loss."""
    db = g.pop("db", None)
    if db is not None:
        try:
            if response.status_code < 400:
                db.commit()
            else:
                db.rollback()
        finally:
            db.close()
    response.headers["X-Request-ID"] = g.get("request_id", "")
    _set_csrf_cookie(response)
    return response


def rollback_request() -> None:
    """Discard the request's unit of work now: after a failed flush its session is unusable until rolled
    back, and an error page still loads the signed-in user through it."""
    db = g.get("db")
    if db is not None:
        db.rollback()


# --------------------------------------------------------------------------- input no field can hold


def shown_name(name: str) -> str:
    """A field name as a message may quote it: short, and printable whatever the client sent."""
    return name[:64].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def refuse_text(name: str, problem: str) -> None:
    """Refuse a field whose text no column can store, naming the field."""
    shown = shown_name(name) or "_schema"
    if problem == "nul":
        raise ValidationFailed(_l("The field '%(name)s' contains a NUL character; remove it and try again.",
                                  name=shown), field_errors={shown: [_l("Must not contain NUL characters.")]})
    raise ValidationFailed(_l("The field '%(name)s' contains an unpaired surrogate, which is not valid Unicode.",
                              name=shown), field_errors={shown: [_l("Not valid Unicode text.")]})


def _strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string in a parsed JSON value (keys too), with the top-level field it belongs to."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:  # not recursive: the depth is the client's to choose
        top, item = stack.pop()
        if isinstance(item, str):
            yield top, item
        elif isinstance(item, dict):
            for key, inner in item.items():
                owner = top or str(key)
                yield owner, str(key)
                stack.append((owner, inner))
        elif isinstance(item, list):
            stack.extend((top, inner) for inner in item)


def refuse_unusable_json(value: Any) -> None:
    """A parsed JSON body: every string, at any depth, must be storable text."""
    for name, text in _strings(value, ""):
        problem = text_problem(text)
        if problem:
            refuse_text(name, problem)


def refuse_unusable_input() -> None:
    """The query, the path, a form and Basic credentials: refused with a precise message when they hold
    what no field can (a query string that is not UTF-8, NUL characters), before any view reads them."""
    if request.url_rule is None:
        return  # no such page or method: that answer (404/405) comes first
    if request.environ.get(BAD_QUERY_KEY):
        raise DomainError(_l("The query string is not valid UTF-8."), code="invalid_encoding")
    pairs: list[tuple[str, Any]] = list(request.args.items(multi=True))
    pairs += list((request.view_args or {}).items())
    if request.mimetype in FORM_MIMETYPES:
        pairs += list(request.form.items(multi=True))
    for name, value in pairs:
        if isinstance(value, str) and "\x00" in value:
            refuse_text(name, "nul")
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":  # OAuth client credentials
        _refuse_unusable_basic(header[6:].strip())


def _refuse_unusable_basic(encoded: str) -> None:
    try:
        raw = base64.b64decode(encoded)
    except ValueError:
        return  # not base64 at all: the endpoint answers that itself (invalid_client)
    try:
        credentials = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError(_l("The Basic credentials are not valid UTF-8."), code="invalid_request") from None
    if "\x00" in credentials:
        raise DomainError(_l("The Basic credentials contain a NUL character."), code="invalid_request")


def teardown(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.rollback()
        db.close()
    request_id_var.set(None)
    tenant_var.set(None)
