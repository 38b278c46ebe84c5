"""The calendar: tasks (by due time) and activities (by when they happened), per user or per team.

Two outputs from one query: FullCalendar's JSON events for the pages, and an iCalendar feed
(RFC 5545) for Outlook, Google Calendar and phones. Both go through the data scope: a calendar shows
a colleague's records only where the viewer may see them anyway.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Uuid, any_, literal, select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.i18n import _l
from crm.activities.models import ACTIVITIES, TASKS, Activity, Task
from crm.records.scope import Viewer, editable, subtree, visible
from tenants.models import User

MAX_RANGE_DAYS = 100
#: Events of each kind one range returns at most (a month of a busy team fits many times over).
MAX_EVENTS = 2000
#: What the iCalendar feed covers around today.
FEED_PAST_DAYS = 90
FEED_FUTURE_DAYS = 400
DEFAULT_MINUTES = 30


def parse_moment(raw: str | None, name: str) -> dt.datetime:
    """FullCalendar's ``start``/``end``: an ISO date or date-time, with or without an offset (UTC if none)."""
    if raw is None or raw == "":
        raise ValidationFailed(_l("Give a start and an end."), field_errors={name: [_l("Required.")]})
    if len(raw) > 40:
        raise ValidationFailed(_l("Not a date."), field_errors={name: [_l("Not a date.")]})
    try:
        value = dt.datetime.fromisoformat(raw.replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(_l("Not a date."), field_errors={name: [_l("Not a date.")]}) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def check_range(start: dt.datetime, end: dt.datetime) -> None:
    if end <= start:
        raise ValidationFailed(_l("The end must come after the start."), field_errors={"end": [_l("Too early.")]})
    if end - start > dt.timedelta(days=MAX_RANGE_DAYS):
        raise ValidationFailed(_l("At most %(days)d days at a time.", days=MAX_RANGE_DAYS),
                               field_errors={"end": [_l("At most %(days)d days after the start.",
                                                        days=MAX_RANGE_DAYS)]})


def team_members(session: Session, viewer: Viewer) -> list[User]:
    """The active users of the viewer's department and the departments below it."""
    if viewer.department_id is None:
        return [u for u in [session.get(User, viewer.user_id)] if u is not None] if viewer.user_id else []
    departments = subtree(session, viewer.department_id)
    return list(session.scalars(select(User).where(User.department_id.in_(departments), User.active)
                                .order_by(User.name)))


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing on the calendar, whatever it is."""

    kind: str  # "tasks" | "activities"
    record: Any
    start: dt.datetime
    end: dt.datetime
    all_day: bool
    title: str
    editable: bool


def entries(session: Session, viewer: Viewer, start: dt.datetime, end: dt.datetime, *,
            owners: Sequence[uuid.UUID] | None = None, participant: uuid.UUID | None = None) -> list[Entry]:
    """Tasks due and activities that happened in [start, end) that the viewer may see.

    ``owners`` narrows to records those users own; ``participant`` also takes activities that user
    took part in without owning them (a colleague's visit they joined).
    """
    out: list[Entry] = []
    task_stmt = select(Task).where(visible(TASKS, viewer), Task.due_at >= start, Task.due_at < end,
                                   Task.status != "cancelled")
    act_stmt = select(Activity).where(visible(ACTIVITIES, viewer), Activity.occurred_at >= start,
                                      Activity.occurred_at < end)
    if owners is not None:
        task_stmt = task_stmt.where(Task.owner_id.in_(owners))
        act_cond: ColumnElement[bool] = Activity.owner_id.in_(owners)
        if participant is not None:
            act_cond = act_cond | (literal(participant, Uuid) == any_(Activity.participant_ids))
        act_stmt = act_stmt.where(act_cond)
    tasks = list(session.scalars(task_stmt.order_by(Task.due_at, Task.id).limit(MAX_EVENTS)))
    activities = list(session.scalars(act_stmt.order_by(Activity.occurred_at, Activity.id).limit(MAX_EVENTS)))
    changeable: set[uuid.UUID] = set()
    if tasks:
        changeable = set(session.scalars(select(Task.id).where(Task.id.in_([t.id for t in tasks]),
                                                               editable(TASKS, viewer))))
    for t in tasks:
        assert t.due_at is not None
        minutes = t.duration_min or DEFAULT_MINUTES
        out.append(Entry("tasks", t, t.due_at, t.due_at + dt.timedelta(minutes=minutes), t.all_day, t.title,
                         t.id in changeable))
    for a in activities:
        minutes = a.duration_min or DEFAULT_MINUTES
        out.append(Entry("activities", a, a.occurred_at, a.occurred_at + dt.timedelta(minutes=minutes), False,
                         a.subject, False))
    return out


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def fullcalendar_events(rows: Iterable[Entry], owner_names: dict[Any, str]) -> list[dict[str, Any]]:
    """FullCalendar's event objects; ``version`` rides along for the If-Match of a drag."""
    events = []
    for e in rows:
        r = e.record
        classes = [f"cal-{e.kind}"]
        if e.kind == "tasks":
            classes.append(f"cal-{r.status}")
            classes.append(f"cal-priority-{r.priority}")
        event: dict[str, Any] = {
            "id": f"{e.kind}:{r.id}", "title": e.title, "allDay": e.all_day, "editable": e.editable,
            "start": e.start.astimezone(dt.UTC).date().isoformat() if e.all_day else _iso(e.start),
            "url": f"/{e.kind}/{r.id}", "classNames": classes,
            "extendedProps": {"entity": e.kind, "record_id": str(r.id), "version": r.version,
                              "owner": owner_names.get(r.owner_id, ""),
                              "status": getattr(r, "status", None), "kind": getattr(r, "kind", None)},
        }
        if not e.all_day:
            event["end"] = _iso(e.end)
        events.append(event)
    return events


# --------------------------------------------------------------------------- iCalendar (RFC 5545)


def ical_text(value: str) -> str:
    """A TEXT value (§3.3.11): backslash, semicolon and comma escaped, line breaks as ``\\n``;
    other control characters, which no content line may carry, dropped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "".join(ch for ch in value if ch in "\n\t" or (ord(ch) >= 0x20 and ord(ch) != 0x7F))
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def fold(line: str) -> str:
    """One content line folded at 75 octets (§3.1), never inside a UTF-8 sequence, CRLF-terminated."""
    data = line.encode()
    if len(data) <= 75:
        return line + "\r\n"
    parts: list[str] = []
    limit = 75
    current = ""
    size = 0
    for ch in line:
        n = len(ch.encode())
        if size + n > limit:
            parts.append(current)
            current, size, limit = "", 0, 74  # continuation lines start with a space
        current += ch
        size += n
    parts.append(current)
    return "\r\n ".join(parts) + "\r\n"


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _event_lines(e: Entry, uid_host: str, link: str | None) -> Iterator[str]:
    r = e.record
    yield "BEGIN:VEVENT"
    yield f"UID:{e.kind}-{r.id}@{uid_host}"
    yield f"DTSTAMP:{_stamp(r.updated_at)}"
    yield f"LAST-MODIFIED:{_stamp(r.updated_at)}"
    yield f"SEQUENCE:{max(0, int(r.version) - 1)}"
    if e.all_day:
        day = e.start.astimezone(dt.UTC).date()
        yield f"DTSTART;VALUE=DATE:{day.strftime('%Y%m%d')}"
        yield f"DTEND;VALUE=DATE:{(day + dt.timedelta(days=1)).strftime('%Y%m%d')}"
    else:
        yield f"DTSTART:{_stamp(e.start)}"
        yield f"DTEND:{_stamp(e.end)}"
    title = e.title
    if e.kind == "tasks" and r.status == "done":
        title = f"✓ {title}"
    yield f"SUMMARY:{ical_text(title)}"
    body = r.body or ""
    if body:
        yield f"DESCRIPTION:{ical_text(body[:4000])}"
    if e.kind == "tasks":
        yield "CATEGORIES:" + ical_text("task")
        yield f"PRIORITY:{ {'high': 1, 'normal': 5, 'low': 9}.get(r.priority, 5) }"
    else:
        yield "CATEGORIES:" + ical_text(str(r.kind))
    yield "TRANSP:TRANSPARENT" if e.kind == "tasks" else "TRANSP:OPAQUE"
    if link:
        yield f"URL:{link}"
    yield "END:VEVENT"


def ics(rows: Iterable[Entry], *, calendar_name: str, uid_host: str, link_base: str | None) -> bytes:
    """The feed as bytes (UTF-8, CRLF lines, folded). Tasks are VEVENTs at their due time: Google
    Calendar and Outlook ignore VTODO in subscribed calendars, and a task nobody sees helps nobody."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Courtyard//CRM calendar//EN", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{ical_text(calendar_name)}",
             "REFRESH-INTERVAL;VALUE=DURATION:PT15M", "X-PUBLISHED-TTL:PT15M"]
    for e in rows:
        link = f"{link_base}/{e.kind}/{e.record.id}" if link_base else None
        lines.extend(_event_lines(e, uid_host, link))
    lines.append("END:VCALENDAR")
    return "".join(fold(line) for line in lines).encode()


def feed_entries(session: Session, viewer: Viewer, now: dt.datetime) -> list[Entry]:
    """What a user's own feed holds: their tasks and the activities they own or joined, around today."""
    assert viewer.user_id is not None
    start = now - dt.timedelta(days=FEED_PAST_DAYS)
    end = now + dt.timedelta(days=FEED_FUTURE_DAYS)
    return entries(session, viewer, start, end, owners=[viewer.user_id], participant=viewer.user_id)
