"""`courtyard up` says "Courtyard is running" only once the web server answers (it printed it while
gunicorn was still importing the app). The wait is bounded, and ends early if the server process dies."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from courtyard.runtime import wait_until_answering


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *_: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def http_servers() -> Iterator[list[http.server.HTTPServer]]:
    started: list[http.server.HTTPServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def _serve(port: int, status: int, started: list[http.server.HTTPServer]) -> None:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started.append(server)


def test_it_waits_until_the_server_answers(port, http_servers):
    polls = 0

    def alive() -> bool:
        nonlocal polls
        polls += 1
        if polls == 4:  # the server comes up only after three unanswered polls
            _serve(port, 200, http_servers)
        return True

    assert wait_until_answering(f"http://127.0.0.1:{port}/healthz", alive=alive, timeout_s=60, interval_s=0.01)
    assert polls >= 4, "it did not report a server that was not answering yet"


def test_a_server_that_is_up_but_not_ready_is_not_running(port, http_servers):
    _serve(port, 503, http_servers)
    polls = 0

    def alive() -> bool:
        nonlocal polls
        polls += 1
        return polls <= 5  # the process "dies" after five polls

    assert not wait_until_answering(f"http://127.0.0.1:{port}/healthz", alive=alive, timeout_s=60,
                                    interval_s=0.01)
    assert polls == 6


def test_a_dead_server_process_ends_the_wait(port):
    assert not wait_until_answering(f"http://127.0.0.1:{port}/healthz", alive=lambda: False, timeout_s=60)


def test_the_wait_is_bounded_when_nobody_ever_answers(port):
    assert not wait_until_answering(f"http://127.0.0.1:{port}/healthz", alive=lambda: True, timeout_s=0.2,
                                    interval_s=0.05)


class _Proc:
    """A child process that runs until it is told to stop."""

    def __init__(self, *_: object, **__: object) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, _signum: int) -> None:
        self.returncode = 0

    def wait(self, _timeout: float | None = None) -> int:
        return self.returncode or 0


@pytest.mark.parametrize("answers", [True, False])
def test_up_prints_running_only_after_the_web_server_answered(monkeypatch, tmp_path, answers):
    from click.testing import CliRunner

    from core.settings import Settings
    from courtyard import cli, runtime
    from tenants import migrator

    settings = Settings(var_dir=tmp_path, database_url="postgresql://nobody@/unused", redis_url="redis://unused",
                        secret_key="k", base_domain="localhost")
    events: list[str] = []

    class _Engine:
        def dispose(self) -> None:
            pass

    def waited(url: str, *, alive, **_: object) -> bool:
        assert alive()
        events.append(f"waited for {url}")
        return answers

    procs: list[_Proc] = []

    def popen(*args: object, **kwargs: object) -> _Proc:
        procs.append(_Proc())
        return procs[-1]

    monkeypatch.setattr(cli, "_resolved", lambda: (_Engine(), settings))
    monkeypatch.setattr(migrator, "upgrade_shared", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(migrator, "migrate_fleet", lambda _engine, **_kwargs: type("R", (), {"failed": []})())
    monkeypatch.setattr(cli, "ensure_demo", lambda _engine: [])
    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    monkeypatch.setattr(runtime, "wait_until_answering", waited)
    monkeypatch.setattr(cli.time, "sleep", lambda _s: procs[1].send_signal(15))  # the worker "exits"
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)
    result = CliRunner().invoke(cli.up, ["--port", "8123"])
    assert events == ["waited for http://127.0.0.1:8123/healthz"], result.output
    assert all(p.returncode is not None for p in procs), "every child is stopped"
    if answers:
        assert result.exit_code == 0, result.output
        assert "Courtyard is running." in result.output
    else:
        assert result.exit_code == 1
        assert "Courtyard is running." not in result.output
        assert "did not answer on port 8123" in result.output
