"""The tables of the record foundation, and the columns every CRM record carries.

An entity's model is ``class Customer(Record, TenantBase)`` with ``__table_args__ =
record_indexes("customers")``: it gets identity, who/when, version (core.db.TenantRecord), owner and
department (the data scope), a human number, custom field values, the search vector, the pinyin sort
key, tags and the recycle-bin columns. Everything that reads records (scope, lists, search, export,
history) relies on exactly these names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ARRAY, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from core.db import TenantBase, TenantRecord, utcnow, uuid7

#: How long a deleted record stays restorable in the recycle bin before the purge task removes it.
RECYCLE_DAYS = 30


class Record(TenantRecord):
    """The common columns and lifecycle of every CRM record (DESIGN rules 7-8)."""

    @declared_attr
    def owner_id(cls) -> Mapped[uuid.UUID | None]:  # noqa: N805 - SQLAlchemy passes the class
        # Users are deactivated, never deleted: the owner stays known after a rep leaves.
        return mapped_column(ForeignKey("tenant.users.id", ondelete="RESTRICT"))

    @declared_attr
    def department_id(cls) -> Mapped[uuid.UUID | None]:  # noqa: N805
        # The owner's department when the record was assigned: what department scopes filter on.
        return mapped_column(ForeignKey("tenant.departments.id", ondelete="SET NULL"))

    number: Mapped[str | None] = mapped_column(String(40))
    custom: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(40)), default=list, server_default=text("'{}'"))
    search_vector: Mapped[Any] = mapped_column(TSVECTOR, default=None, nullable=True, deferred=True)
    #: Pinyin order for Chinese names (crm.records.search.sort_key), compared byte-wise (COLLATE "C").
    sort_key: Mapped[str] = mapped_column(String(220, collation="C"), default="", server_default="")
    deleted_at: Mapped[dt.datetime | None]
    deleted_by: Mapped[uuid.UUID | None]


def record_indexes(table: str) -> tuple[Any, ...]:
    """The indexes every record table has: scope columns, list order, search, number, recycle bin."""
    live = text("deleted_at IS NULL")
    return (
        Index(f"ix_{table}_owner_id", "owner_id", "sort_key", "id", postgresql_where=live),
        Index(f"ix_{table}_department_id", "department_id", "sort_key", "id", postgresql_where=live),
        Index(f"ix_{table}_sort_key", "sort_key", "id", postgresql_where=live),
        Index(f"ix_{table}_updated_at", "updated_at", "id", postgresql_where=live),
        Index(f"ix_{table}_search_vector", "search_vector", postgresql_using="gin"),
        Index(f"ix_{table}_custom", "custom", postgresql_using="gin", postgresql_ops={"custom": "jsonb_path_ops"}),
        Index(f"ix_{table}_tags", "tags", postgresql_using="gin"),
        Index(f"uq_{table}_number", "number", unique=True),
        Index(f"ix_{table}_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )


class CustomField(TenantRecord, TenantBase):
    """A field a tenant admin added to an entity; its values live in the records' ``custom`` JSONB."""

    __tablename__ = "custom_fields"

    entity: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(16))
    label_en: Mapped[str] = mapped_column(String(100))
    label_zh: Mapped[str] = mapped_column(String(100), default="", server_default="")
    required: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    is_unique: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    default: Mapped[Any] = mapped_column(JSONB, default=None, nullable=True)
    #: CHOICE / MULTI: [{"value": ..., "label_en": ..., "label_zh": ...}]
    options: Mapped[list[dict[str, str]]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    sort_order: Mapped[int] = mapped_column(default=0, server_default="0")
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))

    __table_args__ = (UniqueConstraint("entity", "key"),)


class DictionaryItem(TenantRecord, TenantBase):
    """One value of a tenant's classification (customer nature, group, industry, source, level, region).

    ``parent_id`` makes a tree (regions: province → city); ``code`` is what records store, so a label
    can be renamed or translated without touching them.
    """

    __tablename__ = "dictionary_items"

    kind: Mapped[str] = mapped_column(String(40))
    code: Mapped[str] = mapped_column(String(40))
    label_en: Mapped[str] = mapped_column(String(100))
    label_zh: Mapped[str] = mapped_column(String(100), default="", server_default="")
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.dictionary_items.id",
                                                                   ondelete="RESTRICT"))
    sort_order: Mapped[int] = mapped_column(default=0, server_default="0")
    active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))

    __table_args__ = (UniqueConstraint("kind", "code"), Index("ix_dictionary_items_parent_id", "parent_id"))

    def label(self, locale: str) -> str:
        return (self.label_zh if locale == "zh" else self.label_en) or self.label_en or self.code


class NumberSequence(TenantBase):
    """The next human number of an entity in a period ('' for a running count, '2026' per year …)."""

    __tablename__ = "number_sequences"

    entity: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True, default="")
    next_value: Mapped[int] = mapped_column(BigInteger, default=1)


class NumberFormat(TenantRecord, TenantBase):
    """A tenant's format for an entity's numbers, e.g. ``KH-{yyyy}-{seq:05}``."""

    __tablename__ = "number_formats"

    entity: Mapped[str] = mapped_column(String(40), unique=True)
    pattern: Mapped[str] = mapped_column(String(60))


class RecordShare(TenantBase):
    """A record shared with a user or a department (and the departments below it is not implied)."""

    __tablename__ = "record_shares"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    entity: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.users.id", ondelete="CASCADE"))
    department_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.departments.id",
                                                                       ondelete="CASCADE"))
    access: Mapped[str] = mapped_column(String(8), default="read")  # read | edit
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[uuid.UUID | None]

    __table_args__ = (
        Index("ix_record_shares_user", "user_id", "entity", "record_id"),
        Index("ix_record_shares_department", "department_id", "entity", "record_id"),
        Index("ix_record_shares_record", "entity", "record_id"),
        UniqueConstraint("entity", "record_id", "user_id", "department_id", postgresql_nulls_not_distinct=True),
    )


class SavedView(TenantRecord, TenantBase):
    """A list's filters, sort and columns under a name: the owner's own, or shared with everyone."""

    __tablename__ = "saved_views"

    entity: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.users.id", ondelete="CASCADE"))
    shared: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    sort_order: Mapped[int] = mapped_column(default=0, server_default="0")

    __table_args__ = (Index("ix_saved_views_entity_owner", "entity", "owner_id"),)


class Attachment(TenantRecord, TenantBase):
    __tablename__ = "attachments"

    entity: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID]
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(300), unique=True)
    deleted_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_attachments_record", "entity", "record_id"),)


class Notification(TenantBase):
    """One line of a user's bell: reminders now, approvals and SLA warnings later."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: A path inside the workspace (``/customers/<id>``), never an absolute URL.
    link: Mapped[str] = mapped_column(String(300), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    read_at: Mapped[dt.datetime | None]
    #: What it is about, so that a notification whose record the user may no longer see is hidden.
    entity: Mapped[str | None] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID | None]

    __table_args__ = (Index("ix_notifications_user", "user_id", "read_at", "id"),)
