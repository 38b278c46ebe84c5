"""A sales rep's day in a real browser: a customer with a custom field, a contact, a call, a task on the
calendar, an import with a bad row, and two duplicates merged.

The app runs on a loopback port (tests/browser.py) against really committed data; the import job is
run in-process where a Celery worker would run it.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from core.db import Database
from core.permissions import Actor
from crm.accounts.models import CUSTOMERS
from crm.records import configuration
from crm.records import services as records
from crm.records.scope import viewer_for
from tenants import services
from tenants.models import User
from tests.browser import WAIT_MS
from tests.conftest import PASSWORD, unique_slug


@pytest.fixture
def workspace(committed_db: Database) -> tuple[str, object]:
    slug = unique_slug("day")
    with committed_db.transaction() as s:
        made = services.provision(s, Actor.system("test"), slug=slug, name="Day 日常", admin_email=f"admin@{slug}.test",
                                  admin_password=PASSWORD, admin_name="王经理")
        tenant = services.bound(made.tenant)
        admin_id = made.admin.id
    with committed_db.transaction(tenant) as s:
        admin = viewer_for(s, services.actor_for(s.get(User, admin_id)))
        configuration.create_field(s, admin.actor, {"entity": "customers", "type": "choice", "key": "tier",
                                                    "label_en": "Tier", "label_zh": "客户等级",
                                                    "options": "gold | Gold | 金牌\nsilver | Silver | 银牌"})
        records.create(s, admin, CUSTOMERS, {"name": "深圳腾飞科技有限公司", "phone": "0755-88886666"})
        records.create(s, admin, CUSTOMERS, {"name": "深圳腾飞科技公司", "email": "info@tengfei.cn"})
    return slug, tenant


def sign_in(page: Page, base: str, slug: str) -> None:
    page.goto(f"{base}/sign-in")
    page.fill("#email", f"admin@{slug}.test")
    page.fill("#password", PASSWORD)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#user-name", state="attached")


@pytest.mark.browser
def test_a_reps_day_customer_contact_call_task_and_merge(live_port: int, page: Page,
                                                         workspace: tuple[str, object]) -> None:
    slug, _tenant = workspace
    base = f"http://{slug}.localhost:{live_port}"
    sign_in(page, base, slug)

    # A customer with a custom field.
    page.goto(f"{base}/customers/new")
    page.fill("#f-name", "北京远航物流有限公司")
    page.fill("#f-phone", "010-66668888")
    page.select_option("#f-tier", "gold")
    page.click("#save-record")
    page.wait_for_url(re.compile(r".*/customers/[0-9a-f-]{36}$"), timeout=WAIT_MS)
    customer_url = page.url
    expect(page.locator("#record-title")).to_have_text("北京远航物流有限公司")
    expect(page.locator("#main")).to_contain_text("Gold")

    # A contact, added from the customer's page (the customer is filled in).
    page.click("[data-related=contacts] .card-actions a")
    page.fill("#f-name", "刘经理")
    page.fill("#f-mobile", "13912345678")
    page.click("#save-record")
    page.wait_for_url(customer_url, timeout=WAIT_MS)
    expect(page.locator("[data-related=contacts]")).to_contain_text("刘经理")

    # A call logged on the customer: on its timeline.
    page.click("#log-call")
    page.fill("#f-subject", "电话确认运输报价")
    page.click("#save-record")
    page.wait_for_url(customer_url, timeout=WAIT_MS)
    expect(page.locator("#timeline")).to_contain_text("电话确认运输报价")

    # A task for tomorrow morning: on the customer and on the calendar.
    page.click("#add-task")
    page.fill("#f-title", "发送正式报价单")
    page.fill("#f-due_at", "2026-12-03T10:00")
    page.click("#save-record")
    page.wait_for_url(customer_url, timeout=WAIT_MS)
    expect(page.locator("[data-related=tasks]")).to_contain_text("发送正式报价单")

    # Merge the two look-alikes made in the fixture.
    page.goto(f"{base}/customers?q=腾飞")
    rows = page.locator("td.record-title a")
    expect(rows).to_have_count(2)
    page.click("td.record-title a >> text=深圳腾飞科技有限公司")
    page.click("#more-actions")
    page.click("#merge-link")
    page.click("#merge-candidates a")
    page.click("#confirm-merge")
    page.wait_for_url(re.compile(r".*/customers/[0-9a-f-]{36}$"), timeout=WAIT_MS)
    expect(page.locator("#main")).to_contain_text("info@tengfei.cn")  # taken from the merged record
    page.goto(f"{base}/customers?q=腾飞")
    expect(page.locator("td.record-title a")).to_have_count(1)


@pytest.mark.browser
def test_an_import_with_a_bad_row_reports_its_line_and_imports_nothing(live_port: int, page: Page,
                                                                        workspace: tuple[str, object],
                                                                        committed_db: Database, settings: object,
                                                                        app: object) -> None:
    from core.tasks import TaskRuntime, configure_tasks, task_runtime
    from crm.records import import_jobs

    slug, tenant = workspace
    base = f"http://{slug}.localhost:{live_port}"
    sign_in(page, base, slug)
    page.goto(f"{base}/customers/import")
    csv = ("客户名称,联系电话,所在地区\n杭州新锐科技有限公司,0571-88886666,浙江\n"
           "坏数据公司,电话号码,火星\n").encode("gb18030")
    page.set_input_files("#import-file", files=[{"name": "客户.csv", "mimeType": "text/csv", "buffer": csv}])
    page.click("#import-upload button")
    page.wait_for_selector("#import-mapping")
    page.click("#import-mapping button[value=check]")
    job_id = uuid.UUID(page.url.rstrip("/").rsplit("/", 1)[-1])
    # Where a Celery worker would take the job from the queue.
    previous = task_runtime()
    configure_tasks(TaskRuntime(db=committed_db, mailer=app.extensions["courtyard"].mailer,  # type: ignore[attr-defined]
                                settings=settings))  # type: ignore[arg-type]
    try:
        import_jobs.run_import(str(tenant.id), str(job_id))  # type: ignore[attr-defined]
    finally:
        configure_tasks(previous)
    page.reload()
    errors = page.locator("#import-errors")
    expect(errors).to_contain_text("3")
    expect(errors).to_contain_text("phone")
    page.goto(f"{base}/customers?q=新锐")  # a dry run: not even the good row was written
    expect(page.locator("td.record-title a")).to_have_count(0)
