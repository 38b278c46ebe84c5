"""A tenant's life: provisioning, rename, suspend/resume, delete, sign-up, export → import; fail-closed sessions."""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import sysconfig
import tarfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import Connection

from core.db import Database, TenantBase, bind_tenant
from core.errors import TenantNotBound
from core.permissions import Actor
from core.security import verify_password
from core.tenancy import schema_for
from tenants import archive, migrator, services
from tenants.errors import ArchiveTooNew, InvalidArchive, SlugTaken
from tenants.models import AuditEntry, Department, Role, Tenant, User
from tests.conftest import PASSWORD, host, provision, sign_in, unique_slug

TENANT_TABLES = {t.name for t in TenantBase.metadata.sorted_tables}
EXPORTED_TABLES = TENANT_TABLES - archive.NOT_EXPORTED
SYSTEM = Actor.system("test")
KEY = "lifecycle-archive-key-0123456789abcdef"


def tables_of(conn: Connection, schema: str) -> set[str]:
    return {r[0] for r in conn.execute(text(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema})}


def schema_exists(conn: Connection, schema: str) -> bool:
    return bool(conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar())


def tenant_count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM shared.tenants")).scalar_one())


def tenant_schema_count(conn: Connection) -> int:
    return int(conn.execute(text(r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'")).scalar_one())


# --------------------------------------------------------------------------- provisioning


def test_provisioning_creates_the_schema_at_head_with_admin_and_roles(db: Database, connection: Connection,
                                                                       tenant) -> None:
    head = migrator.tenant_head()
    assert tenant.schema == f"t_{tenant.id.hex}" == schema_for(tenant.id)
    assert tables_of(connection, tenant.schema) == TENANT_TABLES | {"alembic_version"}
    # Every model column exists in the schema (the schema is built from the models, then stamped).
    for table in TenantBase.metadata.sorted_tables:
        columns = {r[0] for r in connection.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t"),
            {"s": tenant.schema, "t": table.name})}
        assert columns == {c.name for c in table.columns}, table.name
    stamped = connection.exec_driver_sql(f'SELECT version_num FROM "{tenant.schema}".alembic_version').all()
    assert stamped == [(head,)]
    row = connection.execute(text("SELECT slug, name, status, schema_revision FROM shared.tenants WHERE id = :id"),
                             {"id": tenant.id}).one()
    assert tuple(row) == ("acme", "Acme 艾克米", "active", head)

    with db.transaction(tenant) as s:
        roles = {r.key: r for r in s.scalars(select(Role))}
        assert set(roles) == {"admin", "manager", "sales", "service"}
        assert all(r.builtin for r in roles.values())
        assert (roles["manager"].name, roles["manager"].name_zh) == ("Manager", "经理")
        users = list(s.scalars(select(User)))
        assert [(u.email, u.role.key, u.active) for u in users] == [("admin@acme.test", "admin", True)]
        assert verify_password(users[0].password_hash, PASSWORD)
        assert services.authenticate(s, "ADMIN@acme.test", PASSWORD) is not None
        entries = list(s.scalars(select(AuditEntry)))
        assert [(e.action, e.entity_id, e.after) for e in entries] == [
            ("tenant.provisioned", str(tenant.id), {"slug": "acme", "name": "Acme 艾克米"})]


def test_provisioning_is_all_or_nothing(db: Database, connection: Connection) -> None:
    """A failure after the registry row was written (here: the schema exists already) leaves nothing."""
    tenant_id = uuid.uuid4()
    connection.exec_driver_sql(f'CREATE SCHEMA "{schema_for(tenant_id)}"')
    before = tenant_count(connection)
    with pytest.raises(Exception, match="already exists"), db.transaction() as s:
        services.provision(s, SYSTEM, slug="half", name="Half 一半", admin_email="a@half.test",
                           admin_password=PASSWORD, tenant_id=tenant_id)
    assert tenant_count(connection) == before
    assert tables_of(connection, schema_for(tenant_id)) == set()
    with db.transaction() as s:
        assert services.find_tenant(s, "half") is None


# --------------------------------------------------------------------------- rename, suspend, resume, delete


def test_rename_keeps_the_data_and_the_old_slug_answers_404(client, db: Database, connection: Connection,
                                                            tenant) -> None:
    with db.transaction(tenant) as s:
        services.create_user(s, SYSTEM, email="li@acme.test", name="李雷", role="sales", password=PASSWORD)
    checksum = _table_checksums(connection, tenant.schema)
    with db.transaction() as s:
        renamed = services.rename_tenant(s, "acme", "acme-cn")
        assert (renamed.id, renamed.slug) == (tenant.id, "acme-cn")
    assert _table_checksums(connection, tenant.schema) == checksum  # same schema, rows untouched

    for path in ("/sign-in", "/home", "/api/v1/me"):
        assert client.get(path, headers=host("acme")).status_code == 404, path
        assert client.get(f"/t/acme{path}").status_code == 404, path
    assert client.get("/sign-in", headers=host("acme-cn")).status_code == 200
    assert client.get("/t/acme-cn/sign-in").status_code == 200
    assert sign_in(client, "acme-cn", "li@acme.test").status_code == 302
    assert client.get("/home", headers=host("acme-cn")).status_code == 200
    me = client.get("/api/v1/me", headers=host("acme-cn"))
    assert me.status_code == 200
    assert (me.get_json()["tenant"], me.get_json()["user"]["name"]) == ("acme-cn", "李雷")
    # The old slug is free again, for a new tenant with a schema of its own.
    fresh, _ = provision(db, "acme", name="New Acme")
    assert fresh.schema != tenant.schema


def test_suspend_and_resume(client, db: Database, tenant, other_tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    with db.transaction(tenant) as s:
        new = services.create_client(s, SYSTEM, tenant, name="Robot", scopes=["users.read"])
        client_row = services.find_client(s, new.client.client_id)
        token, _ = services.issue_token(s, client_row, ["users.read"], 3600)
    bearer = {**host("acme"), "Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/users", headers=bearer).status_code == 200

    with db.transaction() as s:
        assert services.set_status(s, "acme", "suspended").status == "suspended"
    for path in ("/", "/home", "/sign-in", "/admin/users"):
        page = client.get(path, headers=host("acme"))
        assert page.status_code == 403, path
        assert "suspended" in page.get_data(as_text=True)
    for headers in (host("acme"), bearer):
        api = client.get("/api/v1/users", headers=headers)
        assert api.status_code == 403
        assert api.get_json()["code"] == "tenant_suspended"
    token_request = client.post("/oauth/token", headers=host("acme"), data={
        "grant_type": "client_credentials", "client_id": new.client.client_id, "client_secret": new.secret})
    assert token_request.status_code == 403
    assert client.get("/sign-in", headers=host("globex")).status_code == 200  # others are unaffected

    with db.transaction() as s:
        assert services.set_status(s, "acme", "active").status == "active"
    assert client.get("/home", headers=host("acme")).status_code == 200  # the session survived
    assert client.get("/api/v1/users", headers=bearer).status_code == 200


def test_delete_drops_the_schema_and_leaves_a_tombstone(client, db: Database, connection: Connection, tenant,
                                                        other_tenant) -> None:
    assert sign_in(client, "acme").status_code == 302
    with db.transaction(tenant) as s:
        new = services.create_client(s, SYSTEM, tenant, name="Robot", scopes=["users.read"])
    with db.transaction() as s:
        services.delete_tenant(s, "acme")
    assert not schema_exists(connection, tenant.schema)
    assert schema_exists(connection, other_tenant.schema)
    row = connection.execute(text("SELECT status, status_changed_at IS NOT NULL FROM shared.tenants "
                                  "WHERE id = :id"), {"id": tenant.id}).one()
    assert tuple(row) == ("deleted", True)
    revoked = connection.execute(text("SELECT revoked_at IS NOT NULL FROM shared.oauth_clients "
                                      "WHERE client_id = :c"), {"c": new.client.client_id}).scalar_one()
    assert revoked

    for path in ("/", "/home", "/sign-in", "/admin/users", "/t/acme/home"):
        headers = host("acme") if not path.startswith("/t/") else {}
        page = client.get(path, headers=headers)
        assert page.status_code == 410, path
        assert "deleted" in page.get_data(as_text=True)
    api = client.get("/api/v1/users", headers=host("acme"))
    assert (api.status_code, api.get_json()["code"]) == (410, "tenant_deleted")
    posted = client.post("/oauth/token", headers=host("acme"), data={
        "grant_type": "client_credentials", "client_id": new.client.client_id, "client_secret": new.secret})
    assert posted.status_code == 410
    assert client.get("/sign-in", headers=host("globex")).status_code == 200

    # The slug stays reserved by the tombstone; deleting again is harmless.
    with pytest.raises(SlugTaken), db.transaction() as s:
        services.provision(s, SYSTEM, slug="acme", name="Again", admin_email="a@b.co", admin_password=PASSWORD)
    with db.transaction() as s:
        assert services.delete_tenant(s, "acme").status == "deleted"
    with db.transaction() as s:
        assert [t.slug for t in services.list_tenants(s)] == ["globex"]
        assert {t.slug for t in services.list_tenants(s, include_deleted=True)} == {"acme", "globex"}


# --------------------------------------------------------------------------- sign-up


def _signup_csrf(client) -> str:
    page = client.get("/signup").get_data(as_text=True)
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start: page.index('"', start)]


@pytest.mark.parametrize(("changes", "status", "message"), [
    ({"slug": "www"}, 422, "'www' is reserved."),
    ({"slug": "portal"}, 422, "'portal' is reserved."),
    # Each message beside its field (the sign-up page never speaks of a "slug").
    ({"slug": "Bad Slug"}, 422, "Use lower-case letters, digits and single hyphens"),
    ({"slug": "acme"}, 409, "This address is already taken; choose another one."),
    ({"email": "nobody"}, 422, "Enter a valid e-mail address."),
    ({"password": "short"}, 422, "Use at least 10 characters."),
    ({"company": "   "}, 422, "Required."),
])
def test_signup_refuses_bad_input_and_creates_nothing(client, connection: Connection, tenant, changes: dict,
                                                      status: int, message: str) -> None:
    before, schemas = tenant_count(connection), tenant_schema_count(connection)
    form = {"company": "Initech 启动科技", "slug": "initech", "email": "boss@initech.test", "name": "Bill",
            "password": PASSWORD, "csrf_token": _signup_csrf(client)} | changes
    response = client.post("/signup", data=form)
    assert response.status_code == status
    body = html.unescape(response.get_data(as_text=True))
    assert message in body
    assert f'value="{form["email"]}"' in body  # the form is re-rendered with the user's input
    assert tenant_count(connection) == before
    assert tenant_schema_count(connection) == schemas


def test_signup_provisions_a_workspace_and_signs_in(client, db: Database, connection: Connection) -> None:
    form = {"company": "Initech 启动科技", "slug": "initech", "email": "Boss@Initech.test", "name": "老板",
            "password": PASSWORD, "csrf_token": _signup_csrf(client)}
    response = client.post("/signup", data=form)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/t/initech/")
    with db.transaction() as s:
        created = services.get_tenant(s, "initech")
        assert (created.name, created.status) == ("Initech 启动科技", "active")
    assert tables_of(connection, schema_for(created.id)) == TENANT_TABLES | {"alembic_version"}
    assert client.get("/t/initech/home").status_code == 200
    # Without the form's CSRF token nothing happens.
    forged = client.post("/signup", data=form | {"slug": "forged", "csrf_token": "nope"})
    assert forged.status_code == 400
    with db.transaction() as s:
        assert services.find_tenant(s, "forged") is None


# --------------------------------------------------------------------------- export → import


def _table_checksums(conn: Connection, schema: str) -> dict[str, tuple[int, str | None]]:
    out = {}
    for table in TenantBase.metadata.sorted_tables:
        # Ordered by the primary key, whatever its columns (number_sequences has no id).
        order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
        out[table.name] = tuple(conn.exec_driver_sql(
            f'SELECT count(*), md5(string_agg(t::text, \',\' ORDER BY {order})) FROM "{schema}"."{table.name}" t'
        ).one())
    return out


def _fill(db: Database, slug: str) -> None:
    """Users, departments, roles, invitations, resets and audit rows, with Chinese text everywhere."""
    with db.transaction() as s:
        tenant = services.usable(services.get_tenant(s, slug))
        bind_tenant(s, tenant)
        hq = services.save_department(s, SYSTEM, name="总部 Headquarters", parent_id=None)
        sales = services.save_department(s, SYSTEM, name="销售部", parent_id=hq.id)
        services.save_department(s, SYSTEM, name="华东区 East", parent_id=sales.id)
        services.create_role(s, SYSTEM, key="auditor", name="审计员", permissions=["audit.read"])
        for i, name in enumerate(["张伟", "王芳", "李娜", "刘洋 Liu", "陈静"]):
            services.create_user(s, SYSTEM, email=f"user{i}@example.cn", name=name,
                                 role=["sales", "service", "manager", "auditor", "sales"][i],
                                 password=PASSWORD if i % 2 == 0 else None, department_id=sales.id)
        services.invite(s, SYSTEM, email="xin@example.cn", role="sales", name="新同事")
        services.request_password_reset(s, "user0@example.cn")
        services.audit(s, SYSTEM, "note", "memo", None, after={"备注": "中文审计 ✓", "list": [1, "二"]})


def _make_archive(committed_db: Database, engine: Engine, path: Path) -> tuple[str, object]:
    slug = unique_slug("src")
    with committed_db.transaction() as s:
        services.provision(s, SYSTEM, slug=slug, name="源公司 Source", admin_email=f"admin@{slug}.test",
                           admin_password=PASSWORD)
    _fill(committed_db, slug)
    summary = archive.export_tenant(engine, slug, path, key=KEY)
    return slug, summary


def test_export_import_round_trip_is_identical(committed_db: Database, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "src.tar.gz"
    slug, summary = _make_archive(committed_db, engine, path)
    assert summary.revision == migrator.tenant_head()
    assert summary.tables["users"] == 6
    assert summary.tables["departments"] == 3
    assert set(summary.tables) == EXPORTED_TABLES
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind

    copy = unique_slug("copy")
    with committed_db.transaction() as s:
        imported = archive.import_tenant(s, path, copy, keys=[KEY])
    assert imported.tables == summary.tables

    with committed_db.transaction() as s:
        source, target = services.get_tenant(s, slug), services.get_tenant(s, copy)
    assert target.id != source.id
    assert (target.name, target.status, target.schema_revision) == ("源公司 Source", "active", summary.revision)
    with engine.connect() as conn:
        original = _table_checksums(conn, schema_for(source.id))
        restored = _table_checksums(conn, schema_for(target.id))
        stamped = conn.exec_driver_sql(f'SELECT version_num FROM "{schema_for(target.id)}".alembic_version').all()
    assert {t: restored[t] for t in EXPORTED_TABLES} == {t: original[t] for t in EXPORTED_TABLES}
    # The tables this test fills hold rows (the CRM's round trip is tests/crm/test_archive_crm.py's).
    assert all(original[t][0] > 0 for t in ("roles", "departments", "users", "invitations", "password_resets",
                                            "audit_log", "dictionary_items"))
    # Live credentials stay behind (test_archives.py shows the links do not work on the copy).
    assert all(restored[t][0] == 0 for t in archive.NOT_EXPORTED)
    assert stamped == [(summary.revision,)]

    # The copy is a working tenant: its users sign in, its Chinese text reads back unchanged.
    with committed_db.transaction(services.bound(target)) as s:
        assert services.authenticate(s, "user0@example.cn", PASSWORD) is not None
        assert [d.name for _, d in services.department_tree(s)] == ["总部 Headquarters", "销售部", "华东区 East"]
        note = s.scalar(select(AuditEntry).where(AuditEntry.action == "note"))
        assert note.after == {"备注": "中文审计 ✓", "list": [1, "二"]}


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return tenant_count(conn), tenant_schema_count(conn)


def _import_refused(committed_db: Database, engine: Engine, path: Path, error: type[Exception],
                    match: str) -> None:
    before = _counts(engine)
    slug = unique_slug("imp")
    with pytest.raises(error, match=match), committed_db.transaction() as s:
        archive.import_tenant(s, path, slug, keys=[KEY])
    assert _counts(engine) == before
    with committed_db.transaction() as s:
        assert services.find_tenant(s, slug) is None


def _rewrite(src: Path, dst: Path, edit, *, key: str | None = KEY) -> None:
    """Copy an archive, passing (name, bytes) through ``edit``; it returns new bytes (or None to drop).

    The manifest is signed again with ``key`` (as a holder of the key would), so the checks behind the
    signature are reached; ``key=None`` keeps the original signature.
    """
    manifest = b""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin:
            data = tin.extractfile(member).read()
            data = edit(member.name, data)
            if data is None:
                continue
            if member.name == archive.MANIFEST:
                manifest = data
            elif member.name == archive.SIGNATURE and key is not None:
                data = archive.sign(key, manifest)
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def _edit_manifest(change):
    def edit(name: str, data: bytes) -> bytes:
        if name != archive.MANIFEST:
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()
    return edit


def test_import_refuses_damaged_and_foreign_archives(committed_db: Database, engine: Engine,
                                                     tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    _make_archive(committed_db, engine, good)
    raw = good.read_bytes()

    # Damaged: cut off anywhere, or any byte flipped after the gzip header (whose time stamp and
    # file name no checksum covers), is refused whole by read_archive, with InvalidArchive only.
    cuts = [*range(0, len(raw), max(1, len(raw) // 60)), *range(len(raw) - 24, len(raw))]
    for cut in cuts:
        bad = tmp_path / "cut.tar.gz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(InvalidArchive):
            archive.verify_archive(bad, [KEY])
    header = 10
    if raw[3] & 0x08:  # FNAME: a zero-terminated original file name follows
        header = raw.index(b"\0", 10) + 1
    flips = range(header, len(raw), max(1, (len(raw) - header) // 300))
    for pos in [*flips, len(raw) - 1]:
        flipped = bytearray(raw)
        flipped[pos] ^= 0xFF
        bad = tmp_path / "flipped.tar.gz"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(InvalidArchive):
            archive.verify_archive(bad, [KEY])
    assert len(cuts) + len(flips) > 300
    # …and through the full import, nothing is created.
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    _import_refused(committed_db, engine, truncated, InvalidArchive, "damaged|not a Courtyard tenant archive")
    middle = bytearray(raw)
    middle[len(raw) // 2] ^= 0x55
    flipped_path = tmp_path / "flipped-middle.tar.gz"
    flipped_path.write_bytes(bytes(middle))
    _import_refused(committed_db, engine, flipped_path, InvalidArchive, "damaged|not a Courtyard tenant archive")

    # A data file whose bytes changed although the archive itself is well-formed: checksum mismatch.
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(good, tampered, lambda name, data: data.replace("张伟".encode(), "张三".encode())
             if name == "data/users.copy" else data)
    _import_refused(committed_db, engine, tampered, InvalidArchive, "checksum mismatch in data/users.copy")
    missing = tmp_path / "missing.tar.gz"
    _rewrite(good, missing, lambda name, data: None if name == "data/departments.copy" else data)
    _import_refused(committed_db, engine, missing, InvalidArchive, "data/departments.copy is missing")

    # Not an archive at all.
    for name, content in (("notes.txt", "这不是归档 not an archive\n".encode()), ("empty.tar.gz", b""),
                          ("random.bin", hashlib.sha256(b"x").digest() * 64),
                          ("plain.gz", gzip.compress(b"just some text"))):
        path = tmp_path / name
        path.write_bytes(content)
        _import_refused(committed_db, engine, path, InvalidArchive, "not a Courtyard tenant archive|damaged")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    _import_refused(committed_db, engine, other, InvalidArchive, "Unexpected entry in archive: 'readme.txt'")
    foreign = tmp_path / "foreign.tar.gz"
    _rewrite(good, foreign, _edit_manifest(lambda m: m.update(format="someone-elses-archive")))
    _import_refused(committed_db, engine, foreign, InvalidArchive, "wrong format in manifest")
    for i, change in enumerate((lambda m: m.update(tables="users"), lambda m: m.pop("tenant"),
                                lambda m: m["tables"][2].pop("columns"), lambda m: m["tables"].append(7))):
        malformed = tmp_path / f"malformed-{i}.tar.gz"
        _rewrite(good, malformed, _edit_manifest(change))
        _import_refused(committed_db, engine, malformed, InvalidArchive, "manifest.json is incomplete")
    _import_refused(committed_db, engine, tmp_path / "does-not-exist.tar.gz", InvalidArchive, "No such file")

    # From a newer server: an unknown schema revision, or a newer archive format.
    newer = tmp_path / "newer.tar.gz"
    _rewrite(good, newer, _edit_manifest(lambda m: m.update(schema_revision="9999_future")))
    _import_refused(committed_db, engine, newer, ArchiveTooNew,
                    r"revision '9999_future', which this server does not know.*newer Courtyard")
    newer_format = tmp_path / "newer-format.tar.gz"
    _rewrite(good, newer_format, _edit_manifest(lambda m: m.update(format_version=archive.FORMAT_VERSION + 1)))
    _import_refused(committed_db, engine, newer_format, ArchiveTooNew,
                    f"Archive format {archive.FORMAT_VERSION + 1} is not supported")

    # Well-formed but inconsistent with itself: found while restoring, and rolled back whole.
    miscounted = tmp_path / "miscounted.tar.gz"

    def bump_users(manifest: dict) -> None:
        for entry in manifest["tables"]:
            if entry["name"] == "users":
                entry["rows"] += 1

    _rewrite(good, miscounted, _edit_manifest(bump_users))
    _import_refused(committed_db, engine, miscounted, InvalidArchive, "users: 6 rows restored, the manifest says 7")
    unknown_column = tmp_path / "unknown-column.tar.gz"

    def add_column(manifest: dict) -> None:
        manifest["tables"][0]["columns"].append("nickname")

    _rewrite(good, unknown_column, _edit_manifest(add_column))
    _import_refused(committed_db, engine, unknown_column, InvalidArchive, "columns this server lacks: nickname")

    # The good archive still imports after all those refusals.
    with committed_db.transaction() as s:
        assert archive.import_tenant(s, good, unique_slug("ok"), keys=[KEY]).tables["users"] == 6


# --------------------------------------------------------------------------- fail closed


def test_a_session_bound_to_no_tenant_fails_closed(db: Database, tenant, other_tenant) -> None:
    s = db.session()
    try:
        with pytest.raises(TenantNotBound):
            s.scalars(select(User)).all()
        with pytest.raises(TenantNotBound):
            s.get(User, uuid.uuid4())
        with pytest.raises(TenantNotBound):
            _ = s.tenant
        with pytest.raises(TenantNotBound):
            services.seats_used(s)  # count(*) over a tenant table: no tenant entity is selected
        with pytest.raises(TenantNotBound):
            s.execute(update(User).values(active=False))
        with pytest.raises(TenantNotBound):
            s.scalars(select(Tenant).where(Tenant.id.in_(select(User.id)))).all()
        s.rollback()
        s.add(Department(name="无主 orphan"))
        with pytest.raises(TenantNotBound, match="Department written through a session bound to no tenant"):
            s.flush()
        s.rollback()
        # The control plane stays readable, and the placeholder schema does not exist in the database.
        assert {t.slug for t in s.scalars(select(Tenant))} >= {"acme", "globex"}
        with pytest.raises(Exception, match=r'relation "tenant\.users" does not exist'):
            s.execute(text("SELECT count(*) FROM tenant.users"))
        s.rollback()
        # Once bound it serves exactly one tenant, and never a second one.
        bind_tenant(s, tenant)
        assert [u.email for u in s.scalars(select(User))] == ["admin@acme.test"]
        with pytest.raises(TenantNotBound, match="already serves tenant acme"):
            bind_tenant(s, other_tenant)
    finally:
        s.close()
    with db.transaction(other_tenant) as s2:
        assert [u.email for u in s2.scalars(select(User))] == ["admin@globex.test"]


def test_import_platform_is_the_standard_library() -> None:
    import platform

    assert callable(platform.system)
    assert platform.system()
    assert Path(platform.__file__).resolve().parent == Path(sysconfig.get_paths()["stdlib"]).resolve()
