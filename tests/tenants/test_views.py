"""The staff pages and the public sign-up through the Flask test client, against real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import uuid
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.db import Database, utcnow
from core.permissions import Actor
from core.sessions import COOKIE_NAME, PREFIXED_COOKIE_NAME
from core.settings import Settings
from core.tenancy import BoundTenant
from tenants import services
from tenants.models import Department, Invitation, Tenant, User
from tests.conftest import PASSWORD, _csrf_from, csrf_of, host, sign_in, unique_slug

ACME = host("acme")


# --------------------------------------------------------------------------- helpers


def page(response: Any) -> str:
    return unescape(response.get_data(as_text=True))


def token_of(client: Any, path: str, headers: dict[str, str] | None = None) -> str:
    return _csrf_from(client.get(path, headers=headers or {}).get_data(as_text=True))


def add_user(db: Database, tenant: BoundTenant, email_: str, *, role: str = "sales",
             name: str | None = None) -> uuid.UUID:
    with db.transaction(tenant) as s:
        user = services.create_user(s, Actor.system("test"), email=email_, name=name, role=role, password=PASSWORD)
        return user.id


def user_row(db: Database, tenant: BoundTenant, email_: str) -> User | None:
    with db.transaction(tenant) as s:
        return services.find_user_by_email(s, email_)


def departments(db: Database, tenant: BoundTenant) -> dict[str, Department]:
    with db.transaction(tenant) as s:
        return {d.name: d for d in services.list_departments(s)}


def tenant_count(db: Database) -> int:
    with db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Tenant)) or 0)


def outbox(settings: Settings) -> set[Path]:
    return set(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else set()


def mails_since(settings: Settings, before: set[Path]) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(outbox(settings) - before)]


def link_in(mail: email.message.EmailMessage, pattern: str) -> str:
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(pattern, body.get_content())
    assert match, body.get_content()
    return match.group(0)


def post(client: Any, path: str, data: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """A form post with the session's CSRF token, as the page would send it."""
    headers = headers or ACME
    token = token_of(client, "/home", headers)
    return client.post(path, headers=headers, data={**data, "csrf_token": token})


def flashes(client: Any, path: str, headers: dict[str, str] | None = None) -> str:
    return page(client.get(path, headers=headers or ACME))


# --------------------------------------------------------------------------- sign-in


def test_sign_in_page_on_the_tenant_host(client, tenant) -> None:
    response = client.get("/sign-in", headers=ACME)
    assert response.status_code == 200
    body = page(response)
    assert "Sign in to Acme 艾克米" in body
    assert 'id="sign-in-form"' in body
    assert 'name="csrf_token"' in body
    # The bare host's root on a tenant host is that tenant's home: not signed in → the sign-in page.
    root = client.get("/", headers=ACME)
    assert root.status_code == 302
    assert root.headers["Location"].startswith("/sign-in")


def test_sign_in_page_and_sign_in_under_the_path_prefix(client, tenant) -> None:
    response = client.get("/t/acme/sign-in")
    assert response.status_code == 200
    body = page(response)
    assert "Sign in to Acme 艾克米" in body
    assert 'action="/t/acme/sign-in"' in body
    root = client.get("/t/acme/")
    assert root.status_code == 302
    assert root.headers["Location"].startswith("/t/acme/sign-in")
    signed = client.post("/t/acme/sign-in", data={"email": "admin@acme.test", "password": PASSWORD,
                                                  "csrf_token": _csrf_from(body)})
    assert signed.status_code == 302
    assert signed.headers["Location"] == "/t/acme/home"
    home = client.get("/t/acme/home")
    assert home.status_code == 200
    assert 'id="user-name">admin<' in page(home)


def test_wrong_password_is_refused_with_a_message(client, tenant) -> None:
    response = sign_in(client, "acme", password="not the password")
    assert response.status_code == 401
    assert "Wrong e-mail or password." in page(response)
    # The typed address comes back; the password never does.
    assert 'value="admin@acme.test"' in page(response)
    assert "not the password" not in page(response)
    assert client.get("/home", headers=ACME).status_code == 302
    unknown = sign_in(client, "acme", email="nobody@acme.test")
    assert unknown.status_code == 401
    assert "Wrong e-mail or password." in page(unknown)


def test_login_is_throttled_after_five_failures_even_with_the_right_password(client, db, tenant) -> None:
    for _ in range(5):
        assert sign_in(client, "acme", password="wrong password!").status_code == 401
    blocked = sign_in(client, "acme")
    assert blocked.status_code == 429
    assert "Too many failed attempts" in page(blocked)
    assert client.get("/home", headers=ACME).status_code == 302
    # The throttle is per account: another account of the tenant still gets an honest answer.
    add_user(db, tenant, "li@acme.test")
    assert sign_in(client, "acme", email="li@acme.test").status_code == 302


def test_session_id_changes_at_sign_in_and_the_old_one_is_dead(app, client, tenant) -> None:
    # Reading the sign-in page creates no session; an id planted in the browser (fixation) is replaced.
    planted = "planted-by-someone-else-0123456789abcdef"
    client.set_cookie(COOKIE_NAME, planted, domain="acme.localhost")
    assert sign_in(client, "acme").status_code == 302
    after = client.get_cookie(COOKIE_NAME, domain="acme.localhost")
    assert after is not None
    assert after.value != planted
    # Someone holding the pre-sign-in id is not signed in.
    attacker = app.test_client()
    attacker.set_cookie(COOKIE_NAME, planted, domain="acme.localhost")
    assert attacker.get("/home", headers=ACME).status_code == 302
    holder = app.test_client()
    holder.set_cookie(COOKIE_NAME, after.value, domain="acme.localhost")
    assert holder.get("/home", headers=ACME).status_code == 200
    # Signing out kills the id on the server, not just in this browser.
    out = client.post("/sign-out", headers=ACME, data={"csrf_token": csrf_of(client, "acme")})
    assert out.status_code == 302
    assert client.get_cookie(COOKIE_NAME, domain="acme.localhost") is None
    assert holder.get("/home", headers=ACME).status_code == 302


def _set_cookie_header(response: Any, name: str) -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert len(headers) == 1, response.headers.getlist("Set-Cookie")
    return headers[0]


def test_cookie_flags_on_the_tenant_host(client, tenant) -> None:
    header = _set_cookie_header(sign_in(client, "acme"), COOKIE_NAME)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Path=/;" in header or header.endswith("Path=/")
    assert "Domain=" not in header  # host-only: never shared with sibling tenants' sub-domains


def test_cookie_flags_and_path_in_path_mode(client, tenant, other_tenant) -> None:
    token = token_of(client, "/t/acme/sign-in")
    response = client.post("/t/acme/sign-in", data={"email": "admin@acme.test", "password": PASSWORD,
                                                    "csrf_token": token})
    assert response.status_code == 302
    header = _set_cookie_header(response, PREFIXED_COOKIE_NAME)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Path=/t/acme/" in header
    assert "Domain=" not in header
    # The browser (here: the test client's jar) keeps it to acme's prefix.
    assert client.get("/t/acme/home").status_code == 200
    assert client.get("/t/globex/home").status_code == 302


# --------------------------------------------------------------------------- CSRF


def test_post_without_or_with_a_wrong_csrf_token_is_refused_and_writes_nothing(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    missing = client.post("/admin/departments", headers=ACME, data={"name": "Forged 伪造"})
    assert missing.status_code == 400
    assert 'data-code="csrf_failed"' in page(missing)
    wrong = client.post("/admin/departments", headers=ACME, data={"name": "Forged 伪造", "csrf_token": "x" * 32})
    assert wrong.status_code == 400
    header = client.post("/admin/departments", headers={**ACME, "X-CSRF-Token": "nope"},
                         data={"name": "Forged 伪造"})
    assert header.status_code == 400
    assert departments(db, tenant) == {}
    # The same form with the session's token goes through.
    ok = post(client, "/admin/departments", {"name": "Real 真的"})
    assert ok.status_code == 302
    assert list(departments(db, tenant)) == ["Real 真的"]


def test_sign_in_without_csrf_token_is_refused(client, tenant) -> None:
    response = client.post("/sign-in", headers=ACME, data={"email": "admin@acme.test", "password": PASSWORD})
    assert response.status_code == 400
    assert "The form expired" in page(response)
    assert client.get("/home", headers=ACME).status_code == 302


# --------------------------------------------------------------------------- sign-up


def signup_form(slug: str, **overrides: str) -> dict[str, str]:
    form = {"company": "My Company 我的公司", "slug": slug, "name": "王老板", "email": "boss@mycompany.test",
            "password": "a long enough password"}
    form.update(overrides)
    return form


def signup(client: Any, form: dict[str, str]) -> Any:
    return client.post("/signup", data={**form, "csrf_token": token_of(client, "/signup")})


def test_signup_page_only_on_the_public_site(client, tenant) -> None:
    response = client.get("/signup")
    assert response.status_code == 200
    assert 'id="signup-form"' in page(response)
    assert client.get("/signup", headers=ACME).status_code == 404
    assert client.get("/t/acme/signup").status_code == 404


@pytest.mark.parametrize("slug", ["www", "api", "admin", "portal", "static"])
def test_signup_refuses_reserved_slugs_and_keeps_the_input(client, db, slug) -> None:
    before = tenant_count(db)
    response = signup(client, signup_form(slug))
    assert response.status_code == 422
    body = page(response)
    assert f"'{slug}' is reserved." in body
    assert 'value="My Company 我的公司"' in body
    assert 'value="boss@mycompany.test"' in body
    assert f'value="{slug}"' in body
    assert "a long enough password" not in body
    assert tenant_count(db) == before
    assert client.get_cookie(PREFIXED_COOKIE_NAME, domain="localhost", path=f"/t/{slug}/") is None


def test_signup_refuses_a_taken_slug(client, db, tenant) -> None:
    before = tenant_count(db)
    response = signup(client, signup_form("acme", email="other@acme.test"))
    assert response.status_code == 409
    body = page(response)
    assert "This address is already taken; choose another one." in body
    assert 'value="other@acme.test"' in body
    assert tenant_count(db) == before
    with db.transaction(tenant) as s:
        assert services.find_user_by_email(s, "other@acme.test") is None


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"email": "not-an-address"}, "Enter a valid e-mail address."),
    ({"password": "short"}, "Use at least 10 characters."),
    ({"company": "   "}, "Required."),
    ({"slug": "Bad_Slug"}, "Use lower-case letters"),
])
def test_signup_validation_errors_rerender_the_form(client, db, overrides, expected) -> None:
    slug = unique_slug("su")
    form = {**signup_form(slug), **overrides}
    before = tenant_count(db)
    response = signup(client, form)
    assert response.status_code == 422
    body = page(response)
    assert expected in body
    assert 'class="invalid-feedback d-block"' in body
    assert f'value="{form["email"]}"' in body
    assert tenant_count(db) == before
    with db.transaction() as s:
        assert services.find_tenant(s, slug) is None


def test_signup_reports_every_problem_at_once_beside_its_field(client, db) -> None:
    before = tenant_count(db)
    response = signup(client, signup_form("Bad Slug!", company=" ", email="not-an-address", password="short"))
    assert response.status_code == 422
    body = page(response)
    expected = {"company": "Required.",
                "slug": "Use lower-case letters, digits and single hyphens; start with a letter and end with a letter "
                        "or digit.",
                "email": "Enter a valid e-mail address.", "password": "Use at least 10 characters."}
    for field, message in expected.items():
        beside = re.findall(rf'data-error-for="{field}">([^<]*)<', body)
        assert beside == [message], (field, beside)
        # Said once: beside the field, not again in the summary on top.
        assert body.count(message) == 1, message
    assert "Correct the 4 fields marked below." in body
    # People are never told about a "slug": it is the workspace address, with its URL shown.
    visible = re.sub(r"<[^>]+>", " ", body)
    assert "slug" not in visible.lower().replace("bad slug!", "")
    assert "Workspace address" in body
    assert 'id="slug-preview"' in body
    assert tenant_count(db) == before


def test_the_language_of_the_public_site_follows_the_admin_into_the_workspace(app, client, db) -> None:
    slug = unique_slug("su")
    zh = {"Accept-Language": "zh-CN,zh;q=0.9"}
    form = signup_form(slug)
    response = client.post("/signup", headers=zh, data={**form, "csrf_token": token_of(client, "/signup", zh)})
    assert response.status_code == 302, page(response)
    with db.transaction() as s:
        row = services.find_tenant(s, slug)
        assert row is not None
        bound = services.bound(row)
    admin = user_row(db, bound, "boss@mycompany.test")
    assert admin is not None
    assert admin.locale == "zh"
    # On the workspace's own host (no cookie of the public site there), an English browser still gets
    # the language the admin chose.
    other = app.test_client()
    assert sign_in(other, slug, email="boss@mycompany.test", password="a long enough password").status_code == 302
    assert "欢迎，王老板" in page(other.get("/home", headers={**host(slug), "Accept-Language": "en"}))


def test_signup_creates_the_workspace_and_lands_signed_in(client, db) -> None:
    slug = unique_slug("su")
    response = signup(client, signup_form(slug))
    assert response.status_code == 302, page(response)
    assert response.headers["Location"] == f"http://localhost/t/{slug}/"
    cookie = client.get_cookie(PREFIXED_COOKIE_NAME, domain="localhost", path=f"/t/{slug}/")
    assert cookie is not None
    home = client.get(f"/t/{slug}/")
    assert home.status_code == 200
    body = page(home)
    assert "Welcome, 王老板" in body
    assert "My Company 我的公司" in body
    assert '<span id="seats">1</span>' in body
    with db.transaction() as s:
        row = services.find_tenant(s, slug)
        assert row is not None
        assert row.status == "active"
        bound = services.bound(row)
    admin = user_row(db, bound, "boss@mycompany.test")
    assert admin is not None
    assert admin.role.key == "admin"
    # The new admin can use the admin pages of the new workspace, and only of that one.
    assert client.get(f"/t/{slug}/admin/users").status_code == 200


def test_signup_is_rate_limited_per_address(app, client, db) -> None:
    limit = app.extensions["courtyard"].settings.signup_limit_per_hour
    for _ in range(limit):
        assert signup(client, signup_form("www")).status_code == 422
    before = tenant_count(db)
    slug = unique_slug("su")
    response = signup(client, signup_form(slug))
    assert response.status_code == 429
    body = page(response)
    assert "Too many sign-ups" in body
    assert 'value="My Company 我的公司"' in body
    assert tenant_count(db) == before


# --------------------------------------------------------------------------- invitations


def test_invitation_mail_link_signs_the_new_user_in(app, client, db, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    before = outbox(settings)
    response = post(client, "/admin/users/invite", {"email": "Lei@Acme.test", "name": "李雷", "role": "sales"})
    assert response.status_code == 302
    assert "Invitation sent to lei@acme.test." in flashes(client, "/admin/users")
    mails = mails_since(settings, before)
    assert len(mails) == 1
    assert mails[0]["To"] == "lei@acme.test"
    assert "Acme 艾克米" in mails[0]["Subject"]
    link = link_in(mails[0], r"http://localhost:8000/t/acme/invitation/\S+")
    path = link.removeprefix("http://localhost:8000/t/acme")

    invitee = app.test_client()
    opened = invitee.get(path, headers=ACME)
    assert opened.status_code == 200
    assert "Join Acme 艾克米" in page(opened)
    assert "lei@acme.test" in page(opened)
    assert 'value="李雷"' in page(opened)
    short = invitee.post(path, headers=ACME, data={"name": "李雷", "password": "short",
                                                   "csrf_token": _csrf_from(opened.get_data(as_text=True))})
    assert short.status_code == 422
    assert "Use at least 10 characters." in page(short)
    accepted = invitee.post(path, headers=ACME, data={"name": "李雷", "password": "lei's own password",
                                                      "csrf_token": _csrf_from(opened.get_data(as_text=True))})
    assert accepted.status_code == 302
    home = invitee.get("/home", headers=ACME)
    assert home.status_code == 200
    assert "Welcome, 李雷" in page(home)
    assert '<span id="seats">2</span>' in page(home)
    joined = user_row(db, tenant, "lei@acme.test")
    assert joined is not None
    assert joined.role.key == "sales"

    # Used once: the same link now answers a clear 400, on GET and on POST.
    again = app.test_client()
    reused = again.get(path, headers=ACME)
    assert reused.status_code == 400
    assert "This invitation link is invalid or has expired." in page(reused)
    token = token_of(again, "/sign-in", ACME)
    assert again.post(path, headers=ACME, data={"name": "x", "password": "another password",
                                                "csrf_token": token}).status_code == 400


def test_expired_invitation_link_is_refused(app, client, db, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    before = outbox(settings)
    assert post(client, "/admin/users/invite", {"email": "late@acme.test", "role": "sales"}).status_code == 302
    (mail,) = mails_since(settings, before)
    path = link_in(mail, r"http://localhost:8000/t/acme/invitation/\S+").removeprefix("http://localhost:8000/t/acme")
    with db.transaction(tenant) as s:
        # Past by the clock the check reads (the application's, not the database server's now(), which
        # in this rolled-back test transaction is also frozen at the test's start).
        s.execute(update(Invitation).where(Invitation.email == "late@acme.test")
                  .values(expires_at=utcnow() - dt.timedelta(hours=1)))
    response = app.test_client().get(path, headers=ACME)
    assert response.status_code == 400
    assert "invalid or has expired" in page(response)
    assert user_row(db, tenant, "late@acme.test") is None
    # An unknown token looks exactly the same.
    unknown = app.test_client().get("/invitation/not-a-token", headers=ACME)
    assert unknown.status_code == 400


def test_invite_refuses_an_existing_user_and_keeps_the_form(client, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    before = outbox(settings)
    response = post(client, "/admin/users/invite", {"email": "admin@acme.test", "name": "Dup", "role": "sales"})
    assert response.status_code == 409
    assert "admin@acme.test is already a user of this workspace." in page(response)
    assert 'value="Dup"' in page(response)
    assert mails_since(settings, before) == []


# --------------------------------------------------------------------------- password reset


def test_password_reset_through_the_outbox(app, client, db, settings, tenant) -> None:
    before = outbox(settings)
    token = token_of(client, "/forgot", ACME)
    known = client.post("/forgot", headers=ACME, data={"email": "admin@acme.test", "csrf_token": token})
    assert known.status_code == 200
    assert 'id="reset-sent"' in page(known)
    mails = mails_since(settings, before)
    assert len(mails) == 1
    assert mails[0]["To"] == "admin@acme.test"
    # The same answer for an address that has no account, and no mail.
    before = outbox(settings)
    unknown = client.post("/forgot", headers=ACME, data={"email": "ghost@acme.test", "csrf_token": token})
    assert unknown.status_code == 200
    assert unknown.get_data() == known.get_data()
    assert mails_since(settings, before) == []

    path = link_in(mails[0], r"http://localhost:8000/t/acme/reset/\S+").removeprefix("http://localhost:8000/t/acme")
    browser = app.test_client()
    form = browser.get(path, headers=ACME)
    assert form.status_code == 200
    csrf = _csrf_from(form.get_data(as_text=True))
    weak = browser.post(path, headers=ACME, data={"password": "short", "csrf_token": csrf})
    assert weak.status_code == 422
    assert "Use at least 10 characters." in page(weak)
    done = browser.post(path, headers=ACME, data={"password": "a brand new password", "csrf_token": csrf})
    assert done.status_code == 302
    assert browser.get("/home", headers=ACME).status_code == 200
    # The old password is gone, the new one works.
    assert sign_in(app.test_client(), "acme").status_code == 401
    assert sign_in(app.test_client(), "acme", password="a brand new password").status_code == 302
    # The link works once.
    used = app.test_client()
    csrf = token_of(used, path, ACME)
    reused = used.post(path, headers=ACME, data={"password": "yet another password", "csrf_token": csrf})
    assert reused.status_code == 422
    assert "This reset link is invalid or has expired." in page(reused)
    assert used.get("/home", headers=ACME).status_code == 302


# --------------------------------------------------------------------------- users, seats, roles


def seat_count(client: Any) -> int:
    match = re.search(r'<span id="seat-count">(\d+)</span>', page(client.get("/admin/users", headers=ACME)))
    assert match
    return int(match.group(1))


def test_deactivation_frees_a_seat_and_ends_the_users_session(app, client, db, tenant) -> None:
    sales_id = add_user(db, tenant, "sales@acme.test", name="Sales 销售")
    assert sign_in(client, "acme").status_code == 302
    sales = app.test_client()
    assert sign_in(sales, "acme", email="sales@acme.test").status_code == 302
    assert sales.get("/home", headers=ACME).status_code == 200
    assert seat_count(client) == 2

    response = post(client, f"/admin/users/{sales_id}", {"action": "deactivate"})
    assert response.status_code == 302
    assert "Saved." in flashes(client, "/admin/users")
    assert seat_count(client) == 1
    assert 'id="seats">1<' in page(client.get("/home", headers=ACME))
    # The deactivated user's open session ends at its next request, and it cannot sign in again.
    ended = sales.get("/home", headers=ACME)
    assert ended.status_code == 302
    assert ended.headers["Location"].startswith("/sign-in")
    assert sign_in(sales, "acme", email="sales@acme.test").status_code == 401

    assert post(client, f"/admin/users/{sales_id}", {"action": "activate"}).status_code == 302
    assert seat_count(client) == 2
    assert sign_in(sales, "acme", email="sales@acme.test").status_code == 302


def test_the_last_admin_cannot_be_demoted_or_deactivated(app, client, db, tenant) -> None:
    admin = user_row(db, tenant, "admin@acme.test")
    assert admin is not None
    assert sign_in(client, "acme").status_code == 302
    demote = post(client, f"/admin/users/{admin.id}", {"role": "sales", "department_id": ""})
    assert demote.status_code == 409
    assert "This is the last active administrator" in page(demote)
    assert user_row(db, tenant, "admin@acme.test").role.key == "admin"  # type: ignore[union-attr]
    myself = post(client, f"/admin/users/{admin.id}", {"action": "deactivate"})
    assert myself.status_code == 409
    assert "You cannot deactivate yourself." in page(myself)

    # A manager allowed to manage users still cannot remove the only administrator.
    grant = post(client, "/admin/roles", {"role": "manager", "permissions": ["users.read", "users.manage"]})
    assert grant.status_code == 302
    add_user(db, tenant, "boss@acme.test", role="manager")
    manager = app.test_client()
    assert sign_in(manager, "acme", email="boss@acme.test").status_code == 302
    refused = post(manager, f"/admin/users/{admin.id}", {"action": "deactivate"})
    assert refused.status_code == 403
    # Refused before the last-admin rule is even reached: a user manager cannot touch an administrator.
    assert "manage anyone who has, functions you do not have" in page(refused)
    row = user_row(db, tenant, "admin@acme.test")
    assert row is not None
    assert row.active
    assert row.role.key == "admin"
    # With a second administrator the first one may step down.
    second_id = add_user(db, tenant, "second@acme.test", role="admin")
    assert post(client, f"/admin/users/{admin.id}", {"role": "manager", "department_id": ""}).status_code == 302
    assert user_row(db, tenant, "admin@acme.test").role.key == "manager"  # type: ignore[union-attr]
    assert user_row(db, tenant, "second@acme.test").id == second_id  # type: ignore[union-attr]


def nav_links(client: Any) -> str:
    body = page(client.get("/home", headers=ACME))
    start = body.index('id="app-nav"')
    return body[start: body.index("</ul>", start)]


def test_roles_page_decides_what_a_sales_user_may_open(app, client, db, tenant) -> None:
    add_user(db, tenant, "sales@acme.test")
    assert sign_in(client, "acme").status_code == 302
    sales = app.test_client()
    assert sign_in(sales, "acme", email="sales@acme.test").status_code == 302
    # Out of the box: sales may see colleagues, not edit departments or roles.
    assert sales.get("/admin/users", headers=ACME).status_code == 200
    assert sales.get("/admin/departments", headers=ACME).status_code == 403
    assert "/admin/departments" not in nav_links(sales)

    assert post(client, "/admin/roles", {"role": "sales", "permissions": ["departments.manage"]}).status_code == 302
    assert "Saved." in flashes(client, "/admin/roles")
    roles_page = page(client.get("/admin/roles", headers=ACME))
    # The permission grid: one checkbox per role and function, named by both.
    assert re.search(r'id="sales-departments\.manage"\s+checked', roles_page)
    assert not re.search(r'id="sales-users\.read"\s+checked', roles_page)
    assert re.search(r'id="admin-users\.read"\s+checked\s+disabled', roles_page), "the admin role is shown locked"

    forbidden = sales.get("/admin/users", headers=ACME)
    assert forbidden.status_code == 403
    assert "You do not have access to this page." in page(forbidden)
    assert sales.get("/admin/departments", headers=ACME).status_code == 200
    assert sales.get("/admin/roles", headers=ACME).status_code == 403
    links = nav_links(sales)
    assert "/admin/departments" in links
    assert "/admin/users" not in links
    assert "/admin/roles" not in links
    # A sales user cannot grant itself more by posting the roles form.
    assert post(sales, "/admin/roles", {"role": "sales", "permissions": ["roles.manage"]}).status_code == 403
    assert sales.get("/admin/roles", headers=ACME).status_code == 403


def test_the_admin_role_cannot_be_edited_and_unknown_functions_are_refused(client, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    locked = post(client, "/admin/roles", {"role": "admin", "permissions": []})
    assert locked.status_code == 409
    assert "The administrator role always has every function." in page(locked)
    unknown = post(client, "/admin/roles", {"role": "sales", "permissions": ["audit.read", "launch.missiles"]})
    assert unknown.status_code == 422
    assert "Unknown functions: launch.missiles." in page(unknown)
    assert re.search(r'id="sales-audit\.read"\s+checked', page(unknown)), "the form keeps what was ticked"
    assert not re.search(r'id="sales-audit\.read"\s+checked', page(client.get("/admin/roles", headers=ACME)))
    assert client.get("/admin/users", headers=ACME).status_code == 200


# --------------------------------------------------------------------------- departments


def test_department_tree_create_rename_move_and_delete(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    assert post(client, "/admin/departments", {"name": "Sales 销售部", "parent_id": ""}).status_code == 302
    sales = departments(db, tenant)["Sales 销售部"]
    assert post(client, "/admin/departments", {"name": "East 华东", "parent_id": str(sales.id)}).status_code == 302
    east = departments(db, tenant)["East 华东"]
    assert east.parent_id == sales.id
    tree = page(client.get("/admin/departments", headers=ACME))
    assert tree.index("Sales 销售部") < tree.index("East 华东")

    # Rename.
    assert post(client, "/admin/departments", {"id": str(east.id), "name": "East China 华东区",
                                               "parent_id": str(sales.id)}).status_code == 302
    assert set(departments(db, tenant)) == {"Sales 销售部", "East China 华东区"}
    # Moving a department under its own child is refused, and nothing changes.
    cycle = post(client, "/admin/departments", {"id": str(sales.id), "name": "Sales 销售部", "parent_id": str(east.id)})
    assert cycle.status_code == 422
    assert "A department cannot be moved under itself." in page(cycle)
    assert departments(db, tenant)["Sales 销售部"].parent_id is None
    # Moving to the top level is fine.
    assert post(client, "/admin/departments", {"id": str(east.id), "name": "East China 华东区",
                                               "parent_id": ""}).status_code == 302
    assert departments(db, tenant)["East China 华东区"].parent_id is None
    # Siblings need distinct names.
    twin = post(client, "/admin/departments", {"name": "Sales 销售部", "parent_id": ""})
    assert twin.status_code == 409
    assert "already exists there" in page(twin)
    assert 'value="Sales 销售部"' in page(twin), "the add form keeps what was typed"
    assert len(departments(db, tenant)) == 2

    # A department with children cannot be deleted until they go.
    assert post(client, "/admin/departments", {"id": str(east.id), "name": "East China 华东区",
                                               "parent_id": str(sales.id)}).status_code == 302
    parent = post(client, "/admin/departments", {"id": str(sales.id), "action": "delete"})
    assert parent.status_code == 409
    assert "Move or delete its sub-departments first." in page(parent)
    assert len(departments(db, tenant)) == 2
    assert post(client, "/admin/departments", {"id": str(east.id), "action": "delete"}).status_code == 302
    assert post(client, "/admin/departments", {"id": str(sales.id), "action": "delete"}).status_code == 302
    assert departments(db, tenant) == {}
    assert "No departments yet." in page(client.get("/admin/departments", headers=ACME))


# --------------------------------------------------------------------------- language


def test_language_switch_stores_zh_and_pages_render_in_chinese(app, client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    assert 'lang="en"' in page(client.get("/home", headers=ACME))
    switched = post(client, "/locale", {"locale": "zh", "next": "/admin/users"})
    assert switched.status_code == 302
    assert switched.headers["Location"] == "/admin/users"
    users = page(client.get("/admin/users", headers=ACME))
    assert 'lang="zh-CN"' in users
    assert "已用席位" in users
    assert "邀请同事" in users
    assert "退出登录" in users
    home = page(client.get("/home", headers=ACME))
    assert "欢迎，admin" in home
    assert "管理员" in home
    row = user_row(db, tenant, "admin@acme.test")
    assert row is not None
    assert row.locale == "zh"
    # Remembered on the user: a new browser signing in gets Chinese without choosing again.
    fresh = app.test_client()
    assert sign_in(fresh, "acme").status_code == 302
    assert "欢迎，admin" in page(fresh.get("/home", headers=ACME))
    # Flashes and form errors are translated too.
    empty = post(client, "/admin/departments", {"name": "", "parent_id": ""})
    assert empty.status_code == 422
    assert "请填写名称。" in page(empty)
    assert post(client, "/locale", {"locale": "en", "next": "/home"}).status_code == 302
    assert "Welcome, admin" in page(client.get("/home", headers=ACME))


def test_language_switch_on_the_public_site(client) -> None:
    token = token_of(client, "/")
    response = client.post("/locale", data={"locale": "zh", "next": "/signup", "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/signup"
    body = page(client.get("/signup"))
    assert "创建您的 Courtyard 工作区" in body
    # Errors of the sign-up form come back in Chinese, with the value the user typed.
    refused = signup(client, signup_form("www"))
    assert "“www”是保留名称。" in page(refused)
    assert "请更正下面标出的字段（共 1 处）。" in page(refused)
    bad = client.post("/locale", data={"locale": "fr", "csrf_token": token})
    assert bad.status_code == 400
    # An off-site `next` is not followed.
    away = client.post("/locale", data={"locale": "en", "next": "//evil.example/", "csrf_token": token})
    assert away.headers["Location"] == "/"


def test_accept_language_picks_chinese_before_any_choice(client, tenant) -> None:
    response = client.get("/sign-in", headers={**ACME, "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert "登录 Acme 艾克米" in page(response)


# --------------------------------------------------------------------------- tenant status and isolation


@pytest.mark.parametrize(("status", "code", "message"), [
    ("suspended", 403, "This workspace is suspended. Contact your administrator."),
    ("deleted", 410, "This workspace has been deleted."),
])
def test_unavailable_tenant_is_answered_before_its_data(client, db, tenant, status, code, message) -> None:
    assert sign_in(client, "acme").status_code == 302
    with db.transaction() as s:
        if status == "deleted":
            services.delete_tenant(s, "acme")
        else:
            services.set_status(s, "acme", status)
    for path, headers in (("/home", ACME), ("/sign-in", ACME), ("/admin/users", ACME), ("/t/acme/sign-in", {})):
        response = client.get(path, headers=headers)
        assert response.status_code == code, path
        body = page(response)
        assert 'id="error-page"' in body
        assert message in body
        assert "Acme 艾克米" not in body
    refused = client.post("/sign-in", headers=ACME, data={"email": "admin@acme.test", "password": PASSWORD})
    assert refused.status_code == code


def test_suspended_tenant_page_is_translated(client, db, tenant) -> None:
    with db.transaction() as s:
        services.set_status(s, "acme", "suspended")
    response = client.get("/sign-in", headers={**ACME, "Accept-Language": "zh-CN"})
    assert response.status_code == 403
    assert "此工作区已被暂停，请联系您的管理员。" in page(response)


def test_unknown_tenant_is_404(client) -> None:
    assert client.get("/sign-in", headers=host("nosuchco")).status_code == 404
    assert client.get("/t/nosuchco/sign-in").status_code == 404


def _staff_pages(app: Any) -> list[str]:
    """Every staff page a signed-in user can GET without arguments: new pages are covered automatically."""
    public = {"staff.sign_in", "staff.forgot"}
    paths = sorted({rule.rule for rule in app.url_map.iter_rules()
                    if rule.endpoint.startswith("staff.") and rule.endpoint not in public
                    and "GET" in (rule.methods or ()) and not rule.arguments})
    assert "/admin/users" in paths
    assert "/home" in paths
    return paths


def test_a_session_of_one_tenant_opens_nothing_of_another(app, client, db, tenant, other_tenant) -> None:
    # Signed in to globex, both on its host and under its prefix.
    assert sign_in(client, "globex").status_code == 302
    globex_sid = client.get_cookie(COOKIE_NAME, domain="globex.localhost")
    assert globex_sid is not None
    token = token_of(client, "/t/globex/sign-in")
    assert client.post("/t/globex/sign-in", data={"email": "admin@globex.test", "password": PASSWORD,
                                                  "csrf_token": token}).status_code == 302
    globex_prefixed = client.get_cookie(PREFIXED_COOKIE_NAME, domain="localhost", path="/t/globex/")
    assert globex_prefixed is not None
    globex_csrf = csrf_of(client, "globex")

    # The browser would not send those cookies to acme; a copied cookie gets nothing either.
    thief = app.test_client()
    thief.set_cookie(COOKIE_NAME, globex_sid.value, domain="acme.localhost")
    thief.set_cookie(PREFIXED_COOKIE_NAME, globex_prefixed.value, domain="localhost", path="/t/acme/")
    for path in _staff_pages(app):
        on_host = thief.get(path, headers=ACME)
        assert on_host.status_code == 302, path
        assert on_host.headers["Location"].startswith("/sign-in"), path
        prefixed = thief.get(f"/t/acme{path}")
        assert prefixed.status_code == 302, path
        assert prefixed.headers["Location"].startswith("/t/acme/sign-in"), path
    # Writes with the copied session and its own CSRF token are refused too, and write nothing.
    write = thief.post("/admin/departments", headers=ACME, data={"name": "Planted", "csrf_token": globex_csrf})
    assert write.status_code == 302
    assert departments(db, tenant) == {}
    with db.transaction(tenant) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1
    # And the globex session itself still works where it belongs.
    assert client.get("/home", headers=host("globex")).status_code == 200
    assert client.get("/home", headers=ACME).status_code == 302


def test_profile_changes_the_password_only_with_the_current_one(client, tenant):
    from tests.conftest import PASSWORD, csrf_of, host, sign_in

    assert sign_in(client, "acme").status_code == 302
    token = csrf_of(client, "acme")
    wrong = client.post("/profile", headers=host("acme"), data={
        "csrf_token": token, "current_password": "not it at all", "new_password": "a brand new secret"})
    assert wrong.status_code == 422
    assert "current password is wrong" in wrong.get_data(as_text=True)
    ok = client.post("/profile", headers=host("acme"), data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "a brand new secret"})
    assert ok.status_code == 302
    client.post("/sign-out", headers=host("acme"), data={"csrf_token": token})
    assert sign_in(client, "acme").status_code == 401
    assert sign_in(client, "acme", password="a brand new secret").status_code == 302


def test_pending_invitations_are_listed_and_can_be_withdrawn(app, client, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    before = outbox(settings)
    assert post(client, "/admin/users/invite", {"email": "wang@acme.test", "name": "王芳", "role": "sales"}
                ).status_code == 302
    (mail,) = mails_since(settings, before)
    path = link_in(mail, r"http://localhost:8000/t/acme/invitation/\S+").removeprefix("http://localhost:8000/t/acme")
    listing = page(client.get("/admin/users", headers=ACME))
    assert 'id="invitations-table"' in listing
    assert "wang@acme.test" in listing
    action = re.search(r'action="(/admin/invitations/[0-9a-f-]+/revoke)"', listing)
    assert action is not None
    assert post(client, action.group(1), {}).status_code == 302
    assert "Invitation to wang@acme.test withdrawn." in flashes(client, "/admin/users")
    assert "wang@acme.test" not in page(client.get("/admin/users", headers=ACME))
    assert app.test_client().get(path, headers=ACME).status_code == 400


def test_a_used_or_unknown_reset_link_is_refused_before_the_form(app, client, tenant) -> None:
    refused = app.test_client().get("/reset/not-a-real-token", headers=ACME)
    assert refused.status_code == 400
    assert "This reset link is invalid or has expired." in page(refused)
    assert 'name="password"' not in page(refused)


def test_mail_links_never_follow_a_forged_host_header(client, settings, tenant) -> None:
    before = outbox(settings)
    evil = {"Host": "evil.example"}
    token = token_of(client, "/t/acme/forgot", evil)
    assert client.post("/t/acme/forgot", headers=evil,
                       data={"email": "admin@acme.test", "csrf_token": token}).status_code == 200
    (mail,) = mails_since(settings, before)
    body = mail.get_body(preferencelist=("plain",)).get_content()
    assert "evil.example" not in body
    assert "http://localhost:8000/t/acme/reset/" in body


def test_changing_the_password_ends_the_other_sessions(app, client, tenant) -> None:
    from tests.conftest import PASSWORD, csrf_of

    other = app.test_client()
    assert sign_in(other, "acme").status_code == 302
    assert other.get("/home", headers=ACME).status_code == 200
    assert sign_in(client, "acme").status_code == 302
    token = csrf_of(client, "acme")
    assert client.post("/profile", headers=ACME, data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "a fresh strong secret"}).status_code == 302
    assert client.get("/home", headers=ACME).status_code == 200, "the session that changed it stays"
    assert other.get("/home", headers=ACME).status_code == 302, "every other session ends"


def test_api_clients_page_creates_shows_the_secret_once_refuses_and_revokes(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    none = post(client, "/admin/clients", {"name": "ERP 接口", "scopes": []})
    assert none.status_code == 422
    assert "Grant at least one scope." in page(none)
    assert 'value="ERP 接口"' in page(none), "the form keeps the name that was typed"
    made = post(client, "/admin/clients", {"name": "ERP 接口", "scopes": ["users.read"]})
    assert made.status_code == 200
    secret = re.search(r"client_secret=(\S+?)</code>", page(made))
    client_id = re.search(r"client_id=(\S+?)</code>", page(made))
    assert secret
    assert client_id
    listed = page(client.get("/admin/clients", headers=ACME))
    assert client_id.group(1) in listed
    assert secret.group(1) not in listed, "the secret is shown once, when it is made"
    revoked = post(client, "/admin/clients", {"action": "revoke", "client_id": client_id.group(1)})
    assert revoked.status_code == 200
    assert "Client revoked; its tokens no longer work." in page(revoked)


# --------------------------------------------------------------------------- what the pages show (bench/screens.py)

ZH = {**ACME, "Accept-Language": "zh-CN,zh;q=0.9"}


def test_the_audit_log_shows_chinese_values_as_written(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    assert post(client, "/admin/clients", {"name": "仓库 Warehouse", "scopes": ["users.read"]}).status_code == 200
    shown = page(client.get("/admin/audit", headers=ZH))
    # tojson wrote it as "\u4ed3\u5e93 Warehouse": unreadable to the admin the log is for. Now each field
    # has its label and its value as written; scopes by the functions they grant.
    assert "<dt>名称</dt><dd>仓库 Warehouse</dd>" in shown
    assert "<dt>权限范围</dt><dd>查看同事</dd>" in shown
    assert "\\u4ed3" not in shown
    assert 'class="table-responsive"' in shown, "the wide log scrolls in its own box on a phone"


def test_the_users_pager_names_its_total_in_the_readers_language(client, db, tenant) -> None:
    with db.transaction(tenant) as s:
        for i in range(51):
            services.create_user(s, Actor.system("test"), email=f"u{i}@acme.test", name=f"用户 {i}")
    assert sign_in(client, "acme").status_code == 302
    # It was "第 1 页，共 2 页 · 52": a bare number, next to nothing that said what it counted.
    assert '第 1 页，共 2 页 · <span id="users-total">52 位用户</span>' in page(client.get("/admin/users", headers=ZH))
    english = page(client.get("/admin/users?page=2", headers=ACME))
    assert re.search(r'Page 2 of 2 · <span id="users-total">52 users</span>', english)


def test_an_error_page_shows_field_messages_without_the_forms_field_key(client, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    refused = client.get("/admin/users?page=x", headers=ZH)
    assert refused.status_code == 400
    shown = page(refused)
    assert "页码无效。" in shown
    # It was "page: 页码无效。": the parameter's name is the code's word, not the reader's.
    assert ">page: " not in shown


def test_the_api_clients_scopes_are_labelled_in_the_readers_language(client, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    form = page(client.get("/admin/clients", headers=ZH)).split('id="client-form"')[1]
    assert "查看审计日志" in form, "the function a scope grants, as the roles page names it"
    assert '<code class="small">audit.read</code>' in form, "and the scope name the API asks for"


def test_the_audit_log_names_each_action_in_the_readers_language(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    assert post(client, "/admin/clients", {"name": "ERP", "scopes": ["users.read"]}).status_code == 200
    shown = page(client.get("/admin/audit", headers=ZH))
    # It showed only "client.created" and "tenant.provisioned" to a reader of Chinese.
    assert '创建 API 客户端<br><code class="small text-secondary">client.created</code>' in shown
    assert "创建工作区" in shown


def test_every_audit_action_the_services_write_has_words() -> None:
    from tenants import views

    source = "".join(p.read_text() for p in sorted(Path(services.__file__).parent.glob("*.py")))
    written = set(re.findall(r'"((?:tenant|user|role|department|client)\.[a-z_]+)"', source))
    assert {"user.created", "client.revoked", "department.updated"} <= written, "the scan finds the codes"
    assert written <= set(views.AUDIT_ACTIONS), sorted(written - set(views.AUDIT_ACTIONS))


def test_labels_with_a_colon_use_chinese_punctuation(client, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    # "已用席位: 1" had an English colon and space in the middle of Chinese.
    assert '已用席位：<span id="seat-count">1</span>' in page(client.get("/admin/users", headers=ZH))
    home = page(client.get("/home", headers=ZH))
    assert "工作区：" in home
    assert "已用席位：" in home
    assert 'Seats in use:<span id="seat-count">1</span>' in page(client.get("/admin/users", headers=ACME))
