"""Customer pages beyond the generic ones: the org chart and relationships panel and its actions."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, flash, redirect, request, url_for

from core.i18n import _
from crm.accounts import services
from crm.accounts.models import CUSTOMERS, RELATION_KINDS
from crm.records import services as records
from crm.records.scope import Viewer
from crm.records.views import add_panel, crm, viewer
from tenants.context import db_session, login_required


def _panel(v: Viewer, customer: Any) -> tuple[str, dict[str, Any]]:
    session = db_session()
    return "crm/_customer_panel.html", {
        "relations": services.relations(session, v, customer), "org": services.org_chart(session, v, customer),
        "kinds": RELATION_KINDS, "editable": records.can_edit(session, v, CUSTOMERS, customer)}


add_panel("customers", _panel)


# On the CRM blueprint beside the customer's generated pages (crm.customers_relate …).
@crm.post("/customers/<record_id>/relations", endpoint="customers_relate")
@login_required
def relate(record_id: str) -> Any:
    services.relate(db_session(), viewer(), record_id, request.form.get("other_id", "")[:40],
                    request.form.get("kind", "")[:16], request.form.get("note", "")[:400])
    flash(_("Relationship added."), "success")
    return redirect(url_for("crm.customers_detail", record_id=record_id))


@crm.post("/customers/<record_id>/relations/<uuid:relation_id>/delete", endpoint="customers_unrelate")
@login_required
def unrelate(record_id: str, relation_id: uuid.UUID) -> Any:
    services.unrelate(db_session(), viewer(), record_id, relation_id)
    flash(_("Relationship removed."), "success")
    return redirect(url_for("crm.customers_detail", record_id=record_id))


def register(app: Flask) -> None:
    """The routes sit on the crm blueprint (registered by crm.records.views); nothing else to add."""
    del app
