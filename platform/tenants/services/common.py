"""Checks and helpers every area of the tenants services shares."""

from __future__ import annotations

import re
import unicodedata
import uuid

from core.db import text_problem
from core.errors import PermissionDenied, ValidationFailed
from core.i18n import _l, _ln, shown
from core.permissions import Actor
from core.security import password_problem
from core.tenancy import BoundTenant
from tenants.models import Tenant

EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")  # fullmatch: no trailing line break


def bound(tenant: Tenant | BoundTenant) -> BoundTenant:
    if isinstance(tenant, BoundTenant):
        return tenant
    return BoundTenant(id=tenant.id, slug=tenant.slug, name=tenant.name, status=tenant.status)


def _uid(actor: Actor) -> uuid.UUID | None:
    return actor.id if isinstance(actor.id, uuid.UUID) else None


def require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(_l("You need the '%(permission)s' permission for this.", permission=permission))


def clean_email(email: str) -> str:
    value = (email or "").strip()
    if not EMAIL_RE.fullmatch(value) or len(value) > 254 or text_problem(value):
        # Quoted short: the address may be anything a client sent, of any length.
        raise ValidationFailed(_l("'%(email)s' is not a valid e-mail address.", email=shown(value)),
                               field_errors={"email": [_l("Enter a valid e-mail address.")]})
    return value.lower()


#: How a field a service checks is named in its messages.
FIELD_LABELS = {"name": _l("Name")}
#: Control characters, and the Unicode line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def clean_name(value: str, field: str = "name", max_len: int = 200) -> str:
    value = (value or "").strip()
    label = FIELD_LABELS.get(field) or field.capitalize()
    if not value:
        raise ValidationFailed(_l("%(field)s is required.", field=label), field_errors={field: [_l("Required.")]})
    # The web refuses such text before a view runs; the CLI reaches here without that check.
    problem = text_problem(value)
    if problem == "nul":
        raise ValidationFailed(_l("%(field)s must not contain NUL characters.", field=label),
                               field_errors={field: [_l("Must not contain NUL characters.")]})
    if problem == "surrogate":
        raise ValidationFailed(_l("%(field)s is not valid UTF-8 text.", field=label),
                               field_errors={field: [_l("Not valid Unicode text.")]})
    if len(value) > max_len:
        raise ValidationFailed(
            _ln("%(field)s is too long (at most %(num)d character).",
                "%(field)s is too long (at most %(num)d characters).", max_len, field=label),
            field_errors={field: [_ln("At most %(num)d character.", "At most %(num)d characters.", max_len)]})
    if any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in value):
        # A name is one line: it goes into mail subjects, CSV cells and page titles.
        raise ValidationFailed(_l("%(field)s must not contain line breaks or other control characters.", field=label),
                               field_errors={field: [_l("Must be a single line without control characters.")]})
    return value


def check_password(password: str, field: str = "password") -> str:
    problem = password_problem(password or "")
    if problem:
        raise ValidationFailed(_l("Password refused: %(problem)s", problem=problem), field_errors={field: [problem]})
    return password
