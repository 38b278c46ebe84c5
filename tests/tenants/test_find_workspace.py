""""Find my workspace" on the public site: one bilingual mail listing the workspaces where an address
is an active user; the same answer whether or not it has any; rate limited; the scan runs in a task."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from core.permissions import Actor
from tenants import services
from tenants.services import discovery
from tests.conftest import PASSWORD, _csrf_from, host, provision

PUBLIC = {"Host": "localhost"}


def mails(outbox: Path) -> set[Path]:
    return set(outbox.glob("*.eml")) if outbox.exists() else set()


def read(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def ask(client, address: str):
    page = client.get("/find", headers=PUBLIC)
    assert page.status_code == 200
    token = _csrf_from(page.get_data(as_text=True))
    return client.post("/find", headers=PUBLIC, data={"email": address, "csrf_token": token})


def add_user(db, tenant, address: str, *, active: bool = True) -> None:
    with db.transaction(tenant) as s:
        user = services.create_user(s, Actor.system("test"), email=address, role="sales", password=PASSWORD)
        if not active:
            services.set_active(s, Actor.system("test"), user.id, False)


@pytest.fixture
def three(db):
    acme, globex, initech = (provision(db, slug, name=f"{slug.title()} 公司")[0]
                             for slug in ("acme", "globex", "initech"))
    add_user(db, acme, "pat@example.com")
    add_user(db, globex, "Pat@Example.com")
    add_user(db, initech, "pat@example.com", active=False)
    add_user(db, initech, "gone@example.com", active=False)
    return acme, globex, initech


def test_one_bilingual_mail_lists_the_workspaces_where_the_address_is_active(client, db, three, settings) -> None:
    before = mails(settings.outbox_dir)
    answer = ask(client, "PAT@example.com")
    assert answer.status_code == 200
    assert 'id="find-sent"' in answer.get_data(as_text=True)
    sent = mails(settings.outbox_dir) - before
    assert len(sent) == 1
    mail = read(next(iter(sent)))
    assert mail["To"] == "pat@example.com"
    assert mail["Subject"] == "您的 Courtyard 工作区 · Your Courtyard workspaces"
    text = mail.get_content()
    assert "http://localhost:8000/t/acme/sign-in" in text
    assert "http://localhost:8000/t/globex/sign-in" in text
    assert "Acme 公司" in text
    assert "initech" not in text  # deactivated there
    assert "您" in text
    assert "open one to sign in" in text


def test_the_answer_is_the_same_for_an_unknown_address_and_no_mail_leaves(client, db, three, settings) -> None:
    before = mails(settings.outbox_dir)
    known = ask(client, "pat@example.com")
    unknown = ask(client, "nobody@example.com")
    inactive_only = ask(client, "gone@example.com")
    assert known.status_code == unknown.status_code == inactive_only.status_code == 200

    def alert(response) -> str:
        page = response.get_data(as_text=True)
        return page[page.index('id="find-sent"'):].split("</div>", 1)[0]

    assert alert(known) == alert(unknown) == alert(inactive_only)
    assert len(mails(settings.outbox_dir) - before) == 1


def test_requests_are_rate_limited_per_address_and_per_network(client, db, three, settings, monkeypatch) -> None:
    from tenants import views

    # Set before the first request: the limiter's counters are kept per limit.
    monkeypatch.setattr(views, "FIND_PER_IP_PER_HOUR", views.FIND_PER_ADDRESS_PER_HOUR + 2)
    for _ in range(views.FIND_PER_ADDRESS_PER_HOUR):
        assert ask(client, "pat@example.com").status_code == 200
    refused = ask(client, "pat@example.com")
    assert refused.status_code == 429
    assert 'id="form-error"' in refused.get_data(as_text=True)
    # Another address from the same network still gets its answer, until the network's own limit.
    assert ask(client, "someone@example.com").status_code == 200
    assert ask(client, "third@example.com").status_code == 429


@pytest.mark.parametrize("address", ["not-an-address", "a@b", "x" * 300 + "@example.com", "a\u2028b@example.com"])
def test_a_malformed_address_is_refused_and_nothing_is_queued(client, db, three, settings, address) -> None:
    before = mails(settings.outbox_dir)
    refused = ask(client, address)
    assert refused.status_code == 422
    assert "valid e-mail address" in refused.get_data(as_text=True)
    assert mails(settings.outbox_dir) == before


def test_the_page_lives_on_the_public_site_only(client, db, three) -> None:
    assert client.get("/find", headers=host("acme")).status_code == 404
    assert client.get("/t/acme/find", headers=PUBLIC).status_code == 404
    # Linked from the public site and from every workspace's sign-in page.
    assert 'id="find-workspace-link"' in client.get("/", headers=PUBLIC).get_data(as_text=True)
    sign_in = client.get("/sign-in", headers=host("acme")).get_data(as_text=True)
    assert 'href="http://localhost:8000/find" id="find-workspace-link"' in sign_in


def test_the_scan_goes_page_by_page_and_stops_at_the_cap(db, three, monkeypatch) -> None:
    monkeypatch.setattr(discovery, "SCAN_PAGE", 1)
    with db.transaction() as s:
        first, after = services.scan_workspaces(s, "pat@example.com")
        assert [w.slug for w in first] == ["acme"]
        second, after = services.scan_workspaces(s, "pat@example.com", after=after or "")
        assert [w.slug for w in second] == ["globex"]
        third, after = services.scan_workspaces(s, "pat@example.com", after=after or "")
        assert third == []  # initech: deactivated there
    monkeypatch.setattr(discovery, "SCAN_PAGE", 200)
    with db.transaction() as s:
        capped, _after = services.scan_workspaces(s, "pat@example.com", limit=1)
        assert [w.slug for w in capped] == ["acme"]


def test_the_task_lists_at_most_the_cap(db, three, settings, monkeypatch) -> None:
    from tenants.tasks import send_workspace_list

    monkeypatch.setattr(discovery, "SCAN_PAGE", 1)
    monkeypatch.setattr(discovery, "MAX_LISTED", 1)
    before = mails(settings.outbox_dir)
    assert send_workspace_list("pat@example.com") == 1
    assert send_workspace_list("nobody@example.com") == 0
    assert send_workspace_list("not an address") == 0
    sent = mails(settings.outbox_dir) - before
    assert len(sent) == 1
    text = read(next(iter(sent))).get_content()
    assert "/t/acme/sign-in" in text
    assert "/t/globex/" not in text
