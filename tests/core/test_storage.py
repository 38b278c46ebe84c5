"""Attachment storage: the local folder and an S3 service (moto's server, through the real boto3 client)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings
from core.storage import (
    DEFAULT_ALLOWED_TYPES,
    SNIFF_BYTES,
    FileTypeRefused,
    InvalidKey,
    LocalStorage,
    ObjectMissing,
    S3Storage,
    Storage,
    TooLarge,
    download_headers,
    human_size,
    sniff,
    storage_from_settings,
    with_head,
)

BAD_KEYS = ["", "../x", "a/../b", "a/..", "..", "/etc/passwd", "a//b", "a/", ".hidden", "a/.x.part", "a\\b",
            "a b", "é", "a\x00b", "C:/x", "x" * 513, "a/" + "b" * 129, "~/x", "a/./b"]


class Chunked(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read and counts what it gave, like a socket."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self.data = data
        self.step = step
        self.given = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.given:self.given + size]
        self.given += len(chunk)
        return chunk


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- local -----------------------------------------------------------------------------------------

@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "attachments")


def test_local_round_trip(local: LocalStorage) -> None:
    data = os.urandom(200_000)
    stored = local.put("t1/a1", Chunked(data, 7000), content_type="application/pdf", max_bytes=len(data))
    assert (stored.key, stored.size, stored.sha256) == ("t1/a1", len(data), hashlib.sha256(data).hexdigest())
    assert local.exists("t1/a1")
    with local.open("t1/a1") as reader:
        assert reader.size == len(data)
        assert b"".join(reader) == data
    with local.open("t1/a1") as reader:
        assert reader.read(10) == data[:10]
    assert leftovers(local.root) == ["t1/a1"]
    local.put("t1/a1", io.BytesIO(b"new"), content_type="text/plain", max_bytes=10)
    with local.open("t1/a1") as reader:
        assert reader.read() == b"new"
    local.delete("t1/a1")
    assert not local.exists("t1/a1")
    local.delete("t1/a1")  # a repeated delete is not an error
    with pytest.raises(ObjectMissing):
        local.open("t1/a1")


def test_local_size_bound_stops_reading_and_leaves_nothing(local: LocalStorage) -> None:
    local.put("t1/keep", io.BytesIO(b"old"), content_type="text/plain", max_bytes=10)
    stream = Chunked(b"x" * 1_000_000, 4096)
    with pytest.raises(TooLarge) as caught:
        local.put("t1/keep", stream, content_type="text/plain", max_bytes=10_000)
    assert caught.value.status == 413
    assert str(caught.value.message) == "The file is larger than the limit of 9.8 KB."
    assert stream.given == 10_001  # stopped one byte past the limit, never read the rest
    assert leftovers(local.root) == ["t1/keep"]  # no temporary file, and the old content is intact
    with local.open("t1/keep") as reader:
        assert reader.read() == b"old"
    # Exactly the limit is accepted.
    assert local.put("t1/exact", io.BytesIO(b"y" * 10), content_type="text/plain", max_bytes=10).size == 10


def test_local_failing_stream_leaves_nothing(local: LocalStorage) -> None:
    class Broken(Chunked):
        def read(self, size: int = -1, /) -> bytes:
            if self.given:
                raise ConnectionResetError
            return super().read(size)

    with pytest.raises(ConnectionResetError):
        local.put("t1/a", Broken(b"z" * 10_000), content_type="text/plain", max_bytes=100_000)
    assert leftovers(local.root) == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_are_checked_strictly(local: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidKey):
        local.put(key, io.BytesIO(b"x"), content_type="text/plain", max_bytes=10)
    for call in (local.open, local.delete, local.exists):
        with pytest.raises(InvalidKey):
            call(key)
    assert not local.root.exists() or leftovers(local.root) == []


def test_a_symlink_under_the_root_does_not_lead_out(local: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    local.root.mkdir(parents=True)
    (local.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        local.open("link/secret")
    for key in ("link/new", "link/sub/new"):
        with pytest.raises(InvalidKey):
            local.put(key, io.BytesIO(b"x"), content_type="text/plain", max_bytes=10)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]  # not even a directory made there


def test_a_process_killed_mid_write_leaves_no_object(local: LocalStorage) -> None:
    local.put("t1/a", io.BytesIO(b"before"), content_type="text/plain", max_bytes=100)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from core.storage import LocalStorage

        class Dying:
            calls = 0
            def read(self, size=-1):
                self.calls += 1
                if self.calls > 3:  # three chunks are on disk by now
                    os.kill(os.getpid(), signal.SIGKILL)
                return b"n" * size

        LocalStorage(Path({str(local.root)!r})).put("t1/a", Dying(), content_type="text/plain", max_bytes=10**9)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "platform")}
    done = subprocess.run([sys.executable, "-c", script], env=env, check=False, capture_output=True)
    assert done.returncode == -9, done.stderr
    partial = [name for name in leftovers(local.root) if name != "t1/a"]
    assert len(partial) == 1
    assert partial[0].startswith("t1/.a.")
    assert partial[0].endswith(".part")
    assert (local.root / partial[0]).stat().st_size > 0
    with local.open("t1/a") as reader:
        assert reader.read() == b"before"  # the old object, whole
    # A sweep keeps a file that could still be written to, and removes an abandoned one.
    now = (local.root / partial[0]).stat().st_mtime
    assert local.remove_partials(3600, now=now) == 0
    assert local.remove_partials(3600, now=now + 3601) == 1
    assert leftovers(local.root) == ["t1/a"]


# --- S3 --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_settings(endpoint: str, tmp_path: Path, bucket: str, **extra: str) -> Settings:
    return Settings.from_env({
        "COURTYARD_VAR_DIR": str(tmp_path), "COURTYARD_STORAGE_BACKEND": "s3",
        "COURTYARD_S3_ENDPOINT_URL": endpoint, "COURTYARD_S3_BUCKET": bucket, "COURTYARD_S3_PREFIX": "courtyard/",
        "COURTYARD_S3_REGION": "us-east-1", "COURTYARD_S3_ACCESS_KEY_ID": "test-key",
        "COURTYARD_S3_SECRET_ACCESS_KEY": "test-secret", "COURTYARD_S3_ADDRESSING_STYLE": "path", **extra,
    })


@pytest.fixture
def s3(moto_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest) -> S3Storage:
    bucket = "att-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:20]
    storage = storage_from_settings(s3_settings(moto_endpoint, tmp_path, bucket))
    assert isinstance(storage, S3Storage)
    storage.client.create_bucket(Bucket=bucket)
    return storage


def bucket_keys(s3: S3Storage) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", []))


def test_s3_round_trip(s3: S3Storage) -> None:
    data = os.urandom(300_000)
    stored = s3.put("t1/a1", Chunked(data, 9000), content_type="image/png", max_bytes=len(data))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert bucket_keys(s3) == ["courtyard/t1/a1"]  # under the prefix
    head = s3.client.head_object(Bucket=s3.bucket, Key="courtyard/t1/a1")
    assert head["ContentType"] == "image/png"
    assert s3.exists("t1/a1")
    with s3.open("t1/a1") as reader:
        assert reader.size == len(data)
        assert b"".join(reader) == data
    s3.delete("t1/a1")
    assert not s3.exists("t1/a1")
    assert bucket_keys(s3) == []
    s3.delete("t1/a1")


def test_s3_missing_key(s3: S3Storage) -> None:
    assert not s3.exists("t1/none")
    with pytest.raises(ObjectMissing):
        s3.open("t1/none")


def test_s3_multipart_upload(s3: S3Storage) -> None:
    s3.part_bytes = 5 * 1024 * 1024
    data = os.urandom(11 * 1024 * 1024 + 17)
    stored = s3.put("t1/big", Chunked(data, 1 << 20), content_type="application/zip", max_bytes=len(data))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    head = s3.client.head_object(Bucket=s3.bucket, Key="courtyard/t1/big")
    assert head["ETag"].endswith('-3"')  # three parts: it really went up in pieces
    with s3.open("t1/big") as reader:
        assert hashlib.sha256(b"".join(reader)).hexdigest() == stored.sha256


def test_s3_size_bound(s3: S3Storage) -> None:
    small = Chunked(b"x" * 100_000, 4096)
    with pytest.raises(TooLarge):
        s3.put("t1/small", small, content_type="text/plain", max_bytes=50_000)
    assert small.given == 50_001
    s3.part_bytes = 5 * 1024 * 1024
    big = Chunked(b"y" * (12 * 1024 * 1024), 1 << 20)
    with pytest.raises(TooLarge):
        s3.put("t1/big", big, content_type="text/plain", max_bytes=6 * 1024 * 1024)
    assert big.given == 6 * 1024 * 1024 + 1
    assert bucket_keys(s3) == []
    # The multipart upload that had begun was aborted, so no parts are kept (and billed).
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


@pytest.mark.parametrize("key", ["../x", "/x", "a/../../b"])
def test_s3_keys_are_checked(s3: S3Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        s3.put(key, io.BytesIO(b"x"), content_type="text/plain", max_bytes=10)
    with pytest.raises(InvalidKey):
        s3.open(key)
    assert bucket_keys(s3) == []


# --- settings --------------------------------------------------------------------------------------

def test_local_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path)})
    storage: Storage = storage_from_settings(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "attachments").resolve()
    assert settings.attachment_types == DEFAULT_ALLOWED_TYPES


def test_the_app_holds_the_storage(app, settings: Settings) -> None:
    from tenants.context import runtime

    storage = runtime(app).storage
    assert isinstance(storage, LocalStorage)
    assert storage.root == settings.attachments_dir.resolve()


def test_workers_hold_the_storage(settings: Settings, db) -> None:
    from core.tasks import configure_tasks, task_runtime
    from courtyard.celery_app import configure_task_runtime

    before = task_runtime()
    try:
        configure_task_runtime(settings, db=db)
        storage = task_runtime().storage
        assert isinstance(storage, LocalStorage)
        assert storage.root == settings.attachments_dir.resolve()
    finally:
        configure_tasks(before)


@pytest.mark.parametrize(("env", "message"), [
    ({"COURTYARD_STORAGE_BACKEND": "s3"}, "needs COURTYARD_S3_BUCKET"),
    ({"COURTYARD_STORAGE_BACKEND": "ftp"}, "COURTYARD_STORAGE_BACKEND must be one of local, s3"),
    ({"COURTYARD_S3_BUCKET": "Bad_Bucket"}, "COURTYARD_S3_BUCKET must be a bucket name"),
    ({"COURTYARD_S3_PREFIX": "a/../b"}, "COURTYARD_S3_PREFIX must be folder names"),
    ({"COURTYARD_S3_ENDPOINT_URL": "minio:9000"}, "COURTYARD_S3_ENDPOINT_URL must start with http"),
    ({"COURTYARD_S3_ACCESS_KEY_ID": "k"}, "set together or not at all"),
    ({"COURTYARD_S3_ADDRESSING_STYLE": "dns"}, "must be one of auto, path, virtual"),
    ({"COURTYARD_ATTACHMENT_TYPES": "image/png, text"}, "COURTYARD_ATTACHMENT_TYPES must list MIME types"),
    ({"COURTYARD_ATTACHMENT_MAX_BYTES": "0"}, "COURTYARD_ATTACHMENT_MAX_BYTES must be at least 1"),
])
def test_storage_settings_are_checked_at_start(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"COURTYARD_VAR_DIR": str(tmp_path), **env})


def test_storage_settings_parse(tmp_path: Path) -> None:
    settings = s3_settings("http://minio:9000/", tmp_path, "files", COURTYARD_S3_PREFIX="/crm/prod/",
                           COURTYARD_ATTACHMENT_TYPES="image/png,application/pdf  text/plain",
                           COURTYARD_ATTACHMENT_MAX_BYTES="1048576")
    assert settings.s3_prefix == "crm/prod/"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.attachment_types == {"image/png", "application/pdf", "text/plain"}
    assert settings.attachment_max_bytes == 1 << 20
    assert "test-secret" not in repr(settings)


def test_human_size() -> None:
    assert [human_size(n) for n in (100, 1024, 1536, 20 << 20, 15 << 30)] == ["100 B", "1 KB", "1.5 KB", "20 MB",
                                                                             "15 GB"]


# --- content types ---------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
ZIP = b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 50
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 50
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 50
EXE = b"MZ\x90\x00\x03" + b"\x00" * 50
HTML = b"\xef\xbb\xbf\n  <!DOCTYPE html><html><script>alert(1)</script>"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
NOISE = bytes(range(256)) * 4


@pytest.mark.parametrize(("head", "filename", "declared", "expected"), [
    (PNG, "logo.png", "image/png", "image/png"),
    (JPEG, "photo.png", "image/png", "image/jpeg"),  # misnamed but harmless: recorded as what it is
    (JPEG, "IMG_0001", None, "image/jpeg"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "x.webp", "image/webp", "image/webp"),
    (b"GIF89a\x01\x00", "a.gif", None, "image/gif"),
    (PDF, "合同.pdf", "application/pdf", "application/pdf"),
    (PDF, "scan", "application/octet-stream", "application/pdf"),
    (ZIP, "报价.docx", "application/octet-stream",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (ZIP, "sales.XLSX", None, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (ZIP, "bundle.zip", "application/x-zip-compressed", "application/zip"),
    (OLE, "old.xls", "application/vnd.ms-excel", "application/vnd.ms-excel"),
    (OLE, "thing", None, "application/octet-stream"),
    ("客户,电话\n张三,13800000000\n".encode(), "客户.csv", "text/csv", "text/csv"),
    ("客户,电话\n张三,13800000000\n".encode("gb18030"), "export.csv", "application/vnd.ms-excel", "text/csv"),
    (("中" * SNIFF_BYTES).encode()[:SNIFF_BYTES], "notes.txt", "text/plain", "text/plain"),  # cut mid-character
    (b"", "empty.txt", "text/plain", "text/plain"),
    (b"plain words", "README", None, "text/plain"),
    ("客户\t电话\r\n".encode("utf-16"), "客户.txt", "text/plain", "text/plain"),  # Excel's "Unicode text"
    (b"\xef\xbb\xbfid,name\n", "a.csv", "text/csv", "text/csv"),
    (NOISE, "drawing.dwg", "application/acad", "application/octet-stream"),  # unknown: kept as bytes
    (b"MZ Motors, order 12\n", "order.txt", "text/plain", "text/plain"),
    (NOISE, "data.bin", "application/octet-stream", "application/octet-stream"),
])
def test_sniff_accepts(head: bytes, filename: str, declared: str | None, expected: str) -> None:
    assert sniff(head, filename, declared) == expected


@pytest.mark.parametrize(("head", "filename", "declared", "message"), [
    (ELF, "cat.png", "image/png", "Programs and scripts cannot be attached."),
    (EXE, "setup.exe", "application/x-msdownload", "Programs and scripts cannot be attached."),
    (EXE, "report.pdf", "application/pdf", "Programs and scripts cannot be attached."),
    (b"#!/bin/sh\nrm -rf /\n", "notes.txt", "text/plain", "Programs and scripts cannot be attached."),
    (HTML, "cat.png", "image/png", "The file's content does not match its name or type (image/png)."),
    (HTML, "page.txt", "text/plain", "The file's content does not match its name or type (text/plain)."),
    (HTML, "page.html", "text/html", "Files of type text/html cannot be attached."),
    (HTML, "page", None, "Files of type text/html cannot be attached."),
    ("<html><script>".encode("utf-16"), "page.htm", None, "Files of type text/html cannot be attached."),
    ("<HTML><script>".encode("utf-16"), "page", None, "Files of type text/html cannot be attached."),
    (SVG, "logo.svg", "image/svg+xml", "Files of type image/svg+xml cannot be attached."),
    (SVG, "logo.png", "image/png", "The file's content does not match its name or type (image/png)."),
    (b"plain words", "x.svg", None, "Files of type image/svg+xml cannot be attached."),
    (ZIP, "invoice.pdf", "application/pdf",
     "The file's content does not match its name or type (application/pdf)."),
    (PNG, "contract.docx", None, "The file's content does not match its name or type "
                                 "(application/vnd.openxmlformats-officedocument.wordprocessingml.document)."),
    (NOISE, "photo.jpg", "image/jpeg", "The file's content does not match its name or type (image/jpeg)."),
    (NOISE, "scan", "application/pdf", "The file's content does not match its name or type (application/pdf)."),
])
def test_sniff_refuses(head: bytes, filename: str, declared: str | None, message: str) -> None:
    with pytest.raises(FileTypeRefused) as caught:
        sniff(head, filename, declared)
    assert caught.value.status == 415
    assert str(caught.value.message) == message


def test_sniff_allow_list_is_the_operators() -> None:
    assert sniff(HTML, "page.html", "text/html", DEFAULT_ALLOWED_TYPES | {"text/html"}) == "text/html"
    with pytest.raises(FileTypeRefused, match="application/pdf"):
        sniff(PDF, "a.pdf", None, {"image/png"})


def test_with_head_gives_back_the_whole_stream() -> None:
    data = os.urandom(SNIFF_BYTES * 3)
    head, stream = with_head(Chunked(data, 1000))
    assert head == data[:SNIFF_BYTES]
    out = [stream.read(10), stream.read(5000)]
    while chunk := stream.read(777):
        out.append(chunk)
    assert b"".join(out) == data
    short_head, short = with_head(io.BytesIO(b"abc"))
    assert (short_head, short.read(), short.read()) == (b"abc", b"abc", b"")


def test_download_headers() -> None:
    shown = download_headers("image/png", "照片 1.png", inline=True)
    assert shown["Content-Disposition"] == "inline; filename=\"__ 1.png\"; filename*=UTF-8''%E7%85%A7%E7%89%87%201.png"
    assert shown["Content-Type"] == "image/png"
    assert shown["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in shown["Content-Security-Policy"]
    # Markup is never shown, even when an operator allowed it to be stored, nor typed as markup.
    html = download_headers("text/html", 'a"\r\nSet-Cookie: x.html', inline=True)
    assert html["Content-Type"] == "application/octet-stream"
    assert html["Content-Disposition"].startswith('attachment; filename="a_  Set-Cookie: x.html"')
    assert "\r" not in html["Content-Disposition"]
    assert "\n" not in html["Content-Disposition"]
    assert download_headers("application/pdf", "a.pdf", inline=True)["Content-Disposition"].startswith("attachment")
    assert download_headers("image/png", "", inline=False)["Content-Disposition"].startswith(
        'attachment; filename="download"')


def test_a_reader_streams_as_a_response_body_and_is_closed(local: LocalStorage) -> None:
    from flask import Flask, Response

    data = os.urandom(150_000)
    local.put("t1/a", io.BytesIO(data), content_type="application/pdf", max_bytes=len(data))
    opened: list[object] = []
    app = Flask(__name__)

    @app.get("/download")
    def download() -> Response:
        reader = local.open("t1/a")
        opened.append(reader)
        headers = {**download_headers("application/pdf", "报价.pdf"), "Content-Length": str(reader.size)}
        return Response(reader, headers=headers, direct_passthrough=True)

    answer = app.test_client().get("/download")
    assert answer.data == data
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Content-Length"] == str(len(data))
    assert not opened[0]._raw.closed
    answer.close()  # what every WSGI server does once the body is sent (PEP 3333)
    assert opened[0]._raw.closed
