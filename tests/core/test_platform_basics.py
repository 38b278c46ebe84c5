"""Settings, logging, tasks-after-commit and the stdlib `platform` module: the core's promises."""

from __future__ import annotations

import json
import logging
import platform
import re
import types
import uuid

import pytest

import core.db
from core import ratelimit
from core.errors import ConfigError
from core.logs import JsonFormatter
from core.permissions import Actor
from core.settings import Settings
from tests.conftest import host, sign_in


def test_import_platform_is_the_standard_library():
    # platform/ is a source root, not a package: the stdlib module must win.
    assert callable(platform.system)
    assert platform.system()


@pytest.mark.parametrize(("env", "message"), [
    ({"COURTYARD_DATABASE_URL": "mysql://x"}, "postgresql://"),
    ({"COURTYARD_REDIS_URL": "http://x"}, "redis://"),
    ({"COURTYARD_PORT": "eighty"}, "integer"),
    ({"COURTYARD_SECURE_COOKIES": "maybe"}, "boolean"),
    ({"COURTYARD_SINGLE_TENANT": "Bad Slug"}, "slug"),
    ({"COURTYARD_DEFAULT_LOCALE": "fr"}, "'en' or 'zh'"),
])
def test_settings_reject_bad_values_precisely(env, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), **env})


def test_settings_defaults_are_embedded(tmp_path):
    settings = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.secret_key, "a persistent development secret is generated under var/"
    again = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path)})
    assert again.secret_key == settings.secret_key


def test_settings_read_external_servers(tmp_path):
    settings = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path),
                                  "COURTYARD_DATABASE_URL": "postgresql://u@db/courtyard",
                                  "COURTYARD_REDIS_URL": "redis://cache:6379/0",
                                  "COURTYARD_SINGLE_TENANT": "acme"})
    assert not settings.embedded
    assert settings.single_tenant == "acme"


def test_archive_keys_default_to_the_secret_key_and_can_be_rotated(tmp_path):
    base = {"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_SECRET_KEY": "s1"}
    derived = Settings.from_env(base).archive_signing_key
    assert len(derived) == 64
    assert derived not in ("s1", Settings.from_env({**base, "COURTYARD_SECRET_KEY": "s2"}).archive_signing_key)
    new, old = "n" * 32, "o" * 40
    rotated = Settings.from_env({**base, "COURTYARD_ARCHIVE_KEY": new, "COURTYARD_ARCHIVE_OLD_KEYS": f"{old} {derived}",
                                 "COURTYARD_ARCHIVE_MAX_BYTES": str(1 << 30)})
    assert rotated.archive_signing_key == new
    assert rotated.archive_verify_keys == (new, old, derived)
    assert rotated.archive_max_bytes == 1 << 30
    for env, message in (({"COURTYARD_ARCHIVE_KEY": "short"}, "at least 32 characters"),
                         ({"COURTYARD_ARCHIVE_OLD_KEYS": f"{old} tiny"}, "COURTYARD_ARCHIVE_OLD_KEYS must be"),
                         ({"COURTYARD_ARCHIVE_MAX_BYTES": "1000"}, "at least 1048576")):
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({**base, **env})


def test_request_logs_are_json_lines_with_request_id_and_tenant(client, tenant, caplog):
    caplog.set_level(logging.INFO, logger="courtyard.request")
    response = client.get("/sign-in", headers={**host("acme"), "X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    records = [r for r in caplog.records if r.name == "courtyard.request"]
    assert records, "every request writes one log line"
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["request_id"] == "req-123"
    assert line["tenant"] == "acme"
    assert line["status"] == 200
    assert line["path"] == "/sign-in"


def test_single_tenant_mode_serves_one_tenant_at_the_root(app, db, tenant, settings):
    runtime = app.extensions["courtyard"]
    previous = runtime.settings
    runtime.settings = settings.with_overrides(single_tenant="acme")
    try:
        client = app.test_client()
        page = client.get("/sign-in", headers={"Host": "192.168.1.20:8000"})
        assert page.status_code == 200
        assert "Acme" in page.get_data(as_text=True)
        assert client.get("/signup", headers={"Host": "192.168.1.20:8000"}).status_code == 404
        assert sign_in(client, "acme").status_code == 302
    finally:
        runtime.settings = previous


def test_a_dropped_database_connection_is_a_503_then_recovers(settings, redis_client, committed_db, engine):
    from sqlalchemy import text

    from core.db import make_engine
    from courtyard.app import create_app
    from tenants import services as tenant_services
    from tests.conftest import PASSWORD, unique_slug

    slug = unique_slug("drop")
    with committed_db.transaction() as s:
        tenant_services.provision(s, Actor.system("test"), slug=slug,
                                  name="Drop", admin_email=f"a@{slug}.test", admin_password=PASSWORD)
    web_engine = make_engine(settings.database_url, pool_size=1, max_overflow=0, pre_ping=False)
    app = create_app(settings, engine=web_engine, redis=redis_client)
    client = app.test_client()
    try:
        assert client.get("/sign-in", headers=host(slug)).status_code == 200  # the pool now holds a connection
        with engine.connect() as admin:
            killed = admin.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ''"
            )).scalar()
        assert killed >= 1
        dropped = client.get("/sign-in", headers=host(slug))
        assert dropped.status_code == 503
        assert dropped.headers["Retry-After"] == "1"
        assert client.get("/sign-in", headers=host(slug)).status_code == 200
    finally:
        web_engine.dispose()


def test_lifetimes_and_throttles_are_settable(tmp_path):
    settings = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_SESSION_TTL_S": "120",
                                  "COURTYARD_TOKEN_TTL_S": "600", "COURTYARD_LOGIN_ATTEMPTS": "3",
                                  "COURTYARD_PUBLIC_URL": "https://crm.example.com/"})
    assert (settings.session_ttl_s, settings.token_ttl_s, settings.login_attempts) == (120, 600, 3)
    assert settings.tenant_link("acme", "/reset/x") == "https://crm.example.com/t/acme/reset/x"
    with pytest.raises(ConfigError, match="at least 60"):
        Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_SESSION_TTL_S": "5"})
    with pytest.raises(ConfigError, match="http:// or https://"):
        Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_PUBLIC_URL": "crm.example.com"})
    with pytest.raises(ConfigError, match="COURTYARD_SESSION_MAX_AGE_S"):
        Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_SESSION_TTL_S": "7200",
                           "COURTYARD_SESSION_MAX_AGE_S": "3600"})
    capped = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_SESSION_MAX_AGE_S": "43200",
                                "COURTYARD_INVITATIONS_PER_HOUR": "7"})
    assert (capped.session_max_age_s, capped.invitations_per_hour) == (43200, 7)


def test_rate_limit_window_slides_instead_of_resetting_at_a_boundary(redis_client, monkeypatch):
    # A fixed window would let five attempts at 899 s and five more at 901 s all through.
    clock = [1_000_000 * 900 - 1.0]  # one second before a multiple of the window
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    limiter = ratelimit.RateLimiter(redis_client)
    # A key of this run's own: this test flushes nothing, and an external Redis (COURTYARD_REDIS_URL)
    # keeps the attempts of an earlier run for a real window, which the fake clock would count as current.
    key = ("test", uuid.uuid4().hex)
    assert all(limiter.hit(*key, limit=3, window_s=900) for _ in range(3))
    clock[0] += 2.0  # across the old bucket boundary
    assert not limiter.hit(*key, limit=3, window_s=900)
    clock[0] += 899.0  # the first three attempts have aged out (a refused one is not counted)
    assert all(limiter.hit(*key, limit=3, window_s=900) for _ in range(3))
    assert not limiter.hit(*key, limit=3, window_s=900)
    limiter.reset(*key, limit=3, window_s=900)
    assert limiter.hit(*key, limit=3, window_s=900)


def test_uuid7_ids_made_later_sort_later_even_within_a_millisecond(monkeypatch):
    # The audit log lists newest first by id: ids made in the same millisecond, or after the wall clock
    # stepped back, must still sort in the order they were made.
    now = [1_700_000_000_123_456_789]
    monkeypatch.setattr(core.db, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    # A clock state of this test's own: the process's real one has seen later times, and the fake
    # ones must not stay behind for the ids of later tests.
    monkeypatch.setattr(core.db, "_UUID7_CLOCK", core.db._Uuid7Clock())
    same_instant = [core.db.uuid7() for _ in range(5000)]  # more than one 1/4096 ms tick can hold
    now[0] -= 5_000_000_000  # the clock steps back five seconds
    after_step_back = [core.db.uuid7() for _ in range(3)]
    ids = same_instant + after_step_back
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    # The time part is still the clock's millisecond (running ahead by at most what the burst needed).
    first_ms = same_instant[0].int >> 80
    assert first_ms == 1_700_000_000_123
    assert (ids[-1].int >> 80) - first_ms <= 2


def test_api_quota_weighs_the_previous_window_by_its_overlap(redis_client, monkeypatch):
    clock = [6_000_000 * 60 + 59.0]  # the last second of a minute
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    quota = ratelimit.QuotaLimiter(redis_client)
    key = f"test:{uuid.uuid4().hex}"
    spent = [quota.spend(key, limit=10, window_s=60) for _ in range(10)]
    assert all(b.allowed for b in spent)
    assert (spent[-1].remaining, spent[-1].reset_s) == (0, 1)
    refused = quota.spend(key, limit=10, window_s=60)
    assert not refused.allowed
    # 6 s into the next minute the ten weigh 9/10 (9 + 1 = 10 fits): 1 s left here, then 6.
    assert refused.reset_s == 7
    clock[0] += 16.0  # 15 s into the next minute: the ten still weigh 3/4 (7.5)
    assert quota.spend(key, limit=10, window_s=60).allowed  # 8.5
    assert quota.spend(key, limit=10, window_s=60).allowed  # 9.5
    budget = quota.spend(key, limit=10, window_s=60)  # 10.5: a fixed window would let 8 more through
    assert not budget.allowed
    assert budget.reset_s == 3, "at 18 s the ten weigh 7, and 7 + 2 + 1 fits"
    clock[0] += 3.0
    assert quota.spend(key, limit=10, window_s=60).allowed, "refused calls were not counted"
    clock[0] += 60.0  # 18 s into the minute after: the first minute is gone; the second (3 calls) weighs 0.7
    assert quota.spend(key, limit=10, window_s=60).remaining == 6  # 3 x 0.7 + 1 = 3.1 -> 6.9 left


def test_a_client_that_keeps_calling_over_its_quota_still_gets_calls_through(redis_client, monkeypatch):
    clock = [6_100_000 * 60.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    quota = ratelimit.QuotaLimiter(redis_client)
    key = f"test:{uuid.uuid4().hex}"
    allowed_per_minute = []
    for _minute in range(4):
        allowed = 0
        for _ in range(200):  # twice the limit, evenly over the minute
            allowed += quota.spend(key, limit=100, window_s=60).allowed
            clock[0] += 0.3
        allowed_per_minute.append(allowed)
    assert allowed_per_minute[0] == 100
    assert all(90 <= n <= 110 for n in allowed_per_minute[1:]), allowed_per_minute


def test_api_quota_counts_locally_between_syncs_and_exactly_near_the_limit(redis_client, monkeypatch):
    clock = [7_000_000 * 60 + 1.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    one, two = ratelimit.QuotaLimiter(redis_client), ratelimit.QuotaLimiter(redis_client)  # two processes
    key = f"test:{uuid.uuid4().hex}"
    stored = f"rq:{key}:{int(clock[0] // 60)}"

    def in_redis() -> int:
        return int(redis_client.get(stored) or 0)

    assert all(one.spend(key, limit=100).allowed for _ in range(5))
    assert in_redis() == 1, "far from the limit, only the first call of an interval goes to Redis"
    clock[0] += 0.2
    assert one.spend(key, limit=100).remaining == 94
    assert in_redis() == 6, "the next interval adds what was counted locally"
    assert two.spend(key, limit=100).remaining == 93, "another process sees the shared count"
    for n in range(40):  # 40 calls within one interval: still counted only here
        (one if n % 2 else two).spend(key, limit=100)
    assert in_redis() == 7
    clock[0] += 0.2
    for n in range(43):  # a new interval: each process adds its count on its next call
        (one if n % 2 else two).spend(key, limit=100)
    assert in_redis() == 49
    clock[0] += 0.2
    one.spend(key, limit=100)
    two.spend(key, limit=100)
    assert in_redis() == 92, "every call made so far"
    # `one` last saw 70; a process learns the others' counts at its next interval. Once both have seen
    # a count near the limit (90 of 100 and beyond), every call is counted in Redis before it is
    # allowed, whichever process takes it, even with the clock standing still.
    clock[0] += 0.2
    one.spend(key, limit=100)
    budgets = [(one if n % 2 else two).spend(key, limit=100) for n in range(11)]
    assert [b.allowed for b in budgets] == [True] * 7 + [False] * 4  # 94 … 100 allowed, then none
    # Refused calls are taken back: Redis holds them until each process's next sync subtracts them.
    assert in_redis() + one._tallies[key].pending + two._tallies[key].pending == 100


def test_api_quota_forgets_workspaces_idle_for_a_window_once_it_holds_many(redis_client, monkeypatch):
    clock = [8_000_000 * 60 + 1.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    quota = ratelimit.QuotaLimiter(redis_client)
    quota.MAX_KEYS = 2
    quota.spend("test:old", limit=10)
    clock[0] += 120.0
    quota.spend("test:recent", limit=10)
    assert set(quota._tallies) == {"test:old", "test:recent"}
    quota.spend("test:new", limit=10)
    assert set(quota._tallies) == {"test:recent", "test:new"}, "only the idle one was dropped"


def test_api_quota_lets_calls_through_while_redis_is_away(tmp_path, caplog):
    from courtyard.runtime import make_redis

    quota = ratelimit.QuotaLimiter(make_redis(f"unix://{tmp_path}/nobody.sock"))
    budgets = [quota.spend("test:away", limit=5) for _ in range(3)]
    assert all(b.allowed for b in budgets), "a quota is no reason to refuse service"
    assert "API quota not synced" in caplog.text
