"""Smaller findings of issue 5 around accounts and mail: forgot-password enumeration, reset links
outliving a password change, names with line breaks."""

from __future__ import annotations

import email
import email.policy
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from core.db import Database
from core.errors import ValidationFailed
from core.mail import Mail, build_message
from core.permissions import Actor
from core.settings import Settings
from tenants import services, tasks
from tenants.errors import InvalidToken
from tenants.models import Tenant
from tests.conftest import PASSWORD, _csrf_from, csrf_of, host, sign_in

ACME = host("acme")


def _outbox(settings: Settings) -> set[Path]:
    return set(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else set()


def _mails_since(settings: Settings, before: set[Path]) -> list[Any]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(_outbox(settings) - before)]


# --------------------------------------------------------------------------- forgot password


def test_forgot_password_does_the_same_work_for_known_and_unknown_addresses(
        app, client, db, settings, tenant, monkeypatch) -> None:
    """Before: a known address cost a token INSERT and an outbox INSERT in the request, an unknown one
    nothing, so the answer's timing told whether an account exists."""
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.send_password_reset, "apply_async",
                        lambda args, **_kw: queued.append(tuple(args)))
    engine = app.extensions["courtyard"].db.engine
    token = _csrf_from(client.get("/forgot", headers=ACME).get_data(as_text=True))

    def run(address: str) -> list[str]:
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(re.sub(r"sa_savepoint_\d+", "sa_savepoint", statement))

        event.listen(engine, "before_cursor_execute", record)
        try:
            response = client.post("/forgot", headers=ACME, data={"email": address, "csrf_token": token})
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert response.status_code == 200
        return statements

    known = run("admin@acme.test")
    unknown = run("nobody-here@acme.test")
    assert known == unknown
    assert [q[1] for q in queued] == ["admin@acme.test", "nobody-here@acme.test"]
    assert len({len(q) for q in queued}) == 1
    # The queued tasks, run: a link for the account, nothing for the stranger.
    before = _outbox(settings)
    monkeypatch.undo()
    for args in queued:
        tasks.send_password_reset(*args)
    mails = _mails_since(settings, before)
    assert [m["To"] for m in mails] == ["admin@acme.test"]
    body = mails[0].get_body(preferencelist=("plain",)).get_content()
    assert re.search(r"http://localhost:8000/t/acme/reset/\S+", body)


# --------------------------------------------------------------------------- reset links


def test_changing_the_password_invalidates_open_reset_links(db: Database, tenant) -> None:
    """Before: only a reset closed the other links; a password change left them working."""
    with db.transaction(tenant) as s:
        user, token = services.request_password_reset(s, "admin@acme.test") or (None, None)
        assert user is not None
        assert token is not None
        actor = services.actor_for(user)
        services.change_password(s, actor, user.id, PASSWORD, "a different long password")
    with db.transaction(tenant) as s, pytest.raises(InvalidToken):
        services.open_reset(s, token.secret)


# --------------------------------------------------------------------------- names and mail headers


@pytest.mark.parametrize("name", ["Evil\nCorp", "Evil\r\nBcc: victim@example.com", "Tab\there", "Line\u2028sep"])
def test_names_with_control_characters_are_refused(db: Database, tenant, name: str) -> None:
    with db.transaction(tenant) as s, pytest.raises(ValidationFailed, match="control characters"):
        services.create_user(s, Actor.system("test"), email="x@acme.test", name=name, role="sales",
                             password=PASSWORD)


def test_the_invitation_form_refuses_a_name_with_a_line_break(client, settings, tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    before = _outbox(settings)
    response = client.post("/admin/users/invite", headers=ACME, data={
        "email": "new@acme.test", "name": "New\nPerson", "role": "sales", "csrf_token": csrf_of(client, "acme")})
    assert response.status_code == 422
    assert "must not contain line breaks" in unescape(response.get_data(as_text=True))
    assert _mails_since(settings, before) == []


def test_mail_headers_are_one_line_whatever_they_quote() -> None:
    """Before: a subject with a line break raised in the email package, and the task failed for good."""
    message = build_message(Mail(to="a@example.com", subject="Hello\r\nBcc: victim@example.com\n 你好",
                                 text="body"), "Courtyard <no-reply@courtyard.local>")
    parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
    assert parsed["Subject"] == "Hello Bcc: victim@example.com 你好"
    assert parsed["Bcc"] is None


def test_an_invitation_from_a_workspace_named_before_names_were_checked_is_delivered(
        client, db: Database, settings, tenant) -> None:
    with db.transaction() as s:
        s.execute(update(Tenant).where(Tenant.id == tenant.id).values(name="Acme\nEvil"))
    assert sign_in(client, "acme").status_code == 302
    before = _outbox(settings)
    response = client.post("/admin/users/invite", headers=ACME, data={
        "email": "new@acme.test", "name": "New", "role": "sales", "csrf_token": csrf_of(client, "acme")})
    assert response.status_code == 302
    (mail,) = _mails_since(settings, before)
    assert "Acme Evil" in mail["Subject"]
