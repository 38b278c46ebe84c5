"""A portable, signed archive of one tenant: a manifest, its signature, and every table's rows.

An archive is a gzip'd tar holding, in this order and nothing else (regular files only):

    manifest.json        the tenant, its schema revision, and per table: columns, rows, bytes, sha256
    manifest.sig         HMAC-SHA256 of manifest.json under the installation's archive key
    data/<table>.copy    the table's rows in PostgreSQL's binary COPY format, in the manifest's order

The manifest and its signature come first, so an import checks the signature having read at most
those two small members; the signed manifest then names every following member with its exact size
and digest, so each one is streamed through (never held in memory) and refused at the first thing
that differs. The tar is read by the small strict reader below rather than by ``tarfile``, which
buffers pax and GNU long-name headers of any declared size in memory and accepts links and devices.

Import verifies the whole file before writing anything, builds the new tenant's schema at the
archive's own revision, loads it (verifying again as it streams), moves it forward with the real
migrations, and checks every row with the same rules the services apply: all in the caller's
transaction, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import TenantBase, TenantRecord, bind_tenant, utcnow
from core.errors import ValidationFailed
from core.i18n import MAX_PARAM_CHARS, Message, Text, _l, _ln, shown
from core.permissions import known
from core.security import password_hash_problem
from core.tenancy import schema_for, validate_slug
from tenants import migrator, services
from tenants import permissions as perms
from tenants.errors import ArchiveTooNew, InvalidArchive, SlugTaken, TenantNotFound
from tenants.models import Department, Role, Tenant, User

FORMAT = "courtyard-tenant-archive"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 1024
MAX_TABLES = 1000
MAX_COLUMNS = 1600  # PostgreSQL's own limit per table
#: What tar writes after the end-of-archive marker (zero padding to its 10 KiB record), with room to spare.
MAX_TRAILER_BYTES = 1 << 16
DEFAULT_MAX_BYTES = 16 << 30
CHUNK = 1 << 16
#: Live credentials stay behind: an invitation or reset link of the source would work on the copy.
NOT_EXPORTED = frozenset({"invitations", "password_resets"})

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_MEMBER = re.compile(r"(manifest\.json|manifest\.sig|data/[a-z_][a-z0-9_]{0,62}\.copy)\Z")
_REVISION = re.compile(r"[A-Za-z0-9_]{1,32}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_KEY_ID = re.compile(r"[0-9a-f]{16}\Z")
_MAC_CONTEXT = b"courtyard-tenant-archive/2\0"
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_ENTRY_KINDS = {b"1": _l("hard link"), b"2": _l("symbolic link"), b"3": _l("character device"),
                b"4": _l("block device"), b"5": _l("directory"), b"6": _l("FIFO"), b"x": _l("pax header"),
                b"g": _l("pax global header"), b"L": _l("GNU long name"), b"K": _l("GNU long link name")}


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    slug: str
    #: The schema revision the tenant is at now (for an import: after migrating forward).
    revision: str
    tables: dict[str, int]
    #: The revision the archive was exported at.
    archived_revision: str = ""


@dataclass(frozen=True, slots=True)
class TableEntry:
    name: str
    columns: tuple[str, ...]
    rows: int
    file: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    revision: str
    tenant_name: str
    tables: tuple[TableEntry, ...]
    #: SHA-256 of the signed manifest bytes: a second pass over the file must meet the same manifest.
    digest: str


def exported_tables() -> list[Table]:
    # Dependency order, so foreign keys are satisfied as each table is loaded.
    return [t for t in TenantBase.metadata.sorted_tables if t.name not in NOT_EXPORTED]


# --------------------------------------------------------------------------- signing


def key_id(key: str) -> str:
    """A short public name for a key, so a refusal can say which key signed an archive."""
    return hashlib.sha256(b"courtyard archive key id\0" + key.encode()).hexdigest()[:16]


def _mac(key: str, manifest: bytes) -> bytes:
    return hmac.new(key.encode(), _MAC_CONTEXT + manifest, hashlib.sha256).hexdigest().encode()


def sign(key: str, manifest: bytes) -> bytes:
    return json.dumps({"alg": "HMAC-SHA256", "key_id": key_id(key), "mac": _mac(key, manifest).decode()}).encode()


def _verify(manifest: bytes, raw_signature: bytes, keys: Sequence[str]) -> None:
    try:
        signature = json.loads(raw_signature)
    except ValueError:
        signature = None
    if (not isinstance(signature, dict) or signature.get("alg") != "HMAC-SHA256"
            or not isinstance(signature.get("mac"), str)):
        raise InvalidArchive(_l("The archive's signature (manifest.sig) is malformed."))
    mac = signature["mac"].encode("utf-8", "replace")
    if any(hmac.compare_digest(_mac(key, manifest), mac) for key in keys):
        return
    claimed = signature.get("key_id")
    if claimed in {key_id(k) for k in keys}:
        raise InvalidArchive(_l("The archive was changed after it was exported: its signature does not match."))
    claimed_id: Text = claimed if isinstance(claimed, str) and _KEY_ID.match(claimed) else _l("unknown")
    raise InvalidArchive(_l(
        "The archive is signed with a key this server does not accept (key id %(key_id)s), or was changed "
        "after export. An archive from another installation needs that installation's archive key "
        "(import --key-file, or COURTYARD_ARCHIVE_OLD_KEYS).", key_id=claimed_id))


# --------------------------------------------------------------------------- the strict tar reader


def _entry_name(name: str) -> str:
    """A member name as a refusal quotes it: control characters escaped (it reaches terminals and logs), cut short."""
    return shown(repr(name)[1:-1])


def _path(path: Path) -> str:
    """The operator's own path, quoted whole up to the cap every message parameter has."""
    return shown(path, MAX_PARAM_CHARS)


def _number(field: bytes, what: Message) -> int:
    if field[:1] == b"\x80":  # GNU base-256, for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.replace(b"\0", b" ").strip()
    if not digits or not all(48 <= c <= 55 for c in digits):
        raise InvalidArchive(_l("The archive is damaged: a tar header has an invalid %(what)s.", what=what))
    return int(digits, 8)


class _NotTar(Exception):
    """The stream is not a tar archive (refused as "not an archive" before any member, else as damage)."""


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    size: int


class _TarReader:
    """Reads a gzip'd tar member by member with bounded memory: regular files with our names only."""

    def __init__(self, raw: BinaryIO) -> None:
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self.members_seen = 0

    def _read(self, n: int) -> bytes:
        data = self._gz.read(n)
        if len(data) != n:
            raise InvalidArchive(_l("The archive is damaged: it ends early (truncated)."))
        return data

    def next(self) -> _Member | None:
        """The next member's header, or None at the end-of-archive marker."""
        block = self._gz.read(_BLOCK)
        if len(block) != _BLOCK:
            raise _NotTar if self.members_seen == 0 else InvalidArchive(
                _l("The archive is damaged: it ends early (truncated)."))
        if block == _ZERO_BLOCK:
            return None
        if block[257:263] not in (b"ustar\0", b"ustar "):
            raise _NotTar
        if _number(block[148:156], _l("checksum")) != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise InvalidArchive(_l("The archive is damaged: a tar header checksum does not match."))
        raw_name = block[:100].split(b"\0", 1)[0]
        name = raw_name.decode("utf-8", "replace")
        kind = _ENTRY_KINDS.get(block[156:157])
        if block[156:157] not in (b"0", b"\0"):
            raise InvalidArchive(_l("Unexpected entry in archive: '%(name)s' is a %(kind)s; an archive holds regular "
                                    "files only.", name=_entry_name(name), kind=kind or _l("special entry")))
        if block[345:500].strip(b"\0") or not _MEMBER.match(name):
            raise InvalidArchive(_l("Unexpected entry in archive: '%(name)s' (allowed: manifest.json, manifest.sig, "
                                    "data/<table>.copy).", name=_entry_name(name)))
        self.members_seen += 1
        return _Member(name, _number(block[124:136], _l("size")))

    def read_small(self, member: _Member, limit: int) -> bytes:
        if member.size > limit:
            raise InvalidArchive(_l("The archive's %(name)s is %(size)s bytes; at most %(limit)s are read.",
                                    name=member.name, size=member.size, limit=limit))
        return b"".join(self.stream(member.size))

    def stream(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            chunk = self._read(min(CHUNK, left))
            left -= len(chunk)
            yield chunk
        padding = -size % _BLOCK
        if padding and self._read(padding).strip(b"\0"):
            raise InvalidArchive(_l("The archive is damaged: non-zero padding after a member."))

    def finish(self) -> None:
        """After the end marker: only zero padding, then the end of the gzip stream (checks its CRC)."""
        rest = self._gz.read(MAX_TRAILER_BYTES + 1)
        if len(rest) > MAX_TRAILER_BYTES or rest.strip(b"\0"):
            raise InvalidArchive(_l("The archive has data after its end-of-archive marker."))


# --------------------------------------------------------------------------- verification


def _table_entry(raw: Any) -> TableEntry:
    if not isinstance(raw, dict):
        raise ValueError
    name, columns, rows = raw.get("name"), raw.get("columns"), raw.get("rows")
    size, digest, file = raw.get("bytes"), raw.get("sha256"), raw.get("file")
    if not (isinstance(name, str) and _IDENT.match(name) and file == f"data/{name}.copy"
            and isinstance(columns, list) and 0 < len(columns) <= MAX_COLUMNS
            and all(isinstance(c, str) and _IDENT.match(c) for c in columns) and len(set(columns)) == len(columns)
            and type(rows) is int and rows >= 0 and type(size) is int and size >= 0
            and isinstance(digest, str) and _HEX64.match(digest)):
        raise ValueError
    return TableEntry(name, tuple(columns), rows, file, size, digest)


def _parse_manifest(raw: bytes, max_bytes: int) -> Manifest:
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidArchive(_l("The archive's manifest.json is not valid JSON.")) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidArchive(_l("This is not a Courtyard tenant archive (wrong format in manifest)."))
    version = data.get("format_version")
    if type(version) is not int or version < 1:
        raise InvalidArchive(_l("The archive's manifest has no valid format_version."))
    if version != FORMAT_VERSION:
        raise ArchiveTooNew(_l("Archive format %(version)s is not supported (this server reads format %(ours)s).",
                               version=version, ours=FORMAT_VERSION))
    tenant, tables, revision = data.get("tenant"), data.get("tables"), data.get("schema_revision")
    if isinstance(tables, list) and len(tables) > MAX_TABLES:
        raise InvalidArchive(_l("The archive lists %(count)s tables; at most %(limit)s are accepted.",
                                count=len(tables), limit=MAX_TABLES))
    try:
        if not (isinstance(tenant, dict) and isinstance(tenant.get("name"), str) and isinstance(tables, list)
                and isinstance(revision, str) and _REVISION.match(revision)):
            raise ValueError
        entries = tuple(_table_entry(e) for e in tables)
    except ValueError:
        raise InvalidArchive(_l("The archive's manifest.json is incomplete (tenant or tables malformed).")) from None
    if len({e.name for e in entries}) != len(entries):
        raise InvalidArchive(_l("The archive's manifest.json lists a table twice."))
    total = sum(e.size for e in entries)
    if total > max_bytes:
        raise InvalidArchive(_l("The archive holds %(total)s bytes of table data; this server accepts at most "
                                "%(limit)s (COURTYARD_ARCHIVE_MAX_BYTES).", total=total, limit=max_bytes))
    return Manifest(revision, tenant["name"], entries, hashlib.sha256(raw).hexdigest())


Sink = Callable[[TableEntry], AbstractContextManager[Callable[[bytes], object]]]


def _walk(path: Path, keys: Sequence[str], max_bytes: int, sink: Sink | None = None,
          expect: str | None = None) -> Manifest:
    """One pass over the file: signature first, then every member against the signed manifest."""
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise InvalidArchive(_l("No such file: %(path)s", path=_path(path))) from None
    except OSError as exc:
        raise InvalidArchive(_l("%(path)s cannot be read: %(reason)s.", path=_path(path),
                                reason=exc.strerror)) from None
    with raw:
        reader = _TarReader(raw)
        try:
            return _walk_members(reader, keys, max_bytes, sink, expect)
        except _NotTar:
            if reader.members_seen == 0:
                raise InvalidArchive(_l("%(path)s is not a Courtyard tenant archive (not a tar archive).",
                                        path=_path(path))) from None
            raise InvalidArchive(_l("The archive is damaged: a member header is not a tar header.")) from None
        except (OSError, EOFError, zlib.error) as exc:
            if reader.members_seen == 0:
                raise InvalidArchive(_l("%(path)s is not a Courtyard tenant archive (unreadable: %(reason)s).",
                                        path=_path(path), reason=str(exc))) from None
            raise InvalidArchive(_l("The archive is damaged: %(reason)s.", reason=str(exc))) from None


def _walk_members(reader: _TarReader, keys: Sequence[str], max_bytes: int, sink: Sink | None,
                  expect: str | None) -> Manifest:
    first = reader.next()
    if first is None or first.name != MANIFEST:
        raise InvalidArchive(_l(
            "The archive has no manifest.json as its first member: it is not a Courtyard tenant archive, or it "
            "was written before archives were signed (format 1); export it again with this version."))
    raw_manifest = reader.read_small(first, MAX_MANIFEST_BYTES)
    second = reader.next()
    if second is None or second.name != SIGNATURE:
        raise InvalidArchive(_l("The archive is not signed: manifest.sig must follow manifest.json."))
    _verify(raw_manifest, reader.read_small(second, MAX_SIGNATURE_BYTES), keys)
    # Only now, with the manifest known to come from a holder of the key, is it parsed.
    manifest = _parse_manifest(raw_manifest, max_bytes)
    if expect is not None and manifest.digest != expect:
        raise InvalidArchive(_l("The archive changed while it was being imported."))
    for entry in manifest.tables:
        member = reader.next()
        if member is None or member.name != entry.file:
            if member is None:
                raise InvalidArchive(_l("The archive is damaged: %(file)s is missing.", file=entry.file))
            raise InvalidArchive(_l("The archive is damaged: %(file)s is missing (found %(found)s in its place).",
                                    file=entry.file, found=member.name))
        if member.size != entry.size:
            raise InvalidArchive(_ln(
                "The archive is damaged: %(file)s is %(num)d byte, the manifest says %(expected)s.",
                "The archive is damaged: %(file)s is %(num)d bytes, the manifest says %(expected)s.",
                member.size, file=entry.file, expected=entry.size))
        digest = hashlib.sha256()
        with sink(entry) if sink is not None else _discard() as write:
            for chunk in reader.stream(member.size):
                digest.update(chunk)
                write(chunk)
            if digest.hexdigest() != entry.sha256:
                raise InvalidArchive(_l("The archive is damaged: checksum mismatch in %(file)s.", file=entry.file))
    extra = reader.next()
    if extra is not None:
        raise InvalidArchive(_l("Unexpected entry in archive after the last table: '%(name)s'.",
                                name=_entry_name(extra.name)))
    reader.finish()
    return manifest


@contextmanager
def _discard() -> Iterator[Callable[[bytes], object]]:
    yield len


def verify_archive(path: Path, keys: Sequence[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """Read the whole archive and check it (signature, structure, sizes, digests), writing nothing."""
    if not keys:
        raise InvalidArchive(_l("No archive key to verify with."))
    return _walk(path, keys, max_bytes)


# --------------------------------------------------------------------------- export


def export_tenant(engine: Engine, slug: str, path: Path, *, key: str) -> ArchiveSummary:
    """Write ``path`` from one consistent snapshot, signed with ``key``; the file appears only when complete.

    Tables are spooled to files beside the target first (the manifest, which comes first in the
    archive, needs their digests), so memory stays flat whatever the tenant's size.
    """
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".tar.gz", dir=path.parent)
    os.close(tmp_fd)
    try:
        with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as spool:
            with engine.connect() as conn:
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = conn.exec_driver_sql(
                    "SELECT id, slug, name, status, schema_revision FROM shared.tenants WHERE slug = %(s)s",
                    {"s": slug}).first()
                if row is None or row.status == "deleted":
                    raise TenantNotFound(_l("No tenant '%(slug)s'.", slug=shown(slug)))
                # A tenant at an older revision lacks the tables later revisions add: it exports what
                # its schema has, and the import migrates it forward from there.
                present: dict[str, set[str]] = {}
                for table_name, column in conn.exec_driver_sql(
                        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %(s)s",
                        {"s": schema_for(row.id)}):
                    present.setdefault(table_name, set()).add(column)
                entries = [_spool_table(conn, schema_for(row.id), table, Path(spool), present[table.name])
                           for table in exported_tables() if table.name in present]
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "tenant": {"id": str(row.id), "slug": row.slug, "name": row.name},
                "schema_revision": row.schema_revision, "exported_at": utcnow().isoformat(),
                "tables": [{"name": e.name, "columns": list(e.columns), "rows": e.rows, "file": e.file,
                            "bytes": e.size, "sha256": e.sha256} for e in entries],
            }
            raw_manifest = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
            # GNU format: octal sizes as ustar, base-256 beyond 8 GiB; our names never need long-name headers.
            with tarfile.open(tmp_name, "w:gz", format=tarfile.GNU_FORMAT) as tar:
                _add(tar, MANIFEST, raw_manifest)
                _add(tar, SIGNATURE, sign(key, raw_manifest))
                for entry in entries:
                    info = _info(entry.file, entry.size)
                    with (Path(spool) / f"{entry.name}.copy").open("rb") as fh:
                        tar.addfile(info, fh)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return ArchiveSummary(row.slug, row.schema_revision, {e.name: e.rows for e in entries}, row.schema_revision)


def _spool_table(conn: Connection, schema: str, table: Table, spool: Path, present: set[str]) -> TableEntry:
    columns = tuple(c.name for c in table.columns if c.name in present)
    col_sql = ", ".join(f'"{c}"' for c in columns)
    digest, size = hashlib.sha256(), 0
    raw = conn.connection.driver_connection
    with (spool / f"{table.name}.copy").open("wb") as out, raw.cursor() as cur:  # type: ignore[union-attr]
        with cur.copy(f'COPY "{schema}"."{table.name}" ({col_sql}) TO STDOUT (FORMAT binary)') as cp:
            for chunk in cp:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        cur.execute(f'SELECT count(*) FROM "{schema}"."{table.name}"')
        rows = cur.fetchone()[0]
    return TableEntry(table.name, columns, rows, f"data/{table.name}.copy", size, digest.hexdigest())


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(utcnow().timestamp())
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


# --------------------------------------------------------------------------- import


def check_destination(session: Session, new_slug: str, name: str | None) -> tuple[str, str | None]:
    """The new tenant's slug and name, checked as everywhere else (and the slug free): cheap, so callers
    run it before a pass over a large file, not after."""
    new_slug = validate_slug(new_slug)
    if name is not None:
        name = services.clean_name(name, "name")
    if services.find_tenant(session, new_slug) is not None:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=new_slug),
                        field_errors={"slug": [_l("Already taken.")]})
    return new_slug, name


def import_tenant(session: Session, path: Path, new_slug: str, *, keys: Sequence[str], name: str | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES, script: ScriptDirectory | None = None,
                  verified: Manifest | None = None) -> ArchiveSummary:
    """Restore an archive as a *new* tenant in the caller's transaction (nothing is left if it fails).

    ``keys`` are the archive keys accepted (signing key first); ``script`` is the tenant migration tree
    (tests join a revision to it). ``verified`` is what ``verify_archive`` returned for this file, for
    a caller that verified it before opening its transaction (a pass over a large file should not
    hold one open); the load pass verifies everything again regardless.
    """
    new_slug, name = check_destination(session, new_slug, name)
    # The whole file is checked before the first statement, so no transaction waits on that pass.
    manifest = verified or verify_archive(path, keys, max_bytes=max_bytes)
    # Again: the slug may have been taken while the file was read.
    check_destination(session, new_slug, name)
    script = script or migrator.tenant_script()
    head = migrator.tenant_head(script)
    to_archive, forward = _migration_path(script, manifest.revision, head)
    tenant_name = name if name is not None else _archived_name(manifest)
    tenant = Tenant(slug=new_slug, name=tenant_name, status="active", schema_revision=head)
    session.add(tenant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=new_slug),
                        field_errors={"slug": [_l("Already taken.")]}) from None
    bt = services.bound(tenant)
    services.create_schema(session, bt)  # from the models, i.e. at the base tree's head
    conn = session.connection()
    steps, direction = to_archive
    try:
        migrator.apply_steps(conn, bt.schema, steps, direction)
    except Exception as exc:
        raise InvalidArchive(_l("This server cannot build a schema at the archive's revision %(revision)s: "
                                "%(reason)s", revision=manifest.revision, reason=_brief(exc))) from None
    _match_tables(conn, bt.schema, manifest)
    counts = _load(conn, bt.schema, path, keys, max_bytes, manifest)
    if forward:
        try:
            migrator.apply_steps(conn, bt.schema, forward, "upgrade")
        except Exception as exc:
            raise InvalidArchive(_l("The archive's data could not be migrated from revision %(revision)s to %(head)s: "
                                    "%(reason)s", revision=manifest.revision, head=head, reason=_brief(exc))) from None
    conn.exec_driver_sql(f'UPDATE "{bt.schema}".alembic_version SET version_num = %(v)s', {"v": head})
    bind_tenant(session, bt)
    check_rows(session)
    # No audit entry is added: the restored tenant holds exactly the archived rows, nothing more.
    return ArchiveSummary(new_slug, head, counts, manifest.revision)


def _brief(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:MAX_PARAM_CHARS]


def _archived_name(manifest: Manifest) -> str:
    try:
        return services.clean_name(manifest.tenant_name, "name")
    except ValidationFailed as exc:
        raise InvalidArchive(_l("The archived company name is not valid (%(reason)s); pass another with --name.",
                                reason=exc.message),
                             field_errors={"name": exc.field_errors.get("name", [])}) from None


def _migration_path(script: ScriptDirectory, revision: str, head: str) -> tuple[tuple[list[Any], str], list[Any]]:
    """How to build a schema at ``revision`` from the models' schema, then the steps from it to ``head``."""
    try:
        known_revision = script.get_revision(revision)
    except Exception:
        known_revision = None
    if known_revision is None:
        raise ArchiveTooNew(_l("The archive is at schema revision '%(revision)s', which this server does not know: "
                               "it comes from a newer Courtyard (this server is at %(head)s). Upgrade this server "
                               "first.", revision=revision, head=head))
    models = migrator.tenant_head()  # what create_schema builds: the base tree's head
    try:
        forward = list(reversed(list(script.iterate_revisions(head, revision))))
    except Exception:
        raise ArchiveTooNew(_l("The archive's schema revision '%(revision)s' is not on this server's line of "
                               "revisions (head %(head)s).", revision=revision, head=head)) from None
    if revision == models:
        return ([], "upgrade"), forward
    try:  # older than the models: walk the models' schema down with the real downgrades
        return (list(script.iterate_revisions(models, revision)), "downgrade"), forward
    except Exception:  # newer than the models (a joined revision): walk it up
        return (list(reversed(list(script.iterate_revisions(revision, models)))), "upgrade"), forward


def _match_tables(conn: Connection, schema: str, manifest: Manifest) -> None:
    """The archive's tables and columns are exactly those of the schema at its revision."""
    found: dict[str, set[str]] = {}
    for table, column in conn.exec_driver_sql(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %(s)s",
            {"s": schema}):
        if table != "alembic_version" and table not in NOT_EXPORTED:
            found.setdefault(table, set()).add(column)
    archived = {e.name: e for e in manifest.tables}
    unknown = sorted(set(archived) - set(found))
    if unknown:
        raise InvalidArchive(_l("The archive has a table revision %(revision)s does not have: %(tables)s.",
                                revision=manifest.revision, tables=", ".join(unknown[:5])))
    absent = sorted(set(found) - set(archived))
    if absent:
        raise InvalidArchive(_l("The archive is damaged: table %(table)s is missing.", table=", ".join(absent[:5])))
    for table_name, entry in archived.items():
        extra = [c for c in entry.columns if c not in found[table_name]]
        if extra:
            raise InvalidArchive(_l("Table %(table)s in the archive has columns this server lacks: %(columns)s.",
                                    table=table_name, columns=", ".join(extra[:5])))
        lacking = sorted(found[table_name] - set(entry.columns))
        if lacking:
            raise InvalidArchive(_l("Table %(table)s in the archive lacks columns: %(columns)s.",
                                    table=table_name, columns=", ".join(lacking[:5])))


def _load(conn: Connection, schema: str, path: Path, keys: Sequence[str], max_bytes: int,
          manifest: Manifest) -> dict[str, int]:
    """Second pass: stream every member into COPY, verifying again (the file may have changed since)."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    @contextmanager
    def into_table(entry: TableEntry) -> Iterator[Callable[[bytes], object]]:
        col_sql = ", ".join(f'"{c}"' for c in entry.columns)
        try:
            with cur.copy(f'COPY "{schema}"."{entry.name}" ({col_sql}) FROM STDIN (FORMAT binary)') as cp:
                yield cp.write
        except InvalidArchive:
            raise
        except Exception as exc:
            raise InvalidArchive(_l("Table %(table)s could not be restored: %(reason)s", table=entry.name,
                                    reason=_brief(exc))) from None

    with cur:
        _walk(path, keys, max_bytes, into_table, expect=manifest.digest)
        counts: dict[str, int] = {}
        for entry in manifest.tables:
            cur.execute(f'SELECT count(*) FROM "{schema}"."{entry.name}"')
            n = cur.fetchone()[0]
            if n != entry.rows:
                raise InvalidArchive(_ln("Table %(table)s: %(num)d row restored, the manifest says %(expected)s.",
                                         "Table %(table)s: %(num)d rows restored, the manifest says %(expected)s.",
                                         n, table=entry.name, expected=entry.rows))
            counts[entry.name] = n
    return counts


# --------------------------------------------------------------------------- row checks


RowCheck = Callable[[Session], None]
#: Per exported table, the rules its rows must meet beyond their column types and constraints (which
#: PostgreSQL enforces while loading). Every exported table has one: a domain adding tables registers
#: its check with ``row_check``, and a test holds the two lists equal.
ROW_CHECKS: dict[str, RowCheck] = {}


def row_check(table_name: str) -> Callable[[RowCheck], RowCheck]:
    def register(fn: RowCheck) -> RowCheck:
        ROW_CHECKS[table_name] = fn
        return fn
    return register


def check_rows(session: Session) -> None:
    """Every restored row obeys what the services would have let through (session bound to the tenant)."""
    for table in exported_tables():
        check = ROW_CHECKS.get(table.name)
        if check is None:
            raise InvalidArchive(_l("Table %(table)s has no import check; it cannot be imported.", table=table.name))
        check(session)


def _refuse(table: str, row_id: object, field: str, exc: ValidationFailed | Message) -> InvalidArchive:
    # A service's refusal names its field's problem first (its message alone when it has no field errors).
    reason = exc if isinstance(exc, Message) else next(iter(exc.field_errors.values()), [exc.message])[0]
    return InvalidArchive(_l("Table %(table)s, row %(row)s: %(field)s: %(reason)s", table=table, row=str(row_id),
                             field=field, reason=reason))


def _same(table: str, row_id: object, field: str, value: str, clean: Callable[[str], str]) -> None:
    """The stored value is one the service would have stored (already cleaned: not merely cleanable)."""
    try:
        cleaned = clean(value)
    except ValidationFailed as exc:
        raise _refuse(table, row_id, field, exc) from None
    if cleaned != value:
        raise _refuse(table, row_id, field, _l("not in the form the application stores (spaces or case)."))


def _versions(session: Session, model: type[TenantRecord]) -> None:
    bad = session.scalar(select(model.id).where(model.version < 1).limit(1))
    if bad is not None:
        raise _refuse(model.__tablename__, bad, "version", _l("must be at least 1."))  # type: ignore[attr-defined]


@row_check("roles")
def _check_roles(session: Session) -> None:
    _versions(session, Role)
    seen: set[str] = set()
    for role in session.scalars(select(Role).execution_options(yield_per=500)):
        _same("roles", role.id, "key", role.key, services.clean_role_key)
        _same("roles", role.id, "name", role.name, lambda v: services.clean_name(v, max_len=100))
        if role.name_zh:
            _same("roles", role.id, "name_zh", role.name_zh, lambda v: services.clean_name(v, "name_zh", 100))
        unknown = [p for p in role.permissions if not known(p)]
        if unknown:
            raise _refuse("roles", role.id, "permissions",
                          _ln("%(num)d unknown function.", "%(num)d unknown functions.", len(unknown)))
        if role.builtin != (role.key in perms.DEFAULT_ROLES):
            raise _refuse("roles", role.id, "builtin", _l("only the default roles are built in."))
        seen.add(role.key)
    missing = sorted(set(perms.DEFAULT_ROLES) - seen)
    if missing:
        raise InvalidArchive(_ln("Table roles lacks the built-in role: %(roles)s.",
                                 "Table roles lacks the built-in roles: %(roles)s.", len(missing),
                                 roles=", ".join(missing)))


@row_check("departments")
def _check_departments(session: Session) -> None:
    _versions(session, Department)
    parents: dict[Any, Any] = {}
    for dept in session.scalars(select(Department).execution_options(yield_per=500)):
        _same("departments", dept.id, "name", dept.name, services.clean_name)
        parents[dept.id] = dept.parent_id
    # Every chain must reach the top; ``rooted`` keeps the walk linear in the number of departments, and
    # the chain is a set (a list's ``in`` made a long imported chain quadratic). No depth bound here: the
    # services bound a parent's ancestry, but moving a subtree can still make a live tree deeper.
    rooted: set[Any] = set()
    for start in parents:
        chain: set[Any] = set()
        cursor = start
        while cursor is not None and cursor not in rooted:
            if cursor in chain:
                raise _refuse("departments", start, "parent_id", _l("the departments form a cycle."))
            chain.add(cursor)
            cursor = parents.get(cursor)
        rooted.update(chain)


@row_check("users")
def _check_users(session: Session) -> None:
    _versions(session, User)
    admins = 0
    for user in session.scalars(select(User).execution_options(yield_per=500)):
        _same("users", user.id, "email", user.email, services.clean_email)
        _same("users", user.id, "name", user.name, services.clean_name)
        if user.password_hash is not None:
            problem = password_hash_problem(user.password_hash)
            if problem:
                raise _refuse("users", user.id, "password_hash", problem)
        if user.locale not in (None, "en", "zh"):
            raise _refuse("users", user.id, "locale", _l("en, zh or empty."))
        if user.active and user.deactivated_at is not None:
            raise _refuse("users", user.id, "deactivated_at", _l("set on an active user."))
        admins += user.active and user.role.key == "admin"
    if not admins:
        raise InvalidArchive(_l("Table users has no active administrator; the tenant could not be managed."))


@row_check("audit_log")
def _check_audit_log(session: Session) -> None:
    """Entries are history, kept as they were: their column types, checked while loading, are the rule."""
    del session


# For the row checks other domains register (crm.records.archive_checks).
refuse = _refuse
check_versions = _versions
