"""Activities (what happened: calls, visits, meetings, emails, notes) and tasks (what is to be done)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ARRAY, ForeignKey, Index, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import TenantBase
from crm.accounts.models import CONTACTS, CUSTOMERS
from crm.records.entity import STANDARD_GRANTS, Child, Entity, register_entity
from crm.records.fields import Choice, Field, FieldType
from crm.records.models import Record, record_indexes
from crm.records.services import OPEN_FILTERS, register_link


class Activity(Record, TenantBase):
    __tablename__ = "activities"

    kind: Mapped[str] = mapped_column(String(16))  # call | visit | meeting | email | note
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime]
    duration_min: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(200))
    next_follow_up: Mapped[dt.date | None]
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.customers.id", ondelete="SET NULL"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.contacts.id", ondelete="SET NULL"))
    #: Any other record it is about (an opportunity, an order, a ticket …), by entity key and id.
    related_entity: Mapped[str | None] = mapped_column(String(40))
    related_id: Mapped[uuid.UUID | None]
    #: Colleagues who took part (users); contacts who took part beyond ``contact_id``.
    participant_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default=text("'{}'"))

    __table_args__ = (
        *record_indexes("activities"),
        Index("ix_activities_customer_id", "customer_id", "occurred_at"),
        Index("ix_activities_contact_id", "contact_id", "occurred_at"),
        Index("ix_activities_related", "related_entity", "related_id", "occurred_at"),
        Index("ix_activities_occurred_at", "occurred_at", "id"),
    )


class Task(Record, TenantBase):
    __tablename__ = "tasks"

    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[dt.datetime | None]
    all_day: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    duration_min: Mapped[int | None]
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    status: Mapped[str] = mapped_column(String(12), default="open", server_default="open")  # open | done | cancelled
    completed_at: Mapped[dt.datetime | None]
    reminder_at: Mapped[dt.datetime | None]
    #: Set when the reminder went out; the beat job sends each reminder once, also after a restart.
    reminded_at: Mapped[dt.datetime | None]
    recurrence: Mapped[str | None] = mapped_column(String(8))  # daily | weekly | monthly | yearly
    recurrence_interval: Mapped[int] = mapped_column(default=1, server_default="1")
    recurrence_until: Mapped[dt.date | None]
    #: The occurrence of a repeating task this one follows; unique, so completing an occurrence creates
    #: its successor once, however many times (or how concurrently) it is completed.
    previous_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.tasks.id", ondelete="SET NULL"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.customers.id", ondelete="SET NULL"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.contacts.id", ondelete="SET NULL"))
    related_entity: Mapped[str | None] = mapped_column(String(40))
    related_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        *record_indexes("tasks"),
        Index("ix_tasks_customer_id", "customer_id", "due_at"),
        Index("ix_tasks_contact_id", "contact_id"),
        Index("ix_tasks_related", "related_entity", "related_id"),
        Index("ix_tasks_owner_due", "owner_id", "status", "due_at"),
        Index("ix_tasks_reminder_at", "reminder_at", postgresql_where=text("reminded_at IS NULL AND status = 'open'")),
        Index("uq_tasks_previous_id", "previous_id", unique=True),
        Index("ix_tasks_due_at", "due_at", "id", postgresql_where=text("deleted_at IS NULL")),
    )


ACTIVITY_KINDS = (
    Choice("call", "Call", "电话"), Choice("visit", "Visit", "拜访"), Choice("meeting", "Meeting", "会议"),
    Choice("email", "Email", "邮件"), Choice("note", "Note", "备注"),
)
PRIORITIES = (Choice("high", "High", "高"), Choice("normal", "Normal", "中"), Choice("low", "Low", "低"))
STATUSES = (Choice("open", "Open", "未完成"), Choice("done", "Done", "已完成"),
            Choice("cancelled", "Cancelled", "已取消"))
RECURRENCES = (Choice("daily", "Daily", "每天"), Choice("weekly", "Weekly", "每周"),
               Choice("monthly", "Monthly", "每月"), Choice("yearly", "Yearly", "每年"))

ACTIVITY_FIELDS = (
    Field("subject", FieldType.TEXT, "Subject", "主题", aliases=("Title", "标题"), required=True, list_order=2,
          searchable=True),
    Field("kind", FieldType.CHOICE, "Type", "类型", aliases=("Kind", "跟进方式"), required=True, default="call",
          choices=ACTIVITY_KINDS, list_order=1),
    Field("occurred_at", FieldType.DATETIME, "When", "时间", aliases=("Date", "日期", "跟进时间"), required=True,
          list_order=3),
    Field("customer_id", FieldType.REF, "Customer", "客户", target="customers", list_order=4),
    Field("contact_id", FieldType.REF, "Contact", "联系人", target="contacts"),
    Field("body", FieldType.LONGTEXT, "Details", "内容", aliases=("Content", "跟进内容"), searchable=True),
    Field("duration_min", FieldType.NUMBER, "Duration (minutes)", "时长（分钟）"),
    Field("outcome", FieldType.TEXT, "Outcome", "结果", searchable=True),
    Field("next_follow_up", FieldType.DATE, "Next follow-up", "下次跟进", list_order=5),
    Field("related_entity", FieldType.TEXT, "Related type", "关联类型", readonly=True, sortable=False),
    Field("related_id", FieldType.TEXT, "Related record", "关联记录", readonly=True, sortable=False),
)

TASK_FIELDS = (
    Field("title", FieldType.TEXT, "Title", "标题", aliases=("Subject", "主题"), required=True, list_order=1,
          searchable=True),
    Field("due_at", FieldType.DATETIME, "Due", "截止时间", aliases=("Due date", "到期"), list_order=2),
    Field("all_day", FieldType.BOOL, "All day", "全天"),
    Field("duration_min", FieldType.NUMBER, "Duration (minutes)", "时长（分钟）"),
    Field("priority", FieldType.CHOICE, "Priority", "优先级", default="normal", choices=PRIORITIES, list_order=3),
    Field("status", FieldType.CHOICE, "Status", "状态", default="open", choices=STATUSES, list_order=4),
    Field("customer_id", FieldType.REF, "Customer", "客户", target="customers", list_order=5),
    Field("contact_id", FieldType.REF, "Contact", "联系人", target="contacts"),
    Field("reminder_at", FieldType.DATETIME, "Remind at", "提醒时间"),
    Field("recurrence", FieldType.CHOICE, "Repeats", "重复", choices=RECURRENCES),
    Field("recurrence_interval", FieldType.NUMBER, "Every", "间隔"),
    Field("recurrence_until", FieldType.DATE, "Repeat until", "重复截止"),
    Field("body", FieldType.LONGTEXT, "Details", "说明", searchable=True),
    Field("completed_at", FieldType.DATETIME, "Completed", "完成时间", readonly=True),
    Field("related_entity", FieldType.TEXT, "Related type", "关联类型", readonly=True, sortable=False),
    Field("related_id", FieldType.TEXT, "Related record", "关联记录", readonly=True, sortable=False),
)

ACTIVITIES = register_entity(Entity(
    key="activities", model=Activity, label_en="Activity", label_zh="跟进记录", plural_en="Activities",
    plural_zh="跟进记录", icon="message-circle", fields=ACTIVITY_FIELDS, title_field="subject",
    number_format="HD{seq:07}", search_fields=("subject", "body", "outcome"),
    list_columns=("kind", "subject", "occurred_at", "customer_id", "owner_id"), grants=STANDARD_GRANTS,
))

TASKS = register_entity(Entity(
    key="tasks", model=Task, label_en="Task", label_zh="任务", plural_en="Tasks", plural_zh="任务",
    icon="checkbox", fields=TASK_FIELDS, title_field="title", number_format="RW{seq:07}",
    search_fields=("title", "body"),
    list_columns=("title", "due_at", "priority", "status", "customer_id", "owner_id"), grants=STANDARD_GRANTS,
))

# Activities and tasks hang off customers and contacts: a merge moves them, a transfer takes open tasks.
CUSTOMERS.children += (Child("activities", "customer_id"), Child("tasks", "customer_id", transfer=True))
CONTACTS.children += (Child("activities", "contact_id"), Child("tasks", "contact_id"))
OPEN_FILTERS["tasks"] = lambda model: (model.status == "open") & model.deleted_at.is_(None)
register_link(Activity)
register_link(Task)
