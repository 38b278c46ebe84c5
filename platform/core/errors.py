"""The small error hierarchy every domain raises; HTTP codes are mapped in one place (the app).

A :class:`DomainError` carries its message as a lazy :class:`core.i18n.Message` (``_l("...", name=...)``):
translated when a page or an API answer shows it, in that request's language; ``str(error)`` outside
a request (the CLI) is English. Plain ``str`` messages are shown untranslated: convert them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.i18n import Text


class CourtyardError(Exception):
    """Base of every error Courtyard raises on purpose."""


class ConfigError(CourtyardError):
    """Settings are missing or malformed: reported at start-up, never at request time."""


class DomainError(CourtyardError):
    """A business rule refused the operation; ``code`` is stable and machine-readable."""

    status = 400
    code = "invalid"

    def __init__(self, message: Text, *, field_errors: dict[str, list[Text]] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors or {}
        if code is not None:
            self.code = code


class ValidationFailed(DomainError):
    status = 422
    code = "validation_failed"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PreconditionFailed(DomainError):
    """An If-Match (or expected version) no longer matches the record: RFC 9110's 412."""

    status = 412
    code = "version_conflict"


class PermissionDenied(DomainError):
    status = 403
    code = "forbidden"


class NotAuthenticated(DomainError):
    status = 401
    code = "not_authenticated"


class TooManyRequests(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: Text, *, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # sent as Retry-After


class TenantUnavailable(DomainError):
    """The tenant exists but is suspended or deleted: answered before its data is touched."""

    status = 403
    code = "tenant_suspended"


class TenantGoneError(TenantUnavailable):
    """The tenant was deleted: its address answers 410 Gone, and nothing of it remains."""

    status = 410
    code = "tenant_deleted"


class TenantNotBound(CourtyardError):
    """Tenant data was touched through a session bound to no tenant: a programming error, fail closed."""
