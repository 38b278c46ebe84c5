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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import benchlib

benchlib.fix_sys_path()

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from core.db import Database, make_engine  # noqa: E402
from core.permissions import Actor  # noqa: E402
from core.tasks import TaskRuntime, configure_tasks  # noqa: E402
from courtyard.app import create_app  # noqa: E402
from tenants import migrator, services  # noqa: E402

SLUG = "lotus"
PASSWORD = "screens-password-123"  # noqa: S105 - a throw-away workspace in a throw-away database
ADMIN_EMAIL = f"admin@{SLUG}.test"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORTS = {"desktop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
LOCALES = {"en": "en-US", "zh": "zh-CN"}
USERS = 60
WAIT_MS = 30_000


@dataclass(slots=True)
class Seed:
    invitation: str
    reset: str


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
            for i in range(USERS):
                # Long names and addresses among them: a table has to cope with what people type.
                name = (f"张伟 {i:02d}" if i % 3 else f"Alexandra Konstantinopoulou-Featherstonehaugh {i:02d}")
                email = (f"user{i:02d}@{SLUG}.test" if i % 5 else
                         f"a.very.long.mailbox.name.{i:02d}@subsidiary.{SLUG}-international.example")
                services.create_user(s, actor, email=email, name=name, role="sales" if i % 4 else "manager",
                                     department_id=east.id if i % 2 else sales.id)
            _, invitation = services.invite(s, actor, email="new.colleague@lotus.test", role="sales",
                                            name="李娜 Li Na")
            services.create_client(s, actor, tenant, name="ERP sync 同步", scopes=["users.read"])
        with db.transaction(tenant) as s:
            _seed_calendar(s)
        with db.transaction(tenant) as s:
            reset = services.request_password_reset(s, "user01@lotus.test")
            assert reset is not None
        return Seed(invitation=invitation.secret, reset=reset[1].secret)
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
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="screens-server", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


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
    page.wait_for_selector("#user-name")
    shoot.shot("home")
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
    shoot.visit(f"{tenant_base}/admin/roles", "roles")
    shoot.visit(f"{tenant_base}/admin/departments", "departments")
    shoot.visit(f"{tenant_base}/admin/clients", "clients")
    page.fill("#client-form input[name=name]", "Warehouse 仓库")
    page.locator("input[name=scopes]").first.check()
    page.click("#client-form button")
    page.wait_for_load_state()
    shoot.shot("clients-new-secret")
    shoot.visit(f"{tenant_base}/admin/audit", "audit")
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
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
