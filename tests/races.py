"""Two transactions at once: the second runs in a thread while the first stays open holding its locks.

Used where a test proves that a rule holds under concurrency (department moves, invitations accepted
twice): the second must be seen WAITING for the first, or the test proves nothing about the race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

# A row lock is waited for as a transaction id, which belongs to no database: match by backend.
_WAITING = ("SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())")


def waiting_for_a_lock(engine: Engine) -> bool:
    """Whether a session of this database waits for a lock (row, advisory or other), on any node.

    On Citus a tenant's rows live on a worker: the waiting is done there, by the backend the
    coordinator opened for the transaction, while the coordinator's own backend waits on the network
    and holds no lock of its own. So the same question is asked on every node (run_command_on_all_nodes
    runs as the calling role; the application's ordinary role may call it).
    """
    with engine.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first() is None:
            return bool(conn.execute(text(_WAITING)).scalar())
        answers = conn.execute(text("SELECT nodeid, success, result FROM run_command_on_all_nodes(:q)"),
                               {"q": _WAITING}).all()
        assert all(ok for _node, ok, _result in answers), answers
        return any(int(result) for _node, _ok, result in answers)


def second_waits_for_first(first: Session, second: Callable[[], Any], engine: Engine) -> tuple[bool, Any]:
    """Run ``second`` in a thread while ``first`` stays open; once ``second`` waits for a lock (or has
    finished without waiting), commit ``first``. Returns whether ``second`` waited, and what it
    returned or raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = second()
        except Exception as exc:  # handed to the test, which asserts on it
            outcome["result"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    waited = False
    for _ in range(600):  # 30 s at most
        if waiting_for_a_lock(engine):
            waited = True
            break
        if not thread.is_alive():
            break
        thread.join(0.05)
    first.commit()
    first.close()
    thread.join(60)
    assert not thread.is_alive(), "the second transaction never finished"
    return waited, outcome.get("result")
