"""The one live server and browser set-up that browser tests and ``bench/screens.py`` share.

The app runs in a thread on a loopback port; Debian's Chromium is driven by Playwright (its own browser
download does not work here). Fixtures (registered by tests/conftest.py as a plugin):

- ``live_port``: the real app, with the test run's settings, its own engine connections (really
  committed, so the server thread and the browser see the same data) and the run's Redis;
- ``page``: a Chromium tab, English, 1280×800.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
#: Waits for the page to reach a state, not timing assertions: generous, so a loaded machine passes.
WAIT_MS = 30_000
VIEWPORTS = {"desktop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


@contextmanager
def live_server(app: Flask) -> Iterator[int]:
    """Serve ``app`` on a free loopback port in a thread; yields the port, stops the server after."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def launch(p: Playwright) -> Browser:
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def live_port(settings: Any, engine: Any, redis_client: Any, committed_db: Any) -> Iterator[int]:
    from courtyard.app import create_app

    # Throttle counters of earlier tests (same address, same Redis) must not refuse this test's sign-ins.
    redis_client.flushdb()
    with live_server(create_app(settings, engine=engine, redis=redis_client)) as port:
        yield port


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        try:
            yield tab
        finally:
            context.close()
            browser.close()
