"""OAuth API clients and their access tokens (control-plane rows, audited in the tenant)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import bind_tenant, utcnow
from core.errors import NotFound, ValidationFailed
from core.i18n import _l, shown
from core.permissions import Actor, known
from core.security import digest, new_secret
from core.tenancy import BoundTenant
from tenants import permissions as perms
from tenants.models import OAuthClient, OAuthToken
from tenants.services.auditing import audit
from tenants.services.common import _uid, clean_name, require
from tenants.services.roles import _no_escalation


@dataclass(frozen=True, slots=True)
class NewClient:
    client: OAuthClient
    secret: str


def create_client(session: Session, actor: Actor, tenant: BoundTenant, *, name: str,
                  scopes: Sequence[str]) -> NewClient:
    """Client rows live in the control plane so the token endpoint can bind a token to its tenant."""
    require(actor, perms.CLIENTS_MANAGE)
    name = clean_name(name)
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if not known(s)]
    if unknown:
        msg = _l("Unknown scopes: %(names)s.", names=shown(", ".join(unknown)))
        raise ValidationFailed(msg, field_errors={"scopes": [msg]})
    _no_escalation(actor, scopes, _l("scopes"))
    if not scopes:
        raise ValidationFailed(_l("Grant at least one scope."), field_errors={"scopes": [_l("Required.")]})
    secret = new_secret(32)
    parent = _acting_client(session, actor, tenant)
    client = OAuthClient(tenant_id=tenant.id, client_id="cy_" + new_secret(12), secret_digest=digest(secret),
                         name=name, scopes=scopes, created_by=_uid(actor),
                         created_by_client=parent.id if parent is not None else None)
    session.add(client)
    session.flush()
    _audit_in_tenant(session, actor, tenant, "client.created", client.client_id,
                     {"name": name, "scopes": scopes})
    return NewClient(client, secret)


def _audit_in_tenant(session: Session, actor: Actor, tenant: BoundTenant, action: str, entity_id: str,
                     after: dict[str, Any] | None) -> None:
    # Clients live in the control plane, their audit trail in the tenant: a session not yet bound
    # (the CLI) is bound here; one bound to another tenant is refused by bind_tenant.
    audit(bind_tenant(session, tenant), actor, action, "oauth_client", entity_id, after=after)
    session.flush()


def list_clients(session: Session, actor: Actor, tenant: BoundTenant) -> list[OAuthClient]:
    require(actor, perms.CLIENTS_MANAGE)
    return list(session.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id)
                                .order_by(OAuthClient.created_at)))


def revoke_client(session: Session, actor: Actor, tenant: BoundTenant, client_id: str) -> OAuthClient:
    require(actor, perms.CLIENTS_MANAGE)
    client = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id,
                                                      OAuthClient.tenant_id == tenant.id))
    if client is None:
        raise NotFound(_l("No such client."))
    if client.revoked_at is None:
        _revoke_clients(session, actor, tenant, [client], reason=None)
    return client


# A client outlives neither the staff user who made it (deactivated) nor the client that made it
# (revoked): whoever loses access takes the access they handed out with them, however many clients
# deep. Reactivating the user does not bring the clients back.
CLIENT_ACTOR_PREFIX = "client:"  # tenants.context labels an API client's actor so


def _acting_client(session: Session, actor: Actor, tenant: BoundTenant) -> OAuthClient | None:
    """The client an API actor is (its creations are revoked with it); None for users and the system."""
    if actor.kind != "client" or not actor.label.startswith(CLIENT_ACTOR_PREFIX):
        return None
    return session.scalar(select(OAuthClient).where(
        OAuthClient.client_id == actor.label.removeprefix(CLIENT_ACTOR_PREFIX), OAuthClient.tenant_id == tenant.id))


def _revoke_clients(session: Session, actor: Actor, tenant: BoundTenant, roots: list[OAuthClient],
                    reason: str | None) -> list[OAuthClient]:
    """Revoke ``roots`` and every live client they made, directly or not, with all their tokens."""
    live = list(session.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant.id,
                                                          OAuthClient.revoked_at.is_(None))))
    children: dict[uuid.UUID, list[OAuthClient]] = {}
    for c in live:
        if c.created_by_client is not None:
            children.setdefault(c.created_by_client, []).append(c)
    doomed: dict[uuid.UUID, OAuthClient] = {}
    stack = [c for c in roots if c.revoked_at is None]
    while stack:  # each client is visited once: the walk ends even if the rows held a cycle
        c = stack.pop()
        if c.id in doomed:
            continue
        doomed[c.id] = c
        stack.extend(children.get(c.id, []))
    if not doomed:
        return []
    now = utcnow()
    for c in doomed.values():
        c.revoked_at = now
    session.execute(update(OAuthToken).where(OAuthToken.client_pk.in_(list(doomed)),
                                             OAuthToken.revoked_at.is_(None)).values(revoked_at=now))
    session.flush()
    root_ids = {c.id for c in roots}
    for c in doomed.values():
        why = reason if c.id in root_ids else "its creator was revoked"
        _audit_in_tenant(session, actor, tenant, "client.revoked", c.client_id, {"reason": why} if why else None)
    return list(doomed.values())


def revoke_clients_of_user(session: Session, actor: Actor, tenant: BoundTenant, user_id: uuid.UUID) -> int:
    """Revoke the clients a (deactivated) staff user made, and those they made in turn."""
    made = list(session.scalars(select(OAuthClient).where(
        OAuthClient.tenant_id == tenant.id, OAuthClient.created_by == user_id, OAuthClient.revoked_at.is_(None))))
    return len(_revoke_clients(session, actor, tenant, made, reason="its creator was deactivated"))


def find_client(session: Session, client_id: str) -> OAuthClient | None:
    return session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


def store_token(session: Session, client: OAuthClient, secret: str, scopes: Sequence[str],
                ttl_s: int) -> OAuthToken:
    """Record an access token by its digest only: a leaked table holds no usable token."""
    token = OAuthToken(tenant_id=client.tenant_id, client_pk=client.id, token_digest=digest(secret),
                       scopes=sorted(set(scopes)), expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
    session.add(token)
    session.flush()
    return token


def issue_token(session: Session, client: OAuthClient, scopes: Sequence[str], ttl_s: int) -> tuple[str, OAuthToken]:
    """A new token for ``client`` without the token endpoint (the CLI and tests)."""
    secret = new_secret(32)
    return secret, store_token(session, client, secret, scopes, ttl_s)


def revoke_token(session: Session, tenant: BoundTenant, secret: str) -> bool:
    """RFC 7009: revoking an unknown token is not an error; only this tenant's tokens are touched."""
    result = session.execute(update(OAuthToken).where(
        OAuthToken.token_digest == digest(secret), OAuthToken.tenant_id == tenant.id,
        OAuthToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return bool(result.rowcount)  # type: ignore[attr-defined]
