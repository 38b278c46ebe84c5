"""Beat jobs of tasks and activities: reminders."""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy import select

from core.tasks import task_runtime
from crm.activities import services
from tenants.models import Tenant
from tenants.tasks import TenantGone, tenant_unit

log = logging.getLogger(__name__)


@shared_task(name="crm.send_due_reminders")
def send_due_reminders(batch: int = services.REMINDER_BATCH) -> int:
    """Every minute: in every active tenant, notify the owners of tasks whose reminder is due.

    Each tenant is its own transaction: a tenant whose schema is being migrated, or whose data makes
    a reminder fail, is logged and skipped, and the others still get theirs (the failed one is retried
    at the next run, since nothing of it was committed).
    """
    with task_runtime().db.transaction() as session:
        tenant_ids = list(session.scalars(select(Tenant.id).where(Tenant.status == "active").order_by(Tenant.id)))
    sent = 0
    for tenant_id in tenant_ids:
        try:
            with tenant_unit(tenant_id) as (session, _tenant):
                sent += services.send_due_reminders(session, limit=batch)
        except TenantGone:
            continue
        except Exception:
            log.exception("reminders failed for tenant %s", tenant_id)
    return sent
