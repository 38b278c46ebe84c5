"""The CRM's record foundation: customers, contacts, activities, tasks and what every record uses.

New tables (DDL frozen here as the models created it on 2026-12-02, so that later model changes do
not change what this step does), the roles' data scope, the CRM functions granted to the built-in
roles, and the starting dictionaries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import json

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = [
    ('CREATE TABLE attachments ( entity VARCHAR(40) NOT NULL, record_id UUID NOT NULL, '
     'filename VARCHAR(255) NOT NULL, content_type VARCHAR(100) NOT NULL, size BIGINT NOT NULL, '
     'sha256 VARCHAR(64) NOT NULL, storage_key VARCHAR(300) NOT NULL, '
     'deleted_at TIMESTAMP WITH TIME ZONE, id UUID NOT NULL, '
     'created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_attachments PRIMARY KEY (id), "
     'CONSTRAINT uq_attachments_storage_key UNIQUE (storage_key) )'),
    ('CREATE INDEX ix_attachments_record ON attachments (entity, record_id)'),
    ('CREATE TABLE custom_fields ( entity VARCHAR(40) NOT NULL, key VARCHAR(40) NOT NULL, '
     'type VARCHAR(16) NOT NULL, label_en VARCHAR(100) NOT NULL, '
     "label_zh VARCHAR(100) DEFAULT '' NOT NULL, required BOOLEAN DEFAULT false NOT NULL, "
     'is_unique BOOLEAN DEFAULT false NOT NULL, "default" JSONB, '
     "options JSONB DEFAULT '[]'::jsonb NOT NULL, sort_order INTEGER DEFAULT '0' NOT NULL, "
     'active BOOLEAN DEFAULT true NOT NULL, id UUID NOT NULL, '
     'created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_custom_fields PRIMARY KEY (id), "
     'CONSTRAINT uq_custom_fields_entity_key UNIQUE (entity, key) )'),
    ('CREATE TABLE dictionary_items ( kind VARCHAR(40) NOT NULL, code VARCHAR(40) NOT NULL, '
     "label_en VARCHAR(100) NOT NULL, label_zh VARCHAR(100) DEFAULT '' NOT NULL, parent_id UUID, "
     "sort_order INTEGER DEFAULT '0' NOT NULL, active BOOLEAN DEFAULT true NOT NULL, id UUID NOT NULL, "
     'created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_dictionary_items PRIMARY KEY (id), "
     'CONSTRAINT uq_dictionary_items_kind_code UNIQUE (kind, code), '
     'CONSTRAINT fk_dictionary_items_parent_id_dictionary_items FOREIGN KEY(parent_id) REFERENCES dictionary_items (id) ON DELETE RESTRICT )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_dictionary_items_parent_id ON dictionary_items (parent_id)'),
    ('CREATE TABLE number_formats ( entity VARCHAR(40) NOT NULL, pattern VARCHAR(60) NOT NULL, '
     'id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_number_formats PRIMARY KEY (id), "
     'CONSTRAINT uq_number_formats_entity UNIQUE (entity) )'),
    ('CREATE TABLE number_sequences ( entity VARCHAR(40) NOT NULL, period VARCHAR(16) NOT NULL, '
     'next_value BIGINT NOT NULL, CONSTRAINT pk_number_sequences PRIMARY KEY (entity, period) )'),
    ('CREATE TABLE customers ( name VARCHAR(200) NOT NULL, short_name VARCHAR(100), '
     "kind VARCHAR(8) DEFAULT 'b2b' NOT NULL, website VARCHAR(500), phone VARCHAR(40), fax VARCHAR(40), "
     'email VARCHAR(254), region VARCHAR(40), address VARCHAR(300), main_contact VARCHAR(100), '
     'nature VARCHAR(40), customer_group VARCHAR(40), industry VARCHAR(40), source VARCHAR(40), '
     'level VARCHAR(40), bank VARCHAR(100), bank_account VARCHAR(60), tax_no VARCHAR(40), '
     'legal_rep VARCHAR(100), parent_id UUID, remark TEXT, number VARCHAR(40), '
     "custom JSONB DEFAULT '{}'::jsonb NOT NULL, tags VARCHAR(40)[] DEFAULT '{}' NOT NULL, "
     'search_vector TSVECTOR, sort_key VARCHAR(220) COLLATE "C" DEFAULT \'\' NOT NULL, '
     'deleted_at TIMESTAMP WITH TIME ZONE, deleted_by UUID, owner_id UUID, department_id UUID, '
     'id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_customers PRIMARY KEY (id), "
     'CONSTRAINT fk_customers_parent_id_customers FOREIGN KEY(parent_id) REFERENCES customers (id) ON DELETE SET NULL, '
     'CONSTRAINT fk_customers_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE RESTRICT, '
     'CONSTRAINT fk_customers_department_id_departments FOREIGN KEY(department_id) REFERENCES departments (id) ON DELETE SET NULL )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_customers_custom ON customers USING gin (custom jsonb_path_ops)'),
    ('CREATE INDEX ix_customers_deleted_at ON customers (deleted_at) WHERE deleted_at IS NOT NULL'),
    ('CREATE INDEX ix_customers_department_id ON customers (department_id, sort_key, '
     'id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_customers_email_lower ON customers (lower(email))'),
    ('CREATE INDEX ix_customers_name_trgm ON customers USING gin (name public.gin_trgm_ops)'),
    ('CREATE INDEX ix_customers_owner_id ON customers (owner_id, sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_customers_parent_id ON customers (parent_id)'),
    ('CREATE INDEX ix_customers_phone ON customers (phone)'),
    ('CREATE INDEX ix_customers_search_vector ON customers USING gin (search_vector)'),
    ('CREATE INDEX ix_customers_sort_key ON customers (sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_customers_tags ON customers USING gin (tags)'),
    ('CREATE INDEX ix_customers_updated_at ON customers (updated_at, id) WHERE deleted_at IS NULL'),
    ('CREATE UNIQUE INDEX uq_customers_number ON customers (number)'),
    ('CREATE TABLE notifications ( id UUID NOT NULL, user_id UUID NOT NULL, kind VARCHAR(40) NOT NULL, '
     "title VARCHAR(300) NOT NULL, body TEXT DEFAULT '' NOT NULL, link VARCHAR(300) DEFAULT '' NOT NULL, "
     'created_at TIMESTAMP WITH TIME ZONE NOT NULL, read_at TIMESTAMP WITH TIME ZONE, entity VARCHAR(40), '
     'record_id UUID, CONSTRAINT pk_notifications PRIMARY KEY (id), '
     'CONSTRAINT fk_notifications_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE )'),
    ('CREATE INDEX ix_notifications_user ON notifications (user_id, read_at, id)'),
    ('CREATE TABLE record_shares ( id UUID NOT NULL, entity VARCHAR(40) NOT NULL, '
     'record_id UUID NOT NULL, user_id UUID, department_id UUID, access VARCHAR(8) NOT NULL, '
     'created_at TIMESTAMP WITH TIME ZONE NOT NULL, created_by UUID, '
     'CONSTRAINT pk_record_shares PRIMARY KEY (id), '
     'CONSTRAINT uq_record_shares_entity_record_id_user_id_department_id UNIQUE NULLS NOT DISTINCT (entity, '
     'record_id, user_id, department_id), '
     'CONSTRAINT fk_record_shares_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE, '
     'CONSTRAINT fk_record_shares_department_id_departments FOREIGN KEY(department_id) REFERENCES departments (id) ON DELETE CASCADE )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_record_shares_department ON record_shares (department_id, entity, record_id)'),
    ('CREATE INDEX ix_record_shares_record ON record_shares (entity, record_id)'),
    ('CREATE INDEX ix_record_shares_user ON record_shares (user_id, entity, record_id)'),
    ('CREATE TABLE saved_views ( entity VARCHAR(40) NOT NULL, name VARCHAR(100) NOT NULL, owner_id UUID, '
     'shared BOOLEAN DEFAULT false NOT NULL, spec JSONB NOT NULL, '
     "sort_order INTEGER DEFAULT '0' NOT NULL, id UUID NOT NULL, "
     'created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_saved_views PRIMARY KEY (id), "
     'CONSTRAINT fk_saved_views_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE CASCADE )'),
    ('CREATE INDEX ix_saved_views_entity_owner ON saved_views (entity, owner_id)'),
    ('CREATE TABLE contacts ( name VARCHAR(100) NOT NULL, customer_id UUID, gender VARCHAR(8), '
     'department VARCHAR(100), title VARCHAR(100), nationality VARCHAR(60), mobile VARCHAR(40), '
     'office_phone VARCHAR(40), email VARCHAR(254), office_address VARCHAR(300), '
     'home_address VARCHAR(300), home_phone VARCHAR(40), birthday DATE, hobbies VARCHAR(300), '
     'is_primary BOOLEAN DEFAULT false NOT NULL, importance VARCHAR(8), decision_role VARCHAR(16), '
     'contact_type VARCHAR(16), reports_to_id UUID, remark TEXT, number VARCHAR(40), '
     "custom JSONB DEFAULT '{}'::jsonb NOT NULL, tags VARCHAR(40)[] DEFAULT '{}' NOT NULL, "
     'search_vector TSVECTOR, sort_key VARCHAR(220) COLLATE "C" DEFAULT \'\' NOT NULL, '
     'deleted_at TIMESTAMP WITH TIME ZONE, deleted_by UUID, owner_id UUID, department_id UUID, '
     'id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_contacts PRIMARY KEY (id), "
     'CONSTRAINT fk_contacts_customer_id_customers FOREIGN KEY(customer_id) REFERENCES customers (id) ON DELETE SET NULL, '  # noqa: E501 - frozen DDL
     'CONSTRAINT fk_contacts_reports_to_id_contacts FOREIGN KEY(reports_to_id) REFERENCES contacts (id) ON DELETE SET NULL, '  # noqa: E501 - frozen DDL
     'CONSTRAINT fk_contacts_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE RESTRICT, '
     'CONSTRAINT fk_contacts_department_id_departments FOREIGN KEY(department_id) REFERENCES departments (id) ON DELETE SET NULL )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_contacts_custom ON contacts USING gin (custom jsonb_path_ops)'),
    ('CREATE INDEX ix_contacts_customer_id ON contacts (customer_id, sort_key, id)'),
    ('CREATE INDEX ix_contacts_deleted_at ON contacts (deleted_at) WHERE deleted_at IS NOT NULL'),
    ('CREATE INDEX ix_contacts_department_id ON contacts (department_id, sort_key, '
     'id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_contacts_email_lower ON contacts (lower(email))'),
    ('CREATE INDEX ix_contacts_mobile ON contacts (mobile)'),
    ('CREATE INDEX ix_contacts_owner_id ON contacts (owner_id, sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_contacts_reports_to_id ON contacts (reports_to_id)'),
    ('CREATE INDEX ix_contacts_search_vector ON contacts USING gin (search_vector)'),
    ('CREATE INDEX ix_contacts_sort_key ON contacts (sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_contacts_tags ON contacts USING gin (tags)'),
    ('CREATE INDEX ix_contacts_updated_at ON contacts (updated_at, id) WHERE deleted_at IS NULL'),
    ('CREATE UNIQUE INDEX uq_contacts_number ON contacts (number)'),
    ('CREATE TABLE customer_relations ( from_id UUID NOT NULL, to_id UUID NOT NULL, '
     "kind VARCHAR(16) NOT NULL, note VARCHAR(300) DEFAULT '' NOT NULL, id UUID NOT NULL, "
     'created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_customer_relations PRIMARY KEY (id), "
     'CONSTRAINT uq_customer_relations_from_id_to_id_kind UNIQUE (from_id, to_id, kind), '
     'CONSTRAINT fk_customer_relations_from_id_customers FOREIGN KEY(from_id) REFERENCES customers (id) ON DELETE CASCADE, '  # noqa: E501 - frozen DDL
     'CONSTRAINT fk_customer_relations_to_id_customers FOREIGN KEY(to_id) REFERENCES customers (id) ON DELETE CASCADE )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_customer_relations_to_id ON customer_relations (to_id)'),
    ('CREATE TABLE activities ( kind VARCHAR(16) NOT NULL, subject VARCHAR(200) NOT NULL, body TEXT, '
     'occurred_at TIMESTAMP WITH TIME ZONE NOT NULL, duration_min INTEGER, outcome VARCHAR(200), '
     'next_follow_up DATE, customer_id UUID, contact_id UUID, related_entity VARCHAR(40), '
     "related_id UUID, participant_ids UUID[] DEFAULT '{}' NOT NULL, number VARCHAR(40), "
     "custom JSONB DEFAULT '{}'::jsonb NOT NULL, tags VARCHAR(40)[] DEFAULT '{}' NOT NULL, "
     'search_vector TSVECTOR, sort_key VARCHAR(220) COLLATE "C" DEFAULT \'\' NOT NULL, '
     'deleted_at TIMESTAMP WITH TIME ZONE, deleted_by UUID, owner_id UUID, department_id UUID, '
     'id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_activities PRIMARY KEY (id), "
     'CONSTRAINT fk_activities_customer_id_customers FOREIGN KEY(customer_id) REFERENCES customers (id) ON DELETE SET NULL, '  # noqa: E501 - frozen DDL
     'CONSTRAINT fk_activities_contact_id_contacts FOREIGN KEY(contact_id) REFERENCES contacts (id) ON DELETE SET NULL, '  # noqa: E501 - frozen DDL
     'CONSTRAINT fk_activities_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE RESTRICT, '
     'CONSTRAINT fk_activities_department_id_departments FOREIGN KEY(department_id) REFERENCES departments (id) ON DELETE SET NULL )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_activities_contact_id ON activities (contact_id, occurred_at)'),
    ('CREATE INDEX ix_activities_custom ON activities USING gin (custom jsonb_path_ops)'),
    ('CREATE INDEX ix_activities_customer_id ON activities (customer_id, occurred_at)'),
    ('CREATE INDEX ix_activities_deleted_at ON activities (deleted_at) WHERE deleted_at IS NOT NULL'),
    ('CREATE INDEX ix_activities_department_id ON activities (department_id, sort_key, '
     'id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_activities_occurred_at ON activities (occurred_at, id)'),
    ('CREATE INDEX ix_activities_owner_id ON activities (owner_id, sort_key, '
     'id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_activities_related ON activities (related_entity, related_id, occurred_at)'),
    ('CREATE INDEX ix_activities_search_vector ON activities USING gin (search_vector)'),
    ('CREATE INDEX ix_activities_sort_key ON activities (sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_activities_tags ON activities USING gin (tags)'),
    ('CREATE INDEX ix_activities_updated_at ON activities (updated_at, id) WHERE deleted_at IS NULL'),
    ('CREATE UNIQUE INDEX uq_activities_number ON activities (number)'),
    ('CREATE TABLE tasks ( title VARCHAR(200) NOT NULL, body TEXT, due_at TIMESTAMP WITH TIME ZONE, '
     'all_day BOOLEAN DEFAULT false NOT NULL, duration_min INTEGER, '
     "priority VARCHAR(8) DEFAULT 'normal' NOT NULL, status VARCHAR(12) DEFAULT 'open' NOT NULL, "
     'completed_at TIMESTAMP WITH TIME ZONE, reminder_at TIMESTAMP WITH TIME ZONE, '
     'reminded_at TIMESTAMP WITH TIME ZONE, recurrence VARCHAR(8), '
     "recurrence_interval INTEGER DEFAULT '1' NOT NULL, recurrence_until DATE, customer_id UUID, "
     'contact_id UUID, related_entity VARCHAR(40), related_id UUID, number VARCHAR(40), '
     "custom JSONB DEFAULT '{}'::jsonb NOT NULL, tags VARCHAR(40)[] DEFAULT '{}' NOT NULL, "
     'search_vector TSVECTOR, sort_key VARCHAR(220) COLLATE "C" DEFAULT \'\' NOT NULL, '
     'deleted_at TIMESTAMP WITH TIME ZONE, deleted_by UUID, owner_id UUID, department_id UUID, '
     'id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, '
     'updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, '
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_tasks PRIMARY KEY (id), "
     'CONSTRAINT fk_tasks_customer_id_customers FOREIGN KEY(customer_id) REFERENCES customers (id) ON DELETE SET NULL, '
     'CONSTRAINT fk_tasks_contact_id_contacts FOREIGN KEY(contact_id) REFERENCES contacts (id) ON DELETE SET NULL, '
     'CONSTRAINT fk_tasks_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id) ON DELETE RESTRICT, '
     'CONSTRAINT fk_tasks_department_id_departments FOREIGN KEY(department_id) REFERENCES departments (id) ON DELETE SET NULL )'),  # noqa: E501 - frozen DDL
    ('CREATE INDEX ix_tasks_contact_id ON tasks (contact_id)'),
    ('CREATE INDEX ix_tasks_custom ON tasks USING gin (custom jsonb_path_ops)'),
    ('CREATE INDEX ix_tasks_customer_id ON tasks (customer_id, due_at)'),
    ('CREATE INDEX ix_tasks_deleted_at ON tasks (deleted_at) WHERE deleted_at IS NOT NULL'),
    ('CREATE INDEX ix_tasks_department_id ON tasks (department_id, sort_key, '
     'id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_tasks_owner_due ON tasks (owner_id, status, due_at)'),
    ('CREATE INDEX ix_tasks_owner_id ON tasks (owner_id, sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_tasks_related ON tasks (related_entity, related_id)'),
    ("CREATE INDEX ix_tasks_reminder_at ON tasks (reminder_at) WHERE reminded_at IS NULL AND status = 'open'"),
    ('CREATE INDEX ix_tasks_search_vector ON tasks USING gin (search_vector)'),
    ('CREATE INDEX ix_tasks_sort_key ON tasks (sort_key, id) WHERE deleted_at IS NULL'),
    ('CREATE INDEX ix_tasks_tags ON tasks USING gin (tags)'),
    ('CREATE INDEX ix_tasks_updated_at ON tasks (updated_at, id) WHERE deleted_at IS NULL'),
    ('CREATE UNIQUE INDEX uq_tasks_number ON tasks (number)'),
]

AREAS = ("customers", "contacts", "activities", "tasks")
#: The grants of crm.records.entity.STANDARD_GRANTS, as they were when this step was written.
GRANTS = {
    "manager": ("view", "create", "edit", "delete", "export", "import", "transfer", "merge"),
    "sales": ("view", "create", "edit", "export"),
    "service": ("view", "create", "edit", "export"),
}
SCOPES = {"admin": "all", "manager": "subtree", "sales": "own", "service": "own"}


def upgrade():
    op.execute("ALTER TABLE roles ADD COLUMN data_scope VARCHAR(16) DEFAULT 'own' NOT NULL")
    for key, scope in SCOPES.items():
        op.execute(text("UPDATE roles SET data_scope = :s WHERE key = :k AND builtin").bindparams(s=scope, k=key))
    for key, actions in GRANTS.items():
        names = [f"{area}.{action}" for area in AREAS for action in actions]
        op.execute(text("UPDATE roles SET permissions = ARRAY(SELECT DISTINCT unnest(permissions || "
                        "CAST(:p AS varchar(64)[])) ORDER BY 1) WHERE key = :k AND builtin")
                   .bindparams(p=names, k=key))
    for statement in TABLES:
        op.execute(statement)
    from crm.records.seeds import DICTIONARIES

    op.execute(text("INSERT INTO dictionary_items (id, kind, code, label_en, label_zh, sort_order, parent_id) "
                    "SELECT gen_random_uuid(), d->>'kind', d->>'code', d->>'en', d->>'zh', (d->>'order')::int, NULL "
                    "FROM jsonb_array_elements(CAST(:rows AS jsonb)) d")
               .bindparams(rows=json.dumps([{"kind": k, "code": c, "en": en, "zh": zh, "order": i}
                                           for i, (k, c, en, zh, _p) in enumerate(DICTIONARIES)])))
    op.execute(text("UPDATE dictionary_items i SET parent_id = p.id FROM dictionary_items p, "
                    "jsonb_array_elements(CAST(:rows AS jsonb)) d WHERE i.kind = d->>'kind' AND i.code = d->>'code' "
                    "AND p.kind = d->>'kind' AND p.code = d->>'parent'")
               .bindparams(rows=json.dumps([{"kind": k, "code": c, "parent": p}
                                           for (k, c, _en, _zh, p) in DICTIONARIES if p])))


def downgrade():
    for table in ("saved_views", "record_shares", "number_sequences", "number_formats", "notifications",
                  "customer_relations", "tasks", "activities", "contacts", "customers", "dictionary_items",
                  "custom_fields", "attachments"):
        op.execute(f"DROP TABLE {table}")
    op.execute("ALTER TABLE roles DROP COLUMN data_scope")
