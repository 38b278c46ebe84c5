"""Database engine, declarative bases and tenant-bound sessions.

Tenant models live on :data:`PLACEHOLDER_SCHEMA`; a session is bound to one tenant through
``schema_translate_map``. Because the translation happens per statement and nothing is stored on
the connection (no ``search_path``), a pooled connection carries no tenant state from one checkout
to the next.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    MetaData,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column
from sqlalchemy.orm.session import ORMExecuteState
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import TableClause

from core.errors import TenantNotBound
from core.settings import DbTimeouts
from core.tenancy import PLACEHOLDER_SCHEMA, SHARED_SCHEMA, BoundTenant

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Uuid7Clock:
    """The time part of this process's uuid7s: never the same twice, never going back.

    48 bits of Unix milliseconds and 12 bits of sub-millisecond time (RFC 9562 §6.2, method 3). An id
    made within the same 1/4096 ms as the previous one, or after the wall clock stepped back, takes the
    previous one's time plus one tick (method 1's guard), so ids made later sort later.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = 0

    def next(self) -> int:
        ms, rest = divmod(time.time_ns(), 1_000_000)
        stamp = (ms << 12) | (rest * 4096 // 1_000_000)
        with self.lock:
            stamp = max(stamp, self.last + 1)
            self.last = stamp
        return stamp

    def reset_lock(self) -> None:
        # A fork while another thread held the lock would leave the child a lock nobody releases.
        self.lock = threading.Lock()


_UUID7_CLOCK = _Uuid7Clock()
if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_UUID7_CLOCK.reset_lock)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 v7), made by the application.

    Records keep this identity when an intranet install uploads them, and time order keeps B-tree
    inserts local. Python 3.11 has no ``uuid.uuid7``, so it is built here: 48 bits of Unix
    milliseconds, version, 12 bits of sub-millisecond time, variant, 62 random bits. Within one
    process the ids strictly increase, so "order by id" is creation order even for ids made in the
    same millisecond (the audit log lists newest first by id); across processes they are ordered by
    time to within the clocks' agreement.
    """
    stamp = _UUID7_CLOCK.next()
    rand = int.from_bytes(os.urandom(8), "big")
    value = ((stamp >> 12) & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (stamp & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def text_problem(value: str) -> str | None:
    """Why no text column can store ``value``: "nul" (PostgreSQL takes no NUL character), "surrogate"
    (a lone surrogate is not UTF-8: JSON may carry one, and a non-UTF-8 command-line argument arrives as
    one), or None. Entry points check with this so that the driver's error is never the answer."""
    if "\x00" in value:
        return "nul"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "surrogate"
    return None


uuid_pk = Annotated[uuid.UUID, mapped_column(primary_key=True, default=uuid7)]


class SharedBase(DeclarativeBase):
    """Control-plane models: one schema for the whole platform."""

    metadata = MetaData(schema=SHARED_SCHEMA, naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class TenantBase(DeclarativeBase):
    """Tenant models: declared on the placeholder schema and bound per tenant at run time."""

    metadata = MetaData(schema=PLACEHOLDER_SCHEMA, naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class TenantRecord:
    """Columns every tenant record carries (DESIGN rule 8): identity, who/when, and a version.

    ``version`` drives optimistic concurrency (ETag / If-Match) and, later, change capture by the
    sync agent; SQLAlchemy increments it on every UPDATE and refuses a stale one.
    """

    id: Mapped[uuid_pk]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())
    created_by: Mapped[uuid.UUID | None]
    updated_by: Mapped[uuid.UUID | None]
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805 - SQLAlchemy passes the class
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10, echo: bool = False,
                pre_ping: bool = True, timeouts: DbTimeouts | None = None) -> Engine:
    """An engine on psycopg 3. ``pre_ping`` tests each connection at checkout (one round trip).

    The web app turns it off: on its hot path the round trip costs more than it saves, and a
    connection the server dropped is noticed on first use instead (SQLAlchemy then empties the pool,
    and that one request is answered 503, to be retried). Long-lived jobs and commands keep it on.

    ``timeouts`` are set on every connection when it is opened (see :class:`DbTimeouts`); without
    them the server's own defaults apply (usually none at all).
    """
    connect_args: dict[str, Any] = {}
    if timeouts is not None:
        connect_args["options"] = timeouts.options()
    return create_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        pool_reset_on_return="rollback",
        echo=echo,
        connect_args=connect_args,
    )


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pick the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def tenant_options(tenant: BoundTenant | str) -> dict[str, Any]:
    schema = tenant if isinstance(tenant, str) else tenant.schema
    return {"schema_translate_map": {PLACEHOLDER_SCHEMA: schema}}


class CourtyardSession(Session):
    """A session that knows which tenant it serves (``info['tenant']``), or that it serves none."""

    @property
    def tenant(self) -> BoundTenant:
        tenant = self.info.get("tenant")
        if tenant is None:
            msg = "This session is bound to no tenant; tenant data cannot be read or written through it."
            raise TenantNotBound(msg)
        return tenant  # type: ignore[no-any-return]


def _is_tenant_mapper(mapper: Any) -> bool:
    table = getattr(mapper, "local_table", None)
    return getattr(table, "schema", None) == PLACEHOLDER_SCHEMA


@event.listens_for(CourtyardSession, "do_orm_execute")
def _fail_closed_on_query(state: ORMExecuteState) -> None:
    # Defence in depth: the placeholder schema does not exist, so the database would refuse anyway;
    # raising here gives a clear error and never sends the statement.
    if state.session.info.get("tenant") is not None:
        return
    # all_mappers names only the selected entities: a count over a tenant table, a subquery or a bulk
    # UPDATE/DELETE names its tables elsewhere in the statement.
    if any(_is_tenant_mapper(m) for m in state.all_mappers) or any(
            isinstance(el, TableClause) and el.schema == PLACEHOLDER_SCHEMA
            for el in visitors.iterate(state.statement)):  # type: ignore[arg-type]
        msg = "Tenant data queried through a session bound to no tenant."
        raise TenantNotBound(msg)


@event.listens_for(CourtyardSession, "before_flush")
def _fail_closed_on_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    if session.info.get("tenant") is not None:
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if _is_tenant_mapper(type(obj).__mapper__):
            msg = f"{type(obj).__name__} written through a session bound to no tenant."
            raise TenantNotBound(msg)


@event.listens_for(CourtyardSession, "after_begin")
def _bind_connection(session: Session, _transaction: Any, connection: Connection) -> None:
    # Every transaction re-applies the session's own tenant to the connection it got. In SQLAlchemy
    # 2.0 Connection.execution_options() changes the connection in place, and a pooled connection
    # comes back as a new Connection object, so no map outlives its transaction; an unbound session
    # maps the placeholder to itself, which does not exist (fail closed).
    tenant = session.info.get("tenant")
    connection.execution_options(schema_translate_map={
        PLACEHOLDER_SCHEMA: tenant.schema if tenant is not None else PLACEHOLDER_SCHEMA})


class Database:
    """Hands out sessions: one per request or task, optionally bound to one tenant.

    ``connection`` is set by the test-suite to run everything inside one outer transaction with a
    savepoint per session (``join_transaction_mode="create_savepoint"``).
    """

    def __init__(self, engine: Engine, *, connection: Connection | None = None) -> None:
        self.engine = engine
        self.connection = connection

    def session(self, tenant: BoundTenant | None = None) -> CourtyardSession:
        kwargs: dict[str, Any] = {"expire_on_commit": False}
        if self.connection is not None:
            kwargs["bind"] = self.connection
            kwargs["join_transaction_mode"] = "create_savepoint"
        else:
            kwargs["bind"] = self.engine
        session = CourtyardSession(**kwargs)
        session.info["tenant"] = tenant
        session.info["database"] = self  # where the after-commit hand-over of queued tasks runs
        return session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection outside any transaction (autocommit), for a lookup that stands alone.

        Nothing is held once it has answered: no snapshot, no lock, no connection. The request path uses
        it for the tenant lookup, so that nothing is open while Redis is asked about quotas and limits;
        it costs no more round trips than a transaction would (no BEGIN, no COMMIT).
        """
        if self.connection is not None:  # the test-suite: inside its one outer transaction
            yield self.connection
            return
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def transaction(self, tenant: BoundTenant | None = None) -> Iterator[CourtyardSession]:
        """A unit of work: commit on success, roll back on error, always close."""
        session = self.session(tenant)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def bind_tenant(session: Session, tenant: BoundTenant) -> Session:
    """Bind a session that served no tenant yet to ``tenant`` (e.g. after resolving it, or provisioning).

    A session never serves two tenants: its identity map would mix rows of both.
    """
    current = session.info.get("tenant")
    if current is not None and current != tenant:
        msg = f"This session already serves tenant {current.slug}; use a new session for {tenant.slug}."
        raise TenantNotBound(msg)
    session.info["tenant"] = tenant
    if session.in_transaction():
        session.connection().execution_options(**tenant_options(tenant))
    return session


class AdvisoryLock(enum.IntEnum):
    """The first key of every transaction-level advisory lock Courtyard takes, kept in one place so
    that two uses never share a key by accident (the second key names the object)."""

    SHARED_MIGRATIONS = 0x43590001
    DEPARTMENT_TREE = 0x43590002
    #: One worker at a time runs an import job (crm.records.import_jobs).
    IMPORT_JOB = 0x43590003


def advisory_xact_lock(conn: Session | Connection, kind: AdvisoryLock, name: str) -> None:
    """Wait for the advisory lock (``kind``, ``name``) until this transaction ends.

    The wait is a lock wait: ``lock_timeout`` bounds it like any other.
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(:kind, hashtext(:name))"), {"kind": int(kind), "name": name})


@event.listens_for(CourtyardSession, "after_flush")
def _note_flush(session: Session, _ctx: Any) -> None:
    session.info["wrote"] = True


@event.listens_for(CourtyardSession, "do_orm_execute")
def _note_bulk_write(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


@event.listens_for(CourtyardSession, "after_transaction_end")
def _forget_writes(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop("wrote", None)


def release(session: Session) -> None:
    """End the session's transaction before slow work (password hashing, a network call), if it has
    only read so far: an open transaction would hold its snapshot, its locks and a pooled connection
    for the whole time. The session stays usable; its next statement starts a new transaction.

    A transaction that has written stays open (ending it would commit half a unit of work): callers put
    the slow work before their first write.
    """
    if not session.in_transaction():
        return
    if session.info.get("wrote") or session.new or session.dirty or session.deleted:
        return
    session.commit()
