"""A tenant's CRM travels in its archive: exported and imported, every CRM table holds the same rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from core.db import Database, TenantBase
from core.permissions import Actor
from core.tenancy import schema_for
from crm.workspace import demo
from tenants import archive, services
from tests.conftest import PASSWORD, unique_slug
from tests.tenants.test_lifecycle import KEY, _table_checksums

CRM_TABLES = ("customers", "contacts", "activities", "tasks", "custom_fields", "dictionary_items",
              "number_sequences", "record_shares")


def test_the_crm_survives_an_export_and_import(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    slug = unique_slug("crmsrc")
    with committed_db.transaction() as s:
        made = services.provision(s, Actor.system("test"), slug=slug, name="源 CRM", admin_email=f"admin@{slug}.test",
                                  admin_password=PASSWORD)
        tenant = services.bound(made.tenant)
    with committed_db.transaction(tenant) as s:
        demo.populate(s, slug, password=PASSWORD, customers=30)
    path = tmp_path / "crm.tar.gz"
    summary = archive.export_tenant(engine, slug, path, key=KEY)
    assert all(summary.tables[t] > 0 for t in CRM_TABLES)
    copy = unique_slug("crmcopy")
    with committed_db.transaction() as s:
        archive.import_tenant(s, path, copy, keys=[KEY])
        target = services.get_tenant(s, copy)
    with engine.connect() as conn:
        original = _table_checksums(conn, schema_for(tenant.id))
        restored = _table_checksums(conn, schema_for(target.id))
    tables = {t.name for t in TenantBase.metadata.sorted_tables} - archive.NOT_EXPORTED
    assert {t: restored[t] for t in tables} == {t: original[t] for t in tables}
