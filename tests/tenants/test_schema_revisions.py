"""Every tenant revision after the baseline must leave a schema exactly as the models create it.

New tenants are created from the models, existing ones are moved by revisions: the two paths must
meet. For each schema we walk the real revisions down to the baseline and back up to head, then
compare the catalog (columns, constraints, indexes) with a schema freshly created from the models.
"""

from __future__ import annotations

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tenants.migrator import tenant_head, tenant_script
from tests.conftest import provision


def _structure(conn, schema: str) -> dict[str, list[tuple]]:
    columns = conn.execute(text("""
        SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = :s ORDER BY 1, 2"""), {"s": schema}).all()
    constraints = conn.execute(text("""
        SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace WHERE ns.nspname = :s ORDER BY 1, 2"""),
        {"s": schema}).all()
    indexes = conn.execute(text("""
        SELECT tablename, indexname, replace(indexdef, :s || '.', '') FROM pg_indexes
        WHERE schemaname = :s ORDER BY 1, 2"""), {"s": schema}).all()
    # Constraint definitions name referenced tables with their schema: make the two comparable.
    return {
        "columns": [tuple(r) for r in columns],
        "constraints": [(r[0], r[1], r[2].replace(f"{schema}.", "")) for r in constraints],
        "indexes": [tuple(r) for r in indexes],
    }


def _run(conn, schema: str, steps, direction: str) -> None:
    conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    context = MigrationContext.configure(connection=conn)
    with Operations.context(context):
        for step in steps:
            getattr(step.module, direction)()
    conn.exec_driver_sql("RESET search_path")


def test_revisions_round_trip_to_the_models(db, connection):
    fresh, _ = provision(db, "fresh-one")
    walked, _ = provision(db, "walked-one")
    script = tenant_script()
    down_path = list(script.iterate_revisions(tenant_head(), "0001"))  # head first, baseline excluded
    assert down_path, "there is at least one revision after the baseline to check"
    _run(connection, walked.schema, down_path, "downgrade")
    assert _structure(connection, walked.schema) != _structure(connection, fresh.schema), \
        "going down changes the schema (otherwise this test compares nothing)"
    _run(connection, walked.schema, list(reversed(down_path)), "upgrade")
    assert _structure(connection, walked.schema) == _structure(connection, fresh.schema)


def test_top_level_department_names_are_unique_in_the_database(db, connection, tenant):
    connection.exec_driver_sql(
        f"INSERT INTO {tenant.schema}.departments (id, name, version) VALUES (gen_random_uuid(), 'Sales', 1)")
    savepoint = connection.begin_nested()
    with pytest.raises(IntegrityError, match="uq_departments_parent_id_name"):
        connection.exec_driver_sql(
            f"INSERT INTO {tenant.schema}.departments (id, name, version) VALUES (gen_random_uuid(), 'Sales', 1)")
    savepoint.rollback()


def test_the_shared_revisions_meet_the_control_plane_models(engine):
    # The control plane is built by its Alembic tree alone: a model change without a revision shows here.
    from alembic.autogenerate import compare_metadata

    from core.db import SharedBase
    from core.tenancy import SHARED_SCHEMA

    def only_shared(name, type_, parent_names) -> bool:
        if type_ == "schema":
            return name == SHARED_SCHEMA
        if type_ == "table":
            return parent_names.get("schema_name") == SHARED_SCHEMA and name != "alembic_version"
        return True

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_schemas": True, "include_name": only_shared,
                                                         "compare_type": True})
        assert compare_metadata(context, SharedBase.metadata) == []
