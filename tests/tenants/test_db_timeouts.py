"""Database limits (finding 5): every connection carries statement, lock and idle-in-transaction
timeouts; a migration waits for its locks briefly and retries instead of queueing the tenant behind it;
no transaction stays open across slow work (SMTP here; argon2 and Redis in test_slow_work.py)."""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import jsonify
from sqlalchemy import Engine, event, text

from core.db import AdvisoryLock, Database, make_engine, normalise_url
from core.mail import SmtpMailer
from core.tasks import TaskRuntime, configure_tasks, task_runtime
from courtyard.app import create_app
from tenants import migrator
from tenants.context import db_session
from tenants.tasks import deliver_mail
from tests.conftest import provision, unique_slug
from tests.tenants.test_migrations import write_revision

# --------------------------------------------------------------------------- the request's connection


@pytest.fixture
def limited_app(settings, redis_client) -> Iterator[Any]:
    """An app with its own engine (as in production) and small, recognisable limits."""
    app = create_app(settings.with_overrides(db_statement_timeout_ms=300, db_lock_timeout_ms=250,
                                             db_idle_in_transaction_timeout_ms=45_678), redis=redis_client)

    @app.get("/_probe/timeouts")
    def timeouts() -> Any:
        session = db_session()
        names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        return jsonify({n: session.execute(text(f"SHOW {n}")).scalar() for n in names})

    @app.get("/_probe/slow")
    def slow() -> Any:
        db_session().execute(text("SELECT pg_sleep(5)"))
        return jsonify(done=True)

    @app.get("/_probe/locked")
    def locked() -> Any:
        db_session().execute(text("SELECT pg_advisory_xact_lock(7, 7)"))
        return jsonify(done=True)

    yield app
    app.extensions["courtyard"].db.engine.dispose()


def test_the_limits_are_set_on_a_requests_connection(limited_app):
    body = limited_app.test_client().get("/_probe/timeouts").get_json()
    assert body == {"statement_timeout": "300ms", "lock_timeout": "250ms",
                    "idle_in_transaction_session_timeout": "45678ms"}


def test_a_slow_statement_is_cancelled_with_a_clear_answer(limited_app):
    response = limited_app.test_client().get("/_probe/slow", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert response.get_json()["code"] == "database_timeout"
    assert response.headers["Retry-After"]
    chinese = limited_app.test_client().get("/_probe/slow", headers={"Accept": "application/json",
                                                                      "Accept-Language": "zh-CN"})
    assert chinese.get_json()["message"] == "数据库响应超时，请求已取消，请重试。"


def test_a_request_waiting_for_a_lock_gives_up_with_a_clear_answer(limited_app, engine):
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(7, 7)"))
        try:
            response = limited_app.test_client().get("/_probe/locked", headers={"Accept": "application/json"})
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(7, 7)"))
    assert response.status_code == 503
    assert response.get_json()["code"] == "database_busy"
    assert response.get_json()["message"].startswith("The data is being changed by another operation")


def test_the_cli_and_the_app_get_different_limits():
    from core.settings import Settings

    settings = Settings.from_env({"COURTYARD_DB_STATEMENT_TIMEOUT_MS": "1000",
                                  "COURTYARD_CLI_STATEMENT_TIMEOUT_MS": "0", "COURTYARD_VAR_DIR": "/tmp",
                                  "COURTYARD_SECRET_KEY": "x"})
    assert settings.app_timeouts.statement_ms == 1000
    assert settings.cli_timeouts.statement_ms == 0
    assert settings.cli_timeouts.lock_ms > settings.app_timeouts.lock_ms


# --------------------------------------------------------------------------- migrations and locks


class ReleaseOnRetry(logging.Handler):
    """Lets the blocking transaction go when the migrator announces its first retry."""

    def __init__(self, release: Any) -> None:
        super().__init__(logging.WARNING)
        self.release = release
        self.retries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.retries.append(record.getMessage())
        self.release()


@pytest.fixture
def migrator_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tenants.migrator")
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(previous)


def test_a_migration_blocked_by_a_reader_retries_and_then_goes_through(committed_db, engine, tmp_path,
                                                                        migrator_log):
    slug = unique_slug("locked")
    tenant, _ = provision(committed_db, slug)
    folder = tmp_path / "versions"
    revision = write_revision(folder, down_revision=migrator.tenant_head())
    blocker = engine.connect()
    blocker.begin()
    # What a long export does: it reads the table in a transaction and keeps the lock until it ends.
    blocker.execute(text(f'SELECT count(*) FROM "{tenant.schema}".users'))
    done = threading.Event()

    def release() -> None:
        if not done.is_set():
            done.set()
            blocker.rollback()

    handler = ReleaseOnRetry(release)
    migrator_log.addHandler(handler)
    # Without a lock timeout the migration would wait for ever: let go after a while so that the test
    # can fail on "no retry" instead of hanging.
    safety = threading.Timer(30, release)
    safety.start()
    try:
        report = migrator.migrate_fleet(engine, only=[slug], extra_locations=[folder],
                                        policy=migrator.LockPolicy(timeout_ms=100, attempts=3, pause_s=0.01))
    finally:
        safety.cancel()
        migrator_log.removeHandler(handler)
        release()
        blocker.close()
    assert [r.status for r in report.results] == ["done"], report.results
    assert len(handler.retries) == 1
    assert "attempt 1 of 3" in handler.retries[0]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT schema_revision FROM shared.tenants WHERE id = :id"),
                            {"id": tenant.id}).scalar() == revision


def test_a_migration_that_never_gets_its_locks_gives_up_and_says_why(committed_db, engine, tmp_path,
                                                                      migrator_log):
    slug = unique_slug("stuck")
    tenant, _ = provision(committed_db, slug)
    folder = tmp_path / "versions"
    write_revision(folder, down_revision=migrator.tenant_head())
    retries: list[str] = []
    handler = ReleaseOnRetry(lambda: None)
    handler.retries = retries
    migrator_log.addHandler(handler)
    with engine.connect() as blocker:
        blocker.execute(text(f'SELECT count(*) FROM "{tenant.schema}".users'))
        try:
            report = migrator.migrate_fleet(engine, only=[slug], extra_locations=[folder],
                                            policy=migrator.LockPolicy(timeout_ms=50, attempts=3, pause_s=0.01))
        finally:
            migrator_log.removeHandler(handler)
            blocker.rollback()
    [result] = report.results
    assert result.status == "failed"
    assert "not granted within 50 ms in 3 attempts" in (result.error or "")
    assert len(retries) == 3  # two retries announced, then the final give-up
    with engine.connect() as conn:
        assert conn.execute(text("SELECT schema_revision FROM shared.tenants WHERE id = :id"),
                            {"id": tenant.id}).scalar() == migrator.tenant_head()


def test_two_shared_upgrades_take_turns(engine):
    """`courtyard migrate` run twice at once: the second waits for the first's advisory lock."""
    holder = engine.connect()
    holder.begin()
    holder.execute(text("SELECT pg_advisory_xact_lock(:k, hashtext('shared'))"),
                   {"k": int(AdvisoryLock.SHARED_MIGRATIONS)})
    finished = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            migrator.upgrade_shared(engine, migrator.LockPolicy(timeout_ms=5_000, attempts=1))
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=second)
    thread.start()
    waited = False
    try:
        for _ in range(200):
            if finished.is_set():
                break
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                     "AND objid = hashtext('shared')::oid")).scalar():
                    waited = True
                    break
            finished.wait(0.05)
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)
    assert waited, "the second upgrade did not wait for the first"
    assert not errors


# --------------------------------------------------------------------------- mail


class FakeSmtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib; while the message arrives, it asks PostgreSQL who is in a transaction."""

    server: Any

    def handle(self) -> None:
        self.wfile.write(b"220 fake ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 fake\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                self.server.seen_in_transaction.append(self.server.in_transaction())
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_the_mail_task_holds_no_transaction_while_the_message_is_sent(app, settings, committed_db):
    tenant, _ = provision(committed_db, unique_slug("mail"))
    assert settings.database_url is not None
    task_engine: Engine = make_engine(settings.database_url, pool_size=1, max_overflow=0,
                                      timeouts=settings.app_timeouts)
    pids: set[int] = set()

    @event.listens_for(task_engine, "connect")
    def _remember(dbapi_connection: Any, _record: Any) -> None:
        pids.add(dbapi_connection.info.backend_pid)

    def in_transaction() -> int:
        with psycopg.connect(normalise_url(settings.database_url).replace("+psycopg", "")) as conn:
            return int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) "
                                    "AND xact_start IS NOT NULL", (list(pids),)).fetchone()[0])

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), FakeSmtp)
    server.seen_in_transaction = []  # type: ignore[attr-defined]
    server.in_transaction = in_transaction  # type: ignore[attr-defined]
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    previous = task_runtime()
    configure_tasks(TaskRuntime(db=Database(task_engine), settings=settings,
                                mailer=SmtpMailer(f"smtp://127.0.0.1:{server.server_address[1]}",
                                                  "Courtyard <no-reply@courtyard.test>")))
    try:
        where = deliver_mail(str(tenant.id), "li.lei@example.test", "Hello 你好", "A message.")
    finally:
        configure_tasks(previous)
        server.shutdown()
        server.server_close()
        task_engine.dispose()
    assert where == f"smtp://127.0.0.1:{server.server_address[1]}"
    assert pids, "the task read the tenant through its engine"
    assert server.seen_in_transaction == [0]  # type: ignore[attr-defined]
