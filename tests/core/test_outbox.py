"""The transactional outbox: a task queued by committed work runs, whatever happens after the commit."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from celery import Celery, current_app, shared_task
from sqlalchemy import func, insert, select, text, update

from core.db import uuid7
from core.tasks import (
    MAX_ATTEMPTS,
    RELAY_BATCH,
    DeadTask,
    OutboxTask,
    UnknownDeadLetters,
    backoff_s,
    dead_letters,
    drop_dead,
    outbox_status,
    publish,
    relay,
    relay_outbox,
    retry_dead,
    seal,
    send_after_commit,
    task_runtime,
    unseal,
)
from courtyard.celery_app import make_celery
from tenants import migrator, services
from tests.conftest import sign_in
from tests.tenants.test_views import flashes, mails_since, outbox, post

RAN: list[str] = []


@shared_task(name="tests.record")
def record(value: str) -> str:
    RAN.append(value)
    return value


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


def waiting(db, settings) -> list[list]:
    """The arguments of the rows still in the outbox, opened."""
    return [unseal(row.args, settings.secret_key) for row in queued(db)]


def queued(db) -> list[OutboxTask]:
    with db.transaction() as s:
        return list(s.scalars(select(OutboxTask).order_by(OutboxTask.id)))


@contextlib.contextmanager
def broker_down(settings, tmp_path) -> Iterator[Celery]:
    """The current Celery app, for a while, is Courtyard's, configured with a Redis nobody listens on."""
    before = current_app._get_current_object()
    dead = make_celery(settings.with_overrides(redis_url=f"unix://{tmp_path}/nobody.sock"))
    try:
        yield dead
    finally:
        before.set_current()
        before.set_default()


def test_a_task_leaves_only_after_commit_and_its_row_goes_with_it(db):
    def failing_unit() -> None:
        with db.transaction() as s:
            send_after_commit(s, "tests.record", "rolled back")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        failing_unit()
    assert RAN == []
    assert queued(db) == [], "a rollback takes the queued task with it"
    with db.transaction() as s:
        send_after_commit(s, "tests.record", "committed")
        s.flush()
        assert RAN == [], "nothing leaves before the commit"
        assert len(queued(db)) == 1
    assert RAN == ["committed"]
    assert queued(db) == [], "a task the broker took is no longer in the outbox"


def test_with_the_broker_down_the_commit_stands_and_the_relay_sends_later(db, settings, tmp_path):
    with broker_down(settings, tmp_path), db.transaction() as s:
        send_after_commit(s, "tests.record", "one")
        send_after_commit(s, "tests.record", "two")
    assert RAN == []
    assert waiting(db, settings) == [["one"], ["two"]], "both wait in the outbox"
    assert relay(db) == 0, "rows younger than the relay's delay are still the fast path's"
    assert relay(db, older_than_s=0) == 2
    assert RAN == ["one", "two"]
    assert queued(db) == []


def test_the_relay_leaves_what_it_cannot_hand_over(db, settings, tmp_path):
    with broker_down(settings, tmp_path), db.transaction() as s:
        send_after_commit(s, "tests.record", "later")
    with broker_down(settings, tmp_path):
        assert relay(db, older_than_s=0) == 0
    assert len(queued(db)) == 1
    assert relay(db, older_than_s=0) == 1
    assert RAN == ["later"]


def test_publish_skips_rows_already_sent(db):
    with db.transaction() as s:
        send_after_commit(s, "tests.record", "once")
        ids = list(s.info["outbox"])
    assert RAN == ["once"]
    assert publish(db, ids) == 0, "a second hand-over of the same ids finds nothing to send"
    assert RAN == ["once"]


def test_an_invitation_made_while_the_broker_is_down_is_mailed_by_the_relay(client, db, settings, tenant,
                                                                             tmp_path):
    assert sign_in(client, "acme").status_code == 302
    before = outbox(settings)
    with broker_down(settings, tmp_path):
        response = post(client, "/admin/users/invite", {"email": "han@acme.test", "name": "韩梅梅", "role": "sales"})
    assert response.status_code == 302, "the invitation is made: the broker is not the user's problem"
    assert "Invitation sent to han@acme.test." in flashes(client, "/admin/users")
    assert mails_since(settings, before) == []
    (row,) = queued(db)
    assert row.tenant_id == tenant.id
    assert row.task == "tenants.deliver_mail"
    assert relay(db, older_than_s=0) == 1
    (mail,) = mails_since(settings, before)
    assert mail["To"] == "han@acme.test"


def test_deleting_a_tenant_drops_what_it_had_queued(db, settings, tenant, other_tenant, tmp_path):
    with broker_down(settings, tmp_path):
        for t in (tenant, other_tenant):
            with db.transaction(t) as s:
                send_after_commit(s, "tests.record", t.slug, tenant_id=t.id)
        with db.transaction() as s:  # and a dead letter each: mail text and addresses, sealed
            s.add(DeadTask(id=uuid7(), task="tests.record", args=seal([t.slug], settings.secret_key),
                           tenant_id=t.id, created_at=func.now(), attempts=MAX_ATTEMPTS, last_error="boom"))
    with db.transaction() as s:
        services.delete_tenant(s, "acme")
    assert waiting(db, settings) == [["globex"]]
    with db.transaction() as s:
        assert [d.tenant_id for d in dead_letters(s)] == [other_tenant.id]


def test_rows_are_relayed_oldest_first_in_batches(db, settings, tmp_path):
    with broker_down(settings, tmp_path):
        for value in ("a", "b", "c"):
            with db.transaction() as s:
                send_after_commit(s, "tests.record", value)
    c = queued(db)[-1].id  # the last one queued
    with db.transaction() as s:  # make "c" the oldest (and so the first due)
        earlier = func.now() - func.make_interval(0, 0, 0, 0, 0, 1)
        s.execute(update(OutboxTask).where(OutboxTask.id == c).values(created_at=earlier, next_attempt_at=earlier))
    assert relay(db, older_than_s=0, batch=2) == 2
    assert RAN == ["c", "a"]
    assert relay(db, older_than_s=0, batch=2) == 1
    assert RAN == ["c", "a", "b"]


def test_a_row_that_cannot_be_sent_neither_blocks_the_others_nor_undoes_them(db, settings, caplog):
    # A real broker (this run's Redis) in non-eager mode; the bad row's arguments no longer fit its task
    # (as after a deploy that changed the task), which Celery refuses before publishing.
    before = current_app._get_current_object()
    live = make_celery(settings)
    try:
        with db.transaction() as s:  # rows as a crash left them: only the relay will see them
            s.add(OutboxTask(task="tests.record", args=["too", "many"]))
            s.add(OutboxTask(task="tests.record", args=["fine"]))
        assert relay(db, older_than_s=0, app=live) == 1
        assert relay(db, older_than_s=0, app=live) == 0, "the good row was deleted once sent"
    finally:
        before.set_current()
        before.set_default()
        live.close()
    assert [row.args for row in queued(db)] == [["too", "many"]]
    assert "could not be handed over" in caplog.text



def test_waiting_arguments_are_sealed_and_a_changed_secret_key_holds_only_those_rows(db, settings, tmp_path,
                                                                                     caplog):
    with broker_down(settings, tmp_path), db.transaction() as s:
        send_after_commit(s, "tests.record", "reset link https://acme.example/reset/s3cr3t")
    (row,) = queued(db)
    assert "s3cr3t" not in json.dumps(row.args), "backups of the database never show the link"
    with db.transaction() as s:  # as if sealed under a secret key that has since been replaced
        s.add(OutboxTask(task="tests.record", args=seal(["other key"], "a-previous-secret-key")))
    assert relay(db, older_than_s=0) == 1
    assert RAN == ["reset link https://acme.example/reset/s3cr3t"]
    assert len(queued(db)) == 1
    assert "sealed with another secret key" in caplog.text


# --------------------------------------------------------------------------- poison rows: backoff, dead letters


def _age(db, **values) -> None:
    """Make every waiting row due now (as if its backoff had run out), or set other columns."""
    with db.transaction() as s:
        s.execute(update(OutboxTask).values(**(values or {"next_attempt_at": func.now() - func.make_interval(
            0, 0, 0, 0, 0, 0, 3600)})))


def test_500_unsendable_rows_at_the_front_do_not_stall_the_one_behind_them(db, settings, caplog):
    """Finding 9: the relay re-read the same oldest 500 rows at every run and never reached newer ones."""
    with db.transaction() as s:
        # Rows sealed under a secret key since replaced: nothing can open them. They are the oldest.
        old = seal(["poison"], "a-previous-secret-key")
        s.execute(insert(OutboxTask),
                  [{"id": uuid7(), "task": "tests.record", "args": old} for _ in range(RELAY_BATCH)])
        s.flush()
        s.add(good := OutboxTask(task="tests.record", args=seal(["good"], settings.secret_key)))
    with db.transaction() as s:  # all are due, the good row last
        s.execute(update(OutboxTask).where(OutboxTask.id != good.id)
                  .values(next_attempt_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 120)))
        s.execute(update(OutboxTask).where(OutboxTask.id == good.id)
                  .values(next_attempt_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 60)))
    assert task_runtime().db is db
    # One beat run: the first batch is all poison, the next one holds the good row.
    assert relay_outbox.run(max_batches=3) == 1
    assert RAN == ["good"]
    rows = queued(db)
    assert len(rows) == RELAY_BATCH
    assert {r.attempts for r in rows} == {1}, "each poison row counted one failed attempt"
    assert {r.last_error for r in rows} == {"sealed with another secret key"}
    # Waiting out their backoff, they are not taken again at once.
    assert relay(db, older_than_s=0) == 0
    assert {r.attempts for r in queued(db)} == {1}


def test_a_row_that_keeps_failing_becomes_a_dead_letter_after_max_attempts(db, settings):
    with db.transaction() as s:
        s.add(OutboxTask(task="tests.record", args=seal(["poison"], "a-previous-secret-key")))
    for attempt in range(1, MAX_ATTEMPTS):
        _age(db)
        assert relay(db, older_than_s=0) == 0
        (row,) = queued(db)
        assert row.attempts == attempt
    waits = [backoff_s(n) for n in range(1, MAX_ATTEMPTS)]
    assert all(a < b for a, b in itertools.pairwise(waits)), "each failure waits longer than the last"
    _age(db)
    assert relay(db, older_than_s=0) == 0
    assert queued(db) == []
    with db.transaction() as s:
        (dead,) = dead_letters(s)
        assert dead.id == row.id
        assert dead.attempts == MAX_ATTEMPTS
        assert dead.last_error == "sealed with another secret key"
        assert dead.args == row.args, "still sealed"
        assert outbox_status(s)["dead_letters"] == 1
    _age(db)
    assert relay(db, older_than_s=0) == 0, "a dead letter is not retried by the relay"


def test_a_broker_outage_counts_no_attempt(db, settings, tmp_path):
    with broker_down(settings, tmp_path), db.transaction() as s:
        send_after_commit(s, "tests.record", "patient")
    for _ in range(MAX_ATTEMPTS + 1):
        with broker_down(settings, tmp_path):
            assert relay(db, older_than_s=0) == 0
    (row,) = queued(db)
    assert row.attempts == 0
    assert relay(db, older_than_s=0) == 1
    assert RAN == ["patient"]


def test_retrying_and_dropping_dead_letters(db, settings):
    ids = []
    with db.transaction() as s:
        for value in ("one", "two", "three"):
            s.add(DeadTask(id=(i := uuid7()), task="tests.record", args=seal([value], settings.secret_key),
                           created_at=func.now(), attempts=MAX_ATTEMPTS, last_error="TypeError: boom"))
            ids.append(i)
    with db.transaction() as s, pytest.raises(UnknownDeadLetters):
        retry_dead(s, [ids[0], uuid7()])
    with db.transaction() as s:
        assert len(dead_letters(s)) == 3, "an unknown id changes nothing"
        assert retry_dead(s, [ids[0]]) == 1
    assert relay(db, older_than_s=0) == 1, "a retried dead letter is due at once"
    assert RAN == ["one"]
    with db.transaction() as s:
        assert drop_dead(s, None) == 2
        assert dead_letters(s) == []
    assert queued(db) == []


def test_the_outbox_is_in_citus_metadata_exactly_when_citus_is_installed(engine):
    """Migration 0005: on Citus the outbox is a Citus local table (so that it commits two-phase with
    tenant rows on workers, see tests/citus/); on plain PostgreSQL it stays an ordinary table and the
    migration is harmless."""
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(migrator.alembic_config("shared")).get_current_head()
        assert conn.execute(text("SELECT version_num FROM shared.alembic_version")).scalar() == head
        if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first() is None:
            assert conn.execute(text("SELECT to_regclass('pg_dist_partition')")).scalar() is None
            assert conn.execute(text("SELECT relkind FROM pg_class WHERE oid = 'shared.task_outbox'::regclass")
                                ).scalar() == "r"
        else:
            placement = conn.execute(text(
                "SELECT partmethod, repmodel FROM pg_dist_partition WHERE logicalrelid = 'shared.task_outbox'::regclass"
            )).one()
            assert tuple(placement) == ("n", "s")  # no distribution column, one shard: a Citus local table
