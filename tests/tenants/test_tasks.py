"""A real Celery worker process: tasks take the tenant id, bind it themselves and skip gone tenants."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from core.permissions import Actor
from courtyard.runtime import celery_redis_url
from tenants import services
from tests.conftest import PASSWORD, unique_slug


@pytest.fixture
def worker(settings, tmp_path):
    env = dict(os.environ, COURTYARD_DATABASE_URL=settings.database_url, COURTYARD_REDIS_URL=settings.redis_url,
               COURTYARD_VAR_DIR=str(tmp_path), COURTYARD_SECRET_KEY="test", COURTYARD_LOG_JSON="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "courtyard.worker", "worker", "--pool", "solo", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sender = Celery("test-sender", broker=celery_redis_url(settings.redis_url),
                    backend=celery_redis_url(settings.redis_url), set_as_current=False)
    yield sender, tmp_path / "outbox", proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    sender.close()


def _wait_for(predicate, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_worker_binds_the_tenant_and_delivers_mail(worker, committed_db):
    sender, outbox, proc = worker
    slug = unique_slug("mail")
    with committed_db.transaction() as s:
        tenant = services.provision(s, Actor.system("test"), slug=slug, name="邮件测试 Mail Co",
                                    admin_email=f"admin@{slug}.test", admin_password=PASSWORD).tenant
    result = sender.send_task("tenants.deliver_mail", args=[str(tenant.id), "李雷@example.cn", "欢迎", "你好 hello"])
    assert result.get(timeout=60) is not None, "the worker delivered the message"
    files = _wait_for(lambda: sorted(Path(outbox).glob("*.eml")))
    assert len(files) == 1
    text = files[0].read_text(encoding="utf-8", errors="replace")
    assert "example.cn" in text
    assert proc.poll() is None, "the worker is still running"


def test_worker_drops_tasks_of_a_suspended_tenant(worker, committed_db):
    sender, outbox, _proc = worker
    slug = unique_slug("gone")
    with committed_db.transaction() as s:
        services.provision(s, Actor.system("test"), slug=slug, name="Gone Co",
                           admin_email=f"admin@{slug}.test", admin_password=PASSWORD)
        services.set_status(s, slug, "suspended")
        tenant_id = services.get_tenant(s, slug).id
    result = sender.send_task("tenants.deliver_mail", args=[str(tenant_id), "x@example.com", "s", "t"])
    assert result.get(timeout=60) is None
    assert not list(Path(outbox).glob("*.eml"))
