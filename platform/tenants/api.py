"""REST API of the tenants domain under /api/v1 (flask-smorest): users, roles, departments, audit, clients,
personal tokens."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Request, Response, g, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from flask_smorest.pagination import PaginationParameters
from marshmallow import missing
from sqlalchemy import RowMapping, select
from webargs.flaskparser import FlaskParser, is_json_request

from core.db import release
from core.errors import DomainError, NotFound, PermissionDenied, TooManyRequests
from core.i18n import _l, _ln
from tenants import schemas, services
from tenants.context import (
    api_actor,
    current_tenant,
    current_user,
    db_session,
    refuse_unusable_input,
    refuse_unusable_json,
    runtime,
)
from tenants.models import Department, PersonalToken, Role, User
from tenants.permissions import CLIENTS_MANAGE, ROLES_MANAGE, USERS_READ


def _no_constant(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def read_json(data: bytes) -> Any:
    """A request body as JSON, or a 400 saying precisely why it is not usable JSON.

    Beyond what webargs catches (syntax, encoding): nesting deeper than Python's recursion limit,
    numbers of more digits than Python converts, NaN and Infinity (not JSON), and strings no column can
    store (NUL characters, unpaired surrogates) all get their own answer instead of a 500.
    """
    if not data:
        return missing  # no body: required fields are reported as missing
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError(_l("The body is not valid UTF-8."), code="invalid_json") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DomainError(_l("The body is not valid JSON: %(reason)s (line %(line)s, column %(column)s).",
                             reason=exc.msg, line=exc.lineno, column=exc.colno), code="invalid_json") from None
    except RecursionError:
        raise DomainError(_l("The body is nested too deeply."), code="invalid_json") from None
    except ValueError:
        raise DomainError(_l("The body holds a number JSON cannot carry (NaN, Infinity or too many digits)."),
                          code="invalid_json") from None
    refuse_unusable_json(value)
    return value


class _Parser(FlaskParser):
    """webargs' Flask parser, reading JSON bodies with :func:`read_json`."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return missing
        return read_json(req.get_data(cache=True))


class _Blueprint(Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = _Parser()


blp = _Blueprint("identity", __name__, url_prefix="/api/v1", description="Staff identity and access")


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _expected_version() -> int | None:
    header = request.headers.get("If-Match")
    if not header:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()):
        raise DomainError(_l('If-Match must be an ETag this API returned (W/"<version>").'), code="bad_if_match")
    return int(value)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, schemas.MeOut)
    def get(self) -> dict[str, Any]:
        """Who is calling: the signed-in user or the API client, and what it may do."""
        actor = api_actor()
        user = current_user() if actor.kind == "user" else None
        return {"kind": actor.kind, "label": actor.label, "tenant": current_tenant().slug,
                "permissions": sorted(actor.permissions), "user": user}


def _token_owner() -> tuple[Any, uuid.UUID]:
    """The caller of a /me/tokens route: a staff user (an API client has no personal tokens)."""
    actor = api_actor()
    if actor.kind != "user" or not isinstance(actor.id, uuid.UUID):
        raise PermissionDenied(_l("Personal tokens belong to staff users; an API client has none."))
    return actor, actor.id


def _token_out(token: PersonalToken, secret: str | None = None) -> dict[str, Any]:
    out = {"id": token.id, "name": token.name, "prefix": token.prefix, "created_at": token.created_at,
           "last_used_at": token.last_used_at, "expires_at": token.expires_at}
    return out if secret is None else out | {"token": secret}


@blp.route("/me/tokens")
class MyTokens(MethodView):
    @blp.response(200, schemas.PersonalTokenOut(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Your live personal tokens (not revoked, not expired), newest first; never the tokens themselves."""
        actor, user_id = _token_owner()
        return [_token_out(t) for t in services.list_personal_tokens(db_session(), actor, current_tenant(), user_id)]

    @blp.arguments(schemas.PersonalTokenIn)
    @blp.response(201, schemas.PersonalTokenCreated)
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Create a personal token acting with your permissions; the response is the only time it is shown.

        Only from a signed-in session: a token cannot mint further tokens (a leaked short-lived token
        must not become a lasting one).
        """
        actor, user_id = _token_owner()
        if request.headers.get("Authorization"):
            raise PermissionDenied(_l("Create personal tokens from a signed-in session, not with a token."))
        new = services.create_personal_token(db_session(), actor, current_tenant(), user_id=user_id,
                                             name=data["name"], expires_days=data["expires_days"])
        return _token_out(new.token, new.secret), {"Cache-Control": "no-store"}


@blp.route("/me/tokens/<uuid:token_id>")
class MyTokenItem(MethodView):
    @blp.response(204)
    def delete(self, token_id: uuid.UUID) -> None:
        """Revoke one of your tokens: it stops working at once (another user's token is a 404)."""
        actor = api_actor()
        if actor.kind != "user" or not isinstance(actor.id, uuid.UUID):
            raise NotFound(_l("No such token."))  # an API client holds none: no id names one of its tokens
        user_id = actor.id
        services.revoke_personal_token(db_session(), actor, current_tenant(), user_id, token_id)


@blp.route("/users")
class Users(MethodView):
    @blp.arguments(schemas.UserQuery, location="query")
    @blp.response(200, schemas.UserOut(many=True))
    @blp.paginate(max_page_size=services.MAX_USERS_PAGE)
    def get(self, args: dict[str, Any], pagination_parameters: PaginationParameters) -> list[User]:
        """List the workspace's users, sorted by name (filtered and paged by the database)."""
        session, actor = db_session(), api_actor()
        query, active = args.get("q"), args.get("active")
        total = pagination_parameters.item_count = services.count_users(session, actor, query=query, active=active)
        if pagination_parameters.first_item >= total:
            return []  # past the end (a page number of any size): nothing to ask the database
        return services.list_users(session, actor, query=query, active=active,
                                   limit=pagination_parameters.page_size, offset=pagination_parameters.first_item)

    @blp.arguments(schemas.UserCreate)
    @blp.response(201, schemas.UserOut)
    def post(self, data: dict[str, Any]) -> User:
        """Create a user (they can set a password through "forgot password" if none is given)."""
        return services.create_user(db_session(), api_actor(), **data)


@blp.route("/users/<uuid:user_id>")
class UserItem(MethodView):
    @blp.response(200, schemas.UserOut)
    def get(self, user_id: uuid.UUID) -> tuple[RowMapping, int, dict[str, str]]:
        """One user; the ETag carries its version for a later If-Match."""
        user = services.view_user(db_session(), api_actor(), user_id)
        return user, 200, {"ETag": _etag(user["version"])}

    @blp.arguments(schemas.UserUpdate)
    @blp.response(200, schemas.UserOut)
    def patch(self, data: dict[str, Any], user_id: uuid.UUID) -> tuple[User, int, dict[str, str]]:
        """Change a user's name, role, department, language or active flag (If-Match supported)."""
        actor = api_actor()
        session = db_session()
        active = data.pop("active", None)
        kwargs: dict[str, Any] = {k: data[k] for k in ("name", "role", "locale") if k in data}
        if "department_id" in data:
            kwargs["department_id"] = data["department_id"]
        user = services.update_user(session, actor, user_id, expected_version=_expected_version(), **kwargs)
        if active is not None:
            user = services.set_active(session, actor, user_id, active)
        session.flush()
        return user, 200, {"ETag": _etag(user.version)}


@blp.route("/roles")
class Roles(MethodView):
    @blp.response(200, schemas.RoleOut(many=True))
    def get(self) -> list[Any]:
        """Roles and the functions each may use."""
        services.require(api_actor(), USERS_READ)
        return services.list_roles(db_session())


def _require_role(session: Any, key: str) -> None:
    # The role is the resource of the URL: a missing one (or another tenant's) is a 404, not a 422.
    if session.scalar(select(Role.id).where(Role.key == key)) is None:
        raise NotFound(_l("No such role."))


@blp.route("/roles/<key>/permissions")
class RolePermissions(MethodView):
    @blp.arguments(schemas.RolePermissionsIn)
    @blp.response(200, schemas.RoleOut)
    def put(self, data: dict[str, Any], key: str) -> Any:
        """Replace the functions a role may use (the admin role always has all)."""
        session, actor = db_session(), api_actor()
        services.require(actor, ROLES_MANAGE)
        _require_role(session, key)
        return services.set_role_permissions(session, actor, key, data["permissions"])


@blp.route("/roles/<key>/data-scope")
class RoleDataScope(MethodView):
    @blp.arguments(schemas.RoleScopeIn)
    @blp.response(200, schemas.RoleOut)
    def put(self, data: dict[str, Any], key: str) -> Any:
        """Set which records the role's users see (own, department, subtree, all)."""
        session, actor = db_session(), api_actor()
        services.require(actor, ROLES_MANAGE)
        _require_role(session, key)
        return services.set_data_scope(session, actor, key, data["data_scope"])


@blp.route("/departments")
class Departments(MethodView):
    @blp.response(200, schemas.DepartmentOut(many=True))
    def get(self) -> list[Department]:
        """The department tree, flattened in tree order."""
        services.require(api_actor(), USERS_READ)
        return [d for _depth, d in services.department_tree(db_session())]

    @blp.arguments(schemas.DepartmentIn)
    @blp.response(201, schemas.DepartmentOut)
    def post(self, data: dict[str, Any]) -> Department:
        """Create a department, optionally under a parent."""
        return services.save_department(db_session(), api_actor(), name=data["name"], parent_id=data["parent_id"])


@blp.route("/departments/<uuid:department_id>")
class DepartmentItem(MethodView):
    @blp.arguments(schemas.DepartmentIn)
    @blp.response(200, schemas.DepartmentOut)
    def put(self, data: dict[str, Any], department_id: uuid.UUID) -> Department:
        """Rename or move a department (never under itself)."""
        session = db_session()
        actor = api_actor()
        if session.get(Department, department_id) is None:
            raise NotFound(_l("No such department."))
        return services.save_department(session, actor, name=data["name"], parent_id=data["parent_id"],
                                        department_id=department_id)

    @blp.response(204)
    def delete(self, department_id: uuid.UUID) -> None:
        """Delete an empty department; its users keep working, without a department."""
        services.delete_department(db_session(), api_actor(), department_id)


@blp.route("/audit-log")
class AuditLog(MethodView):
    @blp.arguments(schemas.AuditQuery, location="query")
    @blp.response(200, schemas.AuditOut(many=True))
    def get(self, args: dict[str, Any]) -> list[Any]:
        """Newest first; page backwards with ?before=<id of the last entry>."""
        return services.list_audit(db_session(), api_actor(), limit=args["limit"], before_id=args.get("before"),
                                   entity_type=args.get("entity_type"))


@blp.route("/clients")
class Clients(MethodView):
    @blp.response(200, schemas.ClientOut(many=True))
    def get(self) -> list[Any]:
        """API clients of this workspace (secrets are never shown again)."""
        return services.list_clients(db_session(), api_actor(), current_tenant())

    @blp.arguments(schemas.ClientIn)
    @blp.response(201, schemas.ClientCreated)
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Create a client; the response is the only time its secret is shown (and no cache keeps it)."""
        actor = api_actor()
        services.require(actor, CLIENTS_MANAGE)
        new = services.create_client(db_session(), actor, current_tenant(), name=data["name"],
                                     scopes=data["scopes"])
        c = new.client
        return {"client_id": c.client_id, "name": c.name, "scopes": c.scopes, "created_at": c.created_at,
                "revoked_at": c.revoked_at, "client_secret": new.secret}, {"Cache-Control": "no-store"}


@blp.route("/clients/<client_id>")
class ClientItem(MethodView):
    @blp.response(204)
    def delete(self, client_id: str) -> None:
        """Revoke a client and every token it holds."""
        services.revoke_client(db_session(), api_actor(), current_tenant(), client_id)


@blp.before_request
def _authenticate_first() -> None:
    # The caller is settled before any argument is parsed: another tenant's token gets its 404 (and a
    # missing or bad one its 401) whatever the body, never a 422 from a view it may not reach. Then
    # the query and path are refused if they hold what no field can (pages: courtyard.app).
    api_actor()
    # A session-authenticated caller was read through the request's session: that read ends before
    # the quota's Redis call (a bearer's lookup already ran outside any transaction).
    if "db" in g:
        release(db_session())
    _spend_quota()
    refuse_unusable_input()


def _spend_quota() -> None:
    """Every workspace's API callers share one quota, so one busy integration cannot starve the platform."""
    rt = runtime()
    budget = rt.quota.spend(f"api:{current_tenant().id}", limit=rt.settings.api_requests_per_minute)
    g.api_budget = budget
    if not budget.allowed:
        seconds = budget.reset_s
        raise TooManyRequests(_ln("This workspace has made too many API requests; try again in %(num)d second.",
                                  "This workspace has made too many API requests; try again in %(num)d seconds.",
                                  seconds), retry_after_s=seconds)


@blp.after_request
def _quota_headers(response: Response) -> Response:
    budget = g.get("api_budget")
    if budget is not None:
        response.headers["X-RateLimit-Limit"] = str(budget.limit)
        response.headers["X-RateLimit-Remaining"] = str(budget.remaining)
        response.headers["X-RateLimit-Reset"] = str(budget.reset_s)
    return response


def register(api: Api) -> None:
    api.register_blueprint(blp)


# Shared with the CRM's API blueprints: one JSON parser, one ETag form, and (through guard) one
# authentication and quota step for every /api/v1 blueprint.
ApiBlueprint = _Blueprint
etag = _etag
expected_version = _expected_version


def guard(blueprint: Blueprint) -> None:
    """Give another domain's API blueprint this one's checks: the caller first, the quota, unusable input."""
    blueprint.before_request(_authenticate_first)
    blueprint.after_request(_quota_headers)
