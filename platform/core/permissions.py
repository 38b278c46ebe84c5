"""The catalog of permissions (functions a role may use); each domain registers its own.

Permission names double as OAuth scopes, so an API client is granted exactly the same vocabulary an
admin edits on a role.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.i18n import Message


@dataclass(frozen=True, slots=True)
class Permission:
    name: str
    label: Message  # `_l("...")`: shown in the reader's language
    group: str
    #: Built-in role keys that hold this function when a tenant is provisioned (editable later).
    grants: tuple[str, ...] = ()


_CATALOG: dict[str, Permission] = {}
#: Headings of permission groups a domain names (e.g. each CRM entity), for the permission grid.
_GROUPS: dict[str, Message] = {}


def register_group(name: str, label: Message) -> None:
    _GROUPS[name] = label


def group_label(name: str) -> Message | None:
    return _GROUPS.get(name)


def register(*permissions: Permission) -> None:
    for perm in permissions:
        _CATALOG[perm.name] = perm


def catalog() -> list[Permission]:
    return sorted(_CATALOG.values(), key=lambda p: (p.group, p.name))


def known(name: str) -> bool:
    return name in _CATALOG


def all_names() -> frozenset[str]:
    return frozenset(_CATALOG)


def default_grants(role_key: str) -> list[str]:
    """The functions a built-in role starts with, as the domains that registered them declared."""
    return sorted(p.name for p in _CATALOG.values() if role_key in p.grants)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a staff user, an API client or the platform itself (CLI, tasks)."""

    id: object | None
    label: str
    permissions: frozenset[str]
    kind: str = "user"  # user | client | system
    request_id: str | None = None
    ip: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(id=None, label=label, permissions=all_names(), kind="system")
