"""Schema migrations: the shared tree, then every tenant schema in parallel.

New tenant schemas are created from the current metadata and stamped at head (see
``services.provision``); this module only moves existing tenants forward. Each tenant migrates in one
transaction that also records its new revision in the control plane, so a tenant is marked done
exactly when its DDL committed: a failed or killed step leaves it at its old revision, and the next run
picks it up again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic import op as alembic_op
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from core.db import AdvisoryLock, advisory_xact_lock, utcnow, uuid7
from core.settings import Settings, project_root
from core.tenancy import schema_for

MIGRATIONS_DIR = project_root() / "migrations"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """How a migration waits for its locks: ``timeout_ms`` per attempt, then it rolls back, pauses and
    tries again, ``attempts`` times in all.

    An ``ALTER TABLE`` queued behind a long transaction (an export's snapshot, say) would make every
    later request on that table queue behind it in turn; a short wait and a retry keep the tenant
    answering while the migration looks for a quiet moment.
    """

    timeout_ms: int = 2_000
    attempts: int = 5
    #: First pause between attempts, doubled after each one up to ``max_pause_s``, with jitter so that
    #: parallel workers do not come back in step.
    pause_s: float = 0.5
    max_pause_s: float = 8.0

    def pause(self, attempt: int) -> float:
        base: float = min(self.max_pause_s, self.pause_s * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


def lock_policy(settings: Settings) -> LockPolicy:
    """The policy the settings ask for (COURTYARD_MIGRATION_LOCK_TIMEOUT_MS, COURTYARD_MIGRATION_ATTEMPTS)."""
    return LockPolicy(timeout_ms=settings.migration_lock_timeout_ms, attempts=settings.migration_attempts)


def _lock_not_granted(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and isinstance(exc.orig, psycopg.errors.LockNotAvailable)


def _with_lock_retries(what: str, policy: LockPolicy, work: Callable[[], Any]) -> Any:
    """Run ``work`` (one whole transaction) until it gets its locks in time or the attempts run out."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return work()
        except DBAPIError as exc:
            if not _lock_not_granted(exc):
                raise
            if attempt == policy.attempts:
                log.error("%s: locks not granted within %d ms, gave up after %d attempts",
                          what, policy.timeout_ms, attempt)
                msg = (f"{what}: locks not granted within {policy.timeout_ms} ms in {attempt} attempts "
                       f"(another transaction holds them: a long export or query?)")
                raise LockWaitExhausted(msg) from exc
            pause = policy.pause(attempt)
            log.warning("%s: locks not granted within %d ms (attempt %d of %d), retrying in %.1f s",
                        what, policy.timeout_ms, attempt, policy.attempts, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class LockWaitExhausted(Exception):
    """A migration could not get its locks in any of its attempts; nothing of it was applied."""


def _short_lock_wait(conn: Connection, policy: LockPolicy) -> None:
    # SET LOCAL ends with the transaction: the pooled connection goes back with its own limit.
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(policy.timeout_ms)}")


def alembic_config(tree: str, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR / tree))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=8)
def tenant_script(extra_locations: tuple[str, ...] = ()) -> ScriptDirectory:
    cfg = alembic_config("tenant")
    if extra_locations:
        # Extra version folders join the same tree (tests and benchmarks add a revision this way).
        locations = [str(MIGRATIONS_DIR / "tenant" / "versions"), *extra_locations]
        cfg.set_main_option("version_locations", " ".join(locations))
        cfg.set_main_option("path_separator", "space")
    return ScriptDirectory.from_config(cfg)


def tenant_head(script: ScriptDirectory | None = None) -> str:
    head = (script or tenant_script()).get_current_head()
    if head is None:  # pragma: no cover - the tree always has its baseline
        msg = "The tenant migration tree has no head revision"
        raise RuntimeError(msg)
    return head


_worker = threading.local()
_proxy_lock = threading.Lock()


class _PerThreadOperations:
    """What ``alembic.op`` calls while tenants migrate in parallel: the calling thread's Operations.

    ``Operations.context()`` installs one instance as a module-global proxy (and removes it on exit), so
    with several workers a revision's ``op.add_column`` would run on another thread's connection.
    """

    def __getattr__(self, name: str) -> Any:
        operations = getattr(_worker, "operations", None)
        if operations is None:
            msg = f"alembic.op.{name} was called outside a tenant migration"
            raise NameError(msg)
        return getattr(operations, name)


_PER_THREAD = _PerThreadOperations()


@contextmanager
def _thread_operations(context: MigrationContext) -> Iterator[Operations]:
    operations = Operations(context)
    with _proxy_lock:
        vars(alembic_op)["_proxy"] = _PER_THREAD
    _worker.operations = operations
    try:
        yield operations
    finally:
        _worker.operations = None


def upgrade_shared(engine: Engine, policy: LockPolicy | None = None) -> None:
    """Bring the control-plane schema to head (ordinary Alembic, one schema).

    Two runs at once (two deploys, say) take turns on an advisory lock: the second then finds the
    schema at head. The DDL waits for its table locks only briefly, and is retried (see LockPolicy).
    """
    policy = policy or LockPolicy()
    cfg = alembic_config("shared")

    def attempt() -> None:
        with engine.begin() as conn:
            advisory_xact_lock(conn, AdvisoryLock.SHARED_MIGRATIONS, "shared")
            _short_lock_wait(conn, policy)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    _with_lock_retries("shared schema", policy, attempt)


@dataclass(slots=True)
class TenantResult:
    tenant_id: uuid.UUID
    slug: str
    from_revision: str
    status: str  # done | failed | skipped
    error: str | None = None
    duration_ms: int = 0


@dataclass(slots=True)
class FleetReport:
    run_id: uuid.UUID
    head: str
    results: list[TenantResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[TenantResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def done(self) -> list[TenantResult]:
        return [r for r in self.results if r.status == "done"]


def pending_tenants(engine: Engine, head: str, only: Sequence[str] | None = None) -> list[tuple[uuid.UUID, str, str]]:
    """Tenants whose recorded revision is not head: one indexed query, however large the fleet."""
    sql = ("SELECT id, slug, schema_revision FROM shared.tenants "
           "WHERE status <> 'deleted' AND schema_revision <> :head")
    params: dict[str, object] = {"head": head}
    if only:
        sql += " AND slug = ANY(:only)"
        params["only"] = list(only)
    with engine.connect() as conn:
        rows = conn.execute(text(sql + " ORDER BY slug"), params).all()
    return [(row[0], row[1], row[2]) for row in rows]


def _revisions_between(script: ScriptDirectory, start: str, head: str) -> list[object]:
    # iterate_revisions walks from head down to (but excluding) start; apply oldest first.
    return list(reversed(list(script.iterate_revisions(head, start))))


def migrate_tenant(engine: Engine, tenant_id: uuid.UUID, slug: str, script: ScriptDirectory, head: str,
                   run_id: uuid.UUID, policy: LockPolicy | None = None) -> TenantResult:
    policy = policy or LockPolicy()
    started = time.perf_counter()
    seen = {"revision": "?"}
    try:
        result: TenantResult = _with_lock_retries(
            f"tenant {slug}", policy,
            lambda: _migrate_tenant_once(engine, tenant_id, slug, script, head, run_id, policy, started, seen))
        return result
    except Exception as exc:  # one tenant failing must not stop the fleet: record it and go on
        duration = int((time.perf_counter() - started) * 1000)
        error = f"{type(exc).__name__}: {exc}".strip()[:2000]
        try:
            with engine.begin() as conn:
                _record(conn, tenant_id, seen["revision"], head, "failed", error, run_id, duration)
        except Exception:  # noqa: S110 - the report below still carries the error
            pass
        return TenantResult(tenant_id, slug, seen["revision"], "failed", error, duration)


def _migrate_tenant_once(engine: Engine, tenant_id: uuid.UUID, slug: str, script: ScriptDirectory, head: str,
                         run_id: uuid.UUID, policy: LockPolicy, started: float, seen: dict[str, str]) -> TenantResult:
    """One attempt, in one transaction: a lock not granted in time rolls all of it back."""
    schema = schema_for(tenant_id)
    with engine.begin() as conn:
        # The row lock serialises two runners on the same tenant; the second then sees head and skips.
        # It is waited for with the command's own lock timeout: the other runner finishes its tenant.
        current = conn.execute(
            text("SELECT schema_revision FROM shared.tenants WHERE id = :id FOR UPDATE"), {"id": tenant_id},
        ).scalar_one()
        seen["revision"] = current
        if current == head:
            return TenantResult(tenant_id, slug, current, "skipped")
        steps = _revisions_between(script, current, head)
        _short_lock_wait(conn, policy)
        # SET LOCAL ends with the transaction, so the pooled connection keeps no tenant state.
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        context = MigrationContext.configure(connection=conn)
        with _thread_operations(context):
            for step in steps:
                step.module.upgrade()  # type: ignore[attr-defined]
        conn.exec_driver_sql(f'UPDATE "{schema}".alembic_version SET version_num = %(head)s', {"head": head})
        conn.execute(text("UPDATE shared.tenants SET schema_revision = :head WHERE id = :id"),
                     {"head": head, "id": tenant_id})
        duration = int((time.perf_counter() - started) * 1000)
        _record(conn, tenant_id, current, head, "done", None, run_id, duration)
    return TenantResult(tenant_id, slug, current, "done", duration_ms=duration)


def apply_steps(conn: Connection, schema: str, steps: Sequence[Any], direction: str) -> None:
    """Run revisions' ``upgrade`` or ``downgrade`` on one tenant schema inside the caller's transaction.

    For work that is not a fleet run (an archive import builds a schema at the archive's revision, then
    moves it forward): the caller records the revision, and the search path is put back afterwards so
    the rest of the transaction reads what it read before.
    """
    if not steps:
        return
    previous = conn.exec_driver_sql("SELECT current_setting('search_path')").scalar_one()
    conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    context = MigrationContext.configure(connection=conn)
    with _thread_operations(context):
        for step in steps:
            getattr(step.module, direction)()
    conn.exec_driver_sql("SELECT set_config('search_path', %(p)s, true)", {"p": previous})


def _record(conn: object, tenant_id: uuid.UUID, from_rev: str, head: str, status: str, error: str | None,
            run_id: uuid.UUID, duration_ms: int) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text("""
            INSERT INTO shared.tenant_migrations
                (tenant_id, target_revision, from_revision, status, error, run_id, finished_at, duration_ms)
            VALUES (:t, :head, :from_rev, :status, :error, :run, :at, :ms)
            ON CONFLICT (tenant_id) DO UPDATE SET target_revision = EXCLUDED.target_revision,
                from_revision = EXCLUDED.from_revision, status = EXCLUDED.status, error = EXCLUDED.error,
                run_id = EXCLUDED.run_id, finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms
        """),
        {"t": tenant_id, "head": head, "from_rev": from_rev, "status": status, "error": error, "run": run_id,
         "at": utcnow(), "ms": duration_ms},
    )


def migrate_fleet(engine: Engine, *, workers: int = 4, only: Sequence[str] | None = None,
                  extra_locations: Iterable[str | Path] = (),
                  progress: Callable[[TenantResult], None] | None = None,
                  policy: LockPolicy | None = None) -> FleetReport:
    started = time.perf_counter()
    script = tenant_script(tuple(str(p) for p in extra_locations))
    head = tenant_head(script)
    report = FleetReport(run_id=uuid7(), head=head)
    todo = pending_tenants(engine, head, only)
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="migrate") as pool:
            futures = [pool.submit(migrate_tenant, engine, tid, slug, script, head, report.run_id, policy)
                       for tid, slug, _rev in todo]
            for future in futures:
                result = future.result()
                report.results.append(result)
                if progress is not None:
                    progress(result)
    report.seconds = time.perf_counter() - started
    return report
