"""Online sign-up as people meet it: every problem of the form at once, in their words, in their language.

``services.provision`` stays the one rule-keeper of provisioning (the CLI and the demo use it too, and it
stops at the first problem, which is right for them); this module checks the whole form first, so that
a person fixes everything in one round, and carries the language chosen on the public site over to the
new workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, object_session

from core.errors import DomainError, ValidationFailed
from core.i18n import LOCALE_NAMES, Text, _l, _ln
from core.permissions import Actor
from core.tenancy import validate_slug
from tenants import services
from tenants.errors import SlugTaken

#: The form's field for each value provision() checks (its ``name`` is the company's name here).
FORM_FIELDS = ("company", "slug", "name", "email", "password")


def _collect(problems: dict[str, list[Text]], field: str, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except DomainError as exc:
        messages = [m for msgs in exc.field_errors.values() for m in msgs] or [exc.message]
        problems.setdefault(field, []).extend(messages)
        return None


def check_form(session: Session, *, slug: str, company: str, email: str, password: str,
               admin_name: str | None) -> None:
    """Raise one ValidationFailed naming every field with a problem (each with its own messages), or
    SlugTaken when the address is the only problem, as provision() would; nothing is written."""
    problems: dict[str, list[Text]] = {}
    _collect(problems, "company", lambda: services.clean_name(company, "name"))
    valid_slug = _collect(problems, "slug", lambda: validate_slug((slug or "").strip()))
    _collect(problems, "email", lambda: services.clean_email(email))
    if admin_name:
        _collect(problems, "name", lambda: services.clean_name(admin_name))
    _collect(problems, "password", lambda: services.check_password(password))
    if valid_slug and services.find_tenant(session, valid_slug) is not None:
        taken = _l("This address is already taken; choose another one.")
        if not problems:
            raise SlugTaken(taken, field_errors={"slug": [taken]})
        problems["slug"] = [taken]
    if problems:
        raise ValidationFailed(_ln("Correct the field marked below.", "Correct the %(num)d fields marked below.",
                                   len(problems)), field_errors=problems)


def provision(session: Session, actor: Actor, *, slug: str, company: str, email: str, password: str,
              admin_name: str | None, locale: str | None) -> services.Provisioned:
    """Check the whole form, then provision; the admin keeps the language they signed up in, so it
    follows them to the workspace's own host (a cookie of the public site does not)."""
    check_form(session, slug=slug, company=company, email=email, password=password, admin_name=admin_name)
    result = services.provision(session, actor, slug=slug, name=company, admin_email=email,
                                admin_password=password, admin_name=admin_name)
    if locale in LOCALE_NAMES:
        result.admin.locale = locale
        tenant_session = object_session(result.admin)  # provision() made it in the tenant-bound session
        assert tenant_session is not None
        tenant_session.flush()
    return result
