"""The hourly token purge deletes in bounded batches through indexes (smaller finding: it was one
unbounded DELETE on unindexed columns)."""

from __future__ import annotations

from sqlalchemy import event, text

from core.permissions import Actor
from tenants import services
from tenants.tasks import _PURGE_SQL, purge_expired_tokens

_INSERT = text("""
    INSERT INTO shared.oauth_tokens
        (id, tenant_id, client_pk, token_digest, scopes, issued_at, expires_at, revoked_at)
    SELECT gen_random_uuid(), :tenant, :client, md5(:kind || g::text), '{}', now(), now() + :expires,
           CASE WHEN :revoked THEN now() + :revoked_at ELSE NULL END
    FROM generate_series(1, :n) g""")


def test_the_purge_goes_in_batches_and_keeps_live_tokens(db, connection, engine, tenant):
    with db.transaction(tenant) as s:
        made = services.create_client(s, Actor.system("test"), tenant, name="purge", scopes=["users.read"])
        client_pk = made.client.id
    rows = {  # kind: (count, expires in, revoked, revoked at)
        "expired": (1500, "-2 days", False, "0"), "revoked-long-ago": (700, "1 hour", True, "-3 days"),
        "live": (30, "1 hour", False, "0"), "revoked-today": (20, "1 hour", True, "-1 hour"),
        "expired-today": (10, "-1 hour", False, "0")}
    for kind, (n, expires, revoked, revoked_at) in rows.items():
        connection.execute(_INSERT, {"tenant": tenant.id, "client": client_pk, "kind": kind, "n": n,
                                    "expires": expires, "revoked": revoked, "revoked_at": revoked_at})
    deletes: list[int] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:
        if statement.lstrip().startswith("DELETE FROM shared.oauth_tokens"):
            deletes.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert purge_expired_tokens(batch=500) == 2200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # 2200 rows at most 2 × 500 a batch: at least 3 batches, plus the one that finds nothing left.
    assert 4 <= len(deletes) <= 6
    left = connection.execute(text("SELECT count(*) FROM shared.oauth_tokens WHERE tenant_id = :t"),
                              {"t": tenant.id}).scalar()
    assert left == 60


def test_each_side_of_a_batch_reads_an_index(db, connection, tenant):
    """Each side of a batch finds its few rows through its own index, not by walking the table.

    The plan depends on what the planner knows of the table: nearly empty and never analysed, walking
    pk_oauth_tokens with a filter costs about the same as either index, and which one wins varied
    between runs (it did on Citus). So the table gets the shape the purge meets in production, many
    live tokens and few to purge, and fresh statistics, all inside this test's rolled-back transaction.
    """
    with db.transaction(tenant) as s:
        made = services.create_client(s, Actor.system("test"), tenant, name="plan", scopes=["users.read"])
        client_pk = made.client.id
    rows = {  # kind: (count, expires in, revoked, revoked at)
        "live": (10_000, "1 hour", False, "0"), "expired": (50, "-2 days", False, "0"),
        "revoked-long-ago": (50, "1 hour", True, "-3 days")}
    for kind, (n, expires, revoked, revoked_at) in rows.items():
        connection.execute(_INSERT, {"tenant": tenant.id, "client": client_pk, "kind": kind, "n": n,
                                     "expires": expires, "revoked": revoked, "revoked_at": revoked_at})
    connection.execute(text("ANALYZE shared.oauth_tokens"))
    plan = "\n".join(r[0] for r in connection.execute(text("EXPLAIN " + _PURGE_SQL), {"batch": 1000}))
    assert "ix_oauth_tokens_expires_at" in plan, plan
    assert "ix_oauth_tokens_revoked_at" in plan, plan
