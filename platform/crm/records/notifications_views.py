"""Notifications as pages: the bell fragment the shell loads with htmx, and the full list with the user's
mail preference. Thin: the rules are in notifications.py."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Flask, Response, make_response, redirect, render_template, request, url_for

from core.errors import ValidationFailed
from core.i18n import _l, current_locale
from crm.records import notifications, preferences
from crm.records.scope import Viewer, viewer_for
from tenants.context import current_actor, db_session, login_required

pages = Blueprint("notifications", __name__)


def _page_viewer() -> Viewer:
    actor = current_actor()
    assert actor is not None  # login_required
    locale = "zh" if current_locale().language == "zh" else "en"
    return viewer_for(db_session(), actor, locale=locale)


def _uuid(raw: str | None) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(raw[:64])
    except ValueError:
        raise ValidationFailed(_l("Not a valid id."), field_errors={"before": [_l("Not a valid id.")]}) from None


# --------------------------------------------------------------------------- pages and the bell


BELL_ITEMS = 8


def _bell() -> str:
    session, viewer = db_session(), _page_viewer()
    found = notifications.page(session, viewer, limit=BELL_ITEMS)
    count = notifications.unread_count(session, viewer)
    return render_template("crm/notifications/bell.html", items=found.rows, count=count,
                           badge=notifications.badge(count), kind_label=notifications.kind_label,
                           locale=viewer.locale)


@pages.get("/notifications/bell")
@login_required
def bell() -> Response:
    """The bell as an HTML fragment (badge + dropdown) for the shell to load with htmx."""
    response = make_response(_bell())
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/notifications")
@login_required
def page() -> str:
    session, viewer = db_session(), _page_viewer()
    found = notifications.page(session, viewer, before=_uuid(request.args.get("before")), limit=30,
                               unread_only=request.args.get("unread") == "1")
    assert viewer.user_id is not None
    return render_template("crm/notifications/page.html", found=found, kind_label=notifications.kind_label,
                           count=notifications.unread_count(session, viewer), unread=request.args.get("unread") == "1",
                           email_on=preferences.wants_email(session, viewer.user_id))


@pages.post("/notifications/<uuid:notification_id>/read")
@login_required
def read(notification_id: uuid.UUID) -> Any:
    row = notifications.mark_read(db_session(), _page_viewer(), notification_id)
    if request.headers.get("HX-Request"):
        return _bell()
    # Following a notification: mark it read and go where it points (a path inside this workspace).
    if request.form.get("follow") and row.link.startswith("/") and not row.link.startswith("//"):
        return redirect(request.script_root + row.link)
    return redirect(url_for("notifications.page"))


@pages.post("/notifications/read-all")
@login_required
def read_all() -> Any:
    notifications.mark_all_read(db_session(), _page_viewer())
    if request.headers.get("HX-Request"):
        return _bell()
    return redirect(url_for("notifications.page"))


@pages.post("/notifications/preferences")
@login_required
def save_preferences() -> Any:
    viewer = _page_viewer()
    assert viewer.user_id is not None
    preferences.set_email_notifications(db_session(), viewer.user_id, request.form.get("email") == "on")
    return redirect(url_for("notifications.page"))



def register(app: Flask) -> None:
    app.register_blueprint(pages)
