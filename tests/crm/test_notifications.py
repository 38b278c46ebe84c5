"""Notifications: the bell's rows, visibility through the data scope, unread counts, marking read, mail
per the user's preference, and the HTTP surfaces (API, bell fragment, page)."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from core.errors import NotFound
from core.i18n import _l
from core.security import hash_password
from crm.activities.models import TASKS
from crm.records import notifications, preferences
from crm.records import services as records
from crm.records.models import Notification
from tenants.models import User
from tests.conftest import PASSWORD, host, sign_in
from tests.crm.conftest import as_user


def outbox(settings):
    return set(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else set()


def mails(paths):
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(paths)]


def task_of(session, viewer, title="Call back 回电"):
    return records.create(session, viewer, TASKS, {"title": title})


def test_newest_first_keyset_pages_and_unread_count(tsession, org):
    a = as_user(tsession, org.rep_a)
    for i in range(5):
        notifications.notify(tsession, org.rep_a, "general", f"n{i}")
    notifications.notify(tsession, org.rep_b, "general", "for B")
    first = notifications.page(tsession, a, limit=2)
    assert [n.title for n in first.rows] == ["n4", "n3"]
    second = notifications.page(tsession, a, before=first.next_before, limit=2)
    assert [n.title for n in second.rows] == ["n2", "n1"]
    third = notifications.page(tsession, a, before=second.next_before, limit=2)
    assert [n.title for n in third.rows] == ["n0"]
    assert third.next_before is None
    assert notifications.unread_count(tsession, a) == 5
    notifications.mark_read(tsession, a, first.rows[0].id)
    assert notifications.unread_count(tsession, a) == 4
    assert [n.title for n in notifications.page(tsession, a, unread_only=True).rows] == ["n3", "n2", "n1", "n0"]
    # Someone else's notification is not found for A, not even by id.
    b_row = tsession.scalar(select(Notification).where(Notification.user_id == org.rep_b))
    with pytest.raises(NotFound):
        notifications.mark_read(tsession, a, b_row.id)
    assert notifications.mark_all_read(tsession, a) == 4
    assert notifications.unread_count(tsession, a) == 0
    assert notifications.unread_count(tsession, as_user(tsession, org.rep_b)) == 1


def test_the_count_is_capped(tsession, org):
    for i in range(notifications.COUNT_CAP + 5):
        notifications.notify(tsession, org.rep_a, "general", f"n{i}")
    count = notifications.unread_count(tsession, as_user(tsession, org.rep_a))
    assert count == notifications.COUNT_CAP + 1
    assert notifications.badge(count) == "99+"


def test_a_notification_about_a_record_the_user_no_longer_sees_is_hidden(tsession, org):
    a = as_user(tsession, org.rep_a)
    manager = as_user(tsession, org.manager)
    task = task_of(tsession, a)
    notifications.notify(tsession, org.rep_a, "task.reminder", task.title, link=f"/tasks/{task.id}",
                         entity="tasks", record_id=task.id)
    notifications.notify(tsession, org.rep_a, "general", "about nothing")
    notifications.notify(tsession, org.rep_a, "approval", "about a future kind of thing", entity="approvals",
                         record_id=task.id)
    assert notifications.unread_count(tsession, a) == 3
    # The task goes to B: A may no longer see it, so the bell no longer shows it (nor counts it).
    records.transfer(tsession, manager, TASKS, [task.id], org.rep_b)
    assert sorted(n.title for n in notifications.page(tsession, a).rows) == ["about a future kind of thing",
                                                                            "about nothing"]
    assert notifications.unread_count(tsession, a) == 2
    hidden = tsession.scalar(select(Notification).where(Notification.entity == "tasks"))
    with pytest.raises(NotFound):
        notifications.mark_read(tsession, a, hidden.id)


def test_titles_and_mail_are_in_the_recipients_language_and_mail_follows_the_preference(db, tsession, org,
                                                                                       settings):
    tsession.get(User, org.rep_a).locale = "zh"
    tsession.flush()
    before = outbox(settings)
    notifications.notify(tsession, org.rep_a, "task.reminder", _l("Due %(due)s.", due="2026-12-03"),
                         body="报价 body", link="/tasks/x")
    preferences.set_email_notifications(tsession, org.rep_a, False)
    notifications.notify(tsession, org.rep_a, "task.reminder", "no mail for this one")
    tsession.commit()  # mail leaves only after the commit
    sent = mails(outbox(settings) - before)
    assert len(sent) == 1
    assert sent[0]["To"] == f"rep_a@{org.tenant.slug}.test"
    assert sent[0]["Subject"].startswith("任务提醒")
    body = sent[0].get_content()
    assert "报价 body" in body
    assert f"/t/{org.tenant.slug}/tasks/x" in body or "/tasks/x" in body
    rows = list(tsession.scalars(select(Notification).where(Notification.user_id == org.rep_a)
                                 .order_by(Notification.id)))
    assert rows[0].title.startswith("截止")  # stored in the recipient's language


def test_nothing_is_mailed_when_the_unit_of_work_rolls_back(db, tsession, org, settings):
    before = outbox(settings)
    notifications.notify(tsession, org.rep_a, "general", "rolled back")
    tsession.rollback()
    assert outbox(settings) == before
    assert tsession.scalar(select(Notification).where(Notification.title == "rolled back")) is None


def test_links_must_stay_inside_the_workspace(tsession, org):
    for bad in ("https://evil.example/", "//evil.example/x", "/" + "x" * 400):
        with pytest.raises(ValueError, match="paths inside the workspace"):
            notifications.notify(tsession, org.rep_a, "general", "t", link=bad)


def _client_for(app, db, org, user_id):
    with db.transaction(org.tenant) as s:
        user = s.get(User, user_id)
        user.password_hash = hash_password(PASSWORD)
        email = user.email
    client = app.test_client()
    assert sign_in(client, org.tenant.slug, email).status_code in (302, 303)
    return client


def test_api_bell_and_page(app, db, org, tsession):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    mine = task_of(tsession, a, "A's task")
    secret = task_of(tsession, b, "B's private task")
    notifications.notify(tsession, org.rep_a, "task.reminder", "A's task", link=f"/tasks/{mine.id}",
                         entity="tasks", record_id=mine.id)
    # A notification row for A about B's record (as a bug elsewhere might write): never shown to A.
    notifications.notify(tsession, org.rep_a, "task.reminder", "B's private task", entity="tasks",
                         record_id=secret.id)
    preferences.set_email_notifications(tsession, org.rep_a, False)
    tsession.commit()
    client = _client_for(app, db, org, org.rep_a)
    h = host(org.tenant.slug)
    listed = client.get("/api/v1/notifications", headers=h)
    assert listed.status_code == 200
    body = listed.get_json()
    assert [n["title"] for n in body["items"]] == ["A's task"]
    assert body["unread"] == 1
    assert body["items"][0]["kind_label"] == "Task reminder"
    assert client.get("/api/v1/notifications/unread-count", headers=h).get_json() == {"unread": 1, "badge": "1"}
    assert client.get("/api/v1/notifications?limit=0", headers=h).status_code == 422
    assert client.get("/api/v1/notifications?before=nope", headers=h).status_code == 422
    bell = client.get("/notifications/bell", headers=h)
    assert bell.status_code == 200
    html = bell.get_data(as_text=True)
    assert "A&#39;s task" in html or "A's task" in html
    assert "B&#39;s private task" not in html
    assert "B's private task" not in html
    assert 'id="notif-count"' in html
    page = client.get("/notifications", headers=h)
    assert page.status_code == 200
    assert "private task" not in page.get_data(as_text=True)
    csrf = client.get("/api/v1/notifications", headers=h)  # session-authenticated writes need the CSRF token
    del csrf
    from tests.conftest import csrf_of

    token = csrf_of(client, org.tenant.slug)
    item_id = body["items"][0]["id"]
    marked = client.post(f"/api/v1/notifications/{item_id}/read", headers={**h, "X-CSRF-Token": token})
    assert marked.status_code == 200
    assert marked.get_json()["read"] is True
    assert client.get("/api/v1/notifications/unread-count", headers=h).get_json()["unread"] == 0
    prefs = client.put("/api/v1/notifications/preferences", json={"email_notifications": True},
                       headers={**h, "X-CSRF-Token": token})
    assert prefs.get_json() == {"email_notifications": True}
    follow = client.post(f"/notifications/{item_id}/read", data={"csrf_token": token, "follow": "1"}, headers=h)
    assert follow.status_code == 302
    assert follow.headers["Location"].endswith(f"/tasks/{mine.id}")
    assert app.test_client().get("/notifications/bell", headers=h).status_code == 302
    assert app.test_client().get("/api/v1/notifications", headers=h).status_code == 401


def test_reminder_notification_marks_time(tsession, org):
    # reminded_at and the bell row are one unit of work: see test_tasks_calendar for the beat job.
    a = as_user(tsession, org.rep_a)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    task = records.create(tsession, a, TASKS, {"title": "t", "due_at": due.isoformat(),
                                               "reminder_at": (due - dt.timedelta(hours=2)).isoformat()})
    from crm.activities import services

    assert services.send_due_reminders(tsession) == 1
    tsession.expire_all()
    assert task.reminded_at is not None
    assert services.send_due_reminders(tsession) == 0
