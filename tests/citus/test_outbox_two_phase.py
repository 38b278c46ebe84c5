"""What only a Citus cluster can show. Collected by `make test-citus` only (tests/conftest.py's
collect_ignore); under `make test`, tests/core/test_outbox.py checks the plain-PostgreSQL side.

The outbox must not lose a task that a committed tenant write queued when a node crashes between the
two commits. The tenant's schema lives on a worker, ``shared.task_outbox`` on the coordinator.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict

from core.db import uuid7
from core.permissions import Actor
from courtyard import citus
from tenants import services
from tests.conftest import CITUS_ENV, PASSWORD, unique_slug


def _cluster() -> citus.Cluster:
    cluster = citus.discover(json.loads(os.environ[CITUS_ENV])["admin_url"])
    assert cluster is not None
    return cluster


def _until(check: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.05)


def _run(work: Callable[[], None]) -> BaseException | None:
    try:
        work()
    except BaseException as exc:  # handed to the test's thread, which asserts on it
        return exc
    return None


def test_a_tenant_write_and_its_queued_task_commit_two_phase(committed_db, settings):
    """At the moment the coordinator's commit is durable, the worker's part is PREPAREd, not committed.

    A crash at that moment is what lost tasks before: the worker had already committed the tenant rows
    (one-phase) and the coordinator's outbox row was not yet committed. Now the worker holds a prepared
    transaction that Citus's recovery commits (or rolls back) according to the coordinator's record, so
    the two go together. The moment is held open deterministically: the writing session alone asks for
    a synchronous standby that the test cluster never has (tests/citus/cluster.py), so its commit stops
    after its commit record and before COMMIT PREPARED is sent to the worker.
    """
    slug = unique_slug("tpc")
    with committed_db.transaction() as s:
        made = services.provision(s, Actor.system("test"), slug=slug, name="Two-phase",
                                  admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
        schema, tenant_id, admin_id = services.bound(made.tenant).schema, made.tenant.id, made.admin.id
    cluster = _cluster()
    db_name = conninfo_to_dict(settings.database_url)["dbname"]
    task_id: uuid.UUID = uuid7()

    with (psycopg.connect(settings.database_url, autocommit=True) as writer,
          psycopg.connect(settings.database_url, autocommit=True) as reader):
        pid = writer.info.backend_pid

        def unit_of_work() -> None:
            with writer.transaction():
                writer.execute("SET LOCAL synchronous_commit = on")
                writer.execute(f'UPDATE "{schema}".users SET name = %s WHERE id = %s', ("two-phase", admin_id))
                writer.execute("INSERT INTO shared.task_outbox (id, task, args, tenant_id) "
                               "VALUES (%s, 'tests.record', '[]', %s)", (task_id, tenant_id))

        def prepared_on_workers() -> list[str]:
            gids: list[str] = []
            for worker in cluster.workers:
                with psycopg.connect(cluster.node_url(worker, db_name), autocommit=True) as conn:
                    # Citus names a prepared transaction after the coordinator's backend that made it.
                    gids += [r[0] for r in conn.execute(
                        "SELECT gid FROM pg_prepared_xacts WHERE database = %s AND gid LIKE %s",
                        (db_name, f"citus_0_{pid}_%"))]
            return gids

        def committing() -> bool:
            row = reader.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            return row is not None and row[0] == "SyncRep"

        def seen() -> tuple[str, bool]:
            name = reader.execute(f'SELECT name FROM "{schema}".users WHERE id = %s', (admin_id,)).fetchone()
            task = reader.execute("SELECT 1 FROM shared.task_outbox WHERE id = %s", (task_id,)).fetchone()
            assert name is not None
            return name[0], task is not None

        # A daemon thread: if anything below goes wrong, a commit still waiting cannot hang the run.
        outcome: list[BaseException | None] = []
        thread = threading.Thread(target=lambda: outcome.append(_run(unit_of_work)), daemon=True)
        thread.start()
        try:
            _until(committing, "the writer's commit waiting after its commit record")
            prepared, during = prepared_on_workers(), seen()
        finally:
            # Let the commit finish: Citus then sends COMMIT PREPARED to the worker. (The cast: Citus
            # adds a pg_cancel_backend(bigint) of its own beside PostgreSQL's.)
            with psycopg.connect(cluster.node_url(cluster.coordinator, db_name), autocommit=True) as admin:
                admin.execute("SELECT pg_cancel_backend(%s::integer)", (pid,))
            thread.join(60)
        assert outcome == [None], f"the unit of work did not commit: {outcome}"
        after = seen()

    assert len(prepared) == 1, f"the tenant's worker holds no prepared transaction: {prepared}"
    name_during, task_during = during
    assert name_during != "two-phase", "the tenant rows were committed on the worker before the coordinator"
    assert not task_during
    assert after == ("two-phase", True)  # committed_db's clean-up drops the row with the tenant
