"""What anonymous and signed-in requests leave in Redis (issue 5, finding 2), and session lifetimes."""

from __future__ import annotations

import json
import logging
import time
from html import unescape
from typing import Any

from flask import Flask, session

from core.sessions import ANONYMOUS_TTL_S, COOKIE_NAME, RedisSessionInterface
from courtyard.runtime import check_redis_memory_policy, start_redis
from tenants.context import CSRF_COOKIE_NAME
from tests.conftest import PASSWORD, _csrf_from, host, sign_in

ACME = host("acme")


def _keys(redis_client: Any) -> list[bytes]:
    return sorted(redis_client.keys("*"))


def test_reading_pages_leaves_nothing_in_redis(app, client, redis_client, tenant) -> None:
    """Before: every page rendered the language switch's CSRF token into a new 8-hour session."""
    redis_client.flushdb()
    for path, headers in [("/no-such-page", ACME), ("/no-such-page", {}), ("/", {}), ("/signup", {}),
                          ("/sign-in", ACME), ("/forgot", ACME), ("/t/acme/sign-in", {}), ("/home", ACME),
                          ("/reset/not-a-token", ACME), ("/static/app.css", {})]:
        response = app.test_client().get(path, headers=headers)
        assert response.status_code < 500, path
    assert _keys(redis_client) == []


def test_anonymous_forms_work_without_a_session(app, client, redis_client, tenant) -> None:
    redis_client.flushdb()
    form = client.get("/sign-in", headers=ACME)
    assert client.get_cookie(COOKIE_NAME, domain="acme.localhost") is None
    assert client.get_cookie(CSRF_COOKIE_NAME, domain="acme.localhost") is not None
    token = _csrf_from(form.get_data(as_text=True))
    # The language switch on an anonymous page: a cookie, not a session.
    switched = client.post("/locale", headers=ACME, data={"locale": "zh", "csrf_token": token, "next": "/sign-in"})
    assert switched.status_code == 302
    assert "登录" in unescape(client.get("/sign-in", headers=ACME).get_data(as_text=True))
    wrong = client.post("/sign-in", headers=ACME, data={"email": "admin@acme.test", "password": "wrong password",
                                                        "csrf_token": token})
    assert wrong.status_code == 401
    assert not redis_client.keys("session:*")
    # A token made for another visitor's cookie is refused.
    other = app.test_client()
    other_token = _csrf_from(other.get("/sign-in", headers=ACME).get_data(as_text=True))
    assert other_token != token
    forged = client.post("/sign-in", headers=ACME, data={"email": "admin@acme.test", "password": PASSWORD,
                                                         "csrf_token": other_token})
    assert forged.status_code == 400
    assert client.post("/sign-in", headers=ACME, data={"email": "admin@acme.test", "password": PASSWORD,
                                                       "csrf_token": token}).status_code == 302
    assert len(redis_client.keys("session:*")) == 1
    # The visitor's language choice came along into the session.
    assert "首页" in unescape(client.get("/home", headers=ACME).get_data(as_text=True))


def test_a_non_ascii_csrf_token_is_refused_not_a_500(app, tenant) -> None:
    """compare_digest raises TypeError on non-ASCII str: a made-up cookie and token gave anyone a 500."""
    client = app.test_client()
    client.set_cookie(CSRF_COOKIE_NAME, "n" * 32, domain="acme.localhost")
    for data, headers in [({"csrf_token": "é" * 64}, {}), ({}, {"X-CSRF-Token": "tök"})]:
        response = client.post("/sign-in", headers=ACME | headers,
                               data={"email": "admin@acme.test", "password": "x", **data})
        assert response.status_code == 400, response.get_data(as_text=True)


def test_an_anonymous_token_is_bound_to_its_workspace(app, tenant, other_tenant) -> None:
    """The same nonce cookie on two workspaces' hosts yields two tokens: one is no use on the other."""
    client = app.test_client()
    nonce = "m" * 32
    tokens = {}
    for slug in ("acme", "globex"):
        client.set_cookie(CSRF_COOKIE_NAME, nonce, domain=f"{slug}.localhost")
        tokens[slug] = _csrf_from(client.get("/sign-in", headers=host(slug)).get_data(as_text=True))
    assert tokens["acme"] != tokens["globex"]
    crossed = client.post("/sign-in", headers=host("globex"), data={
        "email": "admin@globex.test", "password": PASSWORD, "csrf_token": tokens["acme"]})
    assert crossed.status_code == 400


def _session_key(app: Flask, client: Any) -> str:
    cookie = client.get_cookie(COOKIE_NAME, domain="acme.localhost")
    assert cookie is not None
    return str(app.session_interface._key(cookie.value))  # type: ignore[attr-defined]


def test_session_lifetime_is_idle_and_capped(app, client, redis_client, settings, tenant) -> None:
    """Before: the expiry was set once at sign-in (absolute 8 hours, documented as idle)."""
    assert sign_in(client, "acme").status_code == 302
    key = _session_key(app, client)
    assert settings.session_ttl_s - 5 <= redis_client.ttl(key) <= settings.session_ttl_s
    # An hour of idling later, a request moves the expiry forward again.
    redis_client.expire(key, settings.session_ttl_s - 3600)
    assert client.get("/home", headers=ACME).status_code == 200
    assert redis_client.ttl(key) >= settings.session_ttl_s - 5
    # A session past its absolute cap ends, however active it was.
    stored = json.loads(redis_client.get(key))
    stored["born"] = time.time() - settings.session_max_age_s - 1
    redis_client.set(key, json.dumps(stored), ex=600)
    assert client.get("/home", headers=ACME).status_code == 302
    assert redis_client.get(key) is None
    assert client.get_cookie(COOKIE_NAME, domain="acme.localhost") is None


def test_the_idle_expiry_never_passes_the_absolute_cap(app, client, redis_client, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    key = _session_key(app, client)
    stored = json.loads(redis_client.get(key))
    stored["born"] = time.time() - settings.session_max_age_s + 600
    redis_client.set(key, json.dumps(stored), ex=60)
    assert client.get("/home", headers=ACME).status_code == 200
    assert 500 <= redis_client.ttl(key) <= 600


def test_a_session_nobody_signed_into_lives_briefly(redis_client) -> None:
    """Whatever stores something in an anonymous session gets the short lifetime, not the staff one."""
    probe = Flask("probe")
    probe.secret_key = "x"
    probe.session_interface = RedisSessionInterface(redis_client, ttl_s=8 * 3600, max_age_s=24 * 3600,
                                                    secure=False)

    @probe.get("/remember")
    def remember() -> str:
        session["note"] = "x"
        return "ok"

    @probe.get("/sign-in")
    def sign_in_() -> str:
        session["user_id"] = "u1"
        return "ok"

    redis_client.flushdb()
    c = probe.test_client()
    c.get("/remember")
    (key,) = redis_client.keys("session:*")
    assert ANONYMOUS_TTL_S - 5 <= redis_client.ttl(key) <= ANONYMOUS_TTL_S
    c.get("/sign-in")
    assert redis_client.ttl(key) > ANONYMOUS_TTL_S


# --------------------------------------------------------------------------- rate-limit keys


def _limit_keys(redis_client: Any) -> list[bytes]:
    return sorted(redis_client.keys("LIMITS:*"))


def test_a_huge_email_leaves_a_small_key(client, redis_client, tenant) -> None:
    """Before: the per-account key was ``login:<tenant>:<e-mail as posted>``, 400 kB for 15 minutes."""
    redis_client.flushdb()
    token = _csrf_from(client.get("/sign-in", headers=ACME).get_data(as_text=True))
    huge = "a" * 400_000 + "@acme.test"
    response = client.post("/sign-in", headers=ACME, data={"email": huge, "password": "x", "csrf_token": token})
    assert response.status_code == 401
    keys = _keys(redis_client)
    assert len(keys) == 2  # one per address, one per account
    for key in keys:
        assert len(key) < 200, key[:80]
        assert (redis_client.memory_usage(key) or 0) < 1024


def test_the_address_limit_is_checked_first_and_a_refused_address_writes_no_account_key(
        app, client, redis_client, settings, tenant) -> None:
    """Before: both keys were written before either verdict was read."""
    redis_client.flushdb()
    limiter = app.extensions["courtyard"].limiter
    for _ in range(settings.login_attempts * 20):
        assert limiter.hit("login-ip", "127.0.0.1", limit=settings.login_attempts * 20,
                           window_s=settings.login_window_s)
    before = _limit_keys(redis_client)
    assert len(before) == 1
    token = _csrf_from(client.get("/sign-in", headers=ACME).get_data(as_text=True))
    for n in range(3):
        refused = client.post("/sign-in", headers=ACME, data={"email": f"invented{n}@acme.test", "password": "x",
                                                              "csrf_token": token})
        assert refused.status_code == 429
    assert _limit_keys(redis_client) == before


def test_revocation_is_rate_limited(client, redis_client, settings, tenant) -> None:
    """Before: /oauth/revoke checked a client secret on every call, without any cap."""
    redis_client.flushdb()
    codes = [client.post("/oauth/revoke", headers=ACME, data={"token": "x", "client_id": "nobody",
                                                              "client_secret": "guess"}).status_code
             for _ in range(settings.token_requests_per_minute + 1)]
    assert 429 not in codes[:-1]
    assert codes[-1] == 429


def test_invitations_are_rate_limited_per_workspace(app, client, redis_client, settings, tenant) -> None:
    """Before: an admin could send invitation mail without any cap."""
    assert sign_in(client, "acme").status_code == 302
    limiter = app.extensions["courtyard"].limiter
    for _ in range(settings.invitations_per_hour):
        assert limiter.hit("invite", str(tenant.id), limit=settings.invitations_per_hour, window_s=3600)
    token = _csrf_from(client.get("/home", headers=ACME).get_data(as_text=True))
    refused = client.post("/admin/users/invite", headers=ACME, data={
        "email": "new@acme.test", "name": "New", "role": "sales", "csrf_token": token})
    assert refused.status_code == 429
    assert "Too many invitations" in unescape(refused.get_data(as_text=True))
    listing = unescape(client.get("/admin/users", headers=ACME).get_data(as_text=True))
    assert "new@acme.test" not in listing


# --------------------------------------------------------------------------- Redis memory policy


def test_embedded_redis_never_evicts(tmp_path) -> None:
    server, _url = start_redis(tmp_path)
    try:
        assert server.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        server.shutdown()


def test_an_evicting_redis_is_reported_at_start_up(redis_client, caplog) -> None:
    previous = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="courtyard.runtime"):
            assert check_redis_memory_policy(redis_client) == "allkeys-lru"
    finally:
        redis_client.config_set("maxmemory-policy", previous)
    assert any("noeviction" in r.getMessage() for r in caplog.records)
    caplog.clear()
    redis_client.config_set("maxmemory-policy", "noeviction")
    try:
        assert check_redis_memory_policy(redis_client) == "noeviction"
    finally:
        redis_client.config_set("maxmemory-policy", previous)
    assert not caplog.records
