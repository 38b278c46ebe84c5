"""Alembic environment of the shared (control-plane) schema."""

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
VERSION_SCHEMA = "shared"


def run(connection):
    # On Citus with schema-based sharding, every new schema becomes a distributed tenant schema; the
    # control plane must stay a regular schema on the coordinator.
    if connection.execute(text("SELECT current_setting('citus.enable_schema_based_sharding', true)")).scalar():
        connection.execute(text("SET LOCAL citus.enable_schema_based_sharding TO off"))
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {VERSION_SCHEMA}"))
    context.configure(connection=connection, version_table_schema=VERSION_SCHEMA,
                      include_schemas=True, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from core.db import normalise_url
        from core.settings import Settings

        url = Settings.from_env().database_url
        if url is None:
            raise SystemExit("Set COURTYARD_DATABASE_URL, or use `courtyard migrate` for the embedded server")
        url = normalise_url(url)
    with create_engine(url).begin() as conn:
        run(conn)
