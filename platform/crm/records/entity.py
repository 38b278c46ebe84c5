"""What an entity declares, and the registry every generic piece (lists, API, import, search) reads.

An entity is data about a model: its fields, which of them are searched and shown, its permission
area, its number format and the records that hang off it (moved by a merge, transferred with it).
Behaviour that is really the entity's own (a contact moving between customers, a task recurring)
stays plain code in its package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.i18n import Message
from core.permissions import Permission, register, register_group
from crm.records.fields import Field, FieldType

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

    from crm.records.models import Record

#: The functions a role may be granted on each area (role × area × action).
ACTIONS = ("view", "create", "edit", "delete", "export", "import", "transfer", "merge")
ACTION_LABELS: dict[str, tuple[str, str]] = {
    "view": ("View", "查看"), "create": ("Create", "新建"), "edit": ("Edit", "编辑"), "delete": ("Delete", "删除"),
    "export": ("Export", "导出"), "import": ("Import", "导入"), "transfer": ("Transfer", "转移"),
    "merge": ("Merge", "合并"),
}


@dataclass(frozen=True, slots=True)
class Child:
    """Records of another entity that point at this one (contacts of a customer): a merge moves them
    to the surviving record; a transfer may take them along."""

    entity: str
    column: str
    transfer: bool = False


@dataclass(slots=True)
class Entity:
    key: str  # URL and permission area: "customers"
    model: type[Record]
    label_en: str
    label_zh: str
    plural_en: str
    plural_zh: str
    icon: str  # a Tabler icon name: "building"
    fields: tuple[Field, ...]
    title_field: str = "name"
    #: The default format of human numbers: {yyyy} {yy} {mm} {dd} and {seq} / {seq:05}.
    number_format: str = "{seq:06}"
    #: Fields whose text feeds the search vector (the title, codes, phones, emails …).
    search_fields: tuple[str, ...] = ()
    #: Fields compared for duplicates: exact match on these, fuzzy on the title.
    duplicate_fields: tuple[str, ...] = ()
    children: tuple[Child, ...] = ()
    #: The default columns of a list when no view says otherwise.
    list_columns: tuple[str, ...] = ()
    #: Extra description for the API documentation.
    doc: str = ""
    #: A function turning the record into extra text for search (e.g. the customer's name for a contact).
    extra_search: Callable[[Any], Sequence[str]] | None = None
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def label(self, locale: str) -> str:
        return self.label_zh if locale == "zh" else self.label_en

    def plural(self, locale: str) -> str:
        return self.plural_zh if locale == "zh" else self.plural_en

    def permission(self, action: str) -> str:
        return f"{self.key}.{action}"

    def field(self, key: str) -> Field | None:
        return next((f for f in self.fields if f.key == key), None)

    def column(self, key: str) -> InstrumentedAttribute[Any]:
        return getattr(self.model, key)  # type: ignore[no-any-return]


#: Columns of every record (crm.records.models.Record) as fields, appended to each entity's own.
def common_fields() -> tuple[Field, ...]:
    return (
        Field("number", FieldType.TEXT, "Number", "编号", readonly=True, max_length=40),
        Field("owner_id", FieldType.USER, "Owner", "负责人", aliases=("Owner email", "负责人邮箱")),
        Field("department_id", FieldType.REF, "Department", "部门", target="departments", readonly=True),
        Field("tags", FieldType.TAGS, "Tags", "标签"),
        Field("created_at", FieldType.DATETIME, "Created", "创建时间", readonly=True),
        Field("updated_at", FieldType.DATETIME, "Updated", "更新时间", readonly=True),
    )


_ENTITIES: dict[str, Entity] = {}


class _Label(Message):
    """A permission label made of two literal labels (entity data), not a catalog message."""

    def __init__(self, en: str, zh: str) -> None:
        super().__init__(en)
        self.zh = zh

    def __str__(self) -> str:
        from core.i18n import current_locale

        try:
            return self.zh if current_locale().language == "zh" else self.msgid
        except RuntimeError:  # no request: the CLI speaks English
            return self.msgid


def register_entity(entity: Entity) -> Entity:
    """Make the entity known, its fields completed with the common ones, its permissions registered."""
    own = {f.key for f in entity.fields}
    entity.fields = entity.fields + tuple(f for f in common_fields() if f.key not in own)
    _ENTITIES[entity.key] = entity
    register_group(entity.key, _Label(entity.plural_en, entity.plural_zh))
    for action in ACTIONS:
        en, zh = ACTION_LABELS[action]
        register(Permission(entity.permission(action),
                            _Label(f"{entity.plural_en}: {en.lower()}", f"{entity.plural_zh}：{zh}"),
                            entity.key, grants=entity.grants.get(action, ())))
    return entity


def entity(key: str) -> Entity:
    return _ENTITIES[key]


def find_entity(key: str) -> Entity | None:
    return _ENTITIES.get(key)


def entities() -> list[Entity]:
    return list(_ENTITIES.values())


#: The usual grants of a record area: everyone works with records, managers also reassign and merge.
STANDARD_GRANTS: dict[str, tuple[str, ...]] = {
    "view": ("manager", "sales", "service"),
    "create": ("manager", "sales", "service"),
    "edit": ("manager", "sales", "service"),
    "delete": ("manager",),
    "export": ("manager", "sales"),
    "import": ("manager",),
    "transfer": ("manager",),
    "merge": ("manager",),
}
