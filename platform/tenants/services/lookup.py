"""The control-plane lookups every request makes: its tenant and, for API calls, its bearer token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.security import digest
from core.tenancy import BoundTenant

# Driver-level SQL (psycopg placeholders) for the lookups every request makes; see _driver_row.
_TENANT_BY_SLUG_SQL = "SELECT id, slug, name, status FROM shared.tenants WHERE slug = %(slug)s"
# A live token and its client: unknown, expired and revoked tokens (or clients) find nothing.
_LIVE_GRANT_SQL = """
    SELECT t.tenant_id, c.client_id, c.name AS client_name, t.scopes
    FROM shared.oauth_tokens t JOIN shared.oauth_clients c ON c.id = t.client_pk
    WHERE t.token_digest = %(digest)s AND t.revoked_at IS NULL AND t.expires_at > now()
      AND c.revoked_at IS NULL"""
# The tenant and, when the request carries one, its bearer token in one round trip. The token side is
# a LEFT JOIN on the token's own digest, so a token of another tenant still comes back (with its own
# tenant_id) and the caller answers it with the same 404 as an unknown object.
_TENANT_AND_TOKEN_SQL = f"""
    SELECT n.id, n.slug, n.name, n.status, k.tenant_id, k.client_id, k.client_name, k.scopes
    FROM shared.tenants n LEFT JOIN ({_LIVE_GRANT_SQL}) k ON true
    WHERE n.slug = %(slug)s"""


def _driver_row(source: Session | Connection, sql: str, params: dict[str, object]) -> tuple[Any, ...] | None:
    """One row straight from the driver, on the session's own connection and transaction, or on a
    connection of the caller's (``Database.reading``: outside any transaction).

    Only for the two control-plane lookups every request makes: SQLAlchemy's result machinery costs
    more CPU than these indexed queries themselves (bench/api.py); everything else goes through the ORM.
    """
    connection = source if isinstance(source, Connection) else source.connection()
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchone()  # type: ignore[no-any-return]
    except psycopg.OperationalError as exc:
        # What SQLAlchemy would do had it run the query: drop the dead connection from the pool and
        # report it as such (the app answers 503, the next request gets a fresh connection).
        if connection.connection.driver_connection.closed:  # type: ignore[union-attr]
            connection.invalidate(exc)
            raise OperationalError(sql, params, exc, connection_invalidated=True) from exc
        raise OperationalError(sql, params, exc) from exc
    finally:
        cursor.close()


def lookup_tenant(session: Session | Connection, slug: str) -> BoundTenant | None:
    """The registry entry for ``slug`` as a :class:`BoundTenant`, in one indexed query.

    Tenant resolution runs this on every request: a plain Core row on the session's connection,
    because the ORM entity (and the ORM execution path) cost more CPU than the query itself
    (bench/api.py), and the request needs only these four fields.
    """
    row = _driver_row(session, _TENANT_BY_SLUG_SQL, {"slug": slug})
    if row is None:
        return None
    return BoundTenant(id=row[0], slug=row[1], name=row[2], status=row[3])


def lookup_tenant_and_token(session: Session | Connection, slug: str,
                            secret: str) -> tuple[BoundTenant | None, TokenInfo | None]:
    """:func:`lookup_tenant` and :func:`check_token` together, for API calls with a bearer token."""
    row = _driver_row(session, _TENANT_AND_TOKEN_SQL, {"slug": slug, "digest": digest(secret)})
    if row is None:
        return None, None
    tenant = BoundTenant(id=row[0], slug=row[1], name=row[2], status=row[3])
    token = TokenInfo(row[4], row[5], row[6], frozenset(row[7])) if row[4] is not None else None
    return tenant, token


@dataclass(frozen=True, slots=True)
class TokenInfo:
    tenant_id: uuid.UUID
    client_id: str
    client_name: str
    scopes: frozenset[str]


def check_token(session: Session, secret: str) -> TokenInfo | None:
    """A live token's binding, in one indexed query; None for unknown, expired or revoked tokens."""
    row = _driver_row(session, _LIVE_GRANT_SQL, {"digest": digest(secret)})
    if row is None:
        return None
    return TokenInfo(row[0], row[1], row[2], frozenset(row[3]))


#: What every personal token starts with: it tells the two kinds of bearer token apart before any lookup.
PERSONAL_TOKEN_PREFIX = "cyp_"  # noqa: S105 - a marker, not a secret
# The tenant and a live personal token of that same tenant, in one round trip. The token is matched on
# the tenant too: another workspace's token finds nothing here, exactly like one that never existed.
# ``stale``: the token's last use is older than a minute, so this use is worth writing down.
_TENANT_AND_PERSONAL_SQL = """
    SELECT n.id, n.slug, n.name, n.status, p.id, p.user_id,
           (p.last_used_at IS NULL OR p.last_used_at < now() - interval '1 minute')
    FROM shared.tenants n LEFT JOIN shared.personal_tokens p
      ON p.tenant_id = n.id AND p.token_digest = %(digest)s AND p.revoked_at IS NULL
         AND (p.expires_at IS NULL OR p.expires_at > now())
    WHERE n.slug = %(slug)s"""
_PERSONAL_BY_TENANT_SQL = """
    SELECT p.id, p.user_id, (p.last_used_at IS NULL OR p.last_used_at < now() - interval '1 minute')
    FROM shared.personal_tokens p
    WHERE p.tenant_id = %(tenant_id)s AND p.token_digest = %(digest)s AND p.revoked_at IS NULL
      AND (p.expires_at IS NULL OR p.expires_at > now())"""
_TOUCH_PERSONAL_SQL = """
    UPDATE shared.personal_tokens SET last_used_at = now()
    WHERE id = :id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"""


@dataclass(frozen=True, slots=True)
class PersonalTokenInfo:
    """A live personal token of the request's tenant: whose it is. The user is checked by the caller
    (active, role) on every request, so a deactivation or a role change applies at once."""

    tenant_id: uuid.UUID
    token_id: uuid.UUID
    user_id: uuid.UUID
    stale: bool


def is_personal_token(secret: str) -> bool:
    return secret.startswith(PERSONAL_TOKEN_PREFIX)


def lookup_tenant_and_personal_token(session: Session | Connection, slug: str,
                                     secret: str) -> tuple[BoundTenant | None, PersonalTokenInfo | None]:
    """:func:`lookup_tenant` and :func:`check_personal_token` together, for API calls with a personal token."""
    row = _driver_row(session, _TENANT_AND_PERSONAL_SQL, {"slug": slug, "digest": digest(secret)})
    if row is None:
        return None, None
    tenant = BoundTenant(id=row[0], slug=row[1], name=row[2], status=row[3])
    token = PersonalTokenInfo(row[0], row[4], row[5], bool(row[6])) if row[4] is not None else None
    return tenant, token


def check_personal_token(session: Session | Connection, tenant: BoundTenant, secret: str) -> PersonalTokenInfo | None:
    """A live personal token of ``tenant``; None for unknown, expired, revoked or other tenants' tokens."""
    row = _driver_row(session, _PERSONAL_BY_TENANT_SQL, {"tenant_id": tenant.id, "digest": digest(secret)})
    if row is None:
        return None
    return PersonalTokenInfo(tenant.id, row[0], row[1], bool(row[2]))


def touch_personal_token(connection: Connection, token_id: uuid.UUID) -> None:
    """Note a use; a no-op when another request noted one within the minute (checked again here)."""
    connection.execute(text(_TOUCH_PERSONAL_SQL), {"id": token_id})
