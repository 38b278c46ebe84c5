"""Alembic environment of one tenant schema.

`courtyard migrate` does not go through this file: it loads the revisions once and applies them to
every tenant in parallel (tenants/migrator.py). This environment exists for a developer writing a new
revision or inspecting one schema: `alembic -c migrations/alembic.ini -n tenant -x schema=t_<hex> ...`.
Revisions are written without a schema name: they run with ``search_path`` set to the tenant's schema.
"""

from alembic import context
from sqlalchemy import create_engine

config = context.config
schema = context.get_x_argument(as_dictionary=True).get("schema")
if not schema or not schema.startswith("t_") or not schema[2:].isalnum():
    raise SystemExit("Pass the tenant schema: -x schema=t_<hex>")

url = config.get_main_option("sqlalchemy.url")
with create_engine(url).begin() as connection:
    connection.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()
