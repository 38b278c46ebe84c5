"""Celery task plumbing: a transactional outbox, so a task queued by committed work is never lost.

A unit of work that wants a task run writes it into ``shared.task_outbox`` in its own transaction
(:func:`send_after_commit`). Nothing leaves before the commit, and nothing is left behind by a
rollback: the row goes with the rest. Once the transaction has committed, the same process hands the
rows to the broker and deletes them (the fast path, milliseconds later). If the process is killed
between the commit and the hand-over, or the broker is down at that moment, the rows stay, and the
beat task :func:`relay_outbox` hands them over within a minute. Delivery is therefore *at least
once*: a task must tolerate running twice (the rare case of a process dying after the broker took
the message but before the row was deleted).

A row that cannot be handed over for a reason of its own (sealed under a secret key since replaced,
arguments its task no longer takes) is not retried at every run: each failure counts an attempt and
pushes its next attempt back (exponential backoff), so the rows behind it still go; after
:data:`MAX_ATTEMPTS` it moves to ``shared.task_dead_letters``, where an operator inspects, retries or
drops it (``courtyard outbox``). A broker outage is nobody's row's fault and counts no attempt.

A task that touches tenant data takes ``tenant_id`` as its first argument and binds it itself; the
tenant may have been suspended since the task was queued.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from celery import Celery, current_app, shared_task
from cryptography.fernet import Fernet, InvalidToken
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy import DateTime, Index, Integer, String, delete, event, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import SharedBase, uuid7

if TYPE_CHECKING:
    from core.storage import Storage

log = logging.getLogger(__name__)

#: A row this old is the relay's to send: the fast path has had its chance and did not delete it.
RELAY_AFTER_S = 30
SEALED = "fernet:v1"  # first element of a sealed row's args
RELAY_BATCH = 500
#: Failed hand-overs of one row before it becomes a dead letter.
MAX_ATTEMPTS = 8
#: The wait after the first failure; it doubles with each further one, up to BACKOFF_MAX_S.
BACKOFF_BASE_S = 60
BACKOFF_MAX_S = 6 * 3600
#: The stored reason of a failure is cut to this (it is an exception's text: unbounded).
ERROR_CHARS = 500


class OutboxTask(SharedBase):
    """A task queued by committed work and not yet handed to the broker."""

    __tablename__ = "task_outbox"
    __table_args__ = (Index("ix_task_outbox_next_attempt_at", "next_attempt_at"),
                      {"comment": "Tasks queued by committed work, deleted once the broker has them."})

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    task: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB)
    # Refers to shared.tenants by id without a foreign key: the row must not hold up a tenant's deletion.
    tenant_id: Mapped[uuid.UUID | None]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: Failed hand-overs so far (a broker outage counts none).
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    #: When the relay may take the row (again): its creation, then pushed back after each failure.
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_CHARS))


class DeadTask(SharedBase):
    """An outbox row that failed :data:`MAX_ATTEMPTS` hand-overs, kept for an operator to decide."""

    __tablename__ = "task_dead_letters"
    __table_args__ = (Index("ix_task_dead_letters_died_at", "died_at"),
                      {"comment": "Outbox tasks that could not be handed to the broker; `courtyard outbox`."})

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # the outbox row's own id
    task: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB)  # still sealed
    tenant_id: Mapped[uuid.UUID | None]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(ERROR_CHARS))
    died_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def _box(secret_key: str) -> Fernet:
    # A key of its own, derived from the platform's secret: rows in backups read as noise.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"courtyard task outbox\0" + secret_key.encode()).digest()))


def seal(args: list[Any], secret_key: str) -> list[Any]:
    """Task arguments as the outbox stores them: encrypted, because they can carry secrets (a reset
    link in a mail's text) and every row reaches the WAL, replicas and backups."""
    return [SEALED, _box(secret_key).encrypt(json.dumps(args).encode()).decode()]


def unseal(stored: list[Any], secret_key: str) -> list[Any]:
    if len(stored) == 2 and stored[0] == SEALED:
        args: list[Any] = json.loads(_box(secret_key).decrypt(stored[1].encode()))
        return args
    return stored  # written without sealing (by hand, or before sealing existed)


def send_after_commit(session: Session, task: str, *args: Any, tenant_id: uuid.UUID | None = None) -> None:
    """Queue the task named ``task`` with JSON ``args``; it runs only if this unit of work commits.

    For a tenant's task, pass its id both as the first argument (the task binds it) and as
    ``tenant_id`` (deleting the tenant drops what it still had queued).
    """
    row = OutboxTask(id=uuid7(), task=task, args=seal(list(args), task_runtime().settings.secret_key),
                     tenant_id=tenant_id)
    session.add(row)
    session.info.setdefault("outbox", []).append(row.id)


def _hand_over(session: Session, rows: list[OutboxTask], app: Celery) -> int:
    """Give ``rows`` (locked by the caller) to the broker and delete them; returns how many went.

    Whatever happens to one row, the rows the broker took are deleted: a failure must never roll back
    the record of what was already sent (each retry would send those again). A row that fails for a
    reason of its own is put back with its next attempt later (:func:`_failed`).
    """
    sent: list[uuid.UUID] = []
    failed: list[tuple[OutboxTask, str]] = []
    eager = bool(app.conf.task_always_eager)
    secret_key = task_runtime().settings.secret_key
    try:
        for row in rows:
            registered = app.tasks.get(row.task)
            try:
                args = unseal(row.args, secret_key)
            except InvalidToken:
                # Sealed under a secret key that has since changed: no retry will open it, unless the
                # old key comes back; it goes the way of every failing row, to the dead letters.
                log.error("task %s (outbox row %s) was sealed with another secret key", row.task, row.id)
                failed.append((row, "sealed with another secret key"))
                continue
            try:
                if registered is not None:
                    # Through the task object, so eager mode (the test-suite) runs it in place. No publish
                    # retries: a broker that is down must not hold up a request; the relay retries. Nobody
                    # here waits for the result, and subscribing to it would be one more Redis connection.
                    registered.apply_async(args=tuple(args), retry=False, ignore_result=True)
                else:
                    app.send_task(row.task, args=args, retry=False, ignore_result=True)
            except Exception as exc:
                if eager:
                    raise  # the task ran in place (the test-suite): its failure must be seen
                if isinstance(exc, BrokerUnavailable | ConnectionError):
                    log.warning("broker unavailable, %d task(s) left for the relay: %s", len(rows) - len(sent), exc)
                    break
                # This row only (arguments a changed task no longer takes, say): it is retried later,
                # and the rows after it still go.
                log.exception("task %s (outbox row %s) could not be handed over", row.task, row.id)
                failed.append((row, f"{type(exc).__name__}: {exc}"))
                continue
            sent.append(row.id)
    finally:
        if sent:
            session.execute(delete(OutboxTask).where(OutboxTask.id.in_(sent)))
        for row, reason in failed:
            _failed(session, row, reason)
    return len(sent)


def backoff_s(attempts: int) -> int:
    """The wait before the next attempt of a row that has failed ``attempts`` times (≥ 1)."""
    return int(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(attempts - 1, 30)))


def _failed(session: Session, row: OutboxTask, reason: str) -> None:
    """Count a failed hand-over: the row waits longer each time, and after MAX_ATTEMPTS it is dead."""
    row.attempts += 1
    row.last_error = reason[:ERROR_CHARS]
    if row.attempts >= MAX_ATTEMPTS:
        log.error("task %s (outbox row %s) failed %d times and is now a dead letter: %s", row.task, row.id,
                  row.attempts, row.last_error)
        session.add(DeadTask(id=row.id, task=row.task, args=row.args, tenant_id=row.tenant_id,
                             created_at=row.created_at, attempts=row.attempts, last_error=row.last_error))
        session.delete(row)
        return
    # The database's clock, as the relay's query compares with it. statement_timestamp(), not
    # clock_timestamp(): Citus refuses a VOLATILE function in an UPDATE of a table in its metadata
    # (the outbox is one, migration 0005), and the whole hand-over, sent rows' deletion included,
    # would roll back. The failure is recorded by this statement: its start is the moment of failure.
    row.next_attempt_at = func.statement_timestamp() + func.make_interval(
        0, 0, 0, 0, 0, 0, backoff_s(row.attempts))


def publish(database: Any, ids: list[uuid.UUID], app: Celery | None = None) -> int:
    """Hand the committed rows ``ids`` to the broker now (the fast path after a commit)."""
    with database.transaction() as session:
        # SKIP LOCKED: a row the relay is sending at this moment is the relay's.
        rows = list(session.scalars(select(OutboxTask).where(OutboxTask.id.in_(ids))
                                    .order_by(OutboxTask.id).with_for_update(skip_locked=True)))
        return _hand_over(session, rows, app or current_app)


def relay(database: Any, *, older_than_s: float = RELAY_AFTER_S, batch: int = RELAY_BATCH,
          app: Celery | None = None) -> int:
    """Hand over rows left behind (a crash or a broker outage after their commit), oldest first.

    Returns how many were sent. Rows waiting out a backoff are not taken, so rows that keep failing
    never stand in front of the ones behind them.
    """
    return _relay(database, older_than_s, batch, app)[1]


def _relay(database: Any, older_than_s: float, batch: int, app: Celery | None) -> tuple[int, int]:
    """(rows taken, rows sent)"""
    with database.transaction() as session:
        rows = list(session.scalars(
            select(OutboxTask)
            # statement_timestamp(), not now(): the age counts to this statement, not to the start of the
            # transaction. Not clock_timestamp() either: STABLE, it is computed once, so the condition can
            # walk ix_task_outbox_next_attempt_at instead of filtering every row, and Citus can plan it.
            .where(OutboxTask.next_attempt_at
                   < func.statement_timestamp() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s))
            .order_by(OutboxTask.next_attempt_at, OutboxTask.id).limit(batch).with_for_update(skip_locked=True)))
        return len(rows), _hand_over(session, rows, app or current_app)


# --------------------------------------------------------------------------- dead letters (operators)

#: Most dead letters one listing shows (the table can hold many after a bad deploy).
DEAD_LIST_MAX = 1000


def outbox_status(session: Session) -> dict[str, Any]:
    """What waits in the outbox and how much of it is failing, and how many dead letters there are."""
    waiting, failing, oldest = session.execute(select(
        func.count(), func.count().filter(OutboxTask.attempts > 0), func.min(OutboxTask.created_at))).one()
    dead = session.scalar(select(func.count()).select_from(DeadTask))
    return {"waiting": waiting, "failing": failing, "oldest": oldest, "dead_letters": dead}


def dead_letters(session: Session, limit: int = 100) -> list[DeadTask]:
    """The most recent dead letters first."""
    limit = max(1, min(limit, DEAD_LIST_MAX))
    return list(session.scalars(select(DeadTask).order_by(DeadTask.died_at.desc(), DeadTask.id).limit(limit)))


class UnknownDeadLetters(LookupError):
    """Some of the ids asked for are not dead letters: nothing was changed."""

    def __init__(self, missing: list[uuid.UUID]) -> None:
        super().__init__(", ".join(map(str, missing)))
        self.missing = missing


def _removed(session: Session, ids: list[uuid.UUID] | None) -> list[Any]:
    """Delete the chosen dead letters (``None``: all) and return them; all of ``ids`` or none."""
    statement = delete(DeadTask)
    if ids is not None:
        found = set(session.scalars(select(DeadTask.id).where(DeadTask.id.in_(ids)).with_for_update()))
        missing = sorted(set(ids) - found)
        if missing:
            raise UnknownDeadLetters(missing)
        statement = statement.where(DeadTask.id.in_(ids))
    return list(session.execute(statement.returning(
        DeadTask.id, DeadTask.task, DeadTask.args, DeadTask.tenant_id, DeadTask.created_at, DeadTask.last_error)))


def retry_dead(session: Session, ids: list[uuid.UUID] | None) -> int:
    """Put dead letters (``None``: all) back into the outbox with a fresh count, due now; all or none."""
    rows = _removed(session, ids)
    if rows:
        session.execute(insert(OutboxTask), [
            # Due at once: the relay's next run takes it.
            {"id": r.id, "task": r.task, "args": r.args, "tenant_id": r.tenant_id, "created_at": r.created_at,
             "next_attempt_at": r.created_at, "last_error": r.last_error} for r in rows])
    return len(rows)


def drop_dead(session: Session, ids: list[uuid.UUID] | None) -> int:
    """Delete dead letters (``None``: all) for good; all or none."""
    return len(_removed(session, ids))


def _install_hooks() -> None:
    @event.listens_for(Session, "after_commit")
    def _release(session: Session) -> None:
        # Only the outermost commit releases: a savepoint's commit is not durable yet.
        if session.in_nested_transaction():
            return
        ids = session.info.pop("outbox", None)
        database = session.info.get("database")
        if ids and database is not None:
            try:
                publish(database, ids)
            except Exception:
                if current_app.conf.task_always_eager:
                    raise  # the test-suite runs tasks in place and must see them fail
                # The work is committed and its tasks are safe in the outbox: the caller must not see a
                # failure it can do nothing about (the database gone, say). The relay sends them.
                log.exception("handing %d committed task(s) to the broker failed; the relay will", len(ids))

    @event.listens_for(Session, "after_soft_rollback")
    def _drop(session: Session, previous_transaction: Any) -> None:
        if previous_transaction.parent is None:
            session.info.pop("outbox", None)


_install_hooks()


@shared_task(name="core.relay_outbox")
def relay_outbox(max_batches: int = 20) -> int:
    """Beat task: send what the fast path left behind, batch after batch while there is more.

    After an outage the backlog can be large; one batch per beat tick would take an hour to drain it.
    """
    total = 0
    for _ in range(max_batches):
        # A full batch that sent nothing (every row failing) still means "go on": the failures were
        # pushed back, and the next batch holds the rows behind them.
        taken, sent = _relay(task_runtime().db, RELAY_AFTER_S, RELAY_BATCH, None)
        total += sent
        if taken < RELAY_BATCH:
            break
    return total


class TaskRuntime:
    """What task bodies need (database, mailer, settings, attachment storage), set once per process by
    the composition root."""

    def __init__(self, db: Any, mailer: Any, settings: Any, storage: Storage | None = None) -> None:
        self.db = db
        self.mailer = mailer
        self.settings = settings
        self.storage = storage


_task_runtime: TaskRuntime | None = None


def configure_tasks(runtime: TaskRuntime) -> None:
    global _task_runtime  # noqa: PLW0603 - one per process, set by courtyard before any task runs
    _task_runtime = runtime


def task_runtime() -> TaskRuntime:
    if _task_runtime is None:
        msg = "Task runtime not configured: start workers through `courtyard worker`"
        raise RuntimeError(msg)
    return _task_runtime
