"""Errors of the tenants domain; HTTP codes come from their core base classes."""

from __future__ import annotations

from core.errors import Conflict, NotFound, ValidationFailed


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class SlugTaken(Conflict):
    code = "slug_taken"


class EmailTaken(Conflict):
    code = "email_taken"


class InvalidArchive(ValidationFailed):
    code = "invalid_archive"


class ArchiveTooNew(ValidationFailed):
    code = "archive_too_new"


class InvalidToken(ValidationFailed):
    code = "invalid_token"
