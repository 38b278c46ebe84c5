"""Tenant placement on Citus, as docs/scaling.md describes it (collected by `make test-citus` only)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from core.permissions import Actor
from tenants import services
from tenants.permissions import USERS_READ
from tests.citus.test_outbox_two_phase import _cluster
from tests.conftest import PASSWORD, host, unique_slug

# docs/scaling.md, "Where a tenant lives".
NODE_OF_SCHEMA = text("""
    SELECT DISTINCT n.nodeport
    FROM citus_schemas s
    JOIN pg_dist_partition p ON p.colocationid = s.colocation_id
    JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
    JOIN pg_dist_placement pl ON pl.shardid = sh.shardid
    JOIN pg_dist_node n ON n.groupid = pl.groupid
    WHERE s.schema_name::text = :schema""")


def _ports(engine: Engine, schema: str) -> list[int]:
    with engine.connect() as conn:
        return [int(p) for p in conn.execute(NODE_OF_SCHEMA, {"schema": schema}).scalars()]


def test_the_control_plane_stays_on_the_coordinator_and_tenants_go_to_workers(engine, committed_db):
    slug = unique_slug("place")
    with committed_db.transaction() as s:
        made = services.provision(s, Actor.system("test"), slug=slug, name="Placed",
                                  admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
        schema = services.bound(made.tenant).schema
    cluster = _cluster()
    with engine.connect() as conn:
        distributed = set(conn.execute(text("SELECT schema_name::text FROM citus_schemas")).scalars())
    assert "shared" not in distributed
    assert schema in distributed
    (port,) = _ports(engine, schema)  # every table of the tenant on one node
    assert port in {w.port for w in cluster.workers}


def test_a_tenant_moved_to_another_worker_keeps_answering(app, engine, committed_db):
    """`citus_schema_move` run by the application's own (non-superuser) role, while the app's pool
    holds connections; the tenant's pages and API answer from the new node."""
    slug = unique_slug("move")
    actor = Actor.system("test")
    with committed_db.transaction() as s:
        made = services.provision(s, actor, slug=slug, name="Mover",
                                  admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
        tenant = services.bound(made.tenant)
        api_client = services.create_client(s, actor, tenant, name="mover", scopes=[USERS_READ]).client
        token, _ = services.issue_token(s, api_client, [USERS_READ], ttl_s=600)
        admin_id = str(made.admin.id)
    client = app.test_client()
    headers = host(slug) | {"Authorization": f"Bearer {token}"}

    def answers() -> None:
        reply = client.get(f"/api/v1/users/{admin_id}", headers=headers)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        assert reply.get_json()["id"] == admin_id
        assert client.get("/sign-in", headers=host(slug)).status_code == 200

    answers()
    (before,) = _ports(engine, tenant.schema)
    (target,) = [w for w in _cluster().workers if w.port != before]
    with engine.begin() as conn:
        conn.execute(text("SELECT citus_schema_move(:schema, :host, :port)"),
                     {"schema": tenant.schema, "host": target.host, "port": target.port})
    assert _ports(engine, tenant.schema) == [target.port]
    answers()
