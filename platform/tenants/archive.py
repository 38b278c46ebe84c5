"""A portable archive of one tenant: every table's rows (binary COPY) plus a manifest.

Export reads one consistent snapshot (REPEATABLE READ). Import checks the whole archive (format,
revision, checksums, sizes) before writing anything, then restores it as a *new* tenant in one
transaction with the registry row, so an archive is either fully imported or not at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.db import TenantBase, bind_tenant, utcnow
from core.i18n import _l, shown
from core.tenancy import schema_for, validate_slug
from tenants import services
from tenants.errors import ArchiveTooNew, InvalidArchive, SlugTaken, TenantNotFound
from tenants.migrator import tenant_head, tenant_script
from tenants.models import Tenant

FORMAT = "courtyard-tenant-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    slug: str
    revision: str
    tables: dict[str, int]


def _tables() -> list[Any]:
    # Dependency order, so foreign keys are satisfied as each table is loaded.
    return list(TenantBase.metadata.sorted_tables)


def export_tenant(engine: Engine, slug: str, path: Path) -> ArchiveSummary:
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".tar.gz", dir=path.parent)
    os.close(tmp_fd)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.exec_driver_sql(
                "SELECT id, slug, name, status, schema_revision FROM shared.tenants WHERE slug = %(s)s",
                {"s": slug}).first()
            if row is None or row.status == "deleted":
                raise TenantNotFound(_l("No tenant '%(slug)s'.", slug=shown(slug)))
            schema = schema_for(row.id)
            raw = conn.connection.driver_connection
            entries: list[dict[str, Any]] = []
            counts: dict[str, int] = {}
            with tarfile.open(tmp_name, "w:gz") as tar:
                for table in _tables():
                    columns = [c.name for c in table.columns]
                    buf = io.BytesIO()
                    col_sql = ", ".join(f'"{c}"' for c in columns)
                    with raw.cursor() as cur:  # type: ignore[union-attr]
                        with cur.copy(f'COPY "{schema}"."{table.name}" ({col_sql}) TO STDOUT (FORMAT binary)') as cp:
                            for chunk in cp:
                                buf.write(chunk)
                        cur.execute(f'SELECT count(*) FROM "{schema}"."{table.name}"')
                        n = cur.fetchone()[0]
                    data = buf.getvalue()
                    name = f"data/{table.name}.copy"
                    _add(tar, name, data)
                    entries.append({"name": table.name, "columns": columns, "rows": n, "file": name,
                                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                    counts[table.name] = n
                manifest = {
                    "format": FORMAT, "format_version": FORMAT_VERSION,
                    "tenant": {"id": str(row.id), "slug": row.slug, "name": row.name},
                    "schema_revision": row.schema_revision, "exported_at": utcnow().isoformat(),
                    "tables": entries,
                }
                _add(tar, MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2).encode())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return ArchiveSummary(row.slug, row.schema_revision, counts)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(utcnow().timestamp())
    tar.addfile(info, io.BytesIO(data))


def read_archive(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read and verify everything before any write: a damaged archive is refused whole."""
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InvalidArchive(_l("No such file: %(path)s", path=str(path))) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidArchive(_l("%(path)s is not a Courtyard tenant archive (unreadable: %(reason)s).", path=str(path),
                                   reason=str(exc))) from None
    try:
        with tar:
            files = _members(tar)
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InvalidArchive(_l("The archive is damaged: %(reason)s.", reason=str(exc))) from None
    raw_manifest = files.get(MANIFEST)
    if raw_manifest is None or len(raw_manifest) > MAX_MANIFEST_BYTES:
        raise InvalidArchive(_l("The archive has no manifest.json."))
    try:
        manifest = json.loads(raw_manifest)
    except ValueError:
        raise InvalidArchive(_l("The archive's manifest.json is not valid JSON.")) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidArchive(_l("This is not a Courtyard tenant archive (wrong format in manifest)."))
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidArchive(_l("The archive's manifest has no valid format_version."))
    if version != FORMAT_VERSION:
        raise ArchiveTooNew(_l("Archive format %(version)s is not supported (this server reads format %(ours)s).",
                               version=str(manifest.get("format_version")), ours=FORMAT_VERSION))
    if not _well_formed(manifest):
        raise InvalidArchive(_l("The archive's manifest.json is incomplete (tenant or tables malformed)."))
    for entry in manifest["tables"]:
        data = files.get(entry["file"])
        if data is None:
            raise InvalidArchive(_l("The archive is damaged: %(file)s is missing.", file=str(entry.get("file"))))
        if hashlib.sha256(data).hexdigest() != entry.get("sha256") or len(data) != entry.get("bytes"):
            raise InvalidArchive(_l("The archive is damaged: checksum mismatch in %(file)s.",
                                    file=str(entry.get("file"))))
    return manifest, files


def _members(tar: tarfile.TarFile) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for member in tar:
        if not member.isfile() or member.name.startswith("/") or ".." in member.name:
            raise InvalidArchive(_l("Unexpected entry in archive: %(name)s.", name=repr(member.name)))
        handle = tar.extractfile(member)
        assert handle is not None
        files[member.name] = handle.read()
    # The tar reader stops at the end-of-archive marker; reading the compressed stream to its end
    # makes gzip check its CRC and length, so a damaged or cut-off tail is noticed too.
    assert tar.fileobj is not None
    while tar.fileobj.read(1 << 16):
        pass
    return files


def _well_formed(manifest: dict[str, Any]) -> bool:
    """The manifest has the fields import reads, with their types (so a bad one is refused, not a crash)."""
    tables, tenant = manifest.get("tables"), manifest.get("tenant")
    return (isinstance(tables, list) and isinstance(tenant, dict) and isinstance(tenant.get("name"), str)
            and all(isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("file"), str)
                    and isinstance(e.get("rows"), int) and isinstance(e.get("columns"), list)
                    and all(isinstance(c, str) for c in e["columns"]) for e in tables))


def check_revision(manifest: dict[str, Any]) -> None:
    revision = manifest.get("schema_revision")
    script = tenant_script()
    try:
        known = script.get_revision(revision) if isinstance(revision, str) else None
    except Exception:
        known = None
    if known is None:
        raise ArchiveTooNew(_l("The archive is at schema revision %(revision)s, which this server does not know: "
                               "it comes from a newer Courtyard (this server is at %(head)s). "
                               "Upgrade this server first.", revision=repr(revision), head=tenant_head()))


def import_tenant(session: Session, path: Path, new_slug: str, *, name: str | None = None) -> ArchiveSummary:
    manifest, files = read_archive(path)
    check_revision(manifest)
    new_slug = validate_slug(new_slug)
    if services.find_tenant(session, new_slug) is not None:
        raise SlugTaken(_l("The slug '%(slug)s' is already taken.", slug=new_slug))
    current = {t.name: t for t in _tables()}
    entries = {e["name"]: e for e in manifest["tables"]}
    for table_name, entry in entries.items():
        table = current.get(table_name)
        if table is None:
            raise InvalidArchive(_l("The archive has a table this server does not have: %(table)s.",
                                    table=table_name))
        missing = [c for c in entry["columns"] if c not in table.columns]
        if missing:
            raise InvalidArchive(_l("Table %(table)s in the archive has columns this server lacks: %(columns)s.",
                                    table=table_name, columns=", ".join(missing)))
    tenant = Tenant(slug=new_slug, name=(name or manifest["tenant"]["name"])[:200], status="active",
                    schema_revision=tenant_head())
    session.add(tenant)
    session.flush()
    bt = services.bound(tenant)
    services.create_schema(session, bt)
    bind_tenant(session, bt)
    raw = session.connection().connection.driver_connection
    counts: dict[str, int] = {}
    with raw.cursor() as cur:  # type: ignore[union-attr]
        for table in _tables():
            entry = entries.get(table.name)
            if entry is None:
                # Only a table added by a later revision may be absent from an older archive.
                if manifest["schema_revision"] == tenant_head():
                    raise InvalidArchive(_l("The archive is damaged: table %(table)s is missing.", table=table.name))
                continue
            col_sql = ", ".join(f'"{c}"' for c in entry["columns"])
            try:
                with cur.copy(f'COPY "{bt.schema}"."{table.name}" ({col_sql}) FROM STDIN (FORMAT binary)') as cp:
                    cp.write(files[entry["file"]])
            except Exception as exc:
                raise InvalidArchive(_l("Table %(table)s could not be restored: %(reason)s", table=table.name,
                                        reason=str(exc))) from None
            cur.execute(f'SELECT count(*) FROM "{bt.schema}"."{table.name}"')
            n = cur.fetchone()[0]
            if n != entry["rows"]:
                raise InvalidArchive(_l("Table %(table)s: %(restored)s rows restored, the manifest says %(expected)s.",
                                        table=table.name, restored=n, expected=str(entry["rows"])))
            counts[table.name] = n
    # No audit entry is added: the restored tenant holds exactly the archived rows, nothing more.
    return ArchiveSummary(new_slug, manifest["schema_revision"], counts)
