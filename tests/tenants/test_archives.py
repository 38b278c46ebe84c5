"""Tenant archives under attack: bombs and odd entries, tampering, invalid rows, live tokens, old revisions.

test_lifecycle.py has the round trip and damaged files; test_cli.py the commands' exit codes and keys.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import textwrap
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from core.db import Database, bind_tenant
from core.errors import ValidationFailed
from core.permissions import Actor
from core.security import hash_password
from tenants import archive, migrator, services
from tenants.errors import InvalidArchive, InvalidToken
from tenants.models import Invitation, PasswordReset, User
from tests.conftest import PASSWORD, unique_slug

SYSTEM = Actor.system("test")
KEY = "archives-test-key-0123456789abcdefghij"
OTHER_KEY = "another-installation-key-9876543210zyx"
MIB = 1 << 20


# --------------------------------------------------------------------------- helpers


class Zeros(io.RawIOBase):
    """``size`` zero bytes read in pieces: a huge member the test itself never holds in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size, member.type, member.linkname = size, kind, link
    return member


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, object]], fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w:gz", format=fmt, compresslevel=1) as tar:
        for member, content in members:
            if isinstance(content, bytes):
                member.size = len(content)
            stream = io.BytesIO(content) if isinstance(content, bytes) else content
            tar.addfile(member, stream if member.isfile() or member.type == b"x" else None)
    return path


def members_of(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def signed(path: Path, members: list[tuple[str, bytes]], key: str = KEY) -> Path:
    """Write members in order, (re)signing manifest.json with ``key`` as a holder of the key would."""
    manifest = dict(members)[archive.MANIFEST]
    out = [(info(n), archive.sign(key, manifest) if n == archive.SIGNATURE else data) for n, data in members]
    return write_tar(path, out)


def edit_manifest(members: list[tuple[str, bytes]], change: Callable[[dict], None]) -> list[tuple[str, bytes]]:
    out = []
    for name, data in members:
        if name == archive.MANIFEST:
            manifest = json.loads(data)
            change(manifest)
        out.append((name, json.dumps(manifest).encode() if name == archive.MANIFEST else data))
    return out


def entry(manifest: dict, table: str) -> dict:
    return next(e for e in manifest["tables"] if e["name"] == table)


def source_tenant(db: Database, *, admin_email: str | None = None) -> str:
    slug = unique_slug("src")
    with db.transaction() as s:
        services.provision(s, SYSTEM, slug=slug, name="源公司 Source", admin_email=admin_email or f"admin@{slug}.test",
                           admin_password=PASSWORD)
    return slug


def export(engine: Engine, slug: str, path: Path, key: str = KEY) -> Path:
    archive.export_tenant(engine, slug, path, key=key)
    return path


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(text("SELECT count(*) FROM shared.tenants")).scalar_one(),
                conn.execute(text(r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'")).scalar_one())


def refused(db: Database, engine: Engine, path: Path, match: str, *, error: type[Exception] = InvalidArchive,
            **kwargs: object) -> None:
    before = counts(engine)
    slug = unique_slug("imp")
    with pytest.raises(error, match=match), db.transaction() as s:
        archive.import_tenant(s, path, slug, keys=[KEY], **kwargs)
    assert counts(engine) == before
    with db.transaction() as s:
        assert services.find_tenant(s, slug) is None


def sql(engine: Engine, slug: str, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        tenant_id = conn.execute(text("SELECT id FROM shared.tenants WHERE slug = :s"), {"s": slug}).scalar_one()
        conn.exec_driver_sql(f'SET LOCAL search_path TO "t_{tenant_id.hex}"')
        conn.execute(text(statement), params)


def peak_memory(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------- finding 4: bounded reading


HUGE = 96 * MIB  # a few hundred kilobytes once gzip'd


def test_a_huge_member_is_streamed_and_refused_with_bounded_memory(committed_db: Database, engine: Engine,
                                                                   tmp_path: Path) -> None:
    good = members_of(export(engine, source_tenant(committed_db), tmp_path / "good.tar.gz"))

    # A signed manifest that announces the huge member exactly (size and all), but its digest is wrong:
    # the member is read to its end, through a fixed-size buffer, and refused.
    def grow(manifest: dict) -> None:
        entry(manifest, "users")["bytes"] = HUGE

    members = edit_manifest(good, grow)
    manifest = dict(members)[archive.MANIFEST]
    bomb = write_tar(tmp_path / "bomb.tar.gz", [
        (info(n), archive.sign(KEY, manifest) if n == archive.SIGNATURE else d) if n != "data/users.copy"
        else (info(n, HUGE), Zeros(HUGE)) for n, d in members])
    assert bomb.stat().st_size < 2 * MIB

    def verify() -> None:
        with pytest.raises(InvalidArchive, match=r"checksum mismatch in data/users\.copy"):
            archive.verify_archive(bomb, [KEY])

    assert peak_memory(verify) < 4 * MIB  # the member is 96 MiB

    # Announced nowhere: a member bigger than the signed manifest says is refused from its header alone.
    liar = write_tar(tmp_path / "liar.tar.gz", [
        (info(n), d) if n != "data/users.copy" else (info(n, HUGE), Zeros(HUGE)) for n, d in good])

    def verify_liar() -> None:
        with pytest.raises(InvalidArchive, match=rf"data/users.copy is {HUGE} bytes, the manifest says \d+"):
            archive.verify_archive(liar, [KEY])

    assert peak_memory(verify_liar) < 4 * MIB

    # Unsigned bombs never get that far: a huge first member, a huge manifest, a huge pax header.
    first = write_tar(tmp_path / "first.tar.gz", [(info("data/users.copy", HUGE), Zeros(HUGE))])
    fat_manifest = write_tar(tmp_path / "fat.tar.gz", [(info("manifest.json", HUGE), Zeros(HUGE))])
    pax = write_tar(tmp_path / "pax.tar.gz", [(info("pax", HUGE, tarfile.XHDTYPE), Zeros(HUGE))])
    for path, match in ((first, "no manifest.json as its first member"),
                        (fat_manifest, f"manifest.json is {HUGE} bytes; at most {archive.MAX_MANIFEST_BYTES}"),
                        (pax, "'pax' is a pax header; an archive holds regular files only")):
        def run(path: Path = path, match: str = match) -> None:
            with pytest.raises(InvalidArchive, match=match):
                archive.verify_archive(path, [KEY])
        assert peak_memory(run) < 4 * MIB, path.name
    refused(committed_db, engine, bomb, "checksum mismatch in data/users.copy")


def test_sizes_and_counts_are_bounded_before_data_is_read(committed_db: Database, engine: Engine,
                                                          tmp_path: Path) -> None:
    good = members_of(export(engine, source_tenant(committed_db), tmp_path / "good.tar.gz"))
    total = sum(e["bytes"] for e in json.loads(dict(good)[archive.MANIFEST])["tables"])
    path = signed(tmp_path / "ok.tar.gz", good)
    with pytest.raises(InvalidArchive, match=f"holds {total} bytes of table data; this server accepts at most 1000 "
                                             r"\(COURTYARD_ARCHIVE_MAX_BYTES\)"):
        archive.verify_archive(path, [KEY], max_bytes=1000)
    refused(committed_db, engine, path, "accepts at most 1000", max_bytes=1000)

    # Too many members: after the last table the archive must end.
    extra = [(info(f"data/extra_{i}.copy"), b"x") for i in range(5000)]
    crowded = write_tar(tmp_path / "crowded.tar.gz", [(info(n), d) for n, d in good] + extra)
    refused(committed_db, engine, crowded, "Unexpected entry in archive after the last table: 'data/extra_0.copy'")

    # A signed manifest listing more tables than any schema has is refused before any member is read.
    def many(manifest: dict) -> None:
        manifest["tables"] += [{"name": f"t{i}", "columns": ["id"], "rows": 0, "file": f"data/t{i}.copy",
                                "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()} for i in range(1001)]

    listed = signed(tmp_path / "listed.tar.gz", edit_manifest(good, many))
    refused(committed_db, engine, listed, r"lists \d+ tables; at most 1000 are accepted")

    # Bytes after the end-of-archive marker.
    trailing = tmp_path / "trailing.tar.gz"
    raw = gzip.decompress(path.read_bytes())
    trailing.write_bytes(gzip.compress(raw + b"\1" * 1024))
    refused(committed_db, engine, trailing, "data after its end-of-archive marker")


@pytest.mark.parametrize(("member", "shown"), [
    (info("/etc/passwd"), "'/etc/passwd'"),
    (info("../evil.copy"), "'../evil.copy'"),
    (info("data/../../evil.copy"), "'data/../../evil.copy'"),
    (info("data/sub/users.copy"), "'data/sub/users.copy'"),
    (info("data/users.copy", kind=tarfile.SYMTYPE, link="/etc/passwd"), "'data/users.copy' is a symbolic link"),
    (info("data/users.copy", kind=tarfile.LNKTYPE, link="manifest.json"), "'data/users.copy' is a hard link"),
    (info("data/", kind=tarfile.DIRTYPE), "'data/' is a directory"),
    (info("data/dev.copy", kind=tarfile.CHRTYPE), "'data/dev.copy' is a character device"),
    (info("data/fifo.copy", kind=tarfile.FIFOTYPE), "'data/fifo.copy' is a FIFO"),
    (info("data/" + "x" * 120 + ".copy"), "is a GNU long name"),
])
def test_links_devices_and_paths_outside_the_archive_are_refused(committed_db: Database, engine: Engine,
                                                                 tmp_path: Path, member: tarfile.TarInfo,
                                                                 shown: str) -> None:
    content = b"x" if member.isfile() else None
    first = write_tar(tmp_path / "first.tar.gz", [(member, content)])
    refused(committed_db, engine, first, "Unexpected entry in archive: .*" + re.escape(shown))
    # …and the same entry after a valid signed manifest, in its one table's place.
    manifest = json.dumps({"format": archive.FORMAT, "format_version": archive.FORMAT_VERSION,
                           "tenant": {"name": "Acme"}, "schema_revision": migrator.tenant_head(),
                           "tables": [{"name": "roles", "columns": ["id"], "rows": 0, "file": "data/roles.copy",
                                       "bytes": 1, "sha256": hashlib.sha256(b"x").hexdigest()}]}).encode()
    later = signed(tmp_path / "later.tar.gz", [(archive.MANIFEST, manifest), (archive.SIGNATURE, b"")])
    later = write_tar(later, [*[(info(n), d) for n, d in members_of(later)], (member, content)])
    refused(committed_db, engine, later, "Unexpected entry in archive")


def test_refusals_are_catalog_messages_in_the_readers_language_with_odd_names_escaped(app, tmp_path: Path) -> None:
    link = write_tar(tmp_path / "link.tar.gz", [(info("data/users.copy", kind=tarfile.SYMTYPE, link="/x"), None)])
    with pytest.raises(InvalidArchive) as refused:
        archive.verify_archive(link, [KEY])
    message = refused.value.message
    assert str(message) == ("Unexpected entry in archive: 'data/users.copy' is a symbolic link; an archive holds "
                            "regular files only.")
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert str(message) == "归档中有意外的条目：“data/users.copy”是符号链接；归档中只能包含普通文件。"
    # A name with control characters is quoted escaped (it reaches terminals and logs), and cut short.
    odd = write_tar(tmp_path / "odd.tar.gz", [(info("data/a\nb\x1b[2J" + "y" * 80), b"x")])
    with pytest.raises(InvalidArchive) as refused:
        archive.verify_archive(odd, [KEY])
    assert str(refused.value).startswith("Unexpected entry in archive: 'data/a\\nb\\x1b[2Jyyy")
    assert "\n" not in str(refused.value)
    assert "…' (allowed: manifest.json" in str(refused.value)


# --------------------------------------------------------------------------- finding 7: signatures


def test_an_unsigned_or_tampered_archive_is_refused_before_its_manifest_is_read(
        committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    victim = source_tenant(committed_db)
    attacker = source_tenant(committed_db, admin_email="mallory@evil.test")
    good = members_of(export(engine, victim, tmp_path / "victim.tar.gz"))
    theirs = dict(members_of(export(engine, attacker, tmp_path / "attacker.tar.gz", key=OTHER_KEY)))

    # Plant the attacker's administrator: swap in their users table and fix the manifest's checksums.
    def plant(manifest: dict) -> None:
        users = entry(manifest, "users")
        users.update(bytes=len(theirs["data/users.copy"]), sha256=hashlib.sha256(theirs["data/users.copy"]).hexdigest())
        roles = entry(manifest, "roles")
        roles.update(bytes=len(theirs["data/roles.copy"]), sha256=hashlib.sha256(theirs["data/roles.copy"]).hexdigest())

    planted = [(n, theirs[n] if n in ("data/users.copy", "data/roles.copy") else d)
               for n, d in edit_manifest(good, plant)]
    tampered = write_tar(tmp_path / "tampered.tar.gz", [(info(n), d) for n, d in planted])
    refused(committed_db, engine, tampered, "changed after it was exported: its signature does not match")

    # Signed by someone else's key: refused, and the message names the key (by id only).
    foreign = signed(tmp_path / "foreign.tar.gz", planted, key=OTHER_KEY)
    refused(committed_db, engine, foreign, f"signed with a key this server does not accept \\(key id "
                                           f"{archive.key_id(OTHER_KEY)}\\)")
    # No signature at all (as format 1 wrote them, the manifest last): refused.
    unsigned = write_tar(tmp_path / "unsigned.tar.gz", [(info(n), d) for n, d in good if n != archive.SIGNATURE])
    refused(committed_db, engine, unsigned, "not signed: manifest.sig must follow manifest.json")
    old_layout = write_tar(tmp_path / "format1.tar.gz",
                           [(info(n), d) for n, d in good[2:]] + [(info(archive.MANIFEST), good[0][1])])
    refused(committed_db, engine, old_layout, "no manifest.json as its first member.*format 1")
    # The signature is checked before the manifest is parsed: garbage that is not signed is not read.
    garbage = write_tar(tmp_path / "garbage.tar.gz", [(info(archive.MANIFEST), b"{not json"),
                                                      (info(archive.SIGNATURE), good[1][1])])
    refused(committed_db, engine, garbage, "signature does not match")
    bad_signature = write_tar(tmp_path / "badsig.tar.gz", [(info(archive.MANIFEST), good[0][1]),
                                                           (info(archive.SIGNATURE), b"\xff" * 40)])
    refused(committed_db, engine, bad_signature, r"signature \(manifest.sig\) is malformed")

    # With the other installation's key among the accepted ones, its archive imports.
    with committed_db.transaction() as s:
        archive.import_tenant(s, tmp_path / "attacker.tar.gz", unique_slug("moved"), keys=[KEY, OTHER_KEY])


# --------------------------------------------------------------------------- finding 7: rows are checked


INVALID_ROWS = [
    ("UPDATE users SET email = 'not-an-e-mail' WHERE email LIKE 'admin@%'", r"Table users, row .*: email: "
     "Enter a valid e-mail address."),
    ("UPDATE users SET email = upper(email)", "email: not in the form the application stores"),
    ("UPDATE users SET name = ' padded '", "name: not in the form the application stores"),
    ("UPDATE users SET password_hash = :h", "password_hash: The password hash costs more than this server's own."),
    ("UPDATE users SET password_hash = 'plain-text-password'", "password_hash: Not an argon2 password hash."),
    ("UPDATE users SET locale = 'fr'", "locale: en, zh or empty."),
    ("UPDATE users SET active = false, deactivated_at = now()", "Table users has no active administrator"),
    ("UPDATE users SET deactivated_at = now()", "deactivated_at: set on an active user."),
    ("UPDATE roles SET permissions = '{users.read,root.everything}' WHERE key = 'sales'",
     "Table roles, row .*: permissions: 1 unknown function"),
    ("UPDATE roles SET key = 'Sales Team' WHERE key = 'sales'", "key: Invalid key."),
    ("UPDATE roles SET builtin = false WHERE key = 'admin'", "builtin: only the default roles are built in."),
    ("UPDATE roles SET name = '' WHERE key = 'sales'", "name: Required."),
    ("UPDATE roles SET version = 0 WHERE key = 'sales'", "version: must be at least 1."),
    ("""INSERT INTO departments (id, name, version) VALUES ('00000000-0000-7000-8000-000000000001', 'A', 1),
          ('00000000-0000-7000-8000-000000000002', 'B', 1);
        UPDATE departments SET parent_id = '00000000-0000-7000-8000-000000000002'
          WHERE id = '00000000-0000-7000-8000-000000000001';
        UPDATE departments SET parent_id = '00000000-0000-7000-8000-000000000001'
          WHERE id = '00000000-0000-7000-8000-000000000002'""", "departments form a cycle"),
]


@pytest.mark.parametrize(("statement", "match"), INVALID_ROWS, ids=[m.split(":")[0][:40] for _, m in INVALID_ROWS])
def test_a_signed_archive_cannot_carry_rows_the_application_would_refuse(
        committed_db: Database, engine: Engine, tmp_path: Path, statement: str, match: str) -> None:
    slug = source_tenant(committed_db)
    with committed_db.transaction() as s:
        bind_tenant(s, services.usable(services.get_tenant(s, slug)))
        services.create_user(s, SYSTEM, email="li.lei@example.cn", name="李雷", role="sales", password=PASSWORD)
    # Written behind the services' back, then exported and signed by this very installation.
    greedy = "$argon2id$v=19$m=4194304,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43
    for part in statement.split(";"):
        sql(engine, slug, part, **({"h": greedy} if ":h" in part else {}))
    path = export(engine, slug, tmp_path / "invalid.tar.gz")
    refused(committed_db, engine, path, match)


def test_every_exported_table_has_a_row_check() -> None:
    assert set(archive.ROW_CHECKS) == {t.name for t in archive.exported_tables()}


# --------------------------------------------------------------------------- finding 7: live tokens stay behind


def test_invitations_and_reset_links_do_not_travel(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    slug = source_tenant(committed_db)
    with committed_db.transaction() as s:
        bind_tenant(s, services.usable(services.get_tenant(s, slug)))
        services.create_user(s, SYSTEM, email="li.lei@example.cn", name="李雷", role="sales", password=PASSWORD)
        _, invitation = services.invite(s, SYSTEM, email="new@example.cn", role="sales", name="新同事")
        issued = services.request_password_reset(s, "li.lei@example.cn")
        assert issued is not None
        reset = issued[1]
    path = export(engine, slug, tmp_path / "tokens.tar.gz")
    assert {n for n, _ in members_of(path)} == {archive.MANIFEST, archive.SIGNATURE} | {
        f"data/{t.name}.copy" for t in archive.exported_tables()}
    assert not {"invitations", "password_resets"} & {e["name"] for e in json.loads(members_of(path)[0][1])["tables"]}
    copy = unique_slug("copy")
    with committed_db.transaction() as s:
        archive.import_tenant(s, path, copy, keys=[KEY])
    with committed_db.transaction() as s:
        bind_tenant(s, services.usable(services.get_tenant(s, copy)))
        assert s.scalars(select(Invitation)).all() == []
        assert s.scalars(select(PasswordReset)).all() == []
        with pytest.raises(InvalidToken):
            services.open_invitation(s, invitation.secret)
        with pytest.raises(InvalidToken):
            services.open_reset(s, reset.secret)
        # Accounts and their passwords do travel: the copy is a working tenant.
        assert services.authenticate(s, "li.lei@example.cn", PASSWORD) is not None
    with committed_db.transaction() as s:  # the source's links still work where they were issued
        bind_tenant(s, services.usable(services.get_tenant(s, slug)))
        assert services.open_invitation(s, invitation.secret).email == "new@example.cn"


# --------------------------------------------------------------------------- finding 7: names


def test_the_tenant_name_is_checked_never_cut(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    good = members_of(export(engine, source_tenant(committed_db), tmp_path / "good.tar.gz"))
    long_name = signed(tmp_path / "long.tar.gz", edit_manifest(good, lambda m: m["tenant"].update(name="长" * 201)))
    refused(committed_db, engine, long_name, r"archived company name is not valid \(Name is too long \(at most 200 "
                                             r"characters\).\); pass another with --name")
    nul_name = signed(tmp_path / "nul.tar.gz", edit_manifest(good, lambda m: m["tenant"].update(name="A\x00B")))
    refused(committed_db, engine, nul_name, "archived company name is not valid")
    refused(committed_db, engine, long_name, r"Name is too long", error=ValidationFailed, name="x" * 201)
    refused(committed_db, engine, long_name, r"Name is required", error=ValidationFailed, name="   ")
    copy = unique_slug("named")
    with committed_db.transaction() as s:
        archive.import_tenant(s, long_name, copy, keys=[KEY], name="  新名字 New  ")
    with committed_db.transaction() as s:
        assert services.get_tenant(s, copy).name == "新名字 New"


# --------------------------------------------------------------------------- finding 7: older revisions


def _data_revision(folder: Path, down_revision: str) -> str:
    """A data migration: users without a language get Chinese (what a real revision might backfill)."""
    revision = "d" + uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{revision}_backfill.py").write_text(textwrap.dedent(f'''\
        """Backfill users.locale (test revision).

        Revision ID: {revision}
        Revises: {down_revision}
        """

        from alembic import op

        revision = "{revision}"
        down_revision = "{down_revision}"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.execute("UPDATE users SET locale = 'zh' WHERE locale IS NULL")


        def downgrade():
            pass
        '''), encoding="utf-8")
    return revision


def test_an_older_archive_is_moved_forward_by_the_real_migrations(committed_db: Database, engine: Engine,
                                                                  tmp_path: Path) -> None:
    base = migrator.tenant_head()
    path = export(engine, source_tenant(committed_db), tmp_path / "old.tar.gz")
    versions = tmp_path / "versions"
    head = _data_revision(versions, base)
    script = migrator.tenant_script((str(versions),))
    copy = unique_slug("fwd")
    with committed_db.transaction() as s:
        summary = archive.import_tenant(s, path, copy, keys=[KEY], script=script)
    assert (summary.archived_revision, summary.revision) == (base, head)
    with committed_db.transaction() as s:
        tenant = services.get_tenant(s, copy)
        assert tenant.schema_revision == head
        bind_tenant(s, services.bound(tenant))
        assert {u.locale for u in s.scalars(select(User))} == {"zh"}
        assert s.connection().exec_driver_sql(
            f'SELECT version_num FROM "{services.bound(tenant).schema}".alembic_version').scalar_one() == head


def _at_revision_0001(engine: Engine, slug: str) -> None:
    """Walk a tenant's schema down to 0001 with the real downgrades, as a server of that time had it."""
    script = migrator.tenant_script()
    with engine.begin() as conn:
        tenant_id = conn.execute(text("SELECT id FROM shared.tenants WHERE slug = :s"), {"s": slug}).scalar_one()
        schema = f"t_{tenant_id.hex}"
        migrator.apply_steps(conn, schema, list(script.iterate_revisions(migrator.tenant_head(), "0001")), "downgrade")
        conn.exec_driver_sql(f'UPDATE "{schema}".alembic_version SET version_num = \'0001\'')
        conn.execute(text("UPDATE shared.tenants SET schema_revision = '0001' WHERE id = :id"), {"id": tenant_id})


def test_an_archive_from_revision_0001_is_loaded_there_and_migrated(committed_db: Database, engine: Engine,
                                                                    tmp_path: Path) -> None:
    slug = source_tenant(committed_db)
    _at_revision_0001(engine, slug)
    # Allowed at 0001, refused by 0002: two top-level departments with one name.
    sql(engine, slug, "INSERT INTO departments (id, name, version) VALUES (gen_random_uuid(), '销售', 1), "
                      "(gen_random_uuid(), '销售', 1)")
    path = export(engine, slug, tmp_path / "dupes.tar.gz")
    assert json.loads(members_of(path)[0][1])["schema_revision"] == "0001"
    refused(committed_db, engine, path,
            r"could not be migrated from revision 0001 to \d+: .*uq_departments_parent_id_name")

    sql(engine, slug,
        "UPDATE departments SET name = '销售二部' WHERE id = (SELECT max(id::text)::uuid FROM departments)")
    path = export(engine, slug, tmp_path / "clean.tar.gz")
    copy = unique_slug("from1")
    with committed_db.transaction() as s:
        summary = archive.import_tenant(s, path, copy, keys=[KEY])
    assert (summary.archived_revision, summary.revision) == ("0001", migrator.tenant_head())
    with engine.connect() as conn:
        tenant_id = conn.execute(text("SELECT id FROM shared.tenants WHERE slug = :s"), {"s": copy}).scalar_one()
        definition = conn.execute(text(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = :s AND c.conname = 'uq_departments_parent_id_name'"), {"s": f"t_{tenant_id.hex}"}
        ).scalar_one()
    assert "NULLS NOT DISTINCT" in definition


def test_password_hashes_of_this_server_pass_the_import_check() -> None:
    # The check must never refuse what this server writes (guards a parameter change in core.security).
    from core.security import password_hash_problem

    assert password_hash_problem(hash_password("correct horse battery")) is None


def test_a_file_swapped_between_verification_and_loading_is_refused(committed_db: Database, engine: Engine,
                                                                    tmp_path: Path) -> None:
    first = export(engine, source_tenant(committed_db), tmp_path / "first.tar.gz")
    second = export(engine, source_tenant(committed_db), tmp_path / "second.tar.gz")
    verified = archive.verify_archive(first, [KEY])
    refused(committed_db, engine, second, "The archive changed while it was being imported", verified=verified)
