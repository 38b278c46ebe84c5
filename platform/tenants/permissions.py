"""The functions of the staff-identity area that a role may be granted."""

from __future__ import annotations

from core.i18n import _l
from core.permissions import Permission, register

USERS_READ = "users.read"
USERS_MANAGE = "users.manage"
ROLES_MANAGE = "roles.manage"
DEPARTMENTS_MANAGE = "departments.manage"
CLIENTS_MANAGE = "clients.manage"
AUDIT_READ = "audit.read"

register(
    Permission(USERS_READ, _l("See colleagues"), "staff"),
    Permission(USERS_MANAGE, _l("Invite, edit and deactivate users"), "staff"),
    Permission(ROLES_MANAGE, _l("Edit roles and their functions"), "staff"),
    Permission(DEPARTMENTS_MANAGE, _l("Edit the department tree"), "staff"),
    Permission(CLIENTS_MANAGE, _l("Manage API clients"), "platform"),
    Permission(AUDIT_READ, _l("Read the audit log"), "platform"),
)

#: The roles every tenant starts with. ``admin`` always holds every permission (it cannot be edited
#: down, so a tenant can never lock itself out); the others are editable defaults.
DEFAULT_ROLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "admin": ("Administrator", "管理员", ()),
    "manager": ("Manager", "经理", (USERS_READ, DEPARTMENTS_MANAGE, AUDIT_READ)),
    "sales": ("Sales", "销售", (USERS_READ,)),
    "service": ("Service", "客服", (USERS_READ,)),
}

#: What each built-in role's users see of the records (crm.records.scope): their own, their
#: department's, their department and those below it, or everything.
DATA_SCOPES = ("own", "department", "subtree", "all")
DEFAULT_SCOPES: dict[str, str] = {"admin": "all", "manager": "subtree", "sales": "own", "service": "own"}
