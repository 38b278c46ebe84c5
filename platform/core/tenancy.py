"""Tenancy primitives: slugs, schema names, the bound-tenant value and host parsing.

The registry (which tenants exist) lives in the ``tenants`` domain; this module only knows the rules
that every layer shares, so that ``core`` never imports a domain.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from core.errors import ValidationFailed
from core.i18n import _l, shown

#: The schema tenant models are declared on. It never exists in the database, so a session that
#: forgot to bind a tenant fails with "relation tenant.x does not exist" instead of reading anything.
PLACEHOLDER_SCHEMA = "tenant"
#: The control plane: tenants, OAuth clients and tokens, fleet-migration records.
SHARED_SCHEMA = "shared"

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
RESERVED_SLUGS = frozenset({
    "www", "api", "admin", "portal", "static", "app", "apps", "mail", "smtp", "imap", "ftp", "ns1", "ns2",
    "root", "support", "help", "docs", "status", "billing", "login", "signup", "oauth", "auth", "assets",
    "cdn", "public", "shared", "tenant", "system", "courtyard", "localhost", "healthz", "readyz", "t",
    "dev", "test", "demo-admin", "webhooks", "sync",
})


def validate_slug(slug: str, *, check_reserved: bool = True) -> str:
    """Return the slug if it is usable as a sub-domain, else raise with the precise reason."""
    if not isinstance(slug, str) or not slug:
        raise ValidationFailed(_l("A slug is required."), field_errors={"slug": [_l("Required.")]})
    if slug != slug.lower():
        message = _l("Use lower-case letters only.")
    elif len(slug) < 3 or len(slug) > 40:
        message = _l("Use 3 to 40 characters.")
    elif not SLUG_RE.match(slug) or "--" in slug:
        message = _l("Use lower-case letters, digits and single hyphens; start with a letter and end with a "
                     "letter or digit.")
    elif check_reserved and slug in RESERVED_SLUGS:
        message = _l("'%(slug)s' is reserved.", slug=shown(slug))
    else:
        return slug
    raise ValidationFailed(_l("Invalid slug: %(reason)s", reason=message), field_errors={"slug": [message]})


def schema_for(tenant_id: uuid.UUID) -> str:
    """Schemas are named from the immutable id, so renaming a tenant never touches its data."""
    return f"t_{tenant_id.hex}"


@dataclass(frozen=True, slots=True)
class BoundTenant:
    """The tenant a request, task or command works for: enough to bind a session, nothing more."""

    id: uuid.UUID
    slug: str
    name: str
    status: str

    @property
    def schema(self) -> str:
        return schema_for(self.id)

    @property
    def active(self) -> bool:
        return self.status == "active"


def slug_from_host(host: str, base_domain: str) -> str | None:
    """``acme.example.com`` with base ``example.com`` gives ``acme``; the bare base gives None."""
    hostname = host.rsplit(":", 1)[0].lower().rstrip(".") if host else ""
    base = base_domain.lower()
    if not hostname.endswith("." + base):
        return None
    label = hostname[: -len(base) - 1]
    # Only one label: `a.b.example.com` is not a tenant host.
    return label if label and "." not in label else None
