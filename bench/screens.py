"""Screenshots of every staff page and the public site, in English and Chinese, desktop and phone.

    .venv/bin/python bench/screens.py [--out var/screens] [--only en-desktop,zh-phone]

A throw-away database (``bench/benchlib.py``: embedded servers under ``var/bench``), one seeded
workspace (60 users so the users page has a second page, a department tree, API clients, a pending
invitation, a reset link, audit entries), the real app on a loopback port, and Debian's Chromium
through Playwright. Each locale is chosen the way a visitor's browser chooses it (Accept-Language),
never through the language switch, which would store the choice on the user and leak into the
other runs. PNGs are written as ``<out>/<locale>-<viewport>/<NN>-<page>.png``; the run prints one
line per shot and the names of pages that answered an unexpected status. Look at them by eye: this
tool takes the pictures, it does not judge them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import benchlib

benchlib.fix_sys_path()
sys.path.append(str(benchlib.ROOT))  # tests.browser: the live server the browser tests use

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.browser import VIEWPORTS, launch  # noqa: E402
from tests.browser import live_server as serve  # noqa: E402

from core.db import Database, make_engine  # noqa: E402
from core.permissions import Actor  # noqa: E402
from core.tasks import TaskRuntime, configure_tasks  # noqa: E402
from courtyard.app import create_app  # noqa: E402
from crm.records import configuration  # noqa: E402
from tenants import migrator, services  # noqa: E402

SLUG = "lotus"
PASSWORD = "screens-password-123"  # noqa: S105 - a throw-away workspace in a throw-away database
ADMIN_EMAIL = f"admin@{SLUG}.test"
LOCALES = {"en": "en-US", "zh": "zh-CN"}
USERS = 60
WAIT_MS = 30_000


#: Custom fields of the configuration pages (a choice with options, a required one, a unique one).
SCREEN_FIELDS = (
    {"entity": "customers", "type": "choice", "label_en": "Customer tier", "label_zh": "客户等级",
     "options": "gold | Gold | 金牌\nsilver | Silver | 银牌\nbronze | Bronze | 铜牌"},
    {"entity": "customers", "type": "text", "label_en": "ERP customer code", "label_zh": "ERP 客户编码",
     "required": True, "unique": True},
    {"entity": "customers", "type": "number", "label_en": "Employees", "label_zh": "员工人数"},
    {"entity": "customers", "type": "date", "label_en": "Contract renewal date", "label_zh": "合同续签日期"},
)


@dataclass(slots=True)
class Seed:
    invitation: str
    reset: str
    user_id: str


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed(database_url: str) -> Seed:
    """One workspace with enough of everything that each page shows its full layout."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    actor = Actor.system("screens")
    try:
        migrator.upgrade_shared(engine)
        db = Database(engine)
        with db.transaction() as s:
            made = services.provision(s, actor, slug=SLUG, name="Lotus Trading 莲花贸易有限公司",
                                      admin_email=ADMIN_EMAIL, admin_password=PASSWORD, admin_name="王小明 Ada Wang")
            tenant = services.bound(made.tenant)
        with db.transaction(tenant) as s:
            sales = services.save_department(s, actor, name="Sales 销售部", parent_id=None)
            east = services.save_department(s, actor, name="East China 华东区", parent_id=sales.id)
            services.save_department(s, actor, name="Shanghai office 上海办事处", parent_id=east.id)
            services.save_department(s, actor, name="Support 客户服务", parent_id=None)
            first = None
            for i in range(USERS):
                # Long names and addresses among them: a table has to cope with what people type.
                name = (f"张伟 {i:02d}" if i % 3 else f"Alexandra Konstantinopoulou-Featherstonehaugh {i:02d}")
                email = (f"user{i:02d}@{SLUG}.test" if i % 5 else
                         f"a.very.long.mailbox.name.{i:02d}@subsidiary.{SLUG}-international.example")
                made_user = services.create_user(s, actor, email=email, name=name,
                                                 role="sales" if i % 4 else "manager",
                                                 department_id=east.id if i % 2 else sales.id)
                first = first or made_user
            _, invitation = services.invite(s, actor, email="new.colleague@lotus.test", role="sales",
                                            name="李娜 Li Na")
            services.create_client(s, actor, tenant, name="ERP sync 同步", scopes=["users.read"])
            assert first is not None
            # A few changes, so the audit log and the user page show before/after in words.
            services.update_user(s, actor, first.id, role="manager", department_id=east.id)
            services.set_active(s, actor, first.id, active=False)
            services.create_role(s, actor, key="field_sales", name="外勤销售 Field sales", permissions=["users.read"])
        with db.transaction(tenant) as s:
            # The CRM's demo company, smaller: every list, record page and dashboard has content.
            from crm.workspace import demo

            demo.populate(s, SLUG, password=PASSWORD, customers=60)
            # After the demo records: a required field added later, as a tenant admin would.
            admin = services.actor_for(services.get_user(s, made.admin.id))
            for definition in SCREEN_FIELDS:
                configuration.create_field(s, admin, definition)
            configuration.set_format(s, admin, "customers", "KH-{yyyy}-{seq:05}")
        with db.transaction(tenant) as s:
            _seed_calendar(s)
        with db.transaction(tenant) as s:
            reset = services.request_password_reset(s, "user01@lotus.test")
            assert reset is not None
        return Seed(invitation=invitation.secret, reset=reset[1].secret, user_id=str(first.id))
    finally:
        engine.dispose()


def _seed_calendar(s: object) -> None:
    """The admin's tasks and activities around today, a repeating one, a done one, and notifications."""
    import datetime as dt

    from crm.activities.models import ACTIVITIES, TASKS
    from crm.activities.services import complete
    from crm.records import notifications, preferences
    from crm.records import services as records
    from crm.records.scope import viewer_for
    from tenants.models import User

    admin = s.scalar(__import__("sqlalchemy").select(User).where(User.email == ADMIN_EMAIL))  # type: ignore[attr-defined]
    viewer = viewer_for(s, services.actor_for(admin), locale="zh")  # type: ignore[arg-type]
    today = dt.datetime.now(dt.UTC).replace(hour=1, minute=30, second=0, microsecond=0)
    titles = ["回访北京华为 Call Huawei back", "Send the quote to 上海电气", "准备季度复盘 Quarterly review",
              "Visit 深圳腾讯 with the manager", "合同续签 Contract renewal", "Demo for 杭州阿里"]
    for i, title in enumerate(titles * 3):
        due = today + dt.timedelta(days=i * 2 - 10, hours=i % 5)
        task = records.create(s, viewer, TASKS, {  # type: ignore[arg-type]
            "title": title, "due_at": due.isoformat(), "priority": ("high", "normal", "low")[i % 3],
            "reminder_at": (due - dt.timedelta(minutes=15)).isoformat(), "all_day": i % 4 == 0})
        if i < 4:
            complete(s, viewer, task.id)  # type: ignore[arg-type]
    records.create(s, viewer, TASKS, {"title": "周会 Weekly sales meeting", "due_at": today.isoformat(),  # type: ignore[arg-type]
                                      "recurrence": "weekly"})
    for i in range(8):
        records.create(s, viewer, ACTIVITIES, {  # type: ignore[arg-type]
            "subject": ("电话回访 Follow-up call", "拜访客户 Customer visit")[i % 2], "kind": ("call", "visit")[i % 2],
            "occurred_at": (today + dt.timedelta(days=i * 3 - 12, hours=2)).isoformat(), "duration_min": 45})
    # No mail: the seed runs before the task runtime (and its outbox) is configured.
    preferences.set_email_notifications(s, admin.id, False)  # type: ignore[arg-type]
    for title in titles[:4]:
        notifications.notify(s, admin.id, "task.reminder", title, "截止 2026-12-03 09:00 UTC", "/tasks")  # type: ignore[arg-type]


@contextmanager
def live_server(settings: object) -> Iterator[int]:
    app = create_app(settings)  # type: ignore[arg-type]
    # "Forgot password" queues a mail task in the outbox; nothing relays it here, the row is enough.
    runtime = app.extensions["courtyard"]
    configure_tasks(TaskRuntime(db=runtime.db, mailer=runtime.mailer, settings=settings))  # type: ignore[arg-type]
    with serve(app) as port:
        yield port


class Shooter:
    def __init__(self, page: Page, out: Path, problems: list[str]) -> None:
        self.page, self.out, self.problems, self.n = page, out, problems, 0
        out.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.n += 1
        path = self.out / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        log(f"  {path}")

    def visit(self, url: str, name: str, status: int = 200) -> None:
        response = self.page.goto(url)
        got = response.status if response else 0
        if got != status:
            self.problems.append(f"{self.out.name}/{name}: {url} answered {got}, expected {status}")
        self.shot(name)


def run(base: str, tenant_base: str, page: Page, shoot: Shooter, data: Seed) -> None:
    # Public site (the bare domain): home, sign-up, a refused sign-up, a 404.
    shoot.visit(f"{base}/", "site-home")
    shoot.visit(f"{base}/signup", "signup")
    page.fill("#company", "X")
    page.fill("#slug", "Bad Slug!")
    page.fill("#email", "not-an-address")
    page.fill("#password", "short")
    page.click("#signup-form button[type=submit]")
    page.wait_for_load_state()
    shoot.shot("signup-refused")
    shoot.visit(f"{base}/no-such-page", "site-404", status=404)

    # The workspace's host, signed out: sign-in (refused once), forgot, reset, invitation.
    shoot.visit(f"{tenant_base}/sign-in", "sign-in")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", "not the password")
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#form-error")
    shoot.shot("sign-in-refused")
    shoot.visit(f"{tenant_base}/forgot", "forgot")
    page.fill("input[name=email]", "someone@lotus.test")
    page.click("form:has(input[name=email]) button[type=submit]")
    page.wait_for_load_state()
    shoot.shot("forgot-sent")
    shoot.visit(f"{tenant_base}/reset/{data.reset}", "reset")
    shoot.visit(f"{tenant_base}/reset/not-a-real-token", "reset-bad-link", status=400)
    shoot.visit(f"{tenant_base}/invitation/{data.invitation}", "invitation")
    shoot.visit(f"{tenant_base}/nope", "tenant-404-signed-out", status=404)

    # Signed in.
    page.goto(f"{tenant_base}/sign-in")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#user-name", state="attached")
    shoot.shot("home")
    if page.viewport_size and page.viewport_size["width"] < 992:
        page.click("#menu-toggle")
        # The menu slides open: wait until Bootstrap's collapse has finished.
        page.wait_for_selector("#sidebar-menu.show:not(.collapsing)")
        shoot.shot("menu-open")
    shoot.visit(f"{tenant_base}/admin/users", "users")
    shoot.visit(f"{tenant_base}/admin/users?page=2", "users-page-2")
    shoot.visit(f"{tenant_base}/admin/users?q=%E5%BC%A0", "users-search")
    shoot.visit(f"{tenant_base}/admin/users?page=x", "users-bad-page", status=400)
    # An invitation to an address that is already a user: the refused form with its message.
    page.goto(f"{tenant_base}/admin/users")
    page.fill("#invite-form input[name=email]", "user02@lotus.test")
    page.click("#invite-form button")
    page.wait_for_load_state()
    shoot.shot("users-invite-refused")
    shoot.visit(f"{tenant_base}/admin/users/{data.user_id}", "user")
    shoot.visit(f"{tenant_base}/admin/roles", "roles")
    shoot.visit(f"{tenant_base}/admin/departments", "departments")
    shoot.visit(f"{tenant_base}/admin/clients", "clients")
    page.fill("#client-form input[name=name]", "Warehouse 仓库")
    page.locator("input[name=scopes]").first.check()
    page.click("#client-form button")
    page.wait_for_load_state()
    shoot.shot("clients-new-secret")
    shoot.visit(f"{tenant_base}/admin/audit", "audit")
    shoot.visit(f"{tenant_base}/admin/audit?type=user&from=2000-01-01", "audit-filtered")
    shoot.visit(f"{tenant_base}/admin/audit?from=2026-13-01", "audit-bad-date", status=422)
    shoot.visit(f"{tenant_base}/profile", "profile")
    page.fill("input[name=current_password]", "wrong current password")
    page.fill("input[name=new_password]", "x")
    page.click("form:has(input[name=new_password]) button[type=submit]")
    page.wait_for_load_state()
    shoot.shot("profile-refused")
    shoot.visit(f"{tenant_base}/calendar", "calendar")
    page.wait_for_selector(".fc-event")
    shoot.shot("calendar-loaded")
    shoot.visit(f"{tenant_base}/calendar?team=1", "calendar-team")
    shoot.visit(f"{tenant_base}/notifications", "notifications")
    shoot.visit(f"{tenant_base}/notifications/bell", "notifications-bell")
    shoot.visit(f"{tenant_base}/nope", "tenant-404", status=404)
    crm_pages(tenant_base, page, shoot)


def crm_pages(tenant_base: str, page: Page, shoot: Shooter) -> None:
    """The CRM: lists, a customer's 360° page and its tabs, forms (refused too), search, merge."""
    shoot.visit(f"{tenant_base}/home", "crm-home")
    shoot.visit(f"{tenant_base}/customers", "crm-customers")
    first = page.locator("td.record-title a").first.get_attribute("href")
    shoot.visit(f"{tenant_base}/customers?q=%E5%8C%97%E4%BA%AC", "crm-customers-search")
    shoot.visit(f"{tenant_base}/customers?q=zz&level=vip", "crm-customers-nothing")
    if first:
        shoot.visit(f"{tenant_base}{first}", "crm-customer")
        for tab in ("timeline", "related", "files", "history"):
            shoot.visit(f"{tenant_base}{first}?tab={tab}", f"crm-customer-{tab}")
        shoot.visit(f"{tenant_base}{first}/merge", "crm-customer-merge")
    shoot.visit(f"{tenant_base}/customers/new", "crm-customer-new")
    page.fill("#f-email", "not-an-address")
    page.fill("#f-phone", "电话")
    page.click("#save-record")
    page.wait_for_load_state()
    shoot.shot("crm-customer-new-refused")
    shoot.visit(f"{tenant_base}/contacts", "crm-contacts")
    contact = page.locator("td.record-title a").first.get_attribute("href")
    if contact:
        shoot.visit(f"{tenant_base}{contact}", "crm-contact")
    shoot.visit(f"{tenant_base}/activities", "crm-activities")
    shoot.visit(f"{tenant_base}/tasks?owner_id=me&status=open", "crm-tasks")
    shoot.visit(f"{tenant_base}/search?q=bj", "crm-search")
    shoot.visit(f"{tenant_base}/recycle-bin", "crm-recycle-bin")

    # The CRM's configuration: fields (a refused new field), one field's edit page, dictionaries (the
    # region tree, an item being edited), numbering (the live preview of a format being typed).
    shoot.visit(f"{tenant_base}/settings/fields?entity=customers", "config-fields")
    page.fill("#new-field input[name=label_en]", "Tier 等级")
    page.fill("#new-field input[name=key]", "Bad Key")
    page.select_option("#new-field select[name=type]", "choice")
    page.click("#new-field button.btn-primary")
    page.wait_for_load_state()
    shoot.shot("config-fields-refused")
    page.goto(f"{tenant_base}/settings/fields?entity=customers")
    page.click("#custom-fields a:has-text('Edit'), #custom-fields a:has-text('编辑')")
    page.wait_for_load_state()
    shoot.shot("config-field-edit")
    shoot.visit(f"{tenant_base}/settings/dictionaries?kind=region", "config-dictionaries")
    page.click("#dictionary-items [data-code=shanghai] a")
    page.wait_for_load_state()
    shoot.shot("config-dictionary-edit")
    shoot.visit(f"{tenant_base}/settings/numbers", "config-numbers")
    page.fill("#pattern-contacts", "LX-{yy}{mm}-{seq:04}")
    page.wait_for_function("document.querySelector('output[for=pattern-contacts]').textContent.startsWith('LX-')")
    page.fill("#pattern-activities", "HD-{week}")
    page.wait_for_selector("#pattern-activities.is-invalid")
    shoot.shot("config-numbers-preview")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=benchlib.ROOT / "var" / "screens")
    parser.add_argument("--only", default="", help="comma-separated <locale>-<viewport>, e.g. zh-phone")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    problems: list[str] = []
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per shot is enough
    with benchlib.bench_env() as env:
        # Every run signs in, fails a sign-in and a sign-up from the same address: limits set for
        # people would refuse the later runs.
        settings = env.settings.with_overrides(base_domain="localhost", signup_limit_per_hour=1000,
                                               login_attempts=1000)
        data = seed(env.database_url)
        with live_server(settings) as port, sync_playwright() as p:
            browser = launch(p)
            try:
                for locale, accept in LOCALES.items():
                    for vp_name, viewport in VIEWPORTS.items():
                        key = f"{locale}-{vp_name}"
                        if only and key not in only:
                            continue
                        log(key)
                        context = browser.new_context(locale=accept, viewport=viewport,  # type: ignore[arg-type]
                                                      extra_http_headers={"Accept-Language": f"{accept},{locale}"})
                        page = context.new_page()
                        page.set_default_timeout(WAIT_MS)
                        try:
                            run(f"http://localhost:{port}", f"http://{SLUG}.localhost:{port}", page,
                                Shooter(page, args.out / key, problems), data)
                        finally:
                            context.close()
            finally:
                browser.close()
    for problem in problems:
        log(f"UNEXPECTED: {problem}")
    log(f"screenshots under {args.out}")


if __name__ == "__main__":
    main()
