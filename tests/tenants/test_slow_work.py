"""No transaction stays open across slow work on the request path (finding 5): argon2 and Redis are
called while the request's connection is outside any transaction. And one link used twice at the same
moment works once, the other answer being a clear 4xx (smaller finding: invitations accepted twice)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select

from core.db import normalise_url
from core.errors import DomainError
from core.permissions import Actor, all_names
from core.tasks import TaskRuntime, configure_tasks, task_runtime
from courtyard.app import create_app
from tenants import services
from tenants.errors import InvalidToken
from tenants.models import User
from tenants.services import invitations, provisioning, users
from tests.conftest import PASSWORD, _csrf_from, provision, unique_slug
from tests.races import second_waits_for_first

NEW_PASSWORD = "a brand new passphrase"


@dataclass
class Watch:
    """Counts, at each slow call, the app's connections that are inside a transaction."""

    url: str
    pids: set[int] = field(default_factory=set)
    seen: list[tuple[str, int]] = field(default_factory=list)

    def open_transactions(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND xact_start IS NOT NULL",
                               (list(self.pids),)).fetchone()
            return int(row[0]) if row else 0

    def wrap(self, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            self.seen.append((what, self.open_transactions()))
            return fn(*args, **kwargs)

        return watched


@pytest.fixture
def watched_app(app, settings, redis_client, monkeypatch) -> Iterator[tuple[Any, Watch]]:
    assert settings.database_url is not None
    previous_tasks = task_runtime()  # the suite's app configured it; mail queued here uses this app's pool
    app = create_app(settings, redis=redis_client)
    app.config["TESTING"] = True
    rt = app.extensions["courtyard"]
    configure_tasks(TaskRuntime(db=rt.db, mailer=rt.mailer, settings=settings))
    watch = Watch(normalise_url(settings.database_url).replace("+psycopg", ""))

    @event.listens_for(rt.db.engine, "connect")
    def _remember(dbapi_connection: Any, _record: Any) -> None:
        watch.pids.add(dbapi_connection.info.backend_pid)

    # Each services module that hashes or verifies calls its own imported name: watch them all.
    for module in (invitations, provisioning, users):
        for name, what in (("hash_password", "argon2 hash"), ("verify_password", "argon2 verify")):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, watch.wrap(what, getattr(module, name)))
    monkeypatch.setattr(rt.limiter, "hit", watch.wrap("redis limiter.hit", rt.limiter.hit))
    monkeypatch.setattr(rt.limiter, "reset", watch.wrap("redis limiter.reset", rt.limiter.reset))
    monkeypatch.setattr(rt.quota, "spend", watch.wrap("redis quota.spend", rt.quota.spend))
    yield app, watch
    configure_tasks(previous_tasks)
    rt.db.engine.dispose()


def form_post(client: Any, headers: dict[str, str], path: str, data: dict[str, str]) -> Any:
    token = _csrf_from(client.get(path, headers=headers).get_data(as_text=True))
    return client.post(path, headers=headers, data={**data, "csrf_token": token})


def test_argon2_and_redis_run_outside_any_transaction(watched_app, committed_db):
    app, watch = watched_app
    slug = unique_slug("slow")
    tenant, _admin_id = provision(committed_db, slug)
    actor = Actor.system("test")
    with committed_db.transaction(tenant) as s:
        _inv, invitation = services.invite(s, actor, email=f"new@{slug}.test", role="sales")
        made = services.create_client(s, actor, tenant, name="watch", scopes=sorted(all_names()))
        bearer, _row = services.issue_token(s, made.client, made.client.scopes, 3600)
    headers = {"Host": f"{slug}.localhost"}
    client = app.test_client()

    # An API call: the workspace's quota is spent in Redis.
    assert client.get("/api/v1/me", headers=headers | {"Authorization": f"Bearer {bearer}"}).status_code == 200
    # Sign-in: two throttle hits, a verification, and the reset of the account's counter.
    signed_in = form_post(client, headers, "/sign-in", {"email": f"admin@{slug}.test", "password": PASSWORD})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    # A password change: a verification and a hash.
    changed = form_post(client, headers, "/profile", {"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 302, changed.get_data(as_text=True)
    # An invitation from the users page (its workspace limit is counted in Redis), and the API called
    # with the browser's session (the quota is spent in Redis after the user was read).
    token = _csrf_from(client.get("/admin/users", headers=headers).get_data(as_text=True))
    invited = client.post("/admin/users/invite", headers=headers, data={
        "email": f"third@{slug}.test", "name": "Third", "role": "sales", "csrf_token": token})
    assert invited.status_code == 302, invited.get_data(as_text=True)
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    # A reset link asked for after the change (a password change closes the links opened before it).
    with committed_db.transaction(tenant) as s:
        issued = services.request_password_reset(s, f"admin@{slug}.test")
        assert issued is not None
        reset_secret = issued[1].secret
    # An invitation accepted and a reset link used, each in a fresh browser.
    accepted = form_post(app.test_client(), headers, f"/invitation/{invitation.secret}",
                         {"name": "New person", "password": NEW_PASSWORD})
    assert accepted.status_code == 302, accepted.get_data(as_text=True)
    reset = form_post(app.test_client(), headers, f"/reset/{reset_secret}", {"password": PASSWORD + " again"})
    assert reset.status_code == 302, reset.get_data(as_text=True)

    kinds = {what for what, _count in watch.seen}
    assert {"argon2 hash", "argon2 verify", "redis limiter.hit", "redis limiter.reset", "redis quota.spend"} <= kinds
    assert [(what, n) for what, n in watch.seen if n] == []


def test_one_invitation_accepted_twice_at_once_makes_one_user(committed_db, engine):
    slug = unique_slug("twice")
    tenant, _ = provision(committed_db, slug)
    with committed_db.transaction(tenant) as s:
        _inv, issued = services.invite(s, Actor.system("test"), email=f"twice@{slug}.test", role="sales")

    first = committed_db.session(tenant)
    services.accept_invitation(first, issued.secret, name="First", password=NEW_PASSWORD)

    def second() -> str:
        with committed_db.transaction(tenant) as s2:
            services.accept_invitation(s2, issued.secret, name="Second", password=NEW_PASSWORD)
        return "accepted"

    waited, result = second_waits_for_first(first, second, engine)
    assert waited, result
    assert isinstance(result, InvalidToken), repr(result)
    assert isinstance(result, DomainError)
    assert 400 <= result.status < 500
    with committed_db.transaction(tenant) as s:
        names = s.scalars(select(User.name).where(User.email == f"twice@{slug}.test")).all()
    assert names == ["First"]
