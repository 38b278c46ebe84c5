"""The calendar pages, their JSON feed for FullCalendar, and the private iCalendar feed. Thin views."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, make_response, render_template, request, url_for
from sqlalchemy import select

from core.db import utcnow
from core.errors import NotFound, TooManyRequests, ValidationFailed
from core.i18n import _, _l, current_locale
from core.security import digest
from crm.activities import calendar
from crm.activities.models import ACTIVITIES, TASKS
from crm.records import preferences
from crm.records.scope import Viewer, viewer_for
from tenants.context import current_actor, current_tenant, db_session, login_required, runtime
from tenants.models import User

bp = Blueprint("calendar", __name__)

#: Polls of one feed per hour: calendar apps refresh every 15 minutes to a few hours.
FEED_POLLS_PER_HOUR = 60


def _locale() -> str:
    return "zh" if current_locale().language == "zh" else "en"


def _viewer() -> Viewer:
    actor = current_actor()
    assert actor is not None  # login_required
    viewer = viewer_for(db_session(), actor, locale=_locale())
    if not (viewer.can(TASKS, "view") or viewer.can(ACTIVITIES, "view")):
        raise NotFound(_l("Not found."))
    return viewer


def _whose(viewer: Viewer) -> tuple[str, list[uuid.UUID] | None, User | None, list[User]]:
    """(mode, owners, the user shown, team) from ?user= / ?team=1; the default is the viewer's own."""
    session = db_session()
    team = calendar.team_members(session, viewer)
    if request.args.get("team") == "1":
        return "team", [u.id for u in team], None, team
    raw = request.args.get("user")
    if raw:
        try:
            user_id = uuid.UUID(raw[:64])
        except ValueError:
            raise ValidationFailed(_l("Not a valid id."), field_errors={"user": [_l("Not a valid id.")]}) from None
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(_l("Not found."))
        return "user", [user.id], user, team
    me = session.get(User, viewer.user_id) if viewer.user_id else None
    return "user", [viewer.user_id] if viewer.user_id else None, me, team


@bp.get("/calendar")
@login_required
def page() -> str:
    viewer = _viewer()
    mode, _owners, shown_user, team = _whose(viewer)
    token_prefs = preferences.preference(db_session(), viewer.user_id) if viewer.user_id else None
    params: dict[str, Any] = {"team": "1"} if mode == "team" else (
        {"user": str(shown_user.id)} if shown_user is not None else {})
    return render_template("crm/calendar.html", mode=mode, shown_user=shown_user, team=team,
                           events_url=url_for("calendar.events", **params),
                           feed_active=bool(token_prefs and token_prefs.calendar_token_digest),
                           new_feed_url=None, can_create=viewer.can(TASKS, "create"))


@bp.get("/calendar/events")
@login_required
def events() -> Response:
    """FullCalendar's event source: ?start=&end= (at most 100 days), ?user=<id> or ?team=1."""
    viewer = _viewer()
    start = calendar.parse_moment(request.args.get("start"), "start")
    end = calendar.parse_moment(request.args.get("end"), "end")
    calendar.check_range(start, end)
    _mode, owners, _user, _team = _whose(viewer)
    session = db_session()
    rows = calendar.entries(session, viewer, start, end, owners=owners,
                            participant=owners[0] if owners and len(owners) == 1 else None)
    owner_ids = {e.record.owner_id for e in rows if e.record.owner_id is not None}
    names = {row[0]: row[1] for row in session.execute(select(User.id, User.name).where(User.id.in_(owner_ids)))}
    response = jsonify(calendar.fullcalendar_events(rows, names))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/calendar/feed")
@login_required
def new_feed() -> Any:
    """Issue (or replace) the viewer's private feed address; shown once on the page that answers."""
    viewer = _viewer()
    assert viewer.user_id is not None
    secret = preferences.new_calendar_token(db_session(), viewer.user_id)
    mode, _owners, shown_user, team = _whose(viewer)
    feed_url = runtime().settings.tenant_link(current_tenant().slug, f"/calendar/{secret}.ics")
    response = make_response(render_template(
        "crm/calendar.html", mode=mode, shown_user=shown_user, team=team, events_url=url_for("calendar.events"),
        feed_active=True, new_feed_url=feed_url, can_create=viewer.can(TASKS, "create")))
    response.headers["Cache-Control"] = "no-store"  # the page carries a secret
    return response


@bp.post("/calendar/feed/revoke")
@login_required
def revoke_feed() -> Any:
    from flask import flash, redirect

    viewer = _viewer()
    assert viewer.user_id is not None
    preferences.revoke_calendar_token(db_session(), viewer.user_id)
    flash(_("The calendar feed address was turned off; subscribed apps stop updating."), "success")
    return redirect(url_for("calendar.page"))


@bp.get("/calendar/<token>.ics")
def feed(token: str) -> Response:
    """The private iCalendar feed: no session cookie (calendar apps have none), the token is the key."""
    tenant = current_tenant()
    rt = runtime()
    # Counted before the lookup and by the token's digest: a guesser is slowed as much as a real app.
    if not rt.limiter.hit("ics", str(tenant.id), digest(token[:64])[:32], limit=FEED_POLLS_PER_HOUR, window_s=3600):
        raise TooManyRequests(_l("This calendar is polled too often; try again later."), retry_after_s=600)
    session = db_session()
    user = preferences.user_for_calendar_token(session, token)
    if user is None:
        raise NotFound(_l("Not found."))
    from tenants import services as tenant_services

    viewer = viewer_for(session, tenant_services.actor_for(user), locale=user.locale or "en")
    rows = calendar.feed_entries(session, viewer, utcnow())
    body = calendar.ics(rows, calendar_name=f"{user.name} · {tenant.name}", uid_host=f"{tenant.slug}.courtyard",
                        link_base=rt.settings.tenant_link(tenant.slug, ""))
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = 'inline; filename="courtyard.ics"'
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


def register(app: Flask) -> None:
    app.register_blueprint(bp)
