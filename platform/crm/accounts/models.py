"""Customers (accounts), their contacts and the relationships between customers."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import TenantBase, TenantRecord
from crm.records.entity import STANDARD_GRANTS, Child, Entity, register_entity
from crm.records.fields import Choice, Field, FieldType
from crm.records.models import Record, record_indexes


class Customer(Record, TenantBase):
    __tablename__ = "customers"

    name: Mapped[str] = mapped_column(String(200))
    short_name: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8), default="b2b", server_default="b2b")  # b2b | b2c
    website: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(40))
    fax: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(254))
    region: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(String(300))
    main_contact: Mapped[str | None] = mapped_column(String(100))
    nature: Mapped[str | None] = mapped_column(String(40))
    customer_group: Mapped[str | None] = mapped_column(String(40))
    industry: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str | None] = mapped_column(String(40))
    level: Mapped[str | None] = mapped_column(String(40))
    bank: Mapped[str | None] = mapped_column(String(100))
    bank_account: Mapped[str | None] = mapped_column(String(60))
    tax_no: Mapped[str | None] = mapped_column(String(40))
    legal_rep: Mapped[str | None] = mapped_column(String(100))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.customers.id", ondelete="SET NULL"))
    remark: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        *record_indexes("customers"),
        Index("ix_customers_parent_id", "parent_id"),
        Index("ix_customers_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "public.gin_trgm_ops"}),
        Index("ix_customers_phone", "phone"),
        Index("ix_customers_email_lower", text("lower(email)")),
        # The list's usual filters, in name order: a filtered count is an index range, not a scan of
        # every (wide) row (tenant migration 0005, bench/crm.py).
        *(Index(f"ix_customers_{name}", name, "sort_key", "id", postgresql_where=text("deleted_at IS NULL"))
          for name in ("region", "industry", "level")),
    )


class Contact(Record, TenantBase):
    __tablename__ = "contacts"

    name: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.customers.id", ondelete="SET NULL"))
    gender: Mapped[str | None] = mapped_column(String(8))
    department: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str | None] = mapped_column(String(100))
    nationality: Mapped[str | None] = mapped_column(String(60))
    mobile: Mapped[str | None] = mapped_column(String(40))
    office_phone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(254))
    office_address: Mapped[str | None] = mapped_column(String(300))
    home_address: Mapped[str | None] = mapped_column(String(300))
    home_phone: Mapped[str | None] = mapped_column(String(40))
    birthday: Mapped[dt.date | None]
    hobbies: Mapped[str | None] = mapped_column(String(300))
    is_primary: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    importance: Mapped[str | None] = mapped_column(String(8))
    decision_role: Mapped[str | None] = mapped_column(String(16))
    contact_type: Mapped[str | None] = mapped_column(String(16))
    #: Whom the contact reports to inside the customer: the customer's org chart.
    reports_to_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.contacts.id", ondelete="SET NULL"))
    remark: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        *record_indexes("contacts"),
        Index("ix_contacts_customer_id", "customer_id", "sort_key", "id"),
        Index("ix_contacts_reports_to_id", "reports_to_id"),
        Index("ix_contacts_mobile", "mobile"),
        Index("ix_contacts_email_lower", text("lower(email)")),
    )


class CustomerRelation(TenantRecord, TenantBase):
    """A relationship between two customers beyond the group tree (partner, supplier, competitor …)."""

    __tablename__ = "customer_relations"

    from_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.customers.id", ondelete="CASCADE"))
    to_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(300), default="", server_default="")

    __table_args__ = (UniqueConstraint("from_id", "to_id", "kind"), Index("ix_customer_relations_to_id", "to_id"))


RELATION_KINDS = (
    Choice("partner", "Partner", "合作伙伴"), Choice("supplier", "Supplier", "供应商"),
    Choice("distributor", "Distributor", "经销商"), Choice("competitor", "Competitor", "竞争对手"),
    Choice("affiliate", "Affiliate", "关联公司"), Choice("other", "Other", "其他"),
)

CUSTOMER_FIELDS = (
    Field("name", FieldType.TEXT, "Customer name", "客户名称", aliases=("Company name", "公司名称", "Name", "名称"),
          required=True, list_order=1, searchable=True),
    Field("short_name", FieldType.TEXT, "Short name", "简称", max_length=100, searchable=True),
    Field("kind", FieldType.CHOICE, "Customer type", "客户类型", default="b2b",
          choices=(Choice("b2b", "Business (B2B)", "企业客户"), Choice("b2c", "Individual (B2C)", "个人客户"))),
    Field("level", FieldType.DICT, "Level", "客户级别", target="customer_level", list_order=4),
    Field("nature", FieldType.DICT, "Nature", "客户性质", target="customer_nature"),
    Field("customer_group", FieldType.DICT, "Customer group", "客户组别", aliases=("Group", "组别"),
          target="customer_group"),
    Field("industry", FieldType.DICT, "Industry", "行业", aliases=("所属行业",), target="industry", list_order=3),
    Field("source", FieldType.DICT, "Source", "客户来源", aliases=("来源",), target="customer_source"),
    Field("region", FieldType.DICT, "Region", "所在地区", aliases=("地区", "Area"), target="region", list_order=2),
    Field("phone", FieldType.PHONE, "Phone", "联系电话", aliases=("公司电话", "电话", "Telephone"), max_length=40,
          list_order=5, searchable=True),
    Field("fax", FieldType.PHONE, "Fax", "公司传真", aliases=("传真",), max_length=40, section="contact"),
    Field("email", FieldType.EMAIL, "Email", "电子邮箱", aliases=("邮箱", "E-mail"), max_length=254,
          searchable=True, section="contact"),
    Field("website", FieldType.URL, "Website", "公司网站", aliases=("网站", "网址"), max_length=500, section="contact"),
    Field("address", FieldType.TEXT, "Address", "公司地址", aliases=("地址",), max_length=300, searchable=True,
          section="contact"),
    Field("main_contact", FieldType.TEXT, "Main contact", "主要联系人", max_length=100, searchable=True,
          section="contact"),
    Field("parent_id", FieldType.REF, "Parent company", "上级公司", target="customers", section="contact"),
    Field("bank", FieldType.TEXT, "Bank", "开户银行", aliases=("开户行",), max_length=100, section="finance"),
    Field("bank_account", FieldType.TEXT, "Bank account no.", "银行账号", aliases=("账号",), max_length=60,
          section="finance"),
    Field("tax_no", FieldType.TEXT, "Tax no.", "税号", aliases=("纳税人识别号",), max_length=40, section="finance"),
    Field("legal_rep", FieldType.TEXT, "Legal representative", "法人代表", max_length=100, section="finance"),
    Field("remark", FieldType.LONGTEXT, "Remarks", "备注", aliases=("Notes",), section="other"),
)

DECISION_ROLES = (
    Choice("economic", "Economic buyer", "经济决策者"), Choice("technical", "Technical buyer", "技术决策者"),
    Choice("user", "User buyer", "使用者"), Choice("coach", "Coach", "内线"),
    Choice("influencer", "Influencer", "影响者"),
)

CONTACT_FIELDS = (
    Field("name", FieldType.TEXT, "Name", "姓名", aliases=("Contact name", "联系人", "联系人姓名"), required=True,
          max_length=100, list_order=1, searchable=True),
    Field("customer_id", FieldType.REF, "Customer", "客户", aliases=("公司名称", "Company"), target="customers",
          list_order=2),
    Field("title", FieldType.TEXT, "Job title", "职务", aliases=("Title", "职位"), max_length=100, list_order=3,
          searchable=True),
    Field("department", FieldType.TEXT, "Department", "部门", max_length=100, searchable=True),
    Field("mobile", FieldType.PHONE, "Mobile", "手机", aliases=("手机号",), max_length=40, list_order=4,
          searchable=True),
    Field("office_phone", FieldType.PHONE, "Office phone", "办公电话", max_length=40, searchable=True),
    Field("email", FieldType.EMAIL, "Email", "电子邮件", aliases=("邮箱", "E-mail"), max_length=254, list_order=5,
          searchable=True),
    Field("gender", FieldType.CHOICE, "Gender", "性别",
          choices=(Choice("m", "Male", "男"), Choice("f", "Female", "女"))),
    Field("is_primary", FieldType.BOOL, "Primary contact", "主要联系人"),
    Field("importance", FieldType.CHOICE, "Importance", "重要程度",
          choices=(Choice("high", "High", "高"), Choice("medium", "Medium", "中"), Choice("low", "Low", "低"))),
    Field("decision_role", FieldType.CHOICE, "Decision role", "决策角色", aliases=("Influence", "影响力"),
          choices=DECISION_ROLES),
    Field("contact_type", FieldType.CHOICE, "Contact type", "联系人类型",
          choices=(Choice("customer", "Customer", "客户"), Choice("prospect", "Prospect", "潜在客户"),
                   Choice("partner", "Partner", "合作伙伴"))),
    Field("reports_to_id", FieldType.REF, "Reports to", "直属上级", target="contacts", section="org"),
    Field("nationality", FieldType.TEXT, "Nationality", "国籍", max_length=60, section="personal"),
    Field("office_address", FieldType.TEXT, "Office address", "办公地址", max_length=300, section="personal"),
    Field("home_address", FieldType.TEXT, "Home address", "家庭地址", max_length=300, section="personal"),
    Field("home_phone", FieldType.PHONE, "Home phone", "家庭电话", max_length=40, section="personal"),
    Field("birthday", FieldType.DATE, "Birthday", "生日", aliases=("出生日期",), section="personal"),
    Field("hobbies", FieldType.TEXT, "Hobbies", "爱好", max_length=300, section="personal"),
    Field("remark", FieldType.LONGTEXT, "Remarks", "备注", section="other"),
)


CUSTOMERS = register_entity(Entity(
    key="customers", model=Customer, label_en="Customer", label_zh="客户", plural_en="Customers",
    plural_zh="客户", icon="building", fields=CUSTOMER_FIELDS, number_format="KH-{yyyy}-{seq:05}",
    search_fields=("name", "short_name", "phone", "email", "address", "main_contact", "tax_no"),
    duplicate_fields=("phone", "email", "tax_no"),
    children=(Child("contacts", "customer_id", transfer=True), Child("customers", "parent_id")),
    list_columns=("number", "name", "region", "industry", "level", "phone", "owner_id", "updated_at"),
    grants=STANDARD_GRANTS,
))

CONTACTS = register_entity(Entity(
    key="contacts", model=Contact, label_en="Contact", label_zh="联系人", plural_en="Contacts",
    plural_zh="联系人", icon="address-book", fields=CONTACT_FIELDS, number_format="LXR{seq:06}",
    search_fields=("name", "title", "department", "mobile", "office_phone", "email"),
    duplicate_fields=("mobile", "email"),
    children=(Child("contacts", "reports_to_id"),),
    list_columns=("name", "customer_id", "title", "mobile", "email", "owner_id"),
    grants=STANDARD_GRANTS,
))
