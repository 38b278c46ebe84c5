"""Finding one's workspaces by e-mail address ("find my workspace" on the public site).

The address is looked up in every active tenant's schema, one indexed query each, a page of tenants
per call: the caller (a task, never a request) runs each page in its own short transaction, and stops
once :data:`MAX_LISTED` workspaces are found.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.tenancy import schema_for
from tenants.models import Tenant

#: The most workspaces one mail lists.
MAX_LISTED = 50
#: Tenants looked at per call (one short transaction in the task).
SCAN_PAGE = 200


@dataclass(frozen=True, slots=True)
class FoundWorkspace:
    slug: str
    name: str


def scan_workspaces(session: Session, address: str, *, after: str = "",
                    limit: int = MAX_LISTED) -> tuple[list[FoundWorkspace], str | None]:
    """Workspaces among the next :data:`SCAN_PAGE` active tenants (by slug, after ``after``) where
    ``address`` (already checked, lower case) is an active user; and the slug to continue after, or None
    when the registry is exhausted."""
    page = session.execute(select(Tenant.id, Tenant.slug, Tenant.name)
                           .where(Tenant.status == "active", Tenant.slug > after)
                           .order_by(Tenant.slug).limit(SCAN_PAGE)).all()
    found: list[FoundWorkspace] = []
    conn = session.connection()
    for tenant_id, slug, name in page:
        # The schema name comes from the tenant's id, never from input; lower(email) is the unique index.
        hit = conn.execute(text(f'SELECT 1 FROM "{schema_for(tenant_id)}".users '
                                "WHERE lower(email) = :email AND active LIMIT 1"), {"email": address}).first()
        if hit is not None:
            found.append(FoundWorkspace(slug, name))
            if len(found) >= limit:
                return found, slug
    return found, (page[-1].slug if len(page) == SCAN_PAGE else None)
