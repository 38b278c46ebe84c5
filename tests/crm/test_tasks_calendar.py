"""Tasks (rules, recurrence, reminders, my day), activities with follow-ups, the calendar feed and the
private iCalendar feed."""

from __future__ import annotations

import datetime as dt
import uuid

import icalendar
import pytest
from sqlalchemy import select

from core.errors import NotFound, PreconditionFailed, ValidationFailed
from core.security import hash_password
from crm.accounts.models import CONTACTS, CUSTOMERS
from crm.activities import calendar, services
from crm.activities.models import ACTIVITIES, TASKS, Task
from crm.activities.tasks import send_due_reminders
from crm.records import preferences
from crm.records import services as records
from crm.records.models import Notification
from tenants.models import User
from tests.conftest import PASSWORD, host
from tests.crm.conftest import as_user

UTC = dt.UTC


def at(y, m, d, h=9, mi=0):
    return dt.datetime(y, m, d, h, mi, tzinfo=UTC)


def new_task(session, viewer, **data):
    data.setdefault("title", "Call 华为 back")
    for key, value in list(data.items()):
        if isinstance(value, dt.datetime | dt.date):
            data[key] = value.isoformat()
    return records.create(session, viewer, TASKS, data)


# --------------------------------------------------------------------------- rules and recurrence


def test_reminder_after_due_and_repeat_without_due_are_refused(tsession, org):
    a = as_user(tsession, org.rep_a)
    with pytest.raises(ValidationFailed) as exc:
        new_task(tsession, a, due_at=at(2026, 12, 3), reminder_at=at(2026, 12, 3, 10))
    assert set(exc.value.field_errors) == {"reminder_at"}
    with pytest.raises(ValidationFailed) as exc:
        new_task(tsession, a, recurrence="weekly")
    assert set(exc.value.field_errors) == {"due_at"}
    with pytest.raises(ValidationFailed) as exc:
        new_task(tsession, a, due_at=at(2026, 12, 3), recurrence="daily", recurrence_interval=0,
                 recurrence_until=dt.date(2026, 12, 1))
    assert set(exc.value.field_errors) == {"recurrence_interval", "recurrence_until"}


def test_completing_a_repeating_task_makes_the_next_occurrence_once(tsession, org):
    a = as_user(tsession, org.rep_a)
    task = new_task(tsession, a, due_at=at(2026, 1, 31), reminder_at=at(2026, 1, 31, 8, 45), recurrence="monthly",
                    recurrence_interval=1, priority="high")
    done, nxt = services.complete(tsession, a, task.id)
    assert done.status == "done"
    assert done.completed_at is not None
    # 31 January + 1 month: the last day of February; the reminder keeps its 15 minutes.
    assert nxt is not None
    assert nxt.due_at == at(2026, 2, 28)
    assert nxt.reminder_at == at(2026, 2, 28, 8, 45)
    assert nxt.priority == "high"
    assert nxt.owner_id == org.rep_a
    assert nxt.status == "open"
    assert nxt.number != task.number
    # Again, and after reopening and completing again: still exactly one successor.
    services.complete(tsession, a, task.id)
    services.reopen(tsession, a, task.id)
    assert tsession.get(Task, task.id).completed_at is None
    services.complete(tsession, a, task.id)
    assert len(list(tsession.scalars(select(Task).where(Task.previous_id == task.id)))) == 1
    # The same through the generic update (the API's PATCH): the rule applies there too.
    _, third = services.complete(tsession, a, nxt.id)
    assert third is not None
    assert third.due_at == at(2026, 3, 28)


def test_the_series_ends_at_its_until_date(tsession, org):
    a = as_user(tsession, org.rep_a)
    task = new_task(tsession, a, due_at=at(2026, 12, 1), recurrence="weekly", recurrence_interval=2,
                    recurrence_until=dt.date(2026, 12, 20))
    _, second = services.complete(tsession, a, task.id)
    assert second is not None
    assert second.due_at == at(2026, 12, 15)
    _, third = services.complete(tsession, a, second.id)
    assert third is None


def test_the_database_refuses_a_second_successor(tsession, org):
    from sqlalchemy.exc import IntegrityError

    a = as_user(tsession, org.rep_a)
    task = new_task(tsession, a, due_at=at(2026, 12, 1), recurrence="daily")
    services.complete(tsession, a, task.id)
    tsession.add(Task(title="dup", previous_id=task.id, owner_id=org.rep_a))
    with pytest.raises(IntegrityError):
        tsession.flush()
    tsession.rollback()


def test_reschedule_keeps_the_reminder_offset_and_a_stale_version_is_412(tsession, org):
    a = as_user(tsession, org.rep_a)
    task = new_task(tsession, a, due_at=at(2026, 12, 3, 14), reminder_at=at(2026, 12, 3, 13, 30))
    version = task.version
    moved = services.reschedule(tsession, a, task.id, at(2026, 12, 8, 10), expected_version=version)
    assert moved.due_at == at(2026, 12, 8, 10)
    assert moved.reminder_at == at(2026, 12, 8, 9, 30)
    with pytest.raises(PreconditionFailed):
        services.reschedule(tsession, a, task.id, at(2026, 12, 9, 10), expected_version=version)
    assert tsession.get(Task, task.id).due_at == at(2026, 12, 8, 10)


def test_my_day_lists_only_my_own_open_tasks(tsession, org):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    now = at(2026, 12, 2, 12)
    new_task(tsession, a, title="late", due_at=at(2026, 12, 1))
    new_task(tsession, a, title="today", due_at=at(2026, 12, 2, 16))
    new_task(tsession, a, title="soon", due_at=at(2026, 12, 5))
    new_task(tsession, a, title="far", due_at=at(2027, 1, 5))
    done = new_task(tsession, a, title="done already", due_at=at(2026, 12, 2, 10))
    services.complete(tsession, a, done.id)
    new_task(tsession, b, title="B's", due_at=at(2026, 12, 2, 15))
    day = services.agenda(tsession, a, now=now)
    assert [t.title for t in day.overdue] == ["late"]
    assert [t.title for t in day.today] == ["today"]
    assert [t.title for t in day.upcoming] == ["soon"]


# --------------------------------------------------------------------------- reminders


def test_a_reminder_goes_out_once_and_one_missed_during_downtime_goes_at_the_next_run(db, tsession, org):
    a = as_user(tsession, org.rep_a)
    past = dt.datetime.now(UTC) - dt.timedelta(hours=3)  # fell due while beat was down
    task = new_task(tsession, a, title="Send the quote 报价", due_at=past + dt.timedelta(hours=1), reminder_at=past)
    later = new_task(tsession, a, title="Not yet", due_at=dt.datetime.now(UTC) + dt.timedelta(days=2),
                     reminder_at=dt.datetime.now(UTC) + dt.timedelta(days=1))
    tsession.commit()
    assert send_due_reminders() == 1
    assert send_due_reminders() == 0  # the second run (or a restarted beat) sends nothing again
    tsession.expire_all()
    rows = list(tsession.scalars(select(Notification).where(Notification.user_id == org.rep_a)))
    assert [(n.kind, n.title, n.record_id) for n in rows] == [("task.reminder", "Send the quote 报价", task.id)]
    assert tsession.get(Task, task.id).reminded_at is not None
    assert tsession.get(Task, later.id).reminded_at is None
    # Moving the reminder again (a new time) sends it again, once.
    records.update(tsession, a, TASKS, task.id, {"reminder_at": (past + dt.timedelta(minutes=1)).isoformat(),
                                                 "due_at": (past + dt.timedelta(hours=2)).isoformat()})
    tsession.commit()
    assert send_due_reminders() == 1
    assert send_due_reminders() == 0


def test_one_tenants_failure_does_not_stop_the_others(db, tsession, org, monkeypatch):
    from tests.conftest import provision

    a = as_user(tsession, org.rep_a)
    new_task(tsession, a, due_at=dt.datetime.now(UTC), reminder_at=dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    tsession.commit()
    other, _ = provision(db, "broken-co")
    real = services.send_due_reminders

    def failing(session, **kw):
        if session.info["tenant"].id == other.id:
            raise RuntimeError("this tenant's schema is broken")
        return real(session, **kw)

    monkeypatch.setattr(services, "send_due_reminders", failing)
    assert send_due_reminders() == 1


# --------------------------------------------------------------------------- activities


def test_log_an_activity_with_participants_on_any_record_and_a_follow_up(tsession, org):
    a = as_user(tsession, org.rep_a)
    customer = records.create(tsession, a, CUSTOMERS, {"name": "北京华为"})
    contact = records.create(tsession, a, CONTACTS, {"name": "王小明", "customer_id": str(customer.id)})
    other_task = new_task(tsession, a, title="Prepare demo")
    activity, follow = services.log_activity(
        tsession, a, {"subject": "Visit 拜访", "kind": "visit", "occurred_at": at(2026, 12, 2, 10).isoformat(),
                      "contact_id": str(contact.id), "next_follow_up": "2026-12-09"},
        participant_ids=[str(org.rep_b)], related_entity="tasks", related_id=str(other_task.id), follow_up=True)
    assert activity.customer_id == customer.id  # taken from the contact
    assert activity.participant_ids == [org.rep_b]
    assert (activity.related_entity, activity.related_id) == ("tasks", other_task.id)
    assert follow is not None
    assert follow.due_at == at(2026, 12, 9, 0)
    assert follow.all_day
    assert follow.customer_id == customer.id
    assert "Visit 拜访" in follow.title
    # A record the rep may not see cannot be named, nor can an unknown user take part.
    b = as_user(tsession, org.rep_b)
    hidden = new_task(tsession, b, title="B's private")
    with pytest.raises(ValidationFailed) as exc:
        services.log_activity(tsession, a, {"subject": "x", "occurred_at": at(2026, 12, 2).isoformat()},
                              related_entity="tasks", related_id=str(hidden.id))
    assert "related_id" in exc.value.field_errors
    with pytest.raises(ValidationFailed):
        services.log_activity(tsession, a, {"subject": "x", "occurred_at": at(2026, 12, 2).isoformat()},
                              participant_ids=[str(uuid.uuid4())])


# --------------------------------------------------------------------------- calendar


def test_calendar_shows_what_the_viewer_may_see_per_user_and_team(tsession, org):
    a, b, manager = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b), as_user(tsession, org.manager)
    start, end = at(2026, 12, 1, 0), at(2027, 1, 1, 0)
    new_task(tsession, a, title="A's task", due_at=at(2026, 12, 3))
    new_task(tsession, b, title="B's private task", due_at=at(2026, 12, 4))
    records.create(tsession, a, ACTIVITIES, {"subject": "A's call", "kind": "call",
                                             "occurred_at": at(2026, 12, 2).isoformat()})
    mine = calendar.entries(tsession, a, start, end, owners=[org.rep_a])
    assert sorted(e.title for e in mine) == ["A's call", "A's task"]
    # Asking for B's calendar or the team's gives A nothing of B's.
    assert calendar.entries(tsession, a, start, end, owners=[org.rep_b]) == []
    team = [u.id for u in calendar.team_members(tsession, a)]
    assert org.rep_b in team
    assert "B's private task" not in {e.title for e in calendar.entries(tsession, a, start, end, owners=team)}
    # The manager sees the department tree's.
    manager_team = [u.id for u in calendar.team_members(tsession, manager)]
    titles = {e.title for e in calendar.entries(tsession, manager, start, end, owners=manager_team)}
    assert {"A's task", "B's private task", "A's call"} <= titles
    events = calendar.fullcalendar_events(calendar.entries(tsession, a, start, end, owners=[org.rep_a]), {})
    task_event = next(e for e in events if e["extendedProps"]["entity"] == "tasks")
    assert task_event["editable"] is True
    assert task_event["start"] == "2026-12-03T09:00:00Z"
    assert next(e for e in events if e["extendedProps"]["entity"] == "activities")["editable"] is False


def test_calendar_range_is_bounded_and_checked():
    start = calendar.parse_moment("2026-12-01T00:00:00+08:00", "start")
    assert start == at(2026, 11, 30, 16)
    assert calendar.parse_moment("2026-12-01", "start") == at(2026, 12, 1, 0)
    with pytest.raises(ValidationFailed):
        calendar.check_range(start, start + dt.timedelta(days=101))
    with pytest.raises(ValidationFailed):
        calendar.check_range(start, start)
    for bad in ("", "yesterday", "2026-13-01", "9" * 41):
        with pytest.raises(ValidationFailed):
            calendar.parse_moment(bad, "start")
    calendar.check_range(start, start + dt.timedelta(days=100))


# --------------------------------------------------------------------------- iCalendar


def test_ical_text_escaping_and_folding():
    assert calendar.ical_text("a,b;c\\d\r\ne\x00f") == "a\\,b\\;c\\\\d\\nef"
    line = "SUMMARY:" + "客户关系管理" * 20
    folded = calendar.fold(line)
    parts = folded.removesuffix("\r\n").split("\r\n")
    assert all(len(p.encode()) <= 75 for p in parts)
    assert all(p.startswith(" ") for p in parts[1:])
    assert "".join([parts[0], *(p[1:] for p in parts[1:])]) == line  # unfolds to the same text
    assert calendar.fold("short") == "short\r\n"


def _signed_in_client(app, db, org, user_id):
    with db.transaction(org.tenant) as s:
        s.get(User, user_id).password_hash = hash_password(PASSWORD)
        email = s.get(User, user_id).email
    from tests.conftest import sign_in

    client = app.test_client()
    assert sign_in(client, org.tenant.slug, email).status_code in (302, 303)
    return client


def test_the_feed_is_valid_private_revocable_and_rate_limited(app, db, org, tsession):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    soon = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(days=1)
    mine = new_task(tsession, a, title="Quote, revised; 报价\\v2", due_at=soon, body="Line 1\nLine 2 " + "长" * 80)
    records.create(tsession, a, ACTIVITIES, {"subject": "Visit", "kind": "visit", "occurred_at": soon.isoformat()})
    new_task(tsession, b, title="B's secret task", due_at=soon)
    token = preferences.new_calendar_token(tsession, org.rep_a)
    tsession.commit()
    client = app.test_client()  # no session cookie: calendar apps have none
    response = client.get(f"/calendar/{token}.ics", headers=host(org.tenant.slug))
    assert response.status_code == 200
    assert response.mimetype == "text/calendar"
    raw = response.get_data()
    assert b"\r\n" in raw
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))
    cal = icalendar.Calendar.from_ical(raw)
    events = {str(e["SUMMARY"]): e for e in cal.walk("VEVENT")}
    assert set(events) == {"Quote, revised; 报价\\v2", "Visit"}
    task_event = events["Quote, revised; 报价\\v2"]
    assert str(task_event["UID"]) == f"tasks-{mine.id}@{org.tenant.slug}.courtyard"
    assert task_event.decoded("DTSTART") == soon
    assert str(task_event["DESCRIPTION"]).startswith("Line 1\nLine 2 长")
    # Stable: the same UIDs on the next poll.
    again = icalendar.Calendar.from_ical(client.get(f"/calendar/{token}.ics", headers=host(org.tenant.slug)).get_data())
    assert {str(e["UID"]) for e in again.walk("VEVENT")} == {str(e["UID"]) for e in cal.walk("VEVENT")}
    # A new token replaces the old one; revoking ends both.
    newer = preferences.new_calendar_token(tsession, org.rep_a)
    tsession.commit()
    assert client.get(f"/calendar/{token}.ics", headers=host(org.tenant.slug)).status_code == 404
    assert client.get(f"/calendar/{newer}.ics", headers=host(org.tenant.slug)).status_code == 200
    preferences.revoke_calendar_token(tsession, org.rep_a)
    tsession.commit()
    assert client.get(f"/calendar/{newer}.ics", headers=host(org.tenant.slug)).status_code == 404
    assert client.get("/calendar/short.ics", headers=host(org.tenant.slug)).status_code == 404
    # The token is stored only as a digest.
    assert tsession.get(preferences.UserPreference, org.rep_a).calendar_token_digest is None


def test_feed_polls_are_rate_limited(app, db, org, tsession):
    from crm.activities.views import FEED_POLLS_PER_HOUR

    token = preferences.new_calendar_token(tsession, org.rep_a)
    tsession.commit()
    client = app.test_client()
    codes = [client.get(f"/calendar/{token}.ics", headers=host(org.tenant.slug)).status_code
             for _ in range(FEED_POLLS_PER_HOUR + 1)]
    assert codes[:-1] == [200] * FEED_POLLS_PER_HOUR
    assert codes[-1] == 429


def test_calendar_http_events_and_page(app, db, org, tsession):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    new_task(tsession, a, title="A's task", due_at=at(2026, 12, 3))
    new_task(tsession, b, title="B's private task", due_at=at(2026, 12, 4))
    tsession.commit()
    client = _signed_in_client(app, db, org, org.rep_a)
    h = host(org.tenant.slug)
    for params in ("", f"&user={org.rep_b}", "&team=1"):
        got = client.get(f"/calendar/events?start=2026-12-01&end=2027-01-01{params}", headers=h)
        assert got.status_code == 200
        assert "B's private task" not in got.get_data(as_text=True)
    mine = client.get("/calendar/events?start=2026-12-01&end=2027-01-01", headers=h).get_json()
    assert [e["title"] for e in mine] == ["A's task"]
    assert client.get("/calendar/events?start=2026-01-01&end=2026-12-31", headers=h).status_code == 422
    assert client.get("/calendar/events?start=x&end=2026-12-31", headers=h).status_code == 422
    assert client.get(f"/calendar/events?start=2026-12-01&end=2027-01-01&user={uuid.uuid4()}",
                      headers=h).status_code == 404
    page = client.get("/calendar", headers=h)
    assert page.status_code == 200
    assert 'id="calendar"' in page.get_data(as_text=True)
    assert app.test_client().get("/calendar/events?start=2026-12-01&end=2027-01-01", headers=h).status_code == 302


def test_a_task_record_outside_scope_is_not_found(tsession, org):
    a, b = as_user(tsession, org.rep_a), as_user(tsession, org.rep_b)
    hidden = new_task(tsession, b, title="B's", due_at=at(2026, 12, 4), recurrence="daily")
    with pytest.raises(NotFound):
        services.complete(tsession, a, hidden.id)


def test_two_people_completing_the_same_occurrence_at_once_make_one_successor(committed_db, engine):
    from tests.conftest import provision, unique_slug
    from tests.crm.conftest import make_org
    from tests.races import second_waits_for_first

    tenant, admin_id = provision(committed_db, unique_slug("tasks"))
    org = make_org(committed_db, tenant, admin_id)
    with committed_db.transaction(tenant) as s:
        task_id = new_task(s, as_user(s, org.rep_a), due_at=at(2026, 12, 1), recurrence="daily").id

    # The owner completes it and stays in the transaction; the manager completes it at the same moment.
    first = committed_db.session(tenant)
    services.complete(first, as_user(first, org.rep_a), task_id)

    def second():
        with committed_db.transaction(tenant) as s2:
            _, nxt = services.complete(s2, as_user(s2, org.manager), task_id)
            return nxt.id if nxt else None

    waited, result = second_waits_for_first(first, second, engine)
    assert waited, "the second completion did not wait for the first"
    assert not isinstance(result, Exception), result
    with committed_db.transaction(tenant) as s:
        successors = list(s.scalars(select(Task).where(Task.previous_id == task_id)))
    assert len(successors) == 1
    assert result == successors[0].id  # the second saw the first's successor, and made none
