"""Tenancy primitives: slugs, schema names, the bound-tenant value and host parsing.

The registry (which tenants exist) lives in the ``tenants`` domain; this module only knows the rules
that every layer shares, so that ``core`` never imports a domain.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from core.errors import ValidationFailed
from core.i18n import _l, shown

#: The schema tenant models are declared on. It never exists in the database, so a session that
#: forgot to bind a tenant fails with "relation tenant.x does not exist" instead of reading anything.
PLACEHOLDER_SCHEMA = "tenant"
#: The control plane: tenants, OAuth clients and tokens, fleet-migration records.
SHARED_SCHEMA = "shared"

#: Always used with ``fullmatch``: ``$`` would let a trailing line break through (``'evil\n'``).
SLUG_RE = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
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
    elif not SLUG_RE.fullmatch(slug) or "--" in slug:
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


#: Longer ``next=`` targets are not followed (no page of ours has such a path).
NEXT_MAX_CHARS = 2048
#: Characters a path or query keeps unencoded when a ``next=`` target is rebuilt.
_PATH_SAFE = "/-._~!$&'()*+,;=:@"
_QUERY_SAFE = _PATH_SAFE + "?%"
_TENANT_PREFIX = "/t/"


def local_path(target: str | None, prefix: str) -> str | None:
    """A ``next=`` target made safe to redirect to, or None (go to the default page instead).

    ``prefix`` is the site the request came through: ``/t/<slug>`` on the bare domain, ``''`` on a
    tenant's own host and on the public site. The result is a path on this host inside ``prefix``: no
    other host (``//evil``, ``\\evil``, ``https:``), and no other tenant, however spelled: dot segments,
    percent-encoded dots and slashes (the server decodes them before routing) and backslashes (browsers
    read them as slashes) are resolved first, then the path must not leave ``prefix`` or name a
    ``/t/<slug>/`` site other than ``prefix``. A path without the prefix is taken as relative to it.
    """
    routed = _routed(target)
    if routed is None:
        return None
    path, query = routed
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        local = path
    elif path.startswith(_TENANT_PREFIX) or path == _TENANT_PREFIX.rstrip("/"):
        return None  # another tenant's site (or, on a tenant's host, a path that only answers 404)
    else:
        local = prefix + path
    return quote(local, safe=_PATH_SAFE) + (f"?{quote(query, safe=_QUERY_SAFE)}" if query else "")


def _routed(target: str | None) -> tuple[str, str] | None:
    """(the path as routing will see it, without dot segments; the query), or None if not a local path."""
    if not target or len(target) > NEXT_MAX_CHARS or _has_controls(target):
        return None
    target = target.replace("\\", "/")
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc:
        return None
    # The server decodes the path once. Anything still encoded after that (a double-encoded dot or
    # slash) or decoding to a backslash or a control character is not a path of ours.
    try:
        decoded = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        return None
    if "%" in decoded or "\\" in decoded or _has_controls(decoded):
        return None
    return _without_dot_segments(decoded), parts.query


def _has_controls(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _without_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` and ``..`` resolved, never above the root."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")  # "/a/.." is the directory "/", not "/a"
    return "/" + "/".join(out)
