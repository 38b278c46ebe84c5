"""A real Celery worker process: tasks take the tenant id, bind it themselves and skip gone tenants."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from sqlalchemy import func, select

from core.permissions import Actor
from core.tasks import OutboxTask, relay
from courtyard.runtime import celery_redis_url
from tenants import services
from tests.conftest import PASSWORD, unique_slug


@pytest.fixture
def worker(settings, tmp_path):
    env = dict(os.environ, COURTYARD_DATABASE_URL=settings.database_url, COURTYARD_REDIS_URL=settings.redis_url,
               COURTYARD_VAR_DIR=str(tmp_path), COURTYARD_SECRET_KEY="test", COURTYARD_LOG_JSON="1")
    # The worker's output goes to a file: a pipe nobody reads would block the worker once it filled up,
    # and the file says what the worker did when an assertion below fails.
    log_path = tmp_path / "worker.log"
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "courtyard.worker", "worker", "--pool", "solo",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    sender = Celery("test-sender", broker=celery_redis_url(settings.redis_url),
                    backend=celery_redis_url(settings.redis_url), set_as_current=False)
    yield Worker(sender, tmp_path / "outbox", proc, log_path)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    sender.close()


@dataclass
class Worker:
    sender: Celery
    outbox: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def result(self, sent: AsyncResult, timeout: float = 60.0) -> object:
        """The task's return value; a worker that never answers fails the test with its own output."""
        try:
            return sent.get(timeout=timeout)
        except CeleryTimeout:
            pytest.fail(f"no result from the worker within {timeout:.0f} s; its output:\n{self.log()}")


def _wait_for(predicate, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_worker_binds_the_tenant_and_delivers_mail(worker, committed_db):
    slug = unique_slug("mail")
    with committed_db.transaction() as s:
        tenant = services.provision(s, Actor.system("test"), slug=slug, name="邮件测试 Mail Co",
                                    admin_email=f"admin@{slug}.test", admin_password=PASSWORD).tenant
    result = worker.sender.send_task("tenants.deliver_mail",
                                     args=[str(tenant.id), "李雷@example.cn", "欢迎", "你好 hello"])
    assert worker.result(result) is not None, f"the worker delivered the message\n{worker.log()}"
    files = _wait_for(lambda: sorted(worker.outbox.glob("*.eml")))
    assert len(files) == 1, worker.log()
    text = files[0].read_text(encoding="utf-8", errors="replace")
    assert "example.cn" in text
    assert worker.proc.poll() is None, f"the worker is still running\n{worker.log()}"


def test_worker_drops_tasks_of_a_suspended_tenant(worker, committed_db):
    slug = unique_slug("gone")
    with committed_db.transaction() as s:
        services.provision(s, Actor.system("test"), slug=slug, name="Gone Co",
                           admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
        services.set_status(s, slug, "suspended")
        tenant_id = services.get_tenant(s, slug).id
    result = worker.sender.send_task("tenants.deliver_mail", args=[str(tenant_id), "x@example.com", "s", "t"])
    assert worker.result(result) is None, worker.log()
    assert not list(worker.outbox.glob("*.eml"))


def test_the_relay_hands_a_left_behind_task_to_the_real_worker(worker, committed_db):
    # As after a web process died between its commit and the hand-over: the task is only in the outbox.
    slug = unique_slug("relay")
    with committed_db.transaction() as s:
        tenant = services.provision(s, Actor.system("test"), slug=slug, name="接力 Relay Co",
                                    admin_email=f"admin@{slug}.test", admin_password=PASSWORD).tenant
        s.add(OutboxTask(task="tenants.deliver_mail", tenant_id=tenant.id,
                         args=[str(tenant.id), "relay@example.cn", "接力", "left behind"]))
    assert relay(committed_db, older_than_s=0, app=worker.sender) == 1
    files = _wait_for(lambda: sorted(worker.outbox.glob("*.eml")))
    assert len(files) == 1, worker.log()
    assert "relay@example.cn" in files[0].read_text(encoding="utf-8", errors="replace")
    with committed_db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(OutboxTask).where(OutboxTask.tenant_id == tenant.id)) == 0
