"""Personal API tokens: a token is its user (same id, kind, permissions and data scope as a session),
stops at once on revocation, deactivation and expiry, and looks unknown on any other tenant."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, update

from core.db import utcnow
from core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from core.permissions import Actor, default_grants
from tenants import services
from tenants.models import AuditEntry, PersonalToken, User
from tests.conftest import PASSWORD, _csrf_from, csrf_of, host, sign_in
from tests.tenants.test_api import api, assert_error, checked, token

SYSTEM = Actor.system("test")


def add_user(db, tenant, email: str, role: str = "sales") -> uuid.UUID:
    with db.transaction(tenant) as s:
        return services.create_user(s, SYSTEM, email=email, role=role, password=PASSWORD).id


def admin_id(db, tenant) -> uuid.UUID:
    with db.transaction(tenant) as s:
        user = services.find_user_by_email(s, f"admin@{tenant.slug}.test")
        assert user is not None
        return user.id


def mint(db, tenant, user_id: uuid.UUID, *, name: str = "script", expires_days: int | None = None) -> str:
    with db.transaction(tenant) as s:
        return services.create_personal_token(s, SYSTEM, tenant, user_id=user_id, name=name,
                                              expires_days=expires_days).secret


def token_row(db, tenant, secret: str) -> PersonalToken:
    with db.transaction(tenant) as s:
        row = s.scalar(select(PersonalToken).where(PersonalToken.prefix == secret[:12]))
        assert row is not None
        s.expunge(row)
        return row


# --------------------------------------------------------------------------- acting as the user


def test_a_token_acts_exactly_as_its_user(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test", role="sales")
    secret = mint(db, tenant, rep)
    assert secret.startswith("cyp_")
    me = api(client, "GET", "/api/v1/me", secret).get_json()
    assert me["kind"] == "user"
    assert me["label"] == "rep@acme.test"
    assert me["user"]["id"] == str(rep)
    # The same permissions a signed-in session of that user gets.
    assert sign_in(client, "acme", "rep@acme.test").status_code == 302
    session_me = checked(client.get("/api/v1/me", headers=host("acme"))).get_json()
    assert me["permissions"] == session_me["permissions"] == sorted(["users.read", *default_grants("sales")])
    # What the user may not do, the token may not either; the admin's token may.
    body = {"email": "new@acme.test", "role": "sales"}
    assert_error(api(client, "POST", "/api/v1/users", secret, json=body), 403)
    admin_secret = mint(db, tenant, admin_id(db, tenant))
    assert api(client, "POST", "/api/v1/users", admin_secret, json=body).status_code == 201
    # The audit trail names the user, as it does for their session.
    with db.transaction(tenant) as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "user.created",
                                                  AuditEntry.entity_id.is_not(None))
                         .order_by(AuditEntry.id.desc()).limit(1))
        assert entry is not None
        assert (entry.actor_label, entry.actor_id) == ("admin@acme.test", admin_id(db, tenant))


def test_a_role_change_applies_to_the_next_call(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test", role="sales")
    secret = mint(db, tenant, rep)
    assert api(client, "GET", "/api/v1/me", secret).get_json()["permissions"] == sorted(
        ["users.read", *default_grants("sales")])
    with db.transaction(tenant) as s:
        services.update_user(s, SYSTEM, rep, role="manager")
    assert api(client, "GET", "/api/v1/me", secret).get_json()["permissions"] == sorted(
        ["users.read", "departments.manage", "audit.read", *default_grants("manager")])


def test_revocation_deactivation_and_expiry_stop_a_token_at_once(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    revoked, expired, of_deactivated = (mint(db, tenant, rep, name=n) for n in ("a", "b", "c"))
    for secret in (revoked, expired, of_deactivated):
        assert api(client, "GET", "/api/v1/me", secret).status_code == 200

    with db.transaction(tenant) as s:
        services.revoke_personal_token(s, SYSTEM, tenant, rep, token_row(db, tenant, revoked).id)
    assert_error(api(client, "GET", "/api/v1/me", revoked), 401, "invalid_token")

    # Well in the past: the suite's now() is the start of the test's one outer transaction.
    with db.transaction(tenant) as s:
        s.execute(update(PersonalToken).where(PersonalToken.prefix == expired[:12])
                  .values(expires_at=utcnow() - dt.timedelta(days=1)))
    assert_error(api(client, "GET", "/api/v1/me", expired), 401, "invalid_token")

    with db.transaction(tenant) as s:
        services.set_active(s, SYSTEM, rep, False)
    assert_error(api(client, "GET", "/api/v1/me", of_deactivated), 401, "invalid_token")
    # Deactivation revokes for good: reactivating the user does not bring the token back.
    with db.transaction(tenant) as s:
        services.set_active(s, SYSTEM, rep, True)
    assert_error(api(client, "GET", "/api/v1/me", of_deactivated), 401, "invalid_token")
    assert token_row(db, tenant, of_deactivated).revoked_at is not None


def test_an_inactive_user_is_refused_even_if_the_token_was_not_revoked(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    secret = mint(db, tenant, rep)
    with db.transaction(tenant) as s:  # as a restored backup or a hand edit could leave it
        s.execute(update(User).where(User.id == rep).values(active=False))
    assert_error(api(client, "GET", "/api/v1/me", secret), 401, "invalid_token")


def test_on_another_tenant_a_token_looks_unknown(client, db, tenant, other_tenant) -> None:
    secret = mint(db, other_tenant, admin_id(db, other_tenant))
    assert api(client, "GET", "/api/v1/me", secret, slug="globex").status_code == 200
    foreign = api(client, "GET", "/api/v1/users", secret, slug="acme")
    unknown = api(client, "GET", "/api/v1/users", "cyp_" + "x" * 43, slug="acme")
    assert foreign.status_code == unknown.status_code == 401
    assert foreign.get_json() == unknown.get_json()
    assert foreign.headers.get("WWW-Authenticate") == unknown.headers.get("WWW-Authenticate")


def test_last_use_is_written_at_most_once_a_minute(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    secret = mint(db, tenant, rep)
    assert token_row(db, tenant, secret).last_used_at is None
    api(client, "GET", "/api/v1/me", secret)
    first = token_row(db, tenant, secret).last_used_at
    assert first is not None
    api(client, "GET", "/api/v1/me", secret)
    assert token_row(db, tenant, secret).last_used_at == first
    long_ago = utcnow() - dt.timedelta(hours=5)
    with db.transaction(tenant) as s:
        s.execute(update(PersonalToken).where(PersonalToken.prefix == secret[:12]).values(last_used_at=long_ago))
    api(client, "GET", "/api/v1/me", secret)
    assert token_row(db, tenant, secret).last_used_at > long_ago


# --------------------------------------------------------------------------- services


def test_only_the_owner_or_the_platform_manages_a_users_tokens(db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    other = add_user(db, tenant, "other@acme.test")
    with db.transaction(tenant) as s:
        admin = services.actor_for(services.get_user(s, admin_id(db, tenant)))
        rep_actor = services.actor_for(services.get_user(s, rep))
        with pytest.raises(PermissionDenied):
            services.create_personal_token(s, admin, tenant, user_id=rep, name="mine now")
        made = services.create_personal_token(s, rep_actor, tenant, user_id=rep, name="mine")
        with pytest.raises(PermissionDenied):
            services.list_personal_tokens(s, admin, tenant, rep)
        # Someone else's token, named through one's own id, is simply not there.
        with pytest.raises(NotFound):
            services.revoke_personal_token(s, services.actor_for(services.get_user(s, other)), tenant, other,
                                           made.token.id)
        assert [t.id for t in services.list_personal_tokens(s, rep_actor, tenant, rep)] == [made.token.id]


@pytest.mark.parametrize(("name", "days", "field"), [
    ("", None, "name"), ("x" * 101, None, "name"), ("a\nb", None, "name"), ("ok", 0, "expires_days"),
    ("ok", 3651, "expires_days"), ("ok", -5, "expires_days"),
])
def test_bad_token_input_is_refused_and_nothing_is_written(db, tenant, name, days, field) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    with db.transaction(tenant) as s:
        with pytest.raises(ValidationFailed) as caught:
            services.create_personal_token(s, SYSTEM, tenant, user_id=rep, name=name, expires_days=days)
        assert field in caught.value.field_errors
        assert s.scalar(select(PersonalToken.id).where(PersonalToken.user_id == rep)) is None


def test_tokens_per_user_are_bounded_and_inactive_users_get_none(db, tenant, monkeypatch) -> None:
    from tenants.services import personal_tokens

    monkeypatch.setattr(personal_tokens, "MAX_TOKENS_PER_USER", 2)
    rep = add_user(db, tenant, "rep@acme.test")
    mint(db, tenant, rep)
    mint(db, tenant, rep)
    with db.transaction(tenant) as s, pytest.raises(Conflict) as caught:
        services.create_personal_token(s, SYSTEM, tenant, user_id=rep, name="third")
    assert caught.value.code == "too_many_tokens"
    with db.transaction(tenant) as s:
        services.set_active(s, SYSTEM, rep, False)
    with db.transaction(tenant) as s, pytest.raises(Conflict) as caught:
        services.create_personal_token(s, SYSTEM, tenant, user_id=rep, name="fourth")
    assert caught.value.code == "user_inactive"


# --------------------------------------------------------------------------- /api/v1/me/tokens


def test_me_tokens_create_list_revoke(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    csrf = {"X-CSRF-Token": csrf_of(client, "acme")}
    made = checked(client.post("/api/v1/me/tokens", headers=host("acme") | csrf,
                               json={"name": "backup job", "expires_days": 30}))
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.headers["Cache-Control"] == "no-store"
    body = made.get_json()
    assert body["token"].startswith(body["prefix"])
    assert body["prefix"].startswith("cyp_")
    assert body["expires_at"] is not None
    assert api(client, "GET", "/api/v1/me", body["token"]).get_json()["label"] == "admin@acme.test"

    listed = checked(client.get("/api/v1/me/tokens", headers=host("acme"))).get_json()
    assert [(t["id"], t["name"], t["prefix"]) for t in listed] == [(body["id"], "backup job", body["prefix"])]
    assert "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None
    # A token lists its own user's tokens, but cannot mint more.
    assert [t["id"] for t in api(client, "GET", "/api/v1/me/tokens", body["token"]).get_json()] == [body["id"]]
    assert_error(api(client, "POST", "/api/v1/me/tokens", body["token"], json={"name": "more"}), 403)

    gone = checked(client.delete(f"/api/v1/me/tokens/{body['id']}", headers=host("acme") | csrf))
    assert gone.status_code == 204
    assert_error(api(client, "GET", "/api/v1/me", body["token"]), 401, "invalid_token")
    assert checked(client.get("/api/v1/me/tokens", headers=host("acme"))).get_json() == []
    with db.transaction(tenant) as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.entity_type == "personal_token")
                                               .order_by(AuditEntry.id))]
    assert actions == ["user.token_created", "user.token_revoked"]


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "expires_days": 0}, {"name": "ok", "expires_days": 4000},
    {"name": "ok", "expires_days": "30"}, {"name": "ok", "scopes": ["users.manage"]}, {"name": ["ok"]},
])
def test_me_tokens_refuses_bad_bodies_with_422(client, db, tenant, body) -> None:
    assert sign_in(client, "acme").status_code == 302
    csrf = {"X-CSRF-Token": csrf_of(client, "acme")}
    assert_error(checked(client.post("/api/v1/me/tokens", headers=host("acme") | csrf, json=body)), 422)
    assert checked(client.get("/api/v1/me/tokens", headers=host("acme"))).get_json() == []


def test_me_tokens_of_another_user_or_an_api_client(client, db, tenant) -> None:
    rep = add_user(db, tenant, "rep@acme.test")
    rep_secret = mint(db, tenant, rep)
    rep_token_id = token_row(db, tenant, rep_secret).id
    admin_secret = mint(db, tenant, admin_id(db, tenant))
    # The admin cannot revoke (or see) the rep's token: it is not among theirs.
    assert_error(api(client, "DELETE", f"/api/v1/me/tokens/{rep_token_id}", admin_secret), 404)
    assert api(client, "GET", "/api/v1/me", rep_secret).status_code == 200
    # A machine client has no personal tokens.
    machine = token(client, db, tenant)
    assert_error(api(client, "GET", "/api/v1/me/tokens", machine), 403)


# --------------------------------------------------------------------------- the profile page


def test_profile_page_creates_shows_once_and_revokes(client, db, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    page = client.get("/profile", headers=host("acme"))
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert 'id="token-empty"' in html
    made = client.post("/profile/tokens", headers=host("acme"), data={
        "name": "laptop", "expires_days": "90", "csrf_token": _csrf_from(html)})
    assert made.status_code == 200
    assert made.headers["Cache-Control"] == "no-store"
    shown = made.get_data(as_text=True)
    secret = shown.split('id="token-value" value="', 1)[1].split('"', 1)[0]
    assert secret.startswith("cyp_")
    assert 'id="token-copy"' in shown
    assert api(client, "GET", "/api/v1/me", secret).status_code == 200
    # Listed by name and prefix from now on, never the token again.
    again = client.get("/profile", headers=host("acme")).get_data(as_text=True)
    assert secret not in again
    assert secret[:12] in again
    assert "laptop" in again
    row = token_row(db, tenant, secret)
    assert row.expires_at is not None
    revoked = client.post(f"/profile/tokens/{row.id}/revoke", headers=host("acme"),
                          data={"csrf_token": _csrf_from(again)})
    assert revoked.status_code == 302
    assert_error(api(client, "GET", "/api/v1/me", secret), 401, "invalid_token")


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "", "expires_days": "30"}, "name"),
    ({"name": "ok", "expires_days": "soon"}, "expires_days"),
    ({"name": "ok", "expires_days": "99999999999"}, "expires_days"),
    ({"name": "ok", "expires_days": "0"}, "expires_days"),
])
def test_profile_token_form_refuses_bad_input(client, db, tenant, data, field) -> None:
    assert sign_in(client, "acme").status_code == 302
    html = client.get("/profile", headers=host("acme")).get_data(as_text=True)
    refused = client.post("/profile/tokens", headers=host("acme"), data=data | {"csrf_token": _csrf_from(html)})
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert 'id="form-error"' in refused.get_data(as_text=True)
    with db.transaction(tenant) as s:
        assert s.scalar(select(PersonalToken.id)) is None
