"""OAuth 2 for machines: the client-credentials grant at ``POST /oauth/token`` (Authlib).

Clients are managed by tenant admins and bound to their tenant in the control plane. The token
endpoint answers on the tenant's host only and finds only that tenant's clients, so a client of
``acme`` cannot obtain a token on ``globex`` (it is simply an unknown client there).
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from flask import Flask, Request, Response, request

from core.errors import DomainError, TooManyRequests
from core.i18n import _l, shown
from core.permissions import known
from core.security import digest, same
from tenants import services
from tenants.context import current_tenant, db_session, runtime
from tenants.models import OAuthClient, OAuthToken

CSRF_EXEMPT = frozenset({"oauth.token", "oauth.revoke"})
BAD_CLIENT = "Unknown client, wrong client secret, or a revoked client."


class Client(ClientMixin):  # type: ignore[misc]
    """Authlib's view of one of our client rows."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.scopes)
        if not scope:
            return " ".join(sorted(allowed))
        return " ".join(sorted(s for s in scope.split() if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return same(self.row.secret_digest, digest(client_secret or ""))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _RevocableToken:
    def __init__(self, row: OAuthToken, secret: str) -> None:
        self.row = row
        self.secret = secret

    def check_client(self, client: Client) -> bool:
        return self.row.client_pk == client.row.id


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

    def query_token(self, token_string: str, token_type_hint: str | None) -> _RevocableToken | None:
        from sqlalchemy import select

        row = db_session().scalar(select(OAuthToken).where(OAuthToken.token_digest == digest(token_string),
                                                           OAuthToken.tenant_id == current_tenant().id))
        return _RevocableToken(row, token_string) if row is not None else None

    def revoke_token(self, token: _RevocableToken, request: Any) -> None:
        services.revoke_token(db_session(), current_tenant(), token.secret)


class _AsHttps:
    """The Flask request with its URL seen as https, for Authlib's transport check only."""

    def __init__(self, req: Request) -> None:
        self._req = req
        self.url = "https://" + req.url.partition("://")[2]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._req, name)


class _Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib raises on plain HTTP (a 500) unless the host is exactly ``localhost``, which refuses
    ``http://acme.localhost`` and intranet hosts alike. Transport is the deployment's call: a TLS site
    (COURTYARD_SECURE_COOKIES) answers plain HTTP with a 400, any other serves it."""

    def validate_requested_scope(self, scope: str | None) -> None:
        # RFC 6749 §5.2: an unknown scope is an error (invalid_scope), not silently dropped. Known scopes
        # the client does not hold are narrowed away by Client.get_allowed_scope, and the granted
        # scope is returned with the token.
        unknown = sorted(s for s in (scope or "").split() if not known(s))
        if unknown:
            # OAuth's error_description is for developers (English, ASCII: RFC 6749); what the client sent
            # is cut short.
            raise InvalidScopeError(description=f"Unknown scope: {shown(' '.join(unknown), ellipsis='...')}.")

    def authenticate_client(self, request: Any, methods: Any, endpoint: str = "token") -> Any:
        # Authlib's own description of a failed client authentication shows a Python tuple of method
        # names ("cannot authenticate with methods: ('client_secret_basic', …)"), and tells an unknown
        # client from a wrong secret. One plain sentence for both.
        try:
            return super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as exc:
            exc.description = BAD_CLIENT
            raise

    def create_oauth2_request(self, req: Any) -> FlaskOAuth2Request:
        if request.is_secure:
            return FlaskOAuth2Request(request)
        if runtime().settings.secure_cookies:
            raise DomainError(_l("Request tokens over HTTPS."), code="insecure_transport")
        return FlaskOAuth2Request(_AsHttps(request))


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

    def validate_requested_scope(self) -> None:
        super().validate_requested_scope()
        scope = self.request.payload.scope
        # Asking only for scopes the client does not hold would yield a token that can do nothing.
        if scope and not self.request.client.get_allowed_scope(scope):
            raise InvalidScopeError(description="This client holds none of the requested scopes.")


def _query_client(client_id: str) -> Client | None:
    tenant = current_tenant()
    row = services.find_client(db_session(), client_id)
    if row is None or row.tenant_id != tenant.id or row.revoked_at is not None:
        return None
    return Client(row)


def _save_token(token: dict[str, Any], request: Any) -> None:
    client: Client = request.client
    scopes = (token.get("scope") or "").split()
    # Authlib generated the secret; we keep only its digest and our own expiry.
    ttl = int(token.get("expires_in") or runtime().settings.token_ttl_s)
    services.store_token(db_session(), client.row, token["access_token"], scopes, ttl)


def register(app: Flask) -> None:
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"client_credentials": runtime(app).settings.token_ttl_s})
    server = _Server(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(_ClientCredentials)
    server.register_endpoint(Revocation)

    def token() -> Response:
        """Exchange client credentials for a bearer token on the tenant's own host."""
        tenant = current_tenant()
        rt = runtime()
        # Guessing client secrets costs a request each: cap them per tenant and address.
        if not rt.limiter.hit("token", str(tenant.id), request.remote_addr or "", window_s=60,
                              limit=rt.settings.token_requests_per_minute):
            raise TooManyRequests(_l("Too many token requests; try again in a minute."))
        response: Response = server.create_token_response()
        return response

    def revoke() -> Response:
        """RFC 7009 revocation of a token issued to the calling client."""
        tenant = current_tenant()
        rt = runtime()
        # Each call checks a client secret (and looks a token up): the same cap as the token endpoint.
        if not rt.limiter.hit("revoke", str(tenant.id), request.remote_addr or "", window_s=60,
                              limit=rt.settings.token_requests_per_minute):
            raise TooManyRequests(_l("Too many revocation requests; try again in a minute."))
        response: Response = server.create_endpoint_response("revocation")
        return response

    app.add_url_rule("/oauth/token", "oauth.token", token, methods=["POST"])
    app.add_url_rule("/oauth/revoke", "oauth.revoke", revoke, methods=["POST"])
