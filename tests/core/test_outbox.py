"""The transactional outbox: a task queued by committed work runs, whatever happens after the commit."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from celery import Celery, current_app, shared_task
from sqlalchemy import func, select, text, update

from core.tasks import OutboxTask, publish, relay, seal, send_after_commit, unseal
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
    with db.transaction() as s:
        services.delete_tenant(s, "acme")
    assert waiting(db, settings) == [["globex"]]


def test_rows_are_relayed_oldest_first_in_batches(db, settings, tmp_path):
    with broker_down(settings, tmp_path):
        for value in ("a", "b", "c"):
            with db.transaction() as s:
                send_after_commit(s, "tests.record", value)
    c = queued(db)[-1].id  # the last one queued
    with db.transaction() as s:  # make "c" the oldest
        s.execute(update(OutboxTask).where(OutboxTask.id == c)
                  .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 1)))
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
