"""Reset and invitation tokens never reach a log line (issue 5, finding 8)."""

from __future__ import annotations

import logging

import pytest

from core.logs import REDACTED, JsonFormatter, PlainFormatter
from tenants import services
from tests.conftest import host

TOKEN = "tok3n-that-must-stay-secret_0123456789"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    json_lines = [JsonFormatter().format(r) for r in caplog.records]
    plain = PlainFormatter("%(message)s %(fields)s")
    plain_lines = [plain.format(r) for r in caplog.records if hasattr(r, "fields")]
    return json_lines + plain_lines


@pytest.mark.parametrize(("path", "headers"), [
    (f"/reset/{TOKEN}", host("acme")),
    (f"/invitation/{TOKEN}", host("acme")),
    (f"/t/acme/reset/{TOKEN}", {}),
    (f"/t/acme/invitation/{TOKEN}?lang=zh", {}),
    (f"/sign-in?next=%2Freset%2F{TOKEN}", host("acme")),
])
def test_the_request_log_redacts_tokens(client, tenant, caplog, path, headers) -> None:
    """Before: the request log's ``path`` was ``request.full_path`` as sent."""
    with caplog.at_level(logging.INFO, logger="courtyard.request"):
        client.get(path, headers=headers)
    lines = _lines(caplog)
    assert any('"path"' in line for line in lines)
    assert not [line for line in lines if TOKEN in line]
    assert any(REDACTED in line for line in lines)


def test_error_logs_redact_tokens(app, tenant, caplog, monkeypatch) -> None:
    def broken(*_args: object) -> None:
        msg = f"failed on the way to /t/acme/reset/{TOKEN}"
        raise RuntimeError(msg)

    monkeypatch.setattr(services, "open_reset", broken)
    with caplog.at_level(logging.INFO):
        response = app.test_client().get(f"/reset/{TOKEN}", headers=host("acme"))
    assert response.status_code == 500
    lines = _lines(caplog)
    assert any("unhandled error" in line for line in lines)
    assert not [line for line in lines if TOKEN in line]
