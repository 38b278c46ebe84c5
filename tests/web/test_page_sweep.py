"""Every staff page, in English and Chinese, on a desktop (1366×768) and a phone (390×844), as an admin.

A page fails on: an answer of 500 or more (or anything but 200), a JavaScript error (an uncaught
exception or a console error), sideways scrolling of the whole page (a wide table must scroll in its
own box or turn into cards), and, in Chinese, an untranslated page: no Chinese at all in the main area,
or an English message of the catalog shown as it is.

The pages come from the app's URL map: every GET route of a swept blueprint without arguments, plus
the routes with arguments listed in ``PAGES_WITH_IDS`` (how to fill the arguments from the seeded
workspace). A route with arguments that is in neither list fails ``test_every_page_route_is_swept``,
so a new page cannot be forgotten: add its arguments to ``PAGES_WITH_IDS``, or, if it is no HTML page
(a download, a feed, a form's target), its endpoint to ``NOT_PAGES`` with the reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from babel.messages.pofile import read_po
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from core.db import Database
from core.i18n import catalog_path
from core.permissions import Actor
from tenants import services
from tests.browser import VIEWPORTS, WAIT_MS, launch
from tests.conftest import PASSWORD, unique_slug

#: Blueprints whose GET routes are staff pages (the CRM's join this list when they land).
SWEPT_BLUEPRINTS = ("staff", "crm", "config", "records_io_pages", "calendar", "notifications")


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the sweep's workspace holds, for routes that take an id."""

    admin_id: uuid.UUID
    colleague_id: uuid.UUID
    department_id: uuid.UUID
    #: One record of each CRM entity, by entity key.
    records: dict[str, uuid.UUID]


#: Routes with arguments: endpoint → the arguments, from the seeded workspace.
PAGES_WITH_IDS: dict[str, Callable[[Seeded], dict[str, Any]]] = {
    "staff.user_page": lambda seed: {"user_id": seed.colleague_id},
}
PAGES_WITH_IDS["config.field_edit"] = lambda seed: {"field_id": seed.records["custom_field"]}
PAGES_WITH_IDS["records_io_pages.job"] = lambda seed: {"job_id": seed.records["import_job"]}
for _entity in ("customers", "contacts", "activities", "tasks"):
    for _page in ("detail", "edit", "merge"):
        PAGES_WITH_IDS[f"crm.{_entity}_{_page}"] = lambda seed, e=_entity: {"record_id": seed.records[e]}

#: GET routes of the swept blueprints that are not pages a person opens, and why.
NOT_PAGES: dict[str, str] = {
    "staff.sign_in": "the signed-out form (the sweep is signed in: it redirects home)",
    "staff.reset": "needs a live one-time token; tests/tenants/test_views.py covers it",
    "staff.accept": "needs a live one-time token; tests/tenants/test_views.py covers it",
    **{f"crm.{e}_download": "a file download, not a page; tests/crm/test_attachments.py covers it"
       for e in ("customers", "contacts", "activities", "tasks")},
    **{f"crm.{e}_duplicates": "an htmx fragment inside the form (the form itself is swept)"
       for e in ("customers", "contacts", "activities", "tasks")},
    "calendar.events": "JSON for the calendar page's FullCalendar (the page itself is swept)",
    "calendar.feed": "an iCalendar file for Outlook or a phone; tests/crm/test_tasks_calendar.py covers it",
    "notifications.bell": "an htmx fragment of the top bar (every page loads it, so the sweep sees it)",
    "config.number_preview": "JSON for the numbering page's live preview (the page itself is swept)",
    **{f"records_io_pages.{e}_export": "a file download, not a page; tests/crm/test_import_export.py covers it"
       for e in ("customers", "contacts", "activities", "tasks")},
}


def page_routes(app: Flask) -> tuple[list[str], list[str]]:
    """(endpoints without arguments, endpoints with arguments) of the swept blueprints' GET routes."""
    plain, with_args = [], []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.split(".", 1)[0]
        if blueprint not in SWEPT_BLUEPRINTS or "GET" not in (rule.methods or ()) or rule.endpoint in NOT_PAGES:
            continue
        (with_args if rule.arguments else plain).append(rule.endpoint)
    return sorted(set(plain)), sorted(set(with_args))


def test_every_page_route_is_swept(app: Flask) -> None:
    plain, with_args = page_routes(app)
    assert {"staff.home", "staff.users", "staff.audit_log", "staff.roles"} <= set(plain), "the map is read"
    missing = [endpoint for endpoint in with_args if endpoint not in PAGES_WITH_IDS]
    assert not missing, f"pages with arguments the sweep cannot open; add them to PAGES_WITH_IDS: {missing}"


def _english_markers() -> list[str]:
    """English messages of the catalog that a Chinese page must never show as they are: translated
    (their Chinese differs), several words long (a lone word may be a name), without placeholders."""
    with catalog_path().open("rb") as f:
        catalog = read_po(f)
    out = []
    for message in catalog:
        if not isinstance(message.id, str) or not message.string or message.string == message.id:
            continue
        if "%(" in message.id or len(message.id.split()) < 3 or message.id.startswith(("http", "/")):
            continue
        out.append(message.id)
    return out


CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def seeded(committed_db: Database) -> tuple[str, Seeded]:
    slug = unique_slug("sweep")
    actor = Actor.system("sweep")
    with committed_db.transaction() as s:
        made = services.provision(s, actor, slug=slug, name="Sweep 巡检公司", admin_email=f"admin@{slug}.test",
                                  admin_password=PASSWORD, admin_name="王管理")
        tenant = services.bound(made.tenant)
        admin_id = made.admin.id
    with committed_db.transaction(tenant) as s:
        sales = services.save_department(s, actor, name="销售部 Sales", parent_id=None)
        services.save_department(s, actor, name="华东区 East China", parent_id=sales.id)
        colleague = services.create_user(s, actor, email=f"li.na@{slug}.test", name="李娜 Li Na", role="manager",
                                         department_id=sales.id)
        services.invite(s, actor, email=f"new@{slug}.test", role="sales", name="张伟")
        services.create_client(s, actor, tenant, name="仓库 Warehouse", scopes=["users.read"])
        records = _crm_records(s, admin_id)
        made_seed = Seeded(admin_id=admin_id, colleague_id=colleague.id, department_id=sales.id, records=records)
    return slug, made_seed


def _crm_records(session: Any, admin_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """A customer with a contact, an activity and a task, so that every record page has content."""
    from crm.accounts.models import CONTACTS, CUSTOMERS
    from crm.activities.models import ACTIVITIES, TASKS
    from crm.records import services as records
    from crm.records.scope import viewer_for
    from tenants.models import User

    admin = viewer_for(session, services.actor_for(session.get(User, admin_id)))
    customer = records.create(session, admin, CUSTOMERS, {
        "name": "北京华为技术有限公司 Beijing Huawei", "region": "beijing", "industry": "it", "level": "vip",
        "phone": "010-88886666", "email": "info@example.cn", "address": "北京市海淀区中关村大街 1 号",
        "remark": "长期合作的重点客户。" * 8})
    records.create(session, admin, CUSTOMERS, {"name": "北京华为技术公司", "phone": "010-88886667"})
    contact = records.create(session, admin, CONTACTS, {"name": "王小明", "customer_id": customer.id,
                                                         "title": "采购经理", "mobile": "13800138000"})
    activity = records.create(session, admin, ACTIVITIES, {"kind": "call", "subject": "电话沟通采购需求",
                                                            "occurred_at": "2026-12-01T10:00",
                                                            "customer_id": customer.id, "contact_id": contact.id})
    task = records.create(session, admin, TASKS, {"title": "发送报价单", "due_at": "2026-12-05T09:00",
                                                   "customer_id": customer.id})
    from crm.records import configuration
    from crm.records.import_jobs import ImportJob

    field = configuration.create_field(session, admin.actor, {"entity": "customers", "type": "choice",
                                                              "label_en": "Tier", "label_zh": "客户等级",
                                                              "options": "gold | Gold | 金牌\nsilver | Silver | 银牌"})
    job = ImportJob(entity="customers", filename="客户.csv", size=30, data=None, status="done", created_by=admin_id,
                    result={"total": 3, "imported": 2, "skipped": 1,
                            "errors": [{"line": 3, "field": "phone", "message": "'abc' is not a phone number."}]})
    session.add(job)
    session.flush()
    return {"customers": customer.id, "contacts": contact.id, "activities": activity.id, "tasks": task.id,
            "custom_field": field.id, "import_job": job.id}


@pytest.mark.browser
def test_every_page_in_both_languages_on_desktop_and_phone(app: Flask, live_port: int,
                                                          seeded: tuple[str, Seeded]) -> None:
    slug, seed = seeded
    base = f"http://{slug}.localhost:{live_port}"
    plain, with_args = page_routes(app)
    with app.test_request_context(base_url=base):
        from flask import url_for

        paths = [url_for(e) for e in plain] + [url_for(e, **PAGES_WITH_IDS[e](seed)) for e in with_args]
    markers = _english_markers()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for locale, accept in (("en", "en-US,en;q=0.9"), ("zh", "zh-CN,zh;q=0.9")):
                context = browser.new_context(locale=accept.split(",")[0],
                                              extra_http_headers={"Accept-Language": accept})
                tab = context.new_page()
                tab.set_default_timeout(WAIT_MS)
                errors: list[str] = []
                tab.on("pageerror", lambda exc, errors=errors: errors.append(f"uncaught: {exc}"))

                def on_console(msg: ConsoleMessage, errors: list[str] = errors) -> None:
                    if msg.type == "error":
                        errors.append(f"console: {msg.text}")

                tab.on("console", on_console)
                try:
                    _sign_in(tab, base, slug)
                    for path in paths:
                        for vp_name, viewport in VIEWPORTS.items():
                            tab.set_viewport_size(viewport)  # type: ignore[arg-type]
                            errors.clear()
                            problems.extend(f"{locale} {vp_name} {path}: {problem}"
                                            for problem in _check(tab, base + path, locale, markers, errors))
                finally:
                    context.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)


def _sign_in(tab: Page, base: str, slug: str) -> None:
    tab.goto(f"{base}/sign-in")
    tab.fill("#email", f"admin@{slug}.test")
    tab.fill("#password", PASSWORD)
    tab.click("#sign-in-form button[type=submit]")
    tab.wait_for_selector("#user-name", state="attached")


def _check(tab: Page, url: str, locale: str, markers: list[str], errors: list[str]) -> list[str]:
    response = tab.goto(url)
    tab.wait_for_load_state("load")
    out: list[str] = []
    status = response.status if response else 0
    if status != 200:
        out.append(f"answered {status}")
    content_type = (response.headers.get("content-type", "") if response else "")
    if not content_type.startswith("text/html"):
        out.append(f"not an HTML page ({content_type}): list its endpoint in NOT_PAGES")
        return out
    scroll, inner = tab.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    if scroll > inner:
        wide = tab.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-responsive'))
            .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                              + '.' + [...e.classList].join('.'))""")
        out.append(f"scrolls sideways: {scroll} px wide in a {inner} px window ({wide})")
    out.extend(errors)
    if locale == "zh":
        main, text = tab.evaluate("() => [document.querySelector('main')?.innerText ?? '', document.body.innerText]")
        if not CJK.search(main):
            out.append("no Chinese at all in the main area")
        out.extend(f"English left untranslated: {m!r}" for m in markers if m in text)
    return out


@pytest.mark.browser
def test_the_sweep_sees_what_it_is_for() -> None:
    """Each check on a page made to fail it: the sweep passing means something only if these fail."""
    from tests.browser import live_server

    probe = Flask("probe")
    html = '<!doctype html><html><body><main>{}</main></body></html>'
    probe.add_url_rule("/wide", "wide", lambda: html.format('<div style="width:2000px">中文</div>'))
    probe.add_url_rule("/english", "english", lambda: html.format("Wrong e-mail or password."))
    probe.add_url_rule("/script", "script", lambda: html.format("中文<script>undefinedFunction()</script>"))
    probe.add_url_rule("/fine", "fine", lambda: html.format("中文"))
    probe.add_url_rule("/boom", "boom", lambda: ("中文", 503))
    markers = _english_markers()
    assert "Wrong e-mail or password." in markers
    with live_server(probe) as port, sync_playwright() as p:
        browser = launch(p)
        try:
            tab = browser.new_page(viewport=VIEWPORTS["phone"])  # type: ignore[arg-type]
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            found = {}
            for name in ("wide", "english", "script", "fine", "boom"):
                errors.clear()
                found[name] = " | ".join(_check(tab, f"http://127.0.0.1:{port}/{name}", "zh", markers, errors))
        finally:
            browser.close()
    assert "scrolls sideways" in found["wide"]
    assert "English left untranslated: 'Wrong e-mail or password.'" in found["english"]
    assert "uncaught" in found["script"]
    assert "answered 503" in found["boom"]
    assert found["fine"] == ""


@pytest.mark.browser
def test_keyboard_shortcuts_search_and_new(live_port: int, seeded: tuple[str, Seeded]) -> None:
    """`/` focuses the global search, `n` follows the page's "new" link; neither fires while typing."""
    slug, _seed = seeded
    base = f"http://{slug}.localhost:{live_port}"
    with sync_playwright() as p:
        browser = launch(p)
        try:
            tab = browser.new_page(viewport=VIEWPORTS["desktop"])  # type: ignore[arg-type]
            tab.set_default_timeout(WAIT_MS)
            _sign_in(tab, base, slug)
            tab.goto(f"{base}/admin/users")
            tab.keyboard.press("/")
            assert tab.evaluate("document.activeElement.id") == "global-search-input"
            tab.keyboard.type("n/")
            assert tab.input_value("#global-search-input") == "n/", "typed into the box, not taken as shortcuts"
            tab.evaluate("document.activeElement.blur()")
            tab.keyboard.press("n")
            tab.wait_for_function("location.hash === '#invite'")
            # The top bar searches the CRM's records from every page.
            tab.keyboard.press("/")
            tab.keyboard.type("华为")
            tab.keyboard.press("Enter")
            tab.wait_for_selector("#search-page-input")
            assert tab.input_value("#search-page-input") == "华为"
            assert tab.locator("[data-search-group=customers]").count() == 1
        finally:
            browser.close()
