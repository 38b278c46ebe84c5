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
from core.settings import Settings
from courtyard.app import create_app
from tests.conftest import unique_slug

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
