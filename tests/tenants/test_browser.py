"""A real browser (Debian's Chromium through Playwright) against the real app on a loopback port.

The live server and the browser come from tests/browser.py; tenants the test creates are dropped
afterwards by ``committed_db``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import Engine, text

from core.db import Database
from core.permissions import Actor
from tenants import services
from tests.browser import WAIT_MS, launch
from tests.conftest import PASSWORD, unique_slug


def sign_out(page: Page) -> None:
    page.click("#user-menu")
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
    """390 px wide, in Chinese (what bench/screens.py showed broken): the menu folds behind a working
    hamburger button, tables become cards, no button or status word is broken one character per line,
    and a department's name field is wide enough to read. (tests/web/test_page_sweep.py checks every
    page for sideways scrolling.)"""
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
        browser = launch(p)
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
            # The sidebar is folded away; the hamburger opens it and its links work.
            expect(tab.locator("#app-nav")).to_be_hidden(timeout=WAIT_MS)
            tab.click("#menu-toggle")
            expect(tab.locator("#app-nav")).to_be_visible(timeout=WAIT_MS)
            tab.click("#app-nav a[data-nav=users]")
            expect(tab.locator("#users-table")).to_be_visible(timeout=WAIT_MS)
            expect(tab.locator("#app-nav a[data-nav=users]")).to_have_attribute("aria-current", "page")
            for path, marker in PHONE_PAGES.items():
                tab.goto(base + path)
                expect(tab.locator(marker)).to_be_visible(timeout=WAIT_MS)
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
            # Rows are cards on a phone: a row is as wide as the table, its header row is hidden.
            expect(tab.locator("#users-table thead")).to_be_hidden(timeout=WAIT_MS)
            widths = tab.eval_on_selector_all("#users-table tbody tr",
                                              "rows => rows.map(r => r.getBoundingClientRect().width)")
            assert widths
            assert min(widths) >= 300, f"user cards squeezed to {widths} px"
            invited = tab.eval_on_selector("#invitations-table td.cell-name", "e => e.getBoundingClientRect().width")
            assert invited >= 100, f"the invited person's name squeezed to {invited} px"
            tab.goto(f"{base}/admin/departments")
            first = tab.locator("#department-tree .dept-node").first
            first.locator("[data-bs-toggle=dropdown]").click()
            first.locator("a[href$='-edit']").click()
            name_input = tab.locator("#department-tree .collapse.show input[name=name]")
            expect(name_input).to_be_visible(timeout=WAIT_MS)
            width = name_input.evaluate("e => e.getBoundingClientRect().width")
            assert width >= 150, f"the department's name field squeezed to {width} px"
        finally:
            context.close()
            browser.close()
