"""Celery tasks of the tenants domain, and the helper every domain's tasks use to bind a tenant."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from sqlalchemy.orm import Session

from core.db import CourtyardSession, bind_tenant
from core.errors import ValidationFailed
from core.i18n import _l, both
from core.logs import tenant_var
from core.mail import Mail
from core.tasks import send_after_commit, task_runtime
from core.tenancy import BoundTenant
from tenants import services
from tenants.models import Tenant
from tenants.services import discovery

log = logging.getLogger(__name__)


class TenantGone(Exception):
    """The tenant was suspended or deleted after the task was queued: the task does nothing."""


@contextmanager
def tenant_unit(tenant_id: str | uuid.UUID) -> Iterator[tuple[CourtyardSession, BoundTenant]]:
    """One unit of work for one tenant, looked up afresh (it may have been suspended since)."""
    rt = task_runtime()
    with rt.db.transaction() as session:
        row = session.get(Tenant, uuid.UUID(str(tenant_id)))
        if row is None or row.status != "active":
            raise TenantGone(str(tenant_id))
        tenant = services.bound(row)
        bind_tenant(session, tenant)
        token = tenant_var.set(tenant.slug)
        try:
            yield session, tenant
        finally:
            tenant_var.reset(token)


@shared_task(name="tenants.deliver_mail", autoretry_for=(OSError,), retry_backoff=True, max_retries=8,
             acks_late=True)
def deliver_mail(tenant_id: str, to: str, subject: str, text: str) -> str | None:
    """Send one message for a tenant; retried with backoff when the mail server is unreachable."""
    try:
        # The check reads and ends its transaction before the mail server is contacted: a transaction
        # held open across SMTP would keep its snapshot and connection for as long as the server takes.
        with tenant_unit(tenant_id) as (_session, tenant):
            slug = tenant.slug
    except TenantGone:
        log.info("mail dropped: tenant no longer active")
        return None
    token = tenant_var.set(slug)
    try:
        return str(task_runtime().mailer.send(Mail(to=to, subject=subject, text=text)))
    finally:
        tenant_var.reset(token)


@shared_task(name="tenants.send_password_reset", acks_late=True)
def send_password_reset(tenant_id: str, email: str, subject: str, intro: str) -> None:
    """Mail a reset link to ``email`` if it is an active user's: ``intro``, then the link.

    The "forgot password" page queues this for every address, known or not, and does nothing else,
    so its answer takes the same work either way: the time it takes tells nobody whether an account
    exists. Whatever the lookup finds is decided here, out of the request.
    """
    try:
        with tenant_unit(tenant_id) as (session, tenant):
            issued = services.request_password_reset(session, email)
            if issued is None:
                return
            user, token = issued
            link = task_runtime().settings.tenant_link(tenant.slug, f"/reset/{token.secret}")
            send_mail(session, tenant, Mail(to=user.email, subject=subject, text=f"{intro}\n\n{link}\n"))
    except TenantGone:
        log.info("password reset dropped: tenant no longer active")


@shared_task(name="tenants.send_workspace_list", autoretry_for=(OSError,), retry_backoff=True, max_retries=8,
             acks_late=True)
def send_workspace_list(email: str) -> int:
    """Mail ``email`` the workspaces where it is an active user ("find my workspace"); nothing if none.

    Queued by the public page for every well-formed address, known or not, so the page's answer and
    timing say nothing; the scan over every tenant's schema runs here, a page of tenants per short
    transaction, and stops at :data:`discovery.MAX_LISTED` workspaces.
    """
    rt = task_runtime()
    try:
        address = services.clean_email(email)
    except ValidationFailed:
        return 0
    found: list[services.FoundWorkspace] = []
    after: str | None = ""
    while after is not None and len(found) < discovery.MAX_LISTED:
        with rt.db.transaction() as session:
            page, after = services.scan_workspaces(session, address, after=after,
                                                   limit=discovery.MAX_LISTED - len(found))
        found += page
    if not found:
        return 0
    listing = "\n\n".join(f"{w.name}\n{rt.settings.tenant_link(w.slug, '/sign-in')}" for w in found)
    rt.mailer.send(Mail(
        to=address, subject=both(_l("Your Courtyard workspaces")),
        text=both(_l("This address is a member of these workspaces on Courtyard; open one to sign in:"), sep="\n")
        + f"\n\n{listing}\n\n"
        + both(_l("If you did not ask for this list, you can ignore this mail."), sep="\n") + "\n"))
    return len(found)


def send_mail(session: Session, tenant: BoundTenant, mail: Mail) -> None:
    """Queue a message; it leaves only if the surrounding unit of work commits."""
    send_after_commit(session, deliver_mail.name, str(tenant.id), mail.to, mail.subject, mail.text,
                      tenant_id=tenant.id)


PURGE_BATCH = 1000
# Each side of the UNION walks its own index (0004) and stops at the batch size: a batch costs the same
# whatever the table's size, and its short transaction holds its row locks only briefly.
_PURGE_SQL = """
    DELETE FROM shared.oauth_tokens WHERE id IN (
        (SELECT id FROM shared.oauth_tokens WHERE expires_at < now() - interval '1 day' LIMIT :batch)
        UNION
        (SELECT id FROM shared.oauth_tokens WHERE revoked_at < now() - interval '1 day'
             AND revoked_at IS NOT NULL LIMIT :batch))"""


@shared_task(name="tenants.purge_expired_tokens")
def purge_expired_tokens(batch: int = PURGE_BATCH, max_batches: int = 500) -> int:
    """Drop access tokens that expired or were revoked more than a day ago (control plane only), in
    batches of ``batch`` rows, each in its own transaction, until none is left (or ``max_batches``:
    the next hourly run carries on)."""
    from sqlalchemy import text

    total = 0
    for _ in range(max_batches):
        with task_runtime().db.transaction() as session:
            deleted = int(session.execute(text(_PURGE_SQL), {"batch": batch}).rowcount)
        total += deleted
        if deleted == 0:
            break
    return total
