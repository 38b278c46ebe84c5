"""Celery task plumbing: tasks are sent after commit and bind their tenant themselves.

A task that touches tenant data takes ``tenant_id`` as its first argument; the base class looks the
tenant up (it may have been suspended since), binds a session to it and hands it to the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session


class AfterCommit:
    """Collects task sends during a unit of work and releases them only once it has committed.

    A task sent before commit could run before its data exists, or for data that is then rolled back.
    """

    def __init__(self) -> None:
        self._pending: list[Callable[[], Any]] = []

    def add(self, send: Callable[[], Any]) -> None:
        self._pending.append(send)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for send in pending:
            send()

    def discard(self) -> None:
        self._pending.clear()


def pending_sends(session: Session) -> AfterCommit:
    """The after-commit queue of a session, created on first use and drained by its commit."""
    queue = session.info.get("after_commit")
    if queue is None:
        queue = AfterCommit()
        session.info["after_commit"] = queue
    return queue


def send_after_commit(session: Session, send: Callable[[], Any]) -> None:
    pending_sends(session).add(send)


def _install_hooks() -> None:
    from sqlalchemy import event

    @event.listens_for(Session, "after_commit")
    def _release(session: Session) -> None:
        queue = session.info.get("after_commit")
        # Only the outermost commit releases: a savepoint commit is not durable yet.
        if queue is not None and not session.in_nested_transaction():
            queue.flush()

    @event.listens_for(Session, "after_soft_rollback")
    def _drop(session: Session, previous_transaction: Any) -> None:
        queue = session.info.get("after_commit")
        if queue is not None and previous_transaction.parent is None:
            queue.discard()


_install_hooks()


class TaskRuntime:
    """What task bodies need (database, mailer, settings), set once per process by the composition root."""

    def __init__(self, db: Any, mailer: Any, settings: Any) -> None:
        self.db = db
        self.mailer = mailer
        self.settings = settings


_task_runtime: TaskRuntime | None = None


def configure_tasks(runtime: TaskRuntime) -> None:
    global _task_runtime  # noqa: PLW0603 - one per process, set by courtyard before any task runs
    _task_runtime = runtime


def task_runtime() -> TaskRuntime:
    if _task_runtime is None:
        msg = "Task runtime not configured: start workers through `courtyard worker`"
        raise RuntimeError(msg)
    return _task_runtime
