"""The functions of the staff-identity area that a role may be granted."""

from __future__ import annotations

from core.permissions import Permission, register

USERS_READ = "users.read"
USERS_MANAGE = "users.manage"
ROLES_MANAGE = "roles.manage"
DEPARTMENTS_MANAGE = "departments.manage"
CLIENTS_MANAGE = "clients.manage"
AUDIT_READ = "audit.read"

register(
    Permission(USERS_READ, "See colleagues", "查看同事", "staff"),
    Permission(USERS_MANAGE, "Invite, edit and deactivate users", "邀请、编辑和停用用户", "staff"),
    Permission(ROLES_MANAGE, "Edit roles and their functions", "编辑角色及其功能", "staff"),
    Permission(DEPARTMENTS_MANAGE, "Edit the department tree", "编辑部门树", "staff"),
    Permission(CLIENTS_MANAGE, "Manage API clients", "管理 API 客户端", "platform"),
    Permission(AUDIT_READ, "Read the audit log", "查看审计日志", "platform"),
)

#: The roles every tenant starts with. ``admin`` always holds every permission (it cannot be edited
#: down, so a tenant can never lock itself out); the others are editable defaults.
DEFAULT_ROLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "admin": ("Administrator", "管理员", ()),
    "manager": ("Manager", "经理", (USERS_READ, DEPARTMENTS_MANAGE, AUDIT_READ)),
    "sales": ("Sales", "销售", (USERS_READ,)),
    "service": ("Service", "客服", (USERS_READ,)),
}
