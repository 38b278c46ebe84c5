"""The app factory: settings in, a configured Flask app out, with no side effects at import."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from flask import Flask, Response, g, jsonify, render_template, request
from flask_smorest import Api
from marshmallow import Schema, fields
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from core.db import Database, make_engine
from core.errors import DomainError, TooManyRequests
from core.i18n import LOCALE_NAMES, negotiate, translate
from core.logs import redact, stamp_context
from core.mail import make_mailer
from core.ratelimit import QuotaLimiter, RateLimiter
from core.sessions import RedisSessionInterface
from core.settings import Settings, project_root
from courtyard.runtime import make_redis
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
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "courtyard_session"},
            }},
            "security": [{"bearer": []}, {"session": []}],
            "info": {"description": "The REST API of one Courtyard workspace. Call it on the workspace's "
                                    "host with a bearer token from POST /oauth/token."},
        },
    )
    redis_client = redis or make_redis(settings.redis_url)
    engine = engine or make_engine(settings.database_url, pool_size=10, max_overflow=20, pre_ping=False)
    app.extensions["courtyard"] = Runtime(
        settings=settings,
        db=Database(engine, connection=connection),
        redis=redis_client,
        mailer=make_mailer(settings.smtp_url, settings.outbox_dir, settings.mail_from),
        limiter=RateLimiter(redis_client),
        quota=QuotaLimiter(redis_client),
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
    oauth.register(app)
    api = CourtyardApi(app)
    tenants_api.register(api)
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
            raise DomainError(f"Send JSON (Content-Type: application/json), not {request.mimetype or 'nothing'}.",
                              code="unsupported_media_type")
        if request.headers.get("Authorization"):
            return  # bearer tokens are not sent by browsers on their own: no CSRF risk
    if request.endpoint in oauth.CSRF_EXEMPT:
        return
    if not context.check_csrf(request):
        raise DomainError("The form expired or was not sent from this site. Reload the page and try again.",
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


def error_response(status: int, code: str, message: str, field_errors: dict[str, Any] | None = None) -> Response:
    if status == 415 or code == "unsupported_media_type":
        status = 415
    if code == "csrf_failed":
        status = 400
    if wants_json():
        body: dict[str, Any] = {"status": status, "code": code, "message": message}
        if field_errors:
            body["errors"] = field_errors
        if request.path.startswith("/oauth/"):
            # OAuth client libraries read RFC 6749 §5.2's members; errors Authlib itself answers have them.
            body |= {"error": "invalid_request" if status < 500 else "server_error", "error_description": message}
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
        message = exc.description or exc.name
        if status == 413:
            message = f"The request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes."
        if field_errors:
            message = "The request has invalid fields."
        return error_response(status, code, message, field_errors)

    @app.errorhandler(psycopg.DataError)
    def unstorable_value(_exc: psycopg.DataError) -> Response:
        # The safety net under input validation: raised by the driver on values PostgreSQL cannot take
        # that no check caught. Nothing was written: the request's work is rolled back first (the
        # error page loads the signed-in user through the same session).
        log.warning("value refused by the database", extra={"fields": {"path": redact(request.path)}})
        _discard_failed_work()
        return error_response(400, "invalid_value", "The request contains a value that cannot be stored "
                                                    "(for example a NUL character).")

    @app.errorhandler(StaleDataError)
    def concurrent_edit(_exc: StaleDataError) -> Response:
        _discard_failed_work()
        return error_response(409, "version_conflict",
                              "This record was changed by someone else at the same time; reload and try again.")

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
                                      "The database connection was interrupted. Please retry.")
            response.headers["Retry-After"] = "1"
            return response
        return unexpected(exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"fields": {"path": redact(request.path)}})
        _discard_failed_work()
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


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

    @app.context_processor
    def inject() -> dict[str, Any]:
        locale = current_locale()

        def _(message: str, **params: object) -> str:
            return translate(locale, message, **params)

        return {"_": _, "locale": locale, "locale_names": LOCALE_NAMES, "csrf_token": csrf_token,
                "current_user": current_user, "tenant": g.get("tenant"),
                "settings": context.runtime().settings}


def current_locale() -> str:
    from flask import session

    chosen = (session.get("locale") if session else None) or request.cookies.get(context.LOCALE_COOKIE_NAME)
    if chosen in LOCALE_NAMES:
        return str(chosen)
    return negotiate(request.headers.get("Accept-Language"), context.runtime().settings.default_locale)
