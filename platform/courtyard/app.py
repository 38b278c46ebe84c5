"""The app factory: settings in, a configured Flask app out, with no side effects at import."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import psycopg
from flask import Flask, Response, g, has_request_context, jsonify, render_template, request
from flask_babel import Babel
from flask_smorest import Api
from marshmallow import Schema, fields
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from core.db import Database, make_engine
from core.errors import ConfigError, DomainError, NotAuthenticated, TooManyRequests
from core.i18n import (
    BABEL_LOCALES,
    FILTERS,
    LOCALE_NAMES,
    Message,
    Text,
    _l,
    _ln,
    catalog_path,
    negotiate,
    rendered,
    shown,
    translations_dir,
)
from core.logs import redact, stamp_context
from core.mail import make_mailer
from core.ratelimit import QuotaLimiter, RateLimiter
from core.sessions import RedisSessionInterface
from core.settings import Settings, project_root
from core.storage import storage_from_settings
from courtyard.runtime import make_redis
from crm.accounts import views as crm_accounts
from crm.activities import views as calendar_views
from crm.records import api as crm_api
from crm.records import api_config as crm_config_api
from crm.records import api_io as records_io_api
from crm.records import notifications_api, notifications_views
from crm.records import views as crm_views
from crm.records import views_config as crm_config_views
from crm.records import views_import as records_io_pages
from crm.workspace import views as crm_workspace
from tenants import api as tenants_api
from tenants import context, oauth, views
from tenants.context import PathPrefixMiddleware, QueryStringMiddleware, Runtime

log = logging.getLogger("courtyard")
request_log = logging.getLogger("courtyard.request")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIXES = ("/api/", "/oauth/")
JSON_MIMETYPES = frozenset({"application/json", "application/merge-patch+json"})


def create_app(settings: Settings, *, engine: Engine | None = None, connection: Connection | None = None,
               redis: Redis | None = None) -> Flask:
    """Build the app. Servers must already be running (see courtyard.runtime); nothing migrates here."""
    if settings.database_url is None or settings.redis_url is None:
        msg = "create_app needs concrete database and Redis URLs; use courtyard.runtime.resolved_settings()"
        raise ValueError(msg)
    stamp_context()
    _require_compiled_catalogs()
    root = project_root()
    app = Flask("courtyard", template_folder=str(root / "web" / "templates"),
                static_folder=str(root / "web" / "static"), static_url_path="/static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        API_TITLE="Courtyard API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Served from the npm-installed copy: an intranet install has no CDN.
        OPENAPI_SWAGGER_UI_URL="/static/vendor/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "An OAuth access token (POST /oauth/token), or a personal token (cyp_...) "
                                          "acting as its user (/api/v1/me/tokens)."},
                "session": {"type": "apiKey", "in": "cookie", "name": "courtyard_session"},
            }},
            "security": [{"bearer": []}, {"session": []}],
            "info": {"description": "The REST API of one Courtyard workspace. Call it on the workspace's "
                                    "host with a bearer token from POST /oauth/token, or a user's personal "
                                    "token."},
        },
        BABEL_DEFAULT_LOCALE=BABEL_LOCALES[settings.default_locale],
        BABEL_DEFAULT_TIMEZONE="UTC",
        BABEL_TRANSLATION_DIRECTORIES=str(translations_dir()),
    )
    # Installs gettext/ngettext (newstyle: `_('Hi %(name)s', name=...)`, escaped) into Jinja.
    Babel(app, locale_selector=babel_locale)
    app.jinja_env.filters.update(FILTERS, shownjson=shown_json)
    redis_client = redis or make_redis(settings.redis_url)
    engine = engine or make_engine(settings.database_url, pool_size=10, max_overflow=20, pre_ping=False,
                                   timeouts=settings.app_timeouts)
    app.extensions["courtyard"] = Runtime(
        settings=settings,
        db=Database(engine, connection=connection),
        redis=redis_client,
        mailer=make_mailer(settings.smtp_url, settings.outbox_dir, settings.mail_from),
        limiter=RateLimiter(redis_client),
        quota=QuotaLimiter(redis_client),
        storage=storage_from_settings(settings),
    )
    app.session_interface = RedisSessionInterface(redis_client, ttl_s=settings.session_ttl_s,
                                                  max_age_s=settings.session_max_age_s,
                                                  secure=settings.secure_cookies)
    app.wsgi_app = PathPrefixMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = QueryStringMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    if settings.proxy_hops:
        # Behind a load balancer the client's address (rate limits, audit) and scheme come from
        # X-Forwarded-*; trust exactly as many hops as configured, never more.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    app.before_request(_start_clock)
    app.before_request(context.resolve_tenant)
    app.before_request(_guard_input)
    # after_request functions run in reverse order: headers, then the commit, then the log line
    # (so the logged status is the one sent, even when the commit fails).
    app.after_request(_log_request)
    app.after_request(context.finish_request)
    app.after_request(_security_headers)
    app.teardown_request(context.teardown)

    views.register(app)
    crm_views.register(app)
    crm_accounts.register(app)
    # The workspace home is the CRM's dashboard for the person (tenants cannot import the CRM).
    app.view_functions["staff.home"] = crm_workspace.dashboard
    crm_config_views.register(app)
    records_io_pages.register(app)
    oauth.register(app)
    api = CourtyardApi(app)
    tenants_api.register(api)
    crm_api.register(api)
    crm_config_api.register(api)
    records_io_api.register(api)
    calendar_views.register(app)
    notifications_views.register(app)
    notifications_api.register(api)
    _register_error_handlers(app)
    _register_template_helpers(app)
    return app


def _guard_input(_: Any = None) -> None:
    """Refuse, before any view runs, what no view should see: wrong content types, forged forms, and
    input no field can hold (the API checks the latter once it knows the caller: tenants.api)."""
    if request.method not in SAFE_METHODS:
        _guard_unsafe_method()
    if not request.path.startswith("/api/"):
        context.refuse_unusable_input()


def _guard_unsafe_method() -> None:
    path = request.path
    if path.startswith("/api/"):
        if request.content_length and request.mimetype not in JSON_MIMETYPES:
            raise DomainError(_l("Send JSON (Content-Type: application/json), not %(mimetype)s.",
                                 mimetype=shown(request.mimetype or "nothing")), code="unsupported_media_type")
        if request.headers.get("Authorization"):
            return  # bearer tokens are not sent by browsers on their own: no CSRF risk
        # No credentials at all: the caller must learn that it needs them (401), not that a form expired.
        # A CSRF token protects a signed-in session only, so without one there is nothing to check.
        context.current_tenant()
        if context.current_user() is None:
            raise NotAuthenticated(_l("Sign in or send a bearer token."))
    if request.endpoint in oauth.CSRF_EXEMPT:
        return
    if not context.check_csrf(request):
        raise DomainError(_l("The form expired or was not sent from this site. Reload the page and try again."),
                          code="csrf_failed")


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _log_request(response: Response) -> Response:
    """One JSON line per request; request_id and tenant come from the logging context."""
    started = g.get("started")
    fields: dict[str, Any] = {"method": request.method, "path": redact(request.full_path.rstrip("?")),
                              "status": response.status_code}
    if started is not None:
        fields["ms"] = round((time.perf_counter() - started) * 1000, 2)
    request_log.info("request", extra={"fields": fields})
    return response


def _start_clock() -> None:
    g.started = time.perf_counter()


def wants_json() -> bool:
    if request.path.startswith(API_PREFIXES) or request.path in ("/healthz", "/readyz"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


class ErrorOut(Schema):
    """The body :func:`error_response` sends, as the OpenAPI document shows it to client generators."""

    status = fields.Integer(required=True, metadata={"description": "The HTTP status code"})
    code = fields.String(required=True, metadata={"description": "A stable, machine-readable error code"})
    message = fields.String(required=True, metadata={"description": "What went wrong, for people"})
    errors = fields.Dict(keys=fields.String(), metadata={"description": "Messages by field name"})


class CourtyardApi(Api):  # type: ignore[misc]
    # flask-smorest documents its own error body ({code: int, status: str}); ours is the other way round.
    ERROR_SCHEMA = ErrorOut


def error_response(status: int, code: str, message: Text, field_errors: dict[str, Any] | None = None) -> Response:
    """The error as JSON or as a page; its messages are translated here, in the request's language."""
    if status == 415 or code == "unsupported_media_type":
        status = 415
    if code == "csrf_failed":
        status = 400
    if wants_json():
        text = str(message)
        body: dict[str, Any] = {"status": status, "code": code, "message": text}
        if field_errors:
            body["errors"] = rendered(field_errors)
        if request.path.startswith("/oauth/"):
            # OAuth client libraries read RFC 6749 §5.2's members; errors Authlib itself answers have them.
            body |= {"error": "invalid_request" if status < 500 else "server_error", "error_description": text}
        response = jsonify(body)
    else:
        response = Response(render_template("error.html", status=status, code=code, message=message,
                                            field_errors=field_errors or {}), mimetype="text/html")
    response.status_code = status
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.field_errors)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages") if isinstance(data, dict) else None
        field_errors: dict[str, Any] | None = None
        if isinstance(messages, dict):
            # webargs nests errors by location ({"json": {"email": [...]}}); callers care about fields.
            field_errors = {}
            for value in messages.values():
                if isinstance(value, dict):
                    field_errors.update(value)
                else:
                    field_errors.setdefault("_schema", value)
        code = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "validation_failed", 428: "precondition_required",
                429: "rate_limited"}.get(status, "error")
        description = exc.description or exc.name
        message: Text = HTTP_MESSAGES.get(description, description)
        if status == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            message = _ln("The request body is larger than %(num)d byte.",
                          "The request body is larger than %(num)d bytes.", limit)
        if field_errors:
            message = _l("The request has invalid fields.")
        return error_response(status, code, message, field_errors)

    @app.errorhandler(psycopg.DataError)
    def unstorable_value(_exc: psycopg.DataError) -> Response:
        # The safety net under input validation: raised by the driver on values PostgreSQL cannot take
        # that no check caught. Nothing was written: the request's work is rolled back first (the
        # error page loads the signed-in user through the same session).
        log.warning("value refused by the database", extra={"fields": {"path": redact(request.path)}})
        _discard_failed_work()
        return error_response(400, "invalid_value", _l("The request contains a value that cannot be stored "
                                                       "(for example a NUL character)."))

    @app.errorhandler(StaleDataError)
    def concurrent_edit(_exc: StaleDataError) -> Response:
        _discard_failed_work()
        return error_response(409, "version_conflict",
                              _l("This record was changed by someone else at the same time; reload and try again."))

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError) -> Response:
        if isinstance(exc.orig, psycopg.DataError):
            return unstorable_value(exc.orig)
        if exc.connection_invalidated:
            # The server dropped the connection (restart, failover); the pool has been emptied and
            # the next attempt gets a fresh one. Nothing of this request was committed.
            log.warning("database connection lost", extra={"fields": {"path": redact(request.path)}})
            _discard_failed_work()
            response = error_response(503, "database_unavailable",
                                      _l("The database connection was interrupted. Please retry."))
            response.headers["Retry-After"] = "1"
            return response
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return database_gave_up(exc.orig)
        return unexpected(exc)

    def database_gave_up(orig: psycopg.Error) -> Response:
        # lock_timeout or statement_timeout (settings): the request is answered instead of queueing behind
        # a migration or an export, or running without end. Nothing of it was committed.
        busy = isinstance(orig, psycopg.errors.LockNotAvailable)
        log.warning("database gave up on a request", extra={"fields": {
            "path": redact(request.path), "reason": "lock_timeout" if busy else "statement_timeout"}})
        _discard_failed_work()
        if busy:
            response = error_response(503, "database_busy", _l("The data is being changed by another operation "
                                                                "(a migration, say). Please retry in a moment."))
        else:
            response = error_response(503, "database_timeout", _l("The database took too long to answer; "
                                                                   "the request was cancelled. Please retry."))
        response.headers["Retry-After"] = "2"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"fields": {"path": redact(request.path)}})
        _discard_failed_work()
        return error_response(500, "internal_error", _l("Something went wrong on our side; it has been logged."))


def _discard_failed_work() -> None:
    """Roll the request's session back before an error page is rendered through it.

    A failed flush leaves the session refusing every query until it is rolled back, and the page
    shows the signed-in user (loaded through that session): without this the error page itself fails.
    """
    try:
        context.rollback_request()
    except SQLAlchemyError:
        log.warning("rollback after a failed request failed too", exc_info=True)


def _register_template_helpers(app: Flask) -> None:
    from tenants.context import csrf_token, current_user

    def has_endpoint(endpoint: str) -> bool:
        """Whether a route exists: the shell links pages of domains that may not be installed yet."""
        return endpoint in app.view_functions

    def can(permission: str) -> bool:
        """Whether the signed-in user's role holds a function (menus show only what opens)."""
        user = current_user()
        return user is not None and permission in user.role.effective_permissions

    @app.context_processor
    def inject() -> dict[str, Any]:
        # `_`, `gettext` and `ngettext` come from Flask-Babel's Jinja extension.
        return {"locale": current_locale(), "locale_names": LOCALE_NAMES, "csrf_token": csrf_token,
                "current_user": current_user, "tenant": g.get("tenant"),
                "settings": context.runtime().settings, "has_endpoint": has_endpoint, "can": can}


def shown_json(value: object) -> str:
    """JSON for people to read (the audit log's before and after): Chinese as itself, where ``tojson``
    showed ``仓库`` as ``\\u4ed3\\u5e93``. Autoescaping makes it safe in HTML; it never goes into a
    ``<script>``, the one place ``tojson``'s escaping is for."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def current_locale() -> str:
    """``en`` or ``zh``: the user's choice (session, profile), else the browser's, else the default."""
    from flask import session

    default = context.runtime().settings.default_locale
    if not has_request_context():
        return default
    chosen = (session.get("locale") if session else None) or request.cookies.get(context.LOCALE_COOKIE_NAME)
    if chosen in LOCALE_NAMES:
        return str(chosen)
    return negotiate(request.headers.get("Accept-Language"), default)


def babel_locale() -> str:
    """Flask-Babel's locale selector: the interface language as Babel names it (zh → zh_CN)."""
    return BABEL_LOCALES[current_locale()]


#: Werkzeug's own descriptions of the errors it raises, as catalog messages: looked up by their exact
#: English text (a dictionary lookup, never a pattern match); anything else is shown as it comes.
HTTP_MESSAGES: dict[str, Message] = {m.msgid: m for m in (
    _l("The browser (or proxy) sent a request that this server could not understand."),
    _l("The server could not verify that you are authorized to access the URL requested. You either supplied "
       "the wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the "
       "credentials required."),
    _l("You don't have the permission to access the requested resource. It is either read-protected or not "
       "readable by the server."),
    _l("The requested URL was not found on the server. If you entered the URL manually please check your "
       "spelling and try again."),
    _l("The method is not allowed for the requested URL."),
    _l("The server does not support the media type transmitted in the request."),
    _l("The request was well-formed but was unable to be followed due to semantic errors."),
    _l('This request is required to be conditional; try using "If-Match" or "If-Unmodified-Since".'),
    _l("This user has exceeded an allotted request count. Try again later."),
    _l("The server encountered an internal error and was unable to complete your request. Either the server is "
       "overloaded or there is an error in the application."),
)}


def _require_compiled_catalogs() -> None:
    """Without the compiled catalog every page would silently be English: refuse to start instead."""
    source, compiled = catalog_path(), catalog_path(suffix=".mo")
    if not compiled.is_file():
        msg = f"{compiled} is missing: run `make install` (or `make i18n`) to compile {source.name}"
        raise ConfigError(msg)
    if compiled.stat().st_mtime < source.stat().st_mtime:
        log.warning("the compiled catalog is older than its source: run `make install`",
                    extra={"fields": {"catalog": str(compiled)}})
