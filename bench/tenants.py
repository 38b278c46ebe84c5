"""Tenant lifecycle benchmark: provisioning time per tenant, and fleet migration across many tenants.

1. Provisioning: ``--tenants`` tenants through ``tenants.services.provision``, one transaction each
   (what ``courtyard tenants create`` does), alternated with the raw-DDL floor: the same tables
   created by plain SQL compiled once from ``TenantBase.metadata``, one transaction and one round trip
   per schema. Printed: p50/p95 of both, their ratio, and how much of provisioning is argon2 hashing of
   the admin password.
2. Fleet migration: ``--fleet`` tenants (the provisioned ones plus cheaper ``services.create_schema``
   + registry row tenants: real schemas with every table), one add-column revision written to a
   temporary directory on top of the current head, applied by ``tenants.migrator.migrate_fleet``; then
   the same call again with nothing to apply.

The last line of output is one JSON object with the figures. Runs against a fresh ``bench_<random>``
database, dropped at the end (see benchlib.bench_env).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import benchlib

benchlib.fix_sys_path()

# The composition root registers the CRM's tables (customers, contacts, activities …) in the tenant
# metadata and its seed hook, as every entry point does: the schema measured is the product's whole one.
import psycopg  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg  # noqa: E402
from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: E402

import courtyard  # noqa: E402, F401
from core.db import Database, TenantBase, make_engine  # noqa: E402
from core.permissions import Actor  # noqa: E402
from core.tenancy import PLACEHOLDER_SCHEMA, schema_for  # noqa: E402
from tenants import migrator, services  # noqa: E402
from tenants.models import Tenant  # noqa: E402

PASSWORD = "bench-password-123"  # noqa: S105 - throw-away tenants in a throw-away database
SENTINEL = "zz_bench_schema_sentinel"
TARGET_PROVISION_P50_S = 0.3
TARGET_MIGRATE_S = 60.0
TARGET_NOOP_S = 5.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- raw-DDL floor


def ddl_template() -> str:
    """CREATE SCHEMA, every CREATE TABLE/INDEX of the tenant metadata and the version table, as SQL text.

    Compiled once with the placeholder schema mapped to a sentinel; each run substitutes the schema.
    """
    dialect = pg_psycopg.dialect()
    translate = {PLACEHOLDER_SCHEMA: SENTINEL}
    statements = [f'CREATE SCHEMA "{SENTINEL}"']
    for table in TenantBase.metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(
            dialect=dialect, schema_translate_map=translate, render_schema_translate=True)))
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            statements.append(str(CreateIndex(index).compile(
                dialect=dialect, schema_translate_map=translate, render_schema_translate=True)))
    statements.append(f'CREATE TABLE "{SENTINEL}".alembic_version (version_num VARCHAR(32) NOT NULL '
                      f"CONSTRAINT alembic_version_pkc PRIMARY KEY)")
    statements.append(f"INSERT INTO \"{SENTINEL}\".alembic_version VALUES ('{migrator.tenant_head()}')")
    sql = ";\n".join(s.strip() for s in statements) + ";"
    # Identifiers render quoted or bare depending on the name; normalise to the quoted form first.
    sql = sql.replace(f'"{SENTINEL}".', f"{SENTINEL}.").replace(f'"{SENTINEL}"', SENTINEL)
    if sql.count(SENTINEL) < len(TenantBase.metadata.tables):  # pragma: no cover - a guard on the compiler
        msg = "the schema sentinel did not reach every statement"
        raise RuntimeError(msg)
    return sql


def raw_ddl(conn: psycopg.Connection[Any], template: str, schema: str, *, one_round_trip: bool = True) -> float:
    """One schema by plain SQL in one transaction: one round trip, or one per statement (Citus refuses
    several commands in one query string for a distributed schema). Returns seconds."""
    sql = template.replace(SENTINEL, f'"{schema}"')
    statements = [sql] if one_round_trip else [s for s in sql.split(";\n") if s.strip()]
    started = time.perf_counter()
    with conn.transaction():
        for statement in statements:
            conn.execute(statement.encode())
    return time.perf_counter() - started


def relation_count(engine: Engine, schema: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s"), {"s": schema}).scalar_one())


# --------------------------------------------------------------------------- provisioning


class HashTimer:
    """Wraps the password hasher provision() calls, to report argon2's share of provisioning."""

    def __init__(self, fn: Callable[[str], str]) -> None:
        self.fn = fn
        self.last = 0.0

    def __call__(self, password: str) -> str:
        started = time.perf_counter()
        try:
            return self.fn(password)
        finally:
            self.last = time.perf_counter() - started


def bench_provisioning(engine: Engine, db_url: str, count: int, *, one_round_trip: bool = True) -> dict[str, Any]:
    db = Database(engine)
    template = ddl_template()
    timer = HashTimer(services.hash_password)
    original = services.hash_password
    services.hash_password = timer  # type: ignore[assignment]
    prov: list[float] = []
    hashes: list[float] = []
    raw: list[float] = []
    raw_schemas: list[str] = []
    try:
        with psycopg.connect(db_url) as conn:
            for i in range(count):
                slug = f"bench-{i:05d}"
                started = time.perf_counter()
                with db.transaction() as session:
                    services.provision(session, Actor.system("bench"), slug=slug, name=f"Bench {i} 基准",
                                       admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
                prov.append(time.perf_counter() - started)
                hashes.append(timer.last)
                # Alternate with the floor so both see the same background load.
                schema = schema_for(uuid.uuid4())
                raw.append(raw_ddl(conn, template, schema, one_round_trip=one_round_trip))
                raw_schemas.append(schema)
                if (i + 1) % 50 == 0 or i + 1 == count:
                    log(f"  provisioned {i + 1}/{count}: p50 so far {benchlib.percentile(prov, 50):.3f} s, "
                        f"raw DDL p50 {benchlib.percentile(raw, 50):.3f} s")
    finally:
        services.hash_password = original  # type: ignore[assignment]
    with engine.connect() as conn:
        first = conn.execute(text("SELECT id FROM shared.tenants ORDER BY slug LIMIT 1")).scalar_one()
    provisioned_rel, raw_rel = relation_count(engine, schema_for(first)), relation_count(engine, raw_schemas[0])
    if provisioned_rel != raw_rel:
        msg = f"raw-DDL schema has {raw_rel} relations, a provisioned one {provisioned_rel}"
        raise RuntimeError(msg)
    if not one_round_trip:  # on Citus: measured only if the tenants really became distributed schemas
        with engine.connect() as conn:
            distributed = conn.execute(text("SELECT count(*) FROM citus_schemas WHERE schema_name::text = :s"),
                                       {"s": schema_for(first)}).scalar_one()
        if distributed != 1:
            msg = f"tenant schema {schema_for(first)} is not a distributed schema: schema-based sharding is off"
            raise RuntimeError(msg)
    # The floor's schemas are not tenants: drop them (in small batches: one lock per relation).
    for start in range(0, len(raw_schemas), 20):
        with engine.begin() as conn:
            for schema in raw_schemas[start:start + 20]:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    net = [p - h for p, h in zip(prov, hashes, strict=True)]
    return {
        "provision_p50_s": benchlib.percentile(prov, 50),
        "provision_p95_s": benchlib.percentile(prov, 95),
        "raw_ddl_p50_s": benchlib.percentile(raw, 50),
        "raw_ddl_p95_s": benchlib.percentile(raw, 95),
        "argon2_p50_s": benchlib.percentile(hashes, 50),
        "provision_without_argon2_p50_s": benchlib.percentile(net, 50),
        "relations_per_schema": provisioned_rel,
    }


# --------------------------------------------------------------------------- fleet


def create_cheap_tenant(db: Database, index: int, head: str) -> float:
    """A registry row and a real schema with every table (services.create_schema), no seed data."""
    slug = f"fleet-{index:05d}"
    started = time.perf_counter()
    with db.transaction() as session:
        tenant = Tenant(slug=slug, name=f"Fleet {index}", status="active", schema_revision=head)
        session.add(tenant)
        session.flush()
        services.create_schema(session, services.bound(tenant))
    return time.perf_counter() - started


def build_fleet(engine: Engine, size: int, workers: int) -> dict[str, Any]:
    with engine.connect() as conn:
        have = int(conn.execute(text("SELECT count(*) FROM shared.tenants WHERE status <> 'deleted'")).scalar_one())
    missing = max(0, size - have)
    if not missing:
        return {"create_schema_p50_s": None}
    log(f"Creating {missing} more tenants (registry row + services.create_schema), {workers} threads…")
    db = Database(engine)
    head = migrator.tenant_head()
    times: list[float] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n, seconds in enumerate(pool.map(lambda i: create_cheap_tenant(db, i, head), range(missing)), 1):
            times.append(seconds)
            if n % 100 == 0 or n == missing:
                log(f"  created {n}/{missing} ({time.perf_counter() - started:.0f} s)")
    return {"create_schema_p50_s": benchlib.percentile(times, 50)}


REVISION = '''"""Benchmark revision: add a nullable column to users (written by bench/tenants.py)."""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("bench_note", sa.String(100)))


def downgrade():
    op.drop_column("users", "bench_note")
'''


def bench_migration(engine: Engine, workers: int, fleet: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="courtyard-bench-rev-") as tmp:
        revision = f"bench{secrets.token_hex(4)}"
        down = migrator.tenant_head()
        Path(tmp, f"{revision}_bench_add_column.py").write_text(REVISION.format(revision=revision, down=down))
        log(f"Migrating {fleet} tenants {down} → {revision} with {workers} workers…")
        report = migrator.migrate_fleet(engine, workers=workers, extra_locations=[tmp])
        if report.failed:
            first = report.failed[0]
            msg = f"{len(report.failed)} tenants failed to migrate; first: {first.slug}: {first.error}"
            raise RuntimeError(msg)
        if len(report.done) != fleet:
            msg = f"expected {fleet} tenants migrated, got {len(report.done)}"
            raise RuntimeError(msg)
        log(f"  {len(report.done)} migrated in {report.seconds:.2f} s; again with nothing to apply…")
        noop = migrator.migrate_fleet(engine, workers=workers, extra_locations=[tmp])
        if noop.results:
            msg = f"the second run still applied {len(noop.results)} tenants"
            raise RuntimeError(msg)
    with engine.connect() as conn:
        at_head = conn.execute(text("SELECT count(*) FROM shared.tenants WHERE schema_revision = :r"),
                               {"r": revision}).scalar_one()
        columns = conn.execute(text(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'bench_note' "
            "AND table_name = 'users' AND table_schema LIKE 't\\_%'")).scalar_one()
    if at_head != fleet or columns != fleet:
        msg = f"after migrating: {at_head} tenants at head, {columns} schemas with the new column (want {fleet})"
        raise RuntimeError(msg)
    durations = sorted(r.duration_ms for r in report.done)
    return {"migrate_s": report.seconds, "migrate_noop_s": noop.seconds,
            "tenant_step_p50_ms": benchlib.percentile(durations, 50),
            "tenant_step_p95_ms": benchlib.percentile(durations, 95)}


# --------------------------------------------------------------------------- main


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=300, help="tenants to provision (default 300)")
    parser.add_argument("--fleet", type=int, default=1000, help="tenants in the fleet migration (default 1000)")
    parser.add_argument("--workers", type=int, default=4, help="migration (and fleet set-up) threads (default 4)")
    parser.add_argument("--var-dir", type=Path, default=None, help="embedded servers' data (default var/bench)")
    args = parser.parse_args(argv)
    if not (1 <= args.tenants <= 10_000 and 1 <= args.fleet <= 20_000 and 1 <= args.workers <= 32):
        parser.error("--tenants 1..10000, --fleet 1..20000, --workers 1..32")
    fleet = max(args.fleet, args.tenants)

    with benchlib.bench_env(args.var_dir, need_redis=False) as env:
        log(f"Database {env.database} ({'embedded, var/bench' if env.embedded else 'configured server'})")
        engine_measured = env.engine
        engine = make_engine(env.database_url, pool_size=args.workers + 2, max_overflow=4)
        try:
            migrator.upgrade_shared(engine)
            log(f"Provisioning {args.tenants} tenants (services.provision) alternated with the raw-DDL floor…")
            results = bench_provisioning(engine, env.database_url, args.tenants, one_round_trip=not env.citus)
            results |= build_fleet(engine, fleet, args.workers)
            results |= bench_migration(engine, args.workers, fleet)
        finally:
            engine.dispose()

    ratio = results["provision_p50_s"] / results["raw_ddl_p50_s"]
    argon_share = results["argon2_p50_s"] / results["provision_p50_s"]
    print(f"Engine: {engine_measured}")
    print(f"Provisioning ({args.tenants} tenants, one transaction each, "
          f"{results['relations_per_schema']} relations per schema):")
    print(f"  services.provision   p50 {results['provision_p50_s']:.3f} s   p95 {results['provision_p95_s']:.3f} s"
          f"   target p50 <= {TARGET_PROVISION_P50_S} s: {mark(results['provision_p50_s'] <= TARGET_PROVISION_P50_S)}")
    print(f"    of which argon2    p50 {results['argon2_p50_s']:.3f} s ({argon_share:.0%} of p50); "
          f"without it p50 {results['provision_without_argon2_p50_s']:.3f} s")
    floor_kind = "one statement per round trip" if engine_measured.startswith("Citus") else "one round trip"
    print(f"  raw-DDL floor        p50 {results['raw_ddl_p50_s']:.3f} s   p95 {results['raw_ddl_p95_s']:.3f} s"
          f"   ({floor_kind})")
    net_ratio = results["provision_without_argon2_p50_s"] / results["raw_ddl_p50_s"]
    print(f"  ratio provision / raw DDL (p50): {ratio:.2f}x   (without argon2: {net_ratio:.2f}x)")
    if results.get("create_schema_p50_s") is not None:
        print(f"  fleet set-up (registry row + create_schema) p50 {results['create_schema_p50_s']:.3f} s")
    print(f"Fleet migration ({fleet} tenants, one add-column revision, {args.workers} workers):")
    print(f"  migrate              {results['migrate_s']:.2f} s   target <= {TARGET_MIGRATE_S:.0f} s: "
          f"{mark(results['migrate_s'] <= TARGET_MIGRATE_S)}   (per tenant p50 {results['tenant_step_p50_ms']:.0f} ms, "
          f"p95 {results['tenant_step_p95_ms']:.0f} ms)")
    print(f"  nothing to apply     {results['migrate_noop_s']:.3f} s   target <= {TARGET_NOOP_S:.0f} s: "
          f"{mark(results['migrate_noop_s'] <= TARGET_NOOP_S)}")
    summary = {
        "provision_p50_s": round(results["provision_p50_s"], 4),
        "provision_p95_s": round(results["provision_p95_s"], 4),
        "raw_ddl_p50_s": round(results["raw_ddl_p50_s"], 4),
        "migrate_s": round(results["migrate_s"], 3),
        "migrate_noop_s": round(results["migrate_noop_s"], 4),
        "tenants": fleet,
        "provisioned": args.tenants,
        "provision_ratio": round(ratio, 2),
        "argon2_p50_s": round(results["argon2_p50_s"], 4),
        "provision_ratio_without_argon2": round(net_ratio, 2),
        "engine": engine_measured,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
