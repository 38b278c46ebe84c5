"""Tasks and activities beyond the generic record lifecycle (crm.records.services).

Tasks: completing, reopening, rescheduling, recurrence and reminders, and the "my day" lists.
The rules run on every create and update of a task however it comes (a page, the API's PATCH, a
drag on the calendar, an import), registered as the entity's rule in crm.records.services.

Activities (跟进记录): logged on any record, with participants, and optionally a follow-up task for
the "next follow-up" date (下次跟进).
"""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import utcnow, uuid7
from core.errors import NotFound, ValidationFailed
from core.i18n import Text, _l
from crm.activities.models import ACTIVITIES, TASKS, Activity, Task
from crm.records import services as records
from crm.records.entity import find_entity
from crm.records.notifications import localized, notify
from crm.records.scope import Viewer, visible
from tenants import services as tenant_services
from tenants.models import User

MAX_INTERVAL = 99
MAX_PARTICIPANTS = 50
#: Reminders one run sends per tenant; a backlog (after an outage) drains over the following runs.
REMINDER_BATCH = 200
#: How far ahead "upcoming" looks, and how many tasks each agenda list holds.
UPCOMING_DAYS = 7
AGENDA_LIMIT = 50

_UNITS = {"daily", "weekly", "monthly", "yearly"}


# --------------------------------------------------------------------------- recurrence


def _add_months(day: dt.datetime, months: int) -> dt.datetime:
    """Same day of the month ``months`` later; the 31st becomes the month's last day where it has none."""
    total = day.month - 1 + months
    year, month = day.year + total // 12, total % 12 + 1
    last = _calendar.monthrange(year, month)[1]
    return day.replace(year=year, month=month, day=min(day.day, last))


def next_due(due: dt.datetime, recurrence: str, interval: int) -> dt.datetime:
    if recurrence == "daily":
        return due + dt.timedelta(days=interval)
    if recurrence == "weekly":
        return due + dt.timedelta(weeks=interval)
    if recurrence == "monthly":
        return _add_months(due, interval)
    return _add_months(due, 12 * interval)  # yearly: 29 February falls on the 28th


def _successor(session: Session, viewer: Viewer, task: Task) -> Task | None:
    """The next occurrence of a repeating task that was just completed, unless past its end date or
    already made (the unique ``previous_id`` makes "once" a fact of the database, not of timing)."""
    if not task.recurrence or task.due_at is None:
        return None
    if session.scalar(select(Task.id).where(Task.previous_id == task.id)) is not None:
        return None
    due = next_due(task.due_at, task.recurrence, task.recurrence_interval or 1)
    if task.recurrence_until is not None and due.date() > task.recurrence_until:
        return None
    nxt = Task(id=uuid7(), title=task.title, body=task.body, due_at=due, all_day=task.all_day,
               duration_min=task.duration_min, priority=task.priority, status="open",
               recurrence=task.recurrence, recurrence_interval=task.recurrence_interval,
               recurrence_until=task.recurrence_until, customer_id=task.customer_id, contact_id=task.contact_id,
               related_entity=task.related_entity, related_id=task.related_id, previous_id=task.id,
               owner_id=task.owner_id, department_id=task.department_id, custom=dict(task.custom or {}),
               tags=list(task.tags or []), created_by=viewer.user_id, updated_by=viewer.user_id)
    if task.reminder_at is not None:
        nxt.reminder_at = due - (task.due_at - task.reminder_at)
    nxt.number = records.next_number(session, TASKS)
    records.reindex(session, TASKS, nxt)
    session.add(nxt)
    session.flush()
    tenant_services.audit(session, viewer.actor, "tasks.created", "tasks", nxt.id, None,
                          {"number": nxt.number, "title": nxt.title, "previous": str(task.id),
                           "due_at": due.isoformat()})
    return nxt


# --------------------------------------------------------------------------- the task rule


def _changed(old: Mapping[str, Any] | None, task: Task, key: str) -> bool:
    return old is not None and key in old and old[key] != getattr(task, key)


def _reminder(task: Any, old: Mapping[str, Any] | None, extra: dict[str, Any],
              errors: dict[str, list[Text]]) -> None:
    reminder = task.reminder_at
    # Rescheduling keeps the reminder as far ahead of the due time as it was (a call reminded 15
    # minutes before stays so when dragged to another day), unless the reminder itself was changed.
    if (old is not None and _changed(old, task, "due_at") and "reminder_at" not in old
            and reminder is not None and old["due_at"] is not None and task.due_at is not None):
        reminder = task.due_at - (old["due_at"] - reminder)
        extra["reminder_at"] = reminder
    if reminder is not None and task.due_at is not None and reminder > task.due_at:
        errors["reminder_at"] = [_l("The reminder cannot be later than the due time.")]
    if reminder is not None and task.due_at is None:
        errors["reminder_at"] = [_l("Set a due time for the reminder to refer to.")]
    if reminder is not None and (old is None or "reminder_at" in extra or _changed(old, task, "reminder_at")):
        # A new reminder time goes out again; one set in the past goes out at the next run.
        task.reminded_at = None


def _recurrence(task: Any, errors: dict[str, list[Text]]) -> None:
    if task.recurrence_interval is None:
        task.recurrence_interval = 1
    if not task.recurrence:
        return
    if task.recurrence not in _UNITS:
        errors["recurrence"] = [_l("Choose daily, weekly, monthly or yearly.")]
    if task.due_at is None:
        errors.setdefault("due_at", []).append(_l("A repeating task needs a due date."))
    if not 1 <= int(task.recurrence_interval) <= MAX_INTERVAL:
        errors["recurrence_interval"] = [_l("Between 1 and %(max)d.", max=MAX_INTERVAL)]
    if task.recurrence_until is not None and task.due_at is not None and task.recurrence_until < task.due_at.date():
        errors["recurrence_until"] = [_l("The repetition cannot end before the first due date.")]


def task_rule(session: Session, viewer: Viewer, task: Any, old: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checks and consequences of a task's change; returns further changes for the caller to apply."""
    extra: dict[str, Any] = {}
    errors: dict[str, list[Text]] = {}
    _reminder(task, old, extra, errors)
    _recurrence(task, errors)
    if errors:
        raise ValidationFailed(_l("The task cannot be saved as it is."), field_errors=errors)
    if old is None:
        task.completed_at = utcnow() if task.status == "done" else None
    elif _changed(old, task, "status"):
        if task.status == "done":
            task.completed_at = utcnow()
            session.flush()  # the successor refers to this row
            _successor(session, viewer, task)
        elif old["status"] == "done":
            task.completed_at = None
    return extra


records.register_rule("tasks", task_rule)


# --------------------------------------------------------------------------- completing and reopening


def _locked(session: Session, viewer: Viewer, task_id: uuid.UUID | str) -> Task:
    """The task, changeable by the viewer, with its row locked until the unit of work ends: two people
    completing the same occurrence at once are served one after the other, and the second finds it done."""
    task: Task = records.get_for_edit(session, viewer, TASKS, task_id)
    return session.scalars(select(Task).where(Task.id == task.id).with_for_update()
                           .execution_options(populate_existing=True)).one()


def complete(session: Session, viewer: Viewer, task_id: uuid.UUID | str) -> tuple[Task, Task | None]:
    """Mark the task done; a repeating task gets its next occurrence (once). Returns (task, next)."""
    task = _locked(session, viewer, task_id)
    if task.status == "done":
        return task, session.scalar(select(Task).where(Task.previous_id == task.id, Task.deleted_at.is_(None)))
    records.update(session, viewer, TASKS, task.id, {"status": "done"})
    return task, session.scalar(select(Task).where(Task.previous_id == task.id, Task.deleted_at.is_(None)))


def reopen(session: Session, viewer: Viewer, task_id: uuid.UUID | str) -> Task:
    """Back to open; a next occurrence already made stays (completing again makes no second one)."""
    task = _locked(session, viewer, task_id)
    if task.status != "open":
        records.update(session, viewer, TASKS, task.id, {"status": "open"})
    return task


def reschedule(session: Session, viewer: Viewer, task_id: uuid.UUID | str, due_at: dt.datetime, *,
               all_day: bool | None = None, expected_version: int | None = None) -> Task:
    """Move a task (a calendar drag): the reminder keeps its offset; a stale version is a 412."""
    data: dict[str, Any] = {"due_at": due_at.isoformat()}
    if all_day is not None:
        data["all_day"] = all_day
    task: Task = records.update(session, viewer, TASKS, task_id, data, expected_version=expected_version)
    return task


# --------------------------------------------------------------------------- my day


@dataclass(frozen=True, slots=True)
class Agenda:
    overdue: list[Task]
    today: list[Task]
    upcoming: list[Task]


def agenda(session: Session, viewer: Viewer, *, now: dt.datetime | None = None,
           tz: dt.tzinfo = dt.UTC) -> Agenda:
    """The viewer's own open tasks: overdue, due today (in ``tz``) and in the next days."""
    if viewer.user_id is None:
        return Agenda([], [], [])
    now = now or utcnow()
    local_today = now.astimezone(tz).date()
    start = dt.datetime.combine(local_today, dt.time(), tz)
    end = start + dt.timedelta(days=1)
    horizon = start + dt.timedelta(days=1 + UPCOMING_DAYS)
    base = select(Task).where(Task.owner_id == viewer.user_id, Task.status == "open", visible(TASKS, viewer),
                              Task.due_at.is_not(None))

    def part(*conds: Any) -> list[Task]:
        return list(session.scalars(base.where(*conds).order_by(Task.due_at, Task.id).limit(AGENDA_LIMIT)))

    return Agenda(part(Task.due_at < start), part(Task.due_at >= start, Task.due_at < end),
                  part(Task.due_at >= end, Task.due_at < horizon))


# --------------------------------------------------------------------------- reminders


def send_due_reminders(session: Session, now: dt.datetime | None = None, *, limit: int = REMINDER_BATCH) -> int:
    """Notify the owners of tasks whose reminder is due and not yet sent; returns how many went.

    ``reminded_at`` is set in the same transaction as the notification: each reminder goes out once,
    and one that fell due while nothing ran (beat down, a restart) goes out at the next run.
    ``SKIP LOCKED`` lets two overlapping runs share the work instead of sending twice.
    """
    now = now or utcnow()
    rows = list(session.scalars(
        select(Task).where(Task.reminder_at <= now, Task.reminded_at.is_(None), Task.status == "open",
                           Task.deleted_at.is_(None))
        .order_by(Task.reminder_at, Task.id).limit(limit).with_for_update(skip_locked=True)))
    for task in rows:
        if task.owner_id is not None:
            due = task.due_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if task.due_at else ""
            body: Text = _l("Due %(due)s.", due=due) if due else ""
            notify(session, task.owner_id, "task.reminder", task.title, body, f"/tasks/{task.id}",
                   entity="tasks", record_id=task.id)
    if rows:
        # A plain UPDATE: the reminder's bookkeeping does not bump the version, so a user editing the task
        # at that moment is not told that somebody else changed it.
        session.execute(update(Task).where(Task.id.in_([t.id for t in rows])).values(reminded_at=now)
                        .execution_options(synchronize_session=False))
        for task in rows:
            session.expire(task, ["reminded_at"])
    return len(rows)


# --------------------------------------------------------------------------- activities


def _participants(session: Session, raw: Any) -> list[uuid.UUID]:
    if raw is None:
        return []
    if not isinstance(raw, list | tuple) or len(raw) > MAX_PARTICIPANTS:
        raise ValidationFailed(_l("At most %(max)d participants.", max=MAX_PARTICIPANTS),
                               field_errors={"participant_ids": [_l("A list of at most %(max)d user ids.",
                                                                    max=MAX_PARTICIPANTS)]})
    try:
        ids = list(dict.fromkeys(i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in raw))
    except ValueError:
        raise ValidationFailed(_l("A participant is not a user id."),
                               field_errors={"participant_ids": [_l("Not a user id.")]}) from None
    found = set(session.scalars(select(User.id).where(User.id.in_(ids), User.active)))
    if len(found) != len(ids):
        raise ValidationFailed(_l("Every participant must be an active user."),
                               field_errors={"participant_ids": [_l("No active user with this id.")]})
    return ids


def _related(session: Session, viewer: Viewer, entity_key: Any, record_id: Any) -> tuple[str, uuid.UUID] | None:
    if entity_key in (None, "") and record_id in (None, ""):
        return None
    ent = find_entity(str(entity_key)) if isinstance(entity_key, str) and len(entity_key) <= 40 else None
    if ent is None:
        raise ValidationFailed(_l("No such kind of record."), field_errors={"related_entity": [_l("Unknown.")]})
    try:
        record = records.get(session, viewer, ent, str(record_id)[:64])
    except NotFound:
        raise ValidationFailed(_l("No such %(what)s, or you may not see it.", what=ent.label(viewer.locale)),
                               field_errors={"related_id": [_l("Not found.")]}) from None
    return ent.key, record.id


def log_activity(session: Session, viewer: Viewer, data: Mapping[str, Any], *,
                 participant_ids: Sequence[Any] | None = None, related_entity: str | None = None,
                 related_id: Any = None, follow_up: bool = False) -> tuple[Activity, Task | None]:
    """Log a call, visit, meeting, email or note on a customer, a contact or any record the viewer may see.

    With ``follow_up`` and a "next follow-up" date, a task for that day is created for the viewer,
    about the same customer, contact and record.
    """
    people = _participants(session, participant_ids)
    related = _related(session, viewer, related_entity, related_id)
    fields = dict(data)
    if fields.get("contact_id") and not fields.get("customer_id"):
        # The contact's customer, when the contact is one the viewer may see (clean() checks it again).
        from crm.accounts.models import CONTACTS

        contact: Any = session.scalar(select(CONTACTS.model).where(CONTACTS.model.id == _uuid(fields["contact_id"]),
                                                                    visible(CONTACTS, viewer)))
        if contact is not None and contact.customer_id is not None:
            fields["customer_id"] = str(contact.customer_id)
    activity: Activity = records.create(session, viewer, ACTIVITIES, fields)
    if people or related:
        activity.participant_ids = people
        if related:
            activity.related_entity, activity.related_id = related
        session.flush()
    task = None
    if follow_up and activity.next_follow_up is not None:
        due = dt.datetime.combine(activity.next_follow_up, dt.time(), dt.UTC)
        task = records.create(session, viewer, TASKS, {
            "title": localized(_l("Follow up: %(subject)s", subject=activity.subject), viewer.locale)[:200],
            "due_at": due.isoformat(), "all_day": True,
            "customer_id": str(activity.customer_id) if activity.customer_id else None,
            "contact_id": str(activity.contact_id) if activity.contact_id else None,
        })
        task.related_entity, task.related_id = related or ("activities", activity.id)
        session.flush()
    return activity, task


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)[:64])
    except ValueError:
        return None
