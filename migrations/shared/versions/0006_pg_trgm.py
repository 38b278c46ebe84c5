"""pg_trgm for the CRM's fuzzy duplicate check on names (similarity, the ``%`` operator, gin_trgm_ops).

Installed once per database, in ``public``: tenant schemas refer to ``public.gin_trgm_ops`` and the
ORM's sessions keep ``public`` on their search path.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")


def downgrade():
    # Tenant schemas' indexes depend on it; dropping it is left to whoever drops those.
    pass
