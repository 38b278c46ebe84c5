"""Fleet migration: one real Alembic revision applied to hundreds of committed tenant schemas in parallel.

The revision is written into a fresh temporary folder per test (``tenant_script`` caches the script
directory per tuple of extra locations) and joins the tenant tree through ``extra_locations``.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from core.db import Database
from core.permissions import Actor
from core.tenancy import BoundTenant
from courtyard.cli import main
from tenants import migrator, services
from tenants.models import Tenant
from tests.conftest import unique_slug

FLEET_SIZE = 210
BATCH = 30


def write_revision(folder: Path, *, down_revision: str) -> str:
    """A real revision file: add ``users.nickname`` and index it (two steps, so a tenant can fail midway)."""
    revision = "n" + uuid.uuid4().hex[:12]  # alembic_version.version_num is VARCHAR(32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{revision}_nickname.py").write_text(textwrap.dedent(f'''\
        """Add users.nickname (test revision).

        Revision ID: {revision}
        Revises: {down_revision}
        """

        import sqlalchemy as sa
        from alembic import op

        revision = "{revision}"
        down_revision = "{down_revision}"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.add_column("users", sa.Column("nickname", sa.String(50)))
            op.create_index("ix_users_nickname", "users", ["nickname"])


        def downgrade():
            op.drop_index("ix_users_nickname", table_name="users")
            op.drop_column("users", "nickname")
        '''), encoding="utf-8")
    return revision


def create_fleet(db: Database, count: int, prefix: str) -> list[BoundTenant]:
    """Registry rows and schemas at the current head, committed in batches (cheap but real)."""
    head = migrator.tenant_head()
    made: list[BoundTenant] = []
    for start in range(0, count, BATCH):
        with db.transaction() as session:
            rows = [Tenant(slug=f"{prefix}-{i:04d}", name=f"Fleet {i} 租户", status="active", schema_revision=head)
                    for i in range(start, min(count, start + BATCH))]
            session.add_all(rows)
            session.flush()
            for row in rows:
                bt = services.bound(row)
                services.create_schema(session, bt)
                made.append(bt)
    return made


def schemas_with_nickname(engine: Engine, schemas: list[str]) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(
            "SELECT table_schema FROM information_schema.columns "
            "WHERE table_name = 'users' AND column_name = 'nickname' AND table_schema = ANY(:s)"),
            {"s": schemas})}


def revisions(engine: Engine, tenant: BoundTenant) -> tuple[str, str]:
    """(shared.tenants.schema_revision, <schema>.alembic_version) of one tenant."""
    with engine.connect() as conn:
        registry = conn.execute(text("SELECT schema_revision FROM shared.tenants WHERE id = :id"),
                                {"id": tenant.id}).scalar_one()
        stamped = conn.exec_driver_sql(f'SELECT version_num FROM "{tenant.schema}".alembic_version').scalar_one()
    return registry, stamped


def test_fleet_migration_applies_everywhere_isolates_failures_and_resumes(
        committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    base = migrator.tenant_head()
    prefix = unique_slug("fleet")
    fleet = create_fleet(committed_db, FLEET_SIZE, prefix)
    # A fully provisioned tenant among them: its users' rows must survive the ALTER untouched.
    with committed_db.transaction() as session:
        provisioned = services.provision(session, Actor.system("test"), slug=unique_slug("full"),
                                         name="Full 全功能", admin_email="boss@full.test",
                                         admin_password="correct horse battery")
        full = services.bound(provisioned.tenant)
        admin_id = provisioned.admin.id
    fleet.append(full)
    by_id = {t.id: t for t in fleet}

    # Two tenants that will fail: one at the first step (the column already exists), one midway
    # (the column is added, then the index name is taken): its ADD COLUMN must be rolled back too.
    broken_first, broken_midway = fleet[17], fleet[123]
    with engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{broken_first.schema}".users ADD COLUMN nickname VARCHAR(50)')
        conn.exec_driver_sql(f'CREATE INDEX ix_users_nickname ON "{broken_midway.schema}".users (email)')

    versions = tmp_path / "versions"
    head = write_revision(versions, down_revision=base)
    assert migrator.tenant_head(migrator.tenant_script((str(versions),))) == head
    assert migrator.tenant_head() == base  # the extra folder does not leak into the default tree

    started = time.perf_counter()
    report = migrator.migrate_fleet(engine, workers=4, extra_locations=[versions])
    elapsed = time.perf_counter() - started
    print(f"\nfleet migration of {len(fleet)} tenants: {elapsed:.2f}s (report: {report.seconds:.2f}s)")

    assert report.head == head
    assert {r.tenant_id for r in report.results} == set(by_id)
    failed = {r.tenant_id: r for r in report.failed}
    assert set(failed) == {broken_first.id, broken_midway.id}
    assert "nickname" in (failed[broken_first.id].error or "")
    assert "already exists" in (failed[broken_first.id].error or "")
    assert "ix_users_nickname" in (failed[broken_midway.id].error or "")
    assert all(r.from_revision == base for r in report.results)
    assert len(report.done) == len(fleet) - 2

    healthy = [t for t in fleet if t.id not in failed]
    assert schemas_with_nickname(engine, [t.schema for t in fleet]) == (
        {t.schema for t in healthy} | {broken_first.schema})
    with engine.connect() as conn:
        indexed = {r[0] for r in conn.execute(text(
            "SELECT schemaname FROM pg_indexes WHERE indexname = 'ix_users_nickname' "
            "AND indexdef LIKE '%(nickname)%' AND schemaname = ANY(:s)"), {"s": [t.schema for t in fleet]})}
        registry = dict(conn.execute(text("SELECT id, schema_revision FROM shared.tenants WHERE id = ANY(:ids)"),
                                     {"ids": list(by_id)}).all())
        stamped = {t.id: conn.exec_driver_sql(f'SELECT version_num FROM "{t.schema}".alembic_version').scalar_one()
                   for t in fleet}
        records = {r.tenant_id: r for r in conn.execute(text(
            "SELECT tenant_id, status, error, target_revision, from_revision, run_id "
            "FROM shared.tenant_migrations WHERE tenant_id = ANY(:ids)"), {"ids": list(by_id)})}
        full_admin = conn.exec_driver_sql(
            f'SELECT email, nickname FROM "{full.schema}".users WHERE id = %(id)s', {"id": admin_id}).one()
    assert indexed == {t.schema for t in healthy}
    for t in healthy:
        assert registry[t.id] == head
        assert stamped[t.id] == head
    assert tuple(full_admin) == ("boss@full.test", None)

    # Failed tenants are not marked done: both revisions unchanged, and the midway one lost the
    # column it had added inside its rolled-back transaction.
    for t in (broken_first, broken_midway):
        assert registry[t.id] == base
        assert stamped[t.id] == base
    assert broken_midway.schema not in schemas_with_nickname(engine, [broken_midway.schema])

    # Every tenant's result is recorded in the control plane, with this run's id.
    assert set(records) == set(by_id)
    for tid, rec in records.items():
        assert rec.run_id == report.run_id
        assert rec.target_revision == head
        assert rec.from_revision == base
        if tid in failed:
            assert rec.status == "failed"
            assert rec.error == failed[tid].error
        else:
            assert rec.status == "done"
            assert rec.error is None

    # Fix the broken schemas; a re-run resumes with exactly those two and nobody else.
    with engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{broken_first.schema}".users DROP COLUMN nickname')
        conn.exec_driver_sql(f'DROP INDEX "{broken_midway.schema}".ix_users_nickname')
    again = migrator.migrate_fleet(engine, workers=4, extra_locations=[versions])
    assert sorted(r.tenant_id for r in again.results) == sorted([broken_first.id, broken_midway.id])
    assert [r.status for r in again.results] == ["done", "done"]
    assert revisions(engine, broken_first) == (head, head)
    assert revisions(engine, broken_midway) == (head, head)
    assert schemas_with_nickname(engine, [t.schema for t in fleet]) == {t.schema for t in fleet}
    with engine.connect() as conn:
        runs = dict(conn.execute(text("SELECT tenant_id, run_id FROM shared.tenant_migrations "
                                      "WHERE tenant_id = ANY(:ids)"), {"ids": list(by_id)}).all())
    assert runs[broken_first.id] == again.run_id
    assert runs[broken_midway.id] == again.run_id
    assert sum(1 for run in runs.values() if run == report.run_id) == len(fleet) - 2

    # Nothing left to apply: nobody is migrated, nothing is recorded.
    idle = migrator.migrate_fleet(engine, workers=4, extra_locations=[versions])
    assert idle.results == []
    assert idle.head == head
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM shared.tenant_migrations WHERE run_id = :r"),
                            {"r": idle.run_id}).scalar_one() == 0


def test_only_selected_tenants_are_migrated(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    base = migrator.tenant_head()
    fleet = create_fleet(committed_db, 3, unique_slug("pick"))
    versions = tmp_path / "versions"
    head = write_revision(versions, down_revision=base)
    report = migrator.migrate_fleet(engine, workers=2, only=[fleet[1].slug], extra_locations=[versions])
    assert [(r.slug, r.status) for r in report.results] == [(fleet[1].slug, "done")]
    assert revisions(engine, fleet[1]) == (head, head)
    assert revisions(engine, fleet[0]) == (base, base)
    assert revisions(engine, fleet[2]) == (base, base)
    assert schemas_with_nickname(engine, [t.schema for t in fleet]) == {fleet[1].schema}


def test_a_deleted_tenant_is_not_migrated(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    base = migrator.tenant_head()
    alive, gone = create_fleet(committed_db, 2, unique_slug("del"))
    with committed_db.transaction() as session:
        services.delete_tenant(session, gone.slug)
    versions = tmp_path / "versions"
    write_revision(versions, down_revision=base)
    report = migrator.migrate_fleet(engine, workers=2, extra_locations=[versions])
    assert [r.tenant_id for r in report.results] == [alive.id]
    assert report.failed == []


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings, tmp_path: Path) -> None:
    monkeypatch.setenv("COURTYARD_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("COURTYARD_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("COURTYARD_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("COURTYARD_SECRET_KEY", "cli-test-secret")


def test_migrate_cli_exits_1_when_a_tenant_fails(cli_env: None, committed_db: Database, engine: Engine) -> None:
    head = migrator.tenant_head()
    ok, stranded = create_fleet(committed_db, 2, unique_slug("cli"))
    runner = CliRunner()

    clean = runner.invoke(main, ["migrate", "--json"], prog_name="courtyard")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout) | {"seconds": 0} == {"head": head, "seconds": 0, "done": [], "failed": {}}

    # A tenant recorded at a revision this server does not know cannot be moved to head: it fails,
    # the run reports it and the command exits 1 (without a traceback).
    with engine.begin() as conn:
        conn.execute(text("UPDATE shared.tenants SET schema_revision = 'ffff0000' WHERE id = :id"),
                     {"id": stranded.id})
    result = runner.invoke(main, ["migrate"], prog_name="courtyard")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"FAILED {stranded.slug}:" in result.stderr
    assert "ffff0000" in result.stderr
    assert "0 migrated, 1 failed" in result.stdout
    assert "Traceback" not in result.output

    as_json = runner.invoke(main, ["migrate", "--json"], prog_name="courtyard")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["done"] == []
    assert list(body["failed"]) == [stranded.slug]
    with engine.connect() as conn:
        rec = conn.execute(text("SELECT status, from_revision, error FROM shared.tenant_migrations "
                                "WHERE tenant_id = :id"), {"id": stranded.id}).one()
        assert conn.execute(text("SELECT count(*) FROM shared.tenant_migrations WHERE tenant_id = :id"),
                            {"id": ok.id}).scalar_one() == 0
    assert rec.status == "failed"
    assert rec.from_revision == "ffff0000"
    assert "ffff0000" in rec.error
    assert revisions(engine, stranded) == ("ffff0000", head)
