"""Import jobs: an uploaded file kept until a worker has imported it, with its progress and result.

DDL frozen here as the model (crm.records.import_jobs.ImportJob) created it on 2026-12-02.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = [
    ("CREATE TABLE import_jobs ( entity VARCHAR(40) NOT NULL, filename VARCHAR(255) NOT NULL, "
     "size BIGINT NOT NULL, data BYTEA, mapping JSONB DEFAULT '{}'::jsonb NOT NULL, "
     "dry_run BOOLEAN DEFAULT false NOT NULL, skip_invalid BOOLEAN DEFAULT false NOT NULL, "
     "status VARCHAR(16) DEFAULT 'uploaded' NOT NULL, phase VARCHAR(16) DEFAULT '' NOT NULL, "
     "progress BIGINT DEFAULT '0' NOT NULL, result JSONB, error VARCHAR(500), "
     "finished_at TIMESTAMP WITH TIME ZONE, id UUID NOT NULL, "
     "created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, "
     "updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, created_by UUID, updated_by UUID, "
     "version BIGINT DEFAULT '1' NOT NULL, CONSTRAINT pk_import_jobs PRIMARY KEY (id) )"),
    ("CREATE INDEX ix_import_jobs_created_by ON import_jobs (created_by, created_at)"),
]


def upgrade():
    for statement in TABLES:
        op.execute(statement)


def downgrade():
    op.execute("DROP TABLE import_jobs")
