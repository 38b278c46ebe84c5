"""The workspace home: a dashboard for the person signed in (today's tasks, follow-ups, their records)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import render_template
from sqlalchemy import func, select

from core.db import utcnow
from crm.accounts.models import CUSTOMERS, Customer
from crm.activities.models import ACTIVITIES, TASKS, Activity, Task
from crm.records import present
from crm.records.scope import visible
from crm.records.views import viewer
from tenants import services as tenant_services
from tenants.context import current_tenant, db_session, login_required

LIMIT = 8


@login_required
def dashboard() -> Any:
    v = viewer()
    session = db_session()
    now = utcnow()
    end_of_today = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    mine_tasks = select(Task).where(visible(TASKS, v), Task.owner_id == v.user_id, Task.status == "open")
    today = list(session.scalars(mine_tasks.where(Task.due_at < end_of_today).order_by(Task.due_at).limit(LIMIT)))
    upcoming = list(session.scalars(mine_tasks.where(Task.due_at >= end_of_today)
                                    .order_by(Task.due_at).limit(LIMIT)))
    follow_ups = list(session.scalars(
        select(Activity).where(visible(ACTIVITIES, v), Activity.owner_id == v.user_id,
                               Activity.next_follow_up <= now.date(), Activity.next_follow_up >= now.date()
                               - dt.timedelta(days=14)).order_by(Activity.next_follow_up).limit(LIMIT)))
    recent = list(session.scalars(select(Customer).where(visible(CUSTOMERS, v), Customer.owner_id == v.user_id)
                                  .order_by(Customer.updated_at.desc()).limit(LIMIT)))
    counts = {
        "customers": session.scalar(select(func.count()).select_from(
            select(Customer.id).where(visible(CUSTOMERS, v), Customer.owner_id == v.user_id).limit(10_001)
            .subquery())) or 0,
        "activities_week": session.scalar(select(func.count()).select_from(
            select(Activity.id).where(visible(ACTIVITIES, v), Activity.owner_id == v.user_id,
                                      Activity.occurred_at >= now - dt.timedelta(days=7)).limit(10_001)
            .subquery())) or 0,
        "overdue": sum(1 for t in today if t.due_at is not None and t.due_at < now),
    }
    linked = {t.customer_id for t in [*today, *upcoming] if t.customer_id}
    linked |= {a.customer_id for a in follow_ups if a.customer_id}
    customer_names = present.ref_titles(session, v, "customers", linked)
    return render_template("crm/home.html", today=today, upcoming=upcoming, follow_ups=follow_ups, recent=recent,
                           counts=counts, customer_names=customer_names, now=now, tenant=current_tenant(),
                           seats=tenant_services.seats_used(session), nav_active="home", can_tasks=v.can(TASKS, "view"),
                           can_customers=v.can(CUSTOMERS, "view"))
