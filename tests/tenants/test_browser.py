"""A real browser (Debian's Chromium through Playwright) against the real app on a loopback port.

The app runs with the test run's settings, its own engine connections (really committed, so the
server thread and the browser see the same data) and the run's Redis; tenants the test creates are
dropped afterwards by ``committed_db``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from redis import Redis
from sqlalchemy import Engine, text
from werkzeug.serving import make_server

from core.db import Database
from core.permissions import Actor
from core.settings import Settings
from courtyard.app import create_app
from tenants import services
from tests.conftest import PASSWORD, unique_slug

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
#: Waits for the page to reach a state, not timing assertions: generous, so a loaded machine passes.
WAIT_MS = 30_000


@pytest.fixture
def live_port(settings: Settings, engine: Engine, redis_client: Redis, committed_db: Database) -> Iterator[int]:
    # Throttle counters of earlier tests (same address, same Redis) must not refuse this sign-up.
    redis_client.flushdb()
    app = create_app(settings, engine=engine, redis=redis_client)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        try:
            yield tab
        finally:
            context.close()
            browser.close()


def sign_out(page: Page) -> None:
    page.click("#sign-out")
    expect(page.locator("#sign-in-form")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#user-name")).to_have_count(0, timeout=WAIT_MS)


@pytest.mark.browser
def test_sign_up_switch_language_sign_out_and_back_in(live_port: int, page: Page, engine: Engine,
                                                      tmp_path: Path) -> None:
    slug = unique_slug("web")
    email, password, name = f"owner@{slug}.test", "a browser's own password", "Ada 王"

    # The public site, then its sign-up page.
    page.goto(f"http://localhost:{live_port}/")
    expect(page.locator("h1")).to_have_text("Courtyard CRM", timeout=WAIT_MS)
    page.click("#cta-signup")
    expect(page).to_have_url(f"http://localhost:{live_port}/signup", timeout=WAIT_MS)
    page.fill("#company", "Web Test 网测公司")
    page.fill("#slug", slug)
    page.fill("#name", name)
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#signup-form button[type=submit]")

    # Signed in, inside the new workspace's own prefix, with the user's name in the app shell.
    expect(page).to_have_url(f"http://localhost:{live_port}/t/{slug}/", timeout=WAIT_MS)
    expect(page.locator("#user-name")).to_have_text(name, timeout=WAIT_MS)
    expect(page.locator("#welcome")).to_have_text(f"Welcome, {name}", timeout=WAIT_MS)
    expect(page.locator(".navbar-brand")).to_have_text("Web Test 网测公司", timeout=WAIT_MS)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM shared.tenants WHERE slug = :s"), {"s": slug}).scalar()
    assert status == "active"

    # 中文, then back to English.
    page.click("#locale-switch button[value=zh]")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN", timeout=WAIT_MS)
    expect(page.locator("#welcome")).to_have_text(f"欢迎，{name}", timeout=WAIT_MS)
    expect(page.locator("#sign-out")).to_have_text("退出登录", timeout=WAIT_MS)
    expect(page.locator("#app-nav")).to_contain_text("用户", timeout=WAIT_MS)
    assert page.url == f"http://localhost:{live_port}/t/{slug}/"
    page.screenshot(path=str(tmp_path / "home-zh.png"), full_page=True)
    page.click("#locale-switch button[value=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en", timeout=WAIT_MS)
    expect(page.locator("#sign-out")).to_have_text("Sign out", timeout=WAIT_MS)

    sign_out(page)
    expect(page).to_have_url(f"http://localhost:{live_port}/t/{slug}/sign-in", timeout=WAIT_MS)

    # The same workspace on its own sub-domain (Chromium resolves *.localhost to loopback itself).
    page.goto(f"http://{slug}.localhost:{live_port}/")
    expect(page.locator("#sign-in-form")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("h1")).to_have_text("Sign in to Web Test 网测公司", timeout=WAIT_MS)
    page.fill("#email", email)
    page.fill("#password", "not the password")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#form-error")).to_have_text("Wrong e-mail or password.", timeout=WAIT_MS)
    page.fill("#password", password)
    page.click("#sign-in-form button[type=submit]")
    expect(page).to_have_url(f"http://{slug}.localhost:{live_port}/", timeout=WAIT_MS)
    expect(page.locator("#user-name")).to_have_text(name, timeout=WAIT_MS)
    page.click("#app-nav >> text=Users")
    expect(page.locator("#users-table")).to_contain_text(email, timeout=WAIT_MS)
    expect(page.locator("#seat-count")).to_have_text("1", timeout=WAIT_MS)
    sign_out(page)
    page.goto(f"http://{slug}.localhost:{live_port}/home")
    expect(page.locator("#sign-in-form")).to_be_visible(timeout=WAIT_MS)


#: Per page: what must be on it (so that an error page cannot pass for it).
PHONE_PAGES = {"/admin/users": "#users-table", "/admin/audit": "#audit-table",
               "/admin/departments": "#department-tree", "/admin/clients": "#client-form"}


@pytest.mark.browser
def test_staff_pages_fit_a_phone_in_chinese(live_port: int, committed_db: Database) -> None:
    """390 px wide, in Chinese (what bench/screens.py showed broken): the page itself never scrolls
    sideways (a wide table scrolls in its own box), the nav links form a row, no button or status word
    is broken one character per line, and a department's name field is wide enough to read."""
    slug = unique_slug("phone")
    actor = Actor.system("test")
    with committed_db.transaction() as s:
        made = services.provision(s, actor, slug=slug, name="手机测试 Phone Test", admin_email=f"admin@{slug}.test",
                                  admin_password=PASSWORD, admin_name="王小明")
        tenant = services.bound(made.tenant)
    with committed_db.transaction(tenant) as s:
        services.invite(s, actor, email=f"new.colleague@{slug}.test", role="sales", name="李娜 Li Na")
        sales = services.save_department(s, actor, name="销售部 Sales", parent_id=None)
        services.save_department(s, actor, name="华东区 East China", parent_id=sales.id)
        services.create_user(s, actor, email=f"a.very.long.mailbox.name@subsidiary.{slug}-international.example",
                             name="Alexandra Konstantinopoulou-Featherstonehaugh", department_id=sales.id)
        services.create_client(s, actor, tenant, name="仓库 Warehouse", scopes=["users.read"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                                      extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        try:
            base = f"http://{slug}.localhost:{live_port}"
            tab.goto(f"{base}/sign-in")
            tab.fill("#email", f"admin@{slug}.test")
            tab.fill("#password", PASSWORD)
            tab.click("#sign-in-form button[type=submit]")
            expect(tab.locator("#user-name")).to_have_text("王小明", timeout=WAIT_MS)
            for path, marker in PHONE_PAGES.items():
                tab.goto(base + path)
                expect(tab.locator(marker)).to_be_visible(timeout=WAIT_MS)
                width = tab.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                assert width[0] <= width[1], f"{path} scrolls sideways: {width[0]} px wide in a {width[1]} px window"
                tops = tab.eval_on_selector_all("#app-nav a", "links => links.map(a => a.getBoundingClientRect().top)")
                assert tops[0] == tops[1], f"{path}: the nav links stand in a column ({tops})"
                # A text laid out on more than one line has line boxes at more than one height (each text
                # on its own: a cell may hold two, on purpose, one above the other).
                broken = tab.eval_on_selector_all("main .btn, main td.nowrap", """els => els.flatMap(e => {
                    const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT), out = [];
                    for (let t = walk.nextNode(); t; t = walk.nextNode()) {
                        const r = document.createRange(); r.selectNodeContents(t);
                        const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
                        if (tops.size > 1) out.push(t.textContent.trim());
                    }
                    return out;
                })""")
                assert not broken, f"{path}: wrapped inside a word: {broken}"
            tab.goto(f"{base}/admin/users")
            invited = tab.eval_on_selector("#invitations-table td.cell-name", "e => e.getBoundingClientRect().width")
            assert invited >= 100, f"the invited person's name squeezed to {invited} px"
            tab.goto(f"{base}/admin/departments")
            names = tab.eval_on_selector_all("#department-tree input[name=name]",
                                             "els => els.map(e => e.getBoundingClientRect().width)")
            assert len(names) == 2
            assert min(names) >= 150, f"department names squeezed to {names} px"
        finally:
            context.close()
            browser.close()
