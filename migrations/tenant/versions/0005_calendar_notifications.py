"""Tasks and calendar, notifications: users' preferences (notification mail, calendar feed token) and
the link from a repeating task's occurrence to the one it follows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE user_preferences ( user_id UUID NOT NULL, "
               "email_notifications BOOLEAN DEFAULT true NOT NULL, calendar_token_digest VARCHAR(64), "
               "calendar_token_created_at TIMESTAMP WITH TIME ZONE, "
               "updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, "
               "CONSTRAINT pk_user_preferences PRIMARY KEY (user_id), "
               "CONSTRAINT fk_user_preferences_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) "
               "ON DELETE CASCADE )")
    op.execute("CREATE UNIQUE INDEX uq_user_preferences_calendar_token ON user_preferences (calendar_token_digest)")
    op.execute("ALTER TABLE tasks ADD COLUMN previous_id UUID")
    op.execute("ALTER TABLE tasks ADD CONSTRAINT fk_tasks_previous_id_tasks FOREIGN KEY(previous_id) "
               "REFERENCES tasks (id) ON DELETE SET NULL")
    op.execute("CREATE UNIQUE INDEX uq_tasks_previous_id ON tasks (previous_id)")
    op.execute("CREATE INDEX ix_tasks_due_at ON tasks (due_at, id) WHERE deleted_at IS NULL")


def downgrade():
    op.execute("DROP INDEX ix_tasks_due_at")
    op.execute("DROP INDEX uq_tasks_previous_id")
    op.execute("ALTER TABLE tasks DROP COLUMN previous_id")
    op.execute("DROP TABLE user_preferences")
