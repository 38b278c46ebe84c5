"""Functions of the record foundation itself (the per-entity ones are registered by each entity)."""

from __future__ import annotations

from core.i18n import _l
from core.permissions import Permission, register

CONFIGURE = "crm.configure"

register(
    Permission(CONFIGURE, _l("Define custom fields, dictionaries and number formats"), "crm"),
)
