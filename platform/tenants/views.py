"""HTML pages: the public site (sign-up) and each tenant's staff pages. Thin: rules live in services."""

from __future__ import annotations

import uuid
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from sqlalchemy import text

from core.db import release
from core.errors import DomainError, TooManyRequests, ValidationFailed
from core.i18n import LOCALE_NAMES, Message, _, _l, both
from core.mail import Mail
from core.permissions import Actor, catalog, group_label
from core.tasks import send_after_commit
from core.tenancy import BoundTenant, local_path
from tenants import auditlog, services
from tenants import permissions as perms
from tenants import signup as signup_rules
from tenants.context import (
    LOCALE_COOKIE_NAME,
    current_actor,
    current_tenant,
    current_user,
    db_session,
    login_required,
    permission_required,
    refresh_password_mark,
    runtime,
    sign_in,
    sign_out,
)
from tenants.tasks import send_mail, send_password_reset, send_workspace_list

#: No address is longer (RFC 5321); a longer one is not worth a queued task.
MAX_EMAIL_LENGTH = 254

site = Blueprint("site", __name__)
staff = Blueprint("staff", __name__)
health = Blueprint("health", __name__)


def _actor() -> Actor:
    actor = current_actor()
    assert actor is not None  # guaranteed by login_required
    return actor


def _mail_link(tenant: BoundTenant, endpoint: str, **values: Any) -> str:
    """Links in mail come from the configured public URL, never from the request's Host header (a
    forged Host would otherwise send a reset token to someone else's server)."""
    path = url_for(endpoint, **values).removeprefix(request.script_root)
    return runtime().settings.tenant_link(tenant.slug, path)


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _safe_next(target: str | None, fallback: str = "staff.home") -> str:
    """Only paths of this site and tenant: an open redirect would make our sign-in page a phishing tool,
    and a path into another tenant would show that tenant's pages under this one's name."""
    return local_path(target, request.script_root) or url_for(fallback)


def no_store(view: Any) -> Any:
    """For pages that show a secret (a client secret) or carry one in their URL and form (reset and
    invitation links): no browser or proxy cache keeps a copy, and Back does not bring it back."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        response = make_response(view(*args, **kwargs))
        response.headers["Cache-Control"] = "no-store"
        return response

    return wrapper


def _form_error(template: str, exc: DomainError, status: int | None = None, **ctx: Any) -> tuple[str, int]:
    return render_template(template, error=exc.message, field_errors=exc.field_errors, form=request.form,
                           **ctx), status or exc.status


# --------------------------------------------------------------------------- health


@health.get("/healthz")
def healthz() -> Response:
    """The process is up (no dependencies checked: a load balancer's liveness probe)."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database and Redis answer: a readiness probe."""
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        with rt.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        rt.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


@health.post("/locale")
def set_locale() -> Any:
    """Switch the interface language (中文 / English); remembered on the user when signed in."""
    locale = request.form.get("locale", "")
    if locale not in LOCALE_NAMES:
        raise DomainError(_l("Choose 'en' or 'zh'."), field_errors={"locale": [_l("en or zh")]})
    user = current_user() if g.get("tenant") is not None else None
    response = redirect(_safe_next(request.form.get("next"),
                                   "staff.home" if g.get("tenant") is not None else "site.index"))
    if user is not None:
        session["locale"] = locale
        user.locale = locale
    else:
        # A visitor's choice lives in a cookie: a session (a Redis key) per click would let anyone fill
        # Redis without signing in.
        response.set_cookie(LOCALE_COOKIE_NAME, locale, max_age=365 * 86400, path="/",
                            secure=runtime().settings.secure_cookies, httponly=True, samesite="Lax")
    return response


# --------------------------------------------------------------------------- public site


def _public_only() -> None:
    if g.get("tenant") is not None:
        abort(404)


@site.get("/")
def index() -> Any:
    """The public site on the bare domain; a tenant's host shows its own home instead."""
    if g.get("tenant") is not None:
        return home()
    return render_template("site/index.html")


@site.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    """Online sign-up: company, workspace address, admin e-mail and password → a provisioned, signed-in
    workspace. Every problem of the form is reported at once, each beside its field."""
    _public_only()
    rt = runtime()
    if request.method == "GET":
        return _signup_page(form={}, field_errors={})
    if not rt.limiter.hit("signup", _client_ip(), limit=rt.settings.signup_limit_per_hour, window_s=3600):
        return _signup_page(form=request.form, field_errors={}, error=_(
            "Too many sign-ups from your network in the last hour. Try again later.")), 429
    form = request.form
    session_db = db_session()
    try:
        result = signup_rules.provision(
            session_db, Actor.system("signup"), slug=form.get("slug", "").strip().lower(),
            company=form.get("company", ""), email=form.get("email", ""), password=form.get("password", ""),
            admin_name=form.get("name") or None, locale=_interface_locale())
    except DomainError as exc:
        session_db.rollback()
        # Each message stands beside its field; the summary on top only says how many there are, so
        # nothing is said twice. A problem of no field (none today) is the summary itself.
        return _signup_page(form=form, field_errors=exc.field_errors,
                            error=None if exc.field_errors else exc.message), exc.status
    tenant = services.bound(result.tenant)
    session_db.commit()
    # The admin lands signed in on the tenant's own site, so the session belongs to its path.
    sign_in(result.admin, tenant)
    session.script_root = f"/t/{tenant.slug}"  # type: ignore[attr-defined]
    return redirect(request.host_url.rstrip("/") + f"/t/{tenant.slug}/")


#: "Find my workspace": mails an address may be sent, and requests one network may make, per hour.
FIND_PER_ADDRESS_PER_HOUR = 3
FIND_PER_IP_PER_HOUR = 20


@site.route("/find", methods=["GET", "POST"])
def find_workspace() -> Any:
    """Someone types their address and is mailed the workspaces where it is an active user.

    The page answers the same whether or not the address has any (no enumeration): it only queues a
    task (through the outbox), which scans the tenants out of the request and mails only if it finds one.
    """
    _public_only()
    if request.method == "GET":
        return render_template("site/find.html", form={}, field_errors={})
    rt = runtime()
    raw = request.form.get("email", "")
    try:
        # Bounded and checked before Redis: a malformed address never becomes a rate-limit key.
        address = services.clean_email(raw[: MAX_EMAIL_LENGTH + 1])
    except DomainError as exc:
        return _form_error("site/find.html", exc)
    if not (rt.limiter.hit("find-ip", _client_ip(), limit=FIND_PER_IP_PER_HOUR, window_s=3600)
            and rt.limiter.hit("find-address", address, limit=FIND_PER_ADDRESS_PER_HOUR, window_s=3600)):
        return _form_error("site/find.html", TooManyRequests(
            _l("Too many requests for workspace lists. Try again in an hour.")))
    send_after_commit(db_session(), send_workspace_list.name, address)
    return render_template("site/find.html", form={}, field_errors={}, sent=True)


@staff.app_context_processor
def _site_links() -> dict[str, Any]:
    # The public site's "find my workspace", linked from every workspace's sign-in page; an intranet
    # install (one tenant, no public site) has none.
    settings = runtime().settings
    return {"find_workspace_url": None if settings.single_tenant else settings.site_link("/find")}
def _signup_page(*, form: Any, field_errors: dict[str, Any], error: Any = None) -> str:
    # Where the workspace will live (its own sub-domain of this site), for the address field's live
    # preview: the page's script puts what is typed in place of SLUG.
    address = f"{request.scheme}://SLUG.{request.host}/"
    return render_template("site/signup.html", form=form, field_errors=field_errors, error=error,
                           address_template=address)


def _interface_locale() -> str:
    """The language this page is shown in (en or zh), as Flask-Babel resolved it for the request."""
    chosen = get_locale()
    return "zh" if chosen is not None and chosen.language == "zh" else "en"


# --------------------------------------------------------------------------- sign-in


def sign_in_page() -> Any:
    tenant = current_tenant()
    if request.method == "GET":
        if current_user() is not None:
            return redirect(url_for("staff.home"))
        return render_template("staff/sign_in.html", form={}, next=request.args.get("next", ""))
    rt = runtime()
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    # Two throttles: per address (spraying many accounts) and per account (guessing one password).
    # Each attempt is counted before the password is checked (test and count in one step): counting
    # only after a failure would let parallel requests all pass the check while argon2 runs. The
    # address is checked first, and a refused address writes no per-account key: a client that is
    # already refused cannot make Redis hold one key per e-mail address it invents.
    window = rt.settings.login_window_s
    account = ("login", str(tenant.id), email)
    if not (rt.limiter.hit("login-ip", _client_ip(), limit=rt.settings.login_attempts * 20, window_s=window)
            and rt.limiter.hit(*account, limit=rt.settings.login_attempts, window_s=window)):
        return render_template("staff/sign_in.html", form=request.form, next=request.form.get("next", ""),
                               error=_("Too many failed attempts. Wait a few minutes and try again.")), 429
    user = services.authenticate(db_session(), email, password)
    if user is None:
        return render_template("staff/sign_in.html", form=request.form, next=request.form.get("next", ""),
                               error=_("Wrong e-mail or password.")), 401
    # The sign-in is recorded (committed) before Redis is called: no transaction waits on it.
    db_session().commit()
    rt.limiter.reset(*account, limit=rt.settings.login_attempts, window_s=window)
    sign_in(user, tenant)
    return redirect(_safe_next(request.form.get("next")))


staff.add_url_rule("/sign-in", "sign_in", sign_in_page, methods=["GET", "POST"])


def sign_out_page() -> Any:
    tenant = current_tenant()
    # Only this tenant's own session is ended here; someone else's id sent to this host is ignored.
    if session.get("tenant_id") == str(tenant.id):
        sign_out()
    return redirect(url_for("staff.sign_in"))


staff.add_url_rule("/sign-out", "sign_out", sign_out_page, methods=["POST"])


@login_required
def home() -> str:
    tenant = current_tenant()
    return render_template("staff/home.html", seats=services.seats_used(db_session()), tenant=tenant)


staff.add_url_rule("/home", "home", home)


# --------------------------------------------------------------------------- password reset


@staff.route("/forgot", methods=["GET", "POST"])
def forgot() -> Any:
    tenant = current_tenant()
    if request.method == "GET":
        return render_template("staff/forgot.html", form={})
    rt = runtime()
    if not rt.limiter.hit("forgot", _client_ip(), limit=10, window_s=3600):
        return render_template("staff/forgot.html", form=request.form,
                               error=_("Too many requests. Try again later.")), 429
    email = request.form.get("email", "")
    if len(email) <= MAX_EMAIL_LENGTH:
        # The same work whether or not the address has an account (one task queued, nothing looked up
        # here), so neither the answer nor its timing tells: the task decides, out of the request.
        send_after_commit(db_session(), send_password_reset.name, str(tenant.id), email,
                          both(_l("Reset your %(name)s password", name=tenant.name)),
                          both(_l("Open this link within two hours to choose a new password:"), sep="\n"),
                          tenant_id=tenant.id)
    return render_template("staff/forgot.html", form={}, sent=True)


@staff.route("/reset/<token>", methods=["GET", "POST"])
@no_store
def reset(token: str) -> Any:
    tenant = current_tenant()
    if request.method == "GET":
        try:
            services.open_reset(db_session(), token)
        except DomainError as exc:
            return render_template("error.html", status=400, code=exc.code, message=exc.message,
                                   field_errors={}), 400
        return render_template("staff/reset.html", form={}, token=token)
    try:
        user = services.reset_password(db_session(), token, request.form.get("password", ""))
    except DomainError as exc:
        db_session().rollback()
        return _form_error("staff/reset.html", exc, token=token)
    sign_in(user, tenant)
    return redirect(url_for("staff.home"))


# --------------------------------------------------------------------------- invitations


@staff.route("/invitation/<token>", methods=["GET", "POST"])
@no_store
def accept(token: str) -> Any:
    tenant = current_tenant()
    try:
        invitation = services.open_invitation(db_session(), token)
    except DomainError as exc:
        return render_template("error.html", status=400, code=exc.code, message=exc.message,
                               field_errors={}), 400
    if request.method == "GET":
        return render_template("staff/accept.html", invitation=invitation, form={}, token=token)
    try:
        user = services.accept_invitation(db_session(), token, name=request.form.get("name", ""),
                                          password=request.form.get("password", ""))
    except DomainError as exc:
        db_session().rollback()
        return _form_error("staff/accept.html", exc, invitation=invitation, token=token)
    sign_in(user, tenant)
    return redirect(url_for("staff.home"))


# --------------------------------------------------------------------------- administration


@staff.get("/admin/users")
@permission_required(perms.USERS_READ)
def users() -> str:
    return render_template("staff/users.html", **_users_page(query=request.args.get("q"), page=_page_number()),
                           form={}, field_errors={})


USERS_PER_PAGE = 50


def _page_number() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 6 and int(raw) >= 1):
        raise DomainError(_l("The page number must be a whole number from 1."),
                          field_errors={"page": [_l("Invalid page.")]})
    return int(raw)


def _users_page(query: str | None = None, page: int = 1) -> dict[str, Any]:
    session_db = db_session()
    can_manage = _actor().can(perms.USERS_MANAGE)
    query = (query or "").strip()[:100] or None
    total = services.count_users(session_db, _actor(), query=query)
    users = services.list_users(session_db, _actor(), query=query, limit=USERS_PER_PAGE,
                                offset=(page - 1) * USERS_PER_PAGE)
    paging = {"page": page, "pages": max(1, -(-total // USERS_PER_PAGE)), "total": total, "query": query or ""}
    return {"users": users, "paging": paging, "roles": services.list_roles(session_db),
            "departments": services.department_tree(session_db), "seats": services.seats_used(session_db),
            "can_manage": can_manage,
            "invitations": services.pending_invitations(session_db, _actor()) if can_manage else []}


@staff.get("/admin/users/<uuid:user_id>")
@permission_required(perms.USERS_READ)
def user_page(user_id: uuid.UUID) -> str:
    """One colleague: details, role, department, status, last sign-in and what recently happened to them."""
    return render_template("staff/user.html", **_user_page(user_id), form={}, field_errors={})


def _user_page(user_id: uuid.UUID) -> dict[str, Any]:
    session_db = db_session()
    actor = _actor()
    person = services.get_user(session_db, user_id)
    history: list[auditlog.Readable] | None = None  # None: the reader may not see the audit log
    if actor.can(perms.AUDIT_READ):
        entries = auditlog.search(session_db, actor, auditlog.Filters(entity_type="user", entity_id=str(user_id)),
                                  limit=10)
        history = auditlog.readable(session_db, entries, _interface_locale())
    departments = services.department_tree(session_db)
    return {"person": person, "roles": services.list_roles(session_db), "departments": departments,
            "department_name": {d.id: d.name for _, d in departments}.get(person.department_id) if person.department_id
            else None, "can_manage": actor.can(perms.USERS_MANAGE), "is_self": actor.id == person.id,
            "history": history, "actions": AUDIT_ACTIONS}


@staff.post("/admin/invitations/<uuid:invitation_id>/revoke")
@permission_required(perms.USERS_MANAGE)
def revoke_invitation(invitation_id: uuid.UUID) -> Any:
    """Withdraw a pending invitation: its link stops working."""
    invitation = services.revoke_invitation(db_session(), _actor(), invitation_id)
    flash(_("Invitation to %(email)s withdrawn.", email=invitation.email))
    return redirect(url_for("staff.users"))


@staff.post("/admin/users/invite")
@permission_required(perms.USERS_MANAGE)
def invite() -> Any:
    tenant = current_tenant()
    session_db = db_session()
    form = request.form
    rt = runtime()
    # Each invitation is a mail to an address the admin chose: a cap per workspace keeps one admin
    # account (or a script holding its session) from using the platform's mail to spam. The signed-in
    # user was read already: that read-only transaction ends before Redis is called.
    release(session_db)
    if not rt.limiter.hit("invite", str(tenant.id), limit=rt.settings.invitations_per_hour, window_s=3600):
        return _form_error("staff/users.html", TooManyRequests(
            _l("Too many invitations from this workspace in the last hour. Try again later.")), **_users_page())
    try:
        dept = _uuid_or_none(form.get("department_id"))
        invitation, token = services.invite(session_db, _actor(), email=form.get("email", ""),
                                            role=form.get("role", "sales"), name=form.get("name", ""),
                                            department_id=dept)
    except DomainError as exc:
        session_db.rollback()
        return _form_error("staff/users.html", exc, **_users_page())
    link = _mail_link(tenant, "staff.accept", token=token.secret)
    send_mail(session_db, tenant, Mail(
        to=invitation.email, subject=both(_l("You are invited to %(name)s on Courtyard", name=tenant.name)),
        text=both(_l("%(who)s invited you to %(name)s. Accept within 7 days:", who=_actor().label,
                     name=tenant.name), sep="\n") + f"\n\n{link}\n"))
    flash(_("Invitation sent to %(email)s.", email=invitation.email))
    return redirect(url_for("staff.users"))


@staff.post("/admin/users/<uuid:user_id>")
@permission_required(perms.USERS_MANAGE)
def update_user(user_id: uuid.UUID) -> Any:
    form = request.form
    session_db = db_session()
    action = form.get("action", "save")
    try:
        if action == "deactivate":
            services.set_active(session_db, _actor(), user_id, active=False)
        elif action == "activate":
            services.set_active(session_db, _actor(), user_id, active=True)
        else:
            services.update_user(session_db, _actor(), user_id, role=form.get("role") or None,
                                 department_id=_uuid_or_none(form.get("department_id")))
    except DomainError as exc:
        session_db.rollback()
        # The user's page again, with the message and a 4xx: a rejected change is not a redirect to success.
        return render_template("staff/user.html", error=exc.message, field_errors=exc.field_errors, form=form,
                               **_user_page(user_id)), exc.status
    flash(_("Saved."))
    return redirect(url_for("staff.user_page", user_id=user_id))


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise DomainError(_l("Not a valid id."), field_errors={"department_id": [_l("Invalid id.")]}) from None


#: How each area of functions is headed in the permission grid; a domain that registers functions
#: under a new group adds its heading here (an unknown group is shown by its key).
PERMISSION_AREAS: dict[str, Message] = {
    "staff": _l("People and organisation"),
    "platform": _l("Integration and audit"),
    "crm": _l("CRM"),
}


def _permission_groups() -> list[tuple[Any, list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for perm in catalog():
        groups.setdefault(perm.group, []).append(perm)
    return [(PERMISSION_AREAS.get(group) or group_label(group) or group, items) for group, items in groups.items()]


def _roles_page(**ctx: Any) -> str:
    return render_template("staff/roles.html", roles=services.list_roles(db_session()), groups=_permission_groups(),
                           **ctx)


@staff.route("/admin/roles", methods=["GET", "POST"])
@permission_required(perms.ROLES_MANAGE)
def roles() -> Any:
    session_db = db_session()
    if request.method == "GET":
        return _roles_page(form={}, field_errors={})
    form = request.form
    try:
        if form.get("action") == "create":
            # People name a role; its key (what the API and the CLI use) is made for them.
            source = form.get("copy_from") or ""
            copied = services.get_role(session_db, source).permissions if source else []
            services.create_role(session_db, _actor(), key=f"role_{uuid.uuid4().hex[:8]}", name=form.get("name", ""),
                                 permissions=list(copied))
        elif form.get("action") == "grid":
            for role in services.list_roles(session_db):
                chosen = sorted(set(form.getlist(f"perm-{role.key}")))
                if role.key != "admin" and chosen != sorted(role.permissions):
                    services.set_role_permissions(session_db, _actor(), role.key, chosen)
                scope = form.get(f"scope-{role.key}")
                if role.key != "admin" and scope is not None:
                    services.set_data_scope(session_db, _actor(), role.key, scope[:16])
        else:
            services.set_role_permissions(session_db, _actor(), form.get("role", ""), form.getlist("permissions"))
    except DomainError as exc:
        session_db.rollback()
        return _roles_page(form=form, error=exc.message, field_errors=exc.field_errors), exc.status
    flash(_("Saved."))
    return redirect(url_for("staff.roles"))


@staff.route("/admin/departments", methods=["GET", "POST"])
@permission_required(perms.DEPARTMENTS_MANAGE)
def departments() -> Any:
    session_db = db_session()
    if request.method == "POST":
        form = request.form
        try:
            if form.get("action") == "delete":
                services.delete_department(session_db, _actor(), _required_uuid(form.get("id")))
            else:
                services.save_department(session_db, _actor(), name=form.get("name", ""),
                                         parent_id=_uuid_or_none(form.get("parent_id")),
                                         department_id=_uuid_or_none(form.get("id")))
        except DomainError as exc:
            session_db.rollback()
            return _form_error("staff/departments.html", exc, **_department_page(session_db))
        flash(_("Saved."))
        return redirect(url_for("staff.departments"))
    return render_template("staff/departments.html", form={}, **_department_page(session_db))


def _department_page(session_db: Any) -> dict[str, Any]:
    return {"tree": services.department_tree(session_db)}


def _required_uuid(value: str | None) -> uuid.UUID:
    result = _uuid_or_none(value)
    if result is None:
        raise DomainError(_l("An id is required."), field_errors={"id": [_l("Required.")]})
    return result


@staff.route("/admin/clients", methods=["GET", "POST"])
@no_store
@permission_required(perms.CLIENTS_MANAGE)
def clients() -> Any:
    tenant = current_tenant()
    session_db = db_session()
    created = None
    if request.method == "POST":
        try:
            if request.form.get("action") == "revoke":
                services.revoke_client(session_db, _actor(), tenant, request.form.get("client_id", ""))
                flash(_("Client revoked; its tokens no longer work."))
            else:
                created = services.create_client(session_db, _actor(), tenant, name=request.form.get("name", ""),
                                                 scopes=request.form.getlist("scopes"))
        except DomainError as exc:
            session_db.rollback()
            return _form_error("staff/clients.html", exc, clients=services.list_clients(session_db, _actor(), tenant),
                               catalog=catalog(), created=None)
    return render_template("staff/clients.html", clients=services.list_clients(session_db, _actor(), tenant),
                           catalog=catalog(), created=created, form={})


def _my_tokens() -> list[Any]:
    user = current_user()
    assert user is not None
    return services.list_personal_tokens(db_session(), _actor(), current_tenant(), user.id)


@staff.route("/profile", methods=["GET", "POST"])
@no_store
@login_required
def profile() -> Any:
    """The signed-in user's own page: change the password (the current one is required), personal tokens."""
    if request.method == "GET":
        return render_template("staff/profile.html", form={}, field_errors={}, tokens=_my_tokens())
    user = current_user()
    assert user is not None
    try:
        services.change_password(db_session(), _actor(), user.id, request.form.get("current_password", ""),
                                 request.form.get("new_password", ""))
        refresh_password_mark(user)
    except DomainError as exc:
        db_session().rollback()
        return _form_error("staff/profile.html", exc, tokens=_my_tokens())
    flash(_("Your password has been changed."))
    return redirect(url_for("staff.profile"))


def _expiry_days(value: str | None) -> int | None:
    """The form's "expires after" choice: empty means never; anything else must be a whole number."""
    value = (value or "").strip()
    if not value:
        return None
    if not (len(value) <= 5 and value.isascii() and value.isdigit()):
        raise ValidationFailed(_l("Choose how many days the token lasts."),
                               field_errors={"expires_days": [_l("A whole number of days.")]})
    return int(value)


@staff.post("/profile/tokens")
@no_store
@login_required
def create_token() -> Any:
    """A new personal token, shown on this one response only (no cache keeps it)."""
    user = current_user()
    assert user is not None
    session_db = db_session()
    try:
        new = services.create_personal_token(session_db, _actor(), current_tenant(), user_id=user.id,
                                             name=request.form.get("name", ""),
                                             expires_days=_expiry_days(request.form.get("expires_days")))
    except DomainError as exc:
        session_db.rollback()
        return _form_error("staff/profile.html", exc, tokens=_my_tokens())
    return render_template("staff/profile.html", form={}, field_errors={}, tokens=_my_tokens(), created=new)


@staff.post("/profile/tokens/<uuid:token_id>/revoke")
@login_required
def revoke_token(token_id: uuid.UUID) -> Any:
    user = current_user()
    assert user is not None
    services.revoke_personal_token(db_session(), _actor(), current_tenant(), user.id, token_id)
    flash(_("Token revoked; it no longer works."))
    return redirect(url_for("staff.profile"))


#: The audit log's action codes in the reader's words; the page shows the code beside them (it is what
#: the API and the exports say). tests/tenants/test_views.py checks that every code the services write is here.
AUDIT_ACTIONS: dict[str, Message] = {
    "tenant.provisioned": _l("Workspace created"),
    "user.created": _l("User created"),
    "user.updated": _l("User changed"),
    "user.activated": _l("User activated"),
    "user.deactivated": _l("User deactivated"),
    "user.password_changed": _l("Password changed"),
    "user.password_reset": _l("Password reset by link"),
    "user.invited": _l("Invitation sent"),
    "user.invitation_revoked": _l("Invitation withdrawn"),
    "user.joined": _l("Invitation accepted"),
    "role.created": _l("Role created"),
    "role.updated": _l("Role functions changed"),
    "department.created": _l("Department created"),
    "department.updated": _l("Department changed"),
    "department.deleted": _l("Department deleted"),
    "client.created": _l("API client created"),
    "client.revoked": _l("API client revoked"),
    "user.token_created": _l("Personal token created"),
    "user.token_revoked": _l("Personal token revoked"),
}


@staff.get("/admin/audit")
@permission_required(perms.AUDIT_READ)
def audit_log() -> str:
    """The audit log, newest first, filtered by who, what, which kind of record and when; paged by keyset."""
    session_db = db_session()
    filters = auditlog.parse_filters(request.args)
    before = _uuid_or_none(request.args.get("before"))
    after = _uuid_or_none(request.args.get("after")) if before is None else None
    entries = auditlog.search(session_db, _actor(), filters, before_id=before, after_id=after,
                              limit=auditlog.PAGE + 1)
    more = len(entries) > auditlog.PAGE
    # Newest first either way; going back towards the newest, the extra entry is the newest one.
    entries = entries[1:] if more and after else entries[: auditlog.PAGE]
    kept: dict[str, Any] = {k: v for k, v in request.args.items()
                            if k in ("actor", "action", "type", "from", "to", "entity") and v}
    older = url_for("staff.audit_log", before=entries[-1].id, **kept) if entries and (more or after) else None
    back = entries and (before or (after and more))
    newer = url_for("staff.audit_log", after=entries[0].id, **kept) if back else None
    return render_template("staff/audit.html", entries=auditlog.readable(session_db, entries, _interface_locale()),
                           actions=AUDIT_ACTIONS, types=auditlog.ENTITY_TYPES, filters=filters,
                           people=services.list_users(session_db, _actor(), limit=services.MAX_USERS_PAGE)
                           if _actor().can(perms.USERS_READ) else [],
                           older_url=older, newer_url=newer, args=request.args)


@staff.before_request
def _tenant_only() -> None:
    current_tenant()


def register(app: Flask) -> None:
    app.register_blueprint(health)
    app.register_blueprint(site)
    app.register_blueprint(staff)
    _serve_vendor(app)


#: URL name → folder under node_modules (an npm scope's ``@`` and ``/`` do not belong in a URL segment).
VENDOR_PACKAGES = {
    "tabler": "@tabler/core/dist",
    "tabler-icons": "@tabler/icons-webfont/dist",
    "htmx.org": "htmx.org/dist",
    "tom-select": "tom-select/dist",
    "fullcalendar": "fullcalendar",
    "fullcalendar-locales": "@fullcalendar/core/locales",
    "swagger-ui-dist": "swagger-ui-dist",
}


def _serve_vendor(app: Flask) -> None:
    """Front-end libraries from the npm-installed copy (package.json + lock), never from a CDN."""
    from flask import send_from_directory

    from core.settings import project_root

    modules = project_root() / "node_modules"

    def vendor(package: str, filename: str) -> Response:
        base = VENDOR_PACKAGES.get(package)
        if base is None:
            abort(404)
        return send_from_directory(modules / base, filename, max_age=86400)

    app.add_url_rule("/static/vendor/<package>/<path:filename>", "vendor", vendor)
