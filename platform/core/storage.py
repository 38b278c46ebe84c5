"""Object storage for attachments behind a Protocol: a folder under ``var/`` by default, S3 when configured.

Keys are chosen by the caller (e.g. ``<tenant id>/<attachment id>``) and checked strictly here, so no key
can reach outside the storage root or the bucket prefix whatever a caller passes. Every ``put`` counts
the bytes as it reads them and stops at ``max_bytes``: an oversized upload is refused without ever being
held whole, and nothing of it is left under its key.

Content types are decided by :func:`sniff` from the file's first bytes, not from what the browser says,
and :func:`download_headers` gives the headers every download must carry (see docs/operators.md).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast
from urllib.parse import quote

from core.errors import ConfigError, DomainError, NotFound, ValidationFailed
from core.i18n import _l

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from core.settings import Settings

#: Bytes read (and written) at a time.
CHUNK = 64 * 1024
#: How much of a file :func:`sniff` looks at; read it with :func:`with_head`.
SNIFF_BYTES = 4096
MAX_KEY_LENGTH = 512
#: A key: ``/``-separated segments of letters, digits, ``.``, ``_``, ``-``, each starting with a letter or
#: digit (so no ``..``, no hidden names that could meet a temporary file, no empty segment, no leading
#: ``/``). Anything else is refused rather than cleaned up: a caller that builds a bad key has a bug.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class InvalidKey(ValidationFailed):
    code = "invalid_storage_key"


class TooLarge(DomainError):
    status = 413
    code = "too_large"


class ObjectMissing(NotFound):
    """The database names an object the store no longer holds: answered like any missing object."""


class FileTypeRefused(DomainError):
    status = 415
    code = "file_type_refused"


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    #: Hex SHA-256 of the content, computed while it streamed in.
    sha256: str
    content_type: str


class ObjectReader:
    """A stored object opened for reading: iterate it for chunks (a WSGI response body, which closes it
    when the download ends), or ``read`` it like a file. Always close it (it is a context manager)."""

    def __init__(self, raw: Readable, size: int, close: Callable[[], None]) -> None:
        self._raw = raw
        self.size = size
        self._close = close

    def read(self, size: int = -1, /) -> bytes:
        return self._raw.read(size)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._raw.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Storage(Protocol):
    def put(self, key: str, stream: Readable, *, content_type: str, max_bytes: int) -> StoredObject:
        """Store ``stream`` under ``key`` (replacing what was there), reading at most ``max_bytes``.

        Raises :class:`TooLarge` (nothing stored) when the stream holds more. The object appears whole
        or not at all.
        """

    def open(self, key: str) -> ObjectReader:
        """The object's content, streamed; :class:`ObjectMissing` when there is none."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing one is not an error (deletes are retried)."""

    def exists(self, key: str) -> bool: ...


def check_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not KEY_RE.fullmatch(key):
        raise InvalidKey(_l("The storage key is not valid."))
    return key


def human_size(num: int) -> str:
    """``num`` bytes for a message: 25 MB, 512 KB, 100 B (binary units, as file managers count)."""
    for unit, power in (("GB", 30), ("MB", 20), ("KB", 10)):
        if num >= 1 << power:
            value = num / (1 << power)
            return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else f"{value:.1f} {unit}"
    return f"{num} B"


def too_large(max_bytes: int) -> TooLarge:
    return TooLarge(_l("The file is larger than the limit of %(limit)s.", limit=human_size(max_bytes)))


def _bounded_chunks(stream: Readable, max_bytes: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The stream's chunks; raises :class:`TooLarge` as soon as it holds more than ``max_bytes``
    (having read at most one byte past the limit)."""
    total = 0
    while True:
        data = stream.read(min(chunk, max_bytes + 1 - total))
        if not data:
            return
        total += len(data)
        if total > max_bytes:
            raise too_large(max_bytes)
        yield data


class LocalStorage:
    """Objects as files under ``root`` (by default ``var/attachments/``), one file per key."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        # The key grammar already keeps it inside; this also stops a symlink planted under the root
        # (resolve follows the links of the part that exists, whether or not the rest does).
        if not path.parent.resolve().is_relative_to(self.root):
            raise InvalidKey(_l("The storage key is not valid."))
        return path

    def put(self, key: str, stream: Readable, *, content_type: str, max_bytes: int) -> StoredObject:
        path = self._path(key)  # before mkdir, which would otherwise follow a symlink out of the root
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file starts with a dot, which no key may: it can never be read as an object,
        # and a process killed mid-write leaves only such a file (see remove_partials).
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for data in _bounded_chunks(stream, max_bytes):
                    digest.update(data)
                    size += len(data)
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def open(self, key: str) -> ObjectReader:
        try:
            fh = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(_l("The file is no longer in storage.")) from None
        return ObjectReader(fh, os.fstat(fh.fileno()).st_size, fh.close)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def remove_partials(self, older_than_s: float, *, now: float) -> int:
        """Remove temporary files a killed process left behind (older than ``older_than_s`` at ``now``,
        so an upload still running keeps its file); returns how many were removed."""
        removed = 0
        for tmp in self.root.rglob(".*.part"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime < now - older_than_s:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # its own writer finished or gave up meanwhile
        return removed


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: without it a power cut may forget the new name."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: S3 takes parts of at least 5 MiB (except the last); one part is held in memory per upload.
PART_BYTES = 8 * 1024 * 1024


class S3Storage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, Aliyun OSS, ...) under ``prefix``."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "", part_bytes: int = PART_BYTES) -> None:
        if part_bytes < 5 * 1024 * 1024:
            msg = "S3 parts must be at least 5 MiB"
            raise ValueError(msg)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": cast(Literal["auto", "path", "virtual"], settings.s3_addressing_style)},
            # botocore >= 1.36 adds CRC trailers to every upload by default, which several
            # S3-compatible services (older MinIO, OSS) refuse; send checksums only where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=config,
        )
        assert settings.s3_bucket is not None  # Settings.from_env refuses s3 without a bucket
        return cls(client, settings.s3_bucket, settings.s3_prefix)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, stream: Readable, *, content_type: str, max_bytes: int) -> StoredObject:
        name = self._name(key)
        digest = hashlib.sha256()
        size = 0
        chunks = _bounded_chunks(stream, max_bytes)
        part = _take(chunks, self.part_bytes)
        digest.update(part)
        size += len(part)
        if len(part) < self.part_bytes:
            # Small enough for one request: no multipart upload to start, complete or abort.
            self.client.put_object(Bucket=self.bucket, Key=name, Body=part, ContentType=content_type)
            return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name,
                                                        ContentType=content_type)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while part:
                answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                 PartNumber=len(parts) + 1, Body=part)
                parts.append({"ETag": answer["ETag"], "PartNumber": len(parts) + 1})
                part = _take(chunks, self.part_bytes)
                digest.update(part)
                size += len(part)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})  # type: ignore[typeddict-item]
        except BaseException:
            # Parts of an aborted upload are freed by the service and never become an object.
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def open(self, key: str) -> ObjectReader:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(_l("The file is no longer in storage.")) from None
            raise
        body = answer["Body"]
        return ObjectReader(body, answer["ContentLength"], body.close)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True


def _take(chunks: Iterator[bytes], size: int) -> bytes:
    """Up to ``size`` bytes from ``chunks`` (fewer only at the end of the stream)."""
    buf = bytearray()
    for data in chunks:
        buf += data
        if len(buf) >= size:
            break
    # A chunk may overshoot the part size; S3 only needs parts >= 5 MiB, not exact ones.
    return bytes(buf)


def _missing(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code")) in ("NoSuchKey", "404", "NotFound")


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.attachments_dir)


class HeadStream:
    """A stream whose first bytes were already read (to sniff them), read again from the start."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)


def with_head(stream: Readable, size: int = SNIFF_BYTES) -> tuple[bytes, Readable]:
    """The first ``size`` bytes of ``stream`` (for :func:`sniff`) and a stream that yields all of it."""
    head = bytearray()
    while len(head) < size:
        data = stream.read(size - len(head))
        if not data:
            break
        head += data
    return bytes(head), HeadStream(bytes(head), stream)


# --- content types -------------------------------------------------------------------------------

OCTET_STREAM = "application/octet-stream"
#: Types a browser would run script from, in our origin, if it showed them: refused unless an operator
#: allows them, and even then only ever downloaded (download_headers).
ACTIVE_TYPES = frozenset({"text/html", "image/svg+xml", "application/xhtml+xml", "application/xml",
                          "text/xml", "text/javascript", "application/javascript"})
#: Types a download may show in the browser (when the caller asks); every other type is a download.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})

_OOXML = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "zip": "application/zip",
}
_OLE = {"doc": "application/msword", "xls": "application/vnd.ms-excel",
        "ppt": "application/vnd.ms-powerpoint", "msg": "application/vnd.ms-outlook"}
_TEXT = {"txt": "text/plain", "log": "text/plain", "md": "text/markdown", "csv": "text/csv",
         "tsv": "text/tab-separated-values"}
_ACTIVE_EXT = {"html": "text/html", "htm": "text/html", "xhtml": "application/xhtml+xml", "svg": "image/svg+xml",
               "svgz": "image/svg+xml", "xml": "application/xml", "js": "text/javascript",
               "mjs": "text/javascript"}
_IMAGE_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
              "webp": "image/webp"}
_OTHER_EXT = {"pdf": "application/pdf", "rtf": "application/rtf", "7z": "application/x-7z-compressed",
              "rar": "application/vnd.rar", "gz": "application/gzip", "tgz": "application/gzip"}

_BY_EXT = {**_OOXML, **_OLE, **_TEXT, **_ACTIVE_EXT, **_IMAGE_EXT, **_OTHER_EXT}

#: The default allow-list (COURTYARD_ATTACHMENT_TYPES): office documents, images, PDF, text, archives and
#: unrecognised binary data (kept as application/octet-stream, always downloaded, never shown).
DEFAULT_ALLOWED_TYPES = frozenset({
    *_OOXML.values(), *_OLE.values(), *_TEXT.values(), *_IMAGE_EXT.values(), *_OTHER_EXT.values(), OCTET_STREAM,
})

#: (signature, offset, type); checked in order.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"PK\x05\x06", 0, "application/zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "application/x-ole-storage"),
    (b"{\\rtf", 0, "application/rtf"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", 0, "application/vnd.rar"),
    (b"\x1f\x8b", 0, "application/gzip"),
)
#: Programs: refused whatever their name says (ELF, Mach-O, Java class / fat Mach-O, scripts; Windows
#: programs start with "MZ", checked apart as a text may begin with those letters).
_EXECUTABLE = (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
               b"\xca\xfe\xba\xbe", b"#!")
_ACTIVE_STARTS = ("<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<svg", "<?xml", "<!--")


def _magic(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for signature, offset, kind in _MAGIC:
        if head[offset:offset + len(signature)] == signature:
            return kind
    return None


def _text(head: bytes) -> str | None:
    """``head`` decoded when it is text: UTF-8, GB18030 (what Chinese Windows saves), or UTF-16 with its
    byte-order mark (Excel's "Unicode text" export); None for binary data."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings: tuple[str, ...] = ("utf-16",)
    elif b"\x00" in head:
        return None
    else:
        encodings = ("utf-8-sig", "gb18030")
    for encoding in encodings:
        try:
            # Not final: the sniffed bytes may end inside a multi-byte character.
            return codecs.getincrementaldecoder(encoding)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
    return None


def _active_text(text: str) -> str | None:
    """The markup type when text looks like HTML, SVG or XML (what a browser would sniff as such)."""
    start = text.lstrip("\ufeff \t\r\n").lower()
    if not start.startswith(_ACTIVE_STARTS):
        return None
    if "<svg" in start:
        return "image/svg+xml"
    if start.startswith("<?xml") and "<html" not in start:
        return "application/xml"
    return "text/html"


def _extension(filename: str) -> str:
    name = unicodedata.normalize("NFC", filename).strip().rstrip(". ").lower()
    _, dot, ext = name.rpartition(".")
    return ext if dot and len(ext) <= 10 else ""


def _kind(content_type: str) -> str:
    """The family that decides whether two types describe the same file: a .docx is a zip."""
    if content_type in _OOXML.values():
        return "zip"
    if content_type in (*_OLE.values(), "application/x-ole-storage"):
        return "ole"
    if content_type.startswith("text/") and content_type not in ACTIVE_TYPES:
        return "text"
    if content_type in ACTIVE_TYPES:
        return "active"
    return content_type


def _claimed(ext: str, declared: str) -> str | None:
    """What the name (or, without a known extension, the declared type) says the file is, when that is a
    type whose content can be checked; an unknown format cannot be held to its claim."""
    by_ext = _BY_EXT.get(ext)
    if by_ext:
        return by_ext
    declared = declared.split(";", 1)[0].strip().lower()
    return declared if declared in _BY_EXT.values() else None


def sniff(first_bytes: bytes, filename: str, declared: str | None,
          allowed: Collection[str] = DEFAULT_ALLOWED_TYPES) -> str:
    """The content type to record for an upload, decided from its first bytes (:data:`SNIFF_BYTES`).

    The name's extension (or, without one, the declared type) only refines what the bytes say (which
    Office format a zip is) and must agree with them: a program is refused whatever it is called, and so
    is a file whose content is not what its name claims (``photo.png`` holding HTML or a zip). Markup a
    browser would run (HTML, SVG, XML) is refused unless allowed. Raises :class:`FileTypeRefused`.
    """
    ext = _extension(filename)
    claimed = _claimed(ext, declared or "")
    text = _text(first_bytes)
    if first_bytes.startswith(_EXECUTABLE) or (first_bytes.startswith(b"MZ") and text is None):
        raise FileTypeRefused(_l("Programs and scripts cannot be attached."))
    found = _magic(first_bytes)
    if found is None and text is not None:
        found = _active_text(text) or _ACTIVE_EXT.get(ext) or _TEXT.get(ext, "text/plain")
    if found == "application/zip":
        found = _OOXML.get(ext, found)
    elif found == "application/x-ole-storage":
        found = _OLE.get(ext, OCTET_STREAM)
    if claimed is not None and found is not None and _kind(claimed) != _kind(found) and not (
            _kind(claimed).startswith("image/") and _kind(found).startswith("image/")):
        # A JPEG named .png is harmless (it is recorded as a JPEG); anything else is a lie that matters.
        raise FileTypeRefused(_l("The file's content does not match its name or type (%(claimed)s).",
                                 claimed=claimed))
    if found is None:
        if claimed is not None:
            raise FileTypeRefused(_l("The file's content does not match its name or type (%(claimed)s).",
                                     claimed=claimed))
        # A format we cannot recognise is kept, but only as bytes: it is never shown, only downloaded.
        found = OCTET_STREAM
    if found not in allowed:
        raise FileTypeRefused(_l("Files of type %(type)s cannot be attached.", type=found))
    return found


def download_headers(content_type: str, filename: str, *, inline: bool = False) -> dict[str, str]:
    """The headers of an attachment download. Only the types in :data:`INLINE_TYPES` may be shown in the
    browser (when ``inline``); everything else is saved as a file. ``nosniff`` stops the browser guessing
    a type of its own, and the sandbox policy keeps anything it shows from running script in our origin."""
    shown = inline and content_type in INLINE_TYPES
    name = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in filename).strip() or "download"
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    disposition = f"{'inline' if shown else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    served = content_type if content_type not in ACTIVE_TYPES else OCTET_STREAM
    return {
        "Content-Type": served,
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    }


def parse_types(name: str, raw: str) -> frozenset[str]:
    """An allow-list setting: MIME types separated by spaces or commas."""
    types = frozenset(t.strip().lower() for t in re.split(r"[\s,]+", raw) if t.strip())
    bad = sorted(t for t in types if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", t))
    if bad or not types:
        msg = f"{name} must list MIME types like image/png, got {raw!r}"
        raise ConfigError(msg)
    return types
