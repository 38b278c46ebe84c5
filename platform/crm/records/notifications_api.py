"""Notifications over the API, under /api/v1/notifications. Thin: the rules are in notifications.py."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Api
from marshmallow import Schema, fields, validate

from core.errors import ValidationFailed
from core.i18n import _l, current_locale
from crm.records import notifications, preferences
from crm.records.scope import Viewer, viewer_for
from tenants.api import ApiBlueprint, guard
from tenants.context import api_actor, db_session

api_blp = ApiBlueprint("notifications_api", __name__, url_prefix="/api/v1",
                       description="The signed-in user's notifications (the bell)")
guard(api_blp)


def _viewer() -> Viewer:
    locale = "zh" if current_locale().language == "zh" else "en"
    return viewer_for(db_session(), api_actor(), locale=locale)


# --------------------------------------------------------------------------- API


class NotificationOut(Schema):
    id = fields.UUID()
    kind = fields.String(metadata={"description": "task.reminder, … (later: approvals, SLAs, workflow)"})
    kind_label = fields.String()
    title = fields.String()
    body = fields.String()
    link = fields.String(metadata={"description": "A path inside the workspace"})
    entity = fields.String(allow_none=True)
    record_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)
    read = fields.Boolean()


class NotificationPage(Schema):
    items = fields.List(fields.Nested(NotificationOut))
    next_before = fields.UUID(allow_none=True, metadata={"description": "Pass as ?before= for older ones"})
    unread = fields.Integer(metadata={"description": f"Unread, counted up to {notifications.COUNT_CAP + 1}"})


class NotificationQuery(Schema):
    before = fields.UUID(load_default=None)
    limit = fields.Integer(load_default=20, validate=validate.Range(1, notifications.PAGE_MAX))
    unread = fields.Boolean(load_default=False)


class PreferencesIO(Schema):
    email_notifications = fields.Boolean(required=True)


class Count(Schema):
    unread = fields.Integer()
    badge = fields.String()


@api_blp.route("/notifications")
class Notifications(MethodView):
    @api_blp.arguments(NotificationQuery, location="query")
    @api_blp.response(200, NotificationPage)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The caller's notifications, newest first (keyset pages); only those about records they may see."""
        session, viewer = db_session(), _viewer()
        found = notifications.page(session, viewer, before=args["before"], limit=args["limit"],
                                   unread_only=args["unread"])
        return {"items": [notifications.as_json(n, viewer.locale) for n in found.rows],
                "next_before": found.next_before, "unread": notifications.unread_count(session, viewer)}


@api_blp.route("/notifications/unread-count")
class UnreadCount(MethodView):
    @api_blp.response(200, Count)
    def get(self) -> dict[str, Any]:
        """How many are unread (the badge: "99+" past 99)."""
        count = notifications.unread_count(db_session(), _viewer())
        return {"unread": count, "badge": notifications.badge(count)}


@api_blp.route("/notifications/<uuid:notification_id>/read")
class MarkRead(MethodView):
    @api_blp.response(200, NotificationOut)
    def post(self, notification_id: uuid.UUID) -> Any:
        """Mark one read (idempotent)."""
        viewer = _viewer()
        return notifications.as_json(notifications.mark_read(db_session(), viewer, notification_id), viewer.locale)


@api_blp.route("/notifications/read-all")
class MarkAllRead(MethodView):
    @api_blp.response(200, Count)
    def post(self) -> dict[str, Any]:
        """Mark every notification read."""
        notifications.mark_all_read(db_session(), _viewer())
        return {"unread": 0, "badge": "0"}


@api_blp.route("/notifications/preferences")
class Preferences(MethodView):
    @api_blp.response(200, PreferencesIO)
    def get(self) -> dict[str, Any]:
        """Whether each notification is also mailed."""
        viewer = _viewer()
        if viewer.user_id is None:
            return {"email_notifications": False}
        return {"email_notifications": preferences.wants_email(db_session(), viewer.user_id)}

    @api_blp.arguments(PreferencesIO)
    @api_blp.response(200, PreferencesIO)
    def put(self, data: dict[str, Any]) -> dict[str, Any]:
        """Turn notification mail on or off."""
        viewer = _viewer()
        if viewer.user_id is None:
            raise ValidationFailed(_l("Only people have notification preferences."))
        preferences.set_email_notifications(db_session(), viewer.user_id, data["email_notifications"])
        return data



def register(api: Api) -> None:
    api.register_blueprint(api_blp)
