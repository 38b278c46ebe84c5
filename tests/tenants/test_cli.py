"""The `courtyard` operator CLI, run in-process (CliRunner) and once as a real subprocess.

The CLI finds its database through COURTYARD_DATABASE_URL / COURTYARD_REDIS_URL (the same settings
a deployment uses), pointed at this run's test database. Commands really commit, so every test
uses `committed_db`, which drops the tenants made during the test.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from core.db import Database, bind_tenant
from core.permissions import Actor, default_grants
from core.settings import project_root
from courtyard.app import create_app
from courtyard.cli import main
from tenants import migrator, services
from tests.conftest import PASSWORD, unique_slug

RESERVED = ["www", "api", "admin", "portal", "static"]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings, tmp_path: Path) -> dict[str, str]:
    env = {
        "COURTYARD_DATABASE_URL": settings.database_url,
        "COURTYARD_REDIS_URL": settings.redis_url,
        "COURTYARD_VAR_DIR": str(tmp_path / "var"),
        "COURTYARD_SECRET_KEY": "cli-test-secret",
        "COURTYARD_BASE_DOMAIN": "localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def cli(cli_env: dict[str, str], committed_db: Database) -> object:
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        result = runner.invoke(main, list(args), prog_name="courtyard", input=stdin)
        # Whatever happened, it ended through click (exit code + message), never an exception.
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{args}: {result.exc_info}\n{result.output}")
        assert "Traceback" not in result.output
        return result

    return invoke


def create(cli, slug: str, *extra: str, email: str | None = None, password: str = PASSWORD) -> Result:
    return cli("tenants", "create", slug, "--name", "Acme 艾克米", "--admin-email", email or f"Boss@{slug}.test",
               "--admin-password", password, *extra)


def registry(engine: Engine) -> dict[str, tuple[str, str]]:
    """slug → (status, schema) of every tenant in the control plane."""
    with engine.connect() as conn:
        return {r.slug: (r.status, f"t_{r.id.hex}") for r in conn.execute(
            text("SELECT id, slug, status FROM shared.tenants"))}


def tenant_schemas(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%'"))}


def schema_rows(engine: Engine, schema: str, sql: str, **params: object) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql.replace("{s}", f'"{schema}"'), params or None)]


# --------------------------------------------------------------------------- tenants


def test_create_and_list(cli, engine: Engine) -> None:
    slug = unique_slug("cli")
    result = create(cli, slug, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["slug"] == slug
    assert data["name"] == "Acme 艾克米"
    assert data["status"] == "active"
    assert data["admin_email"] == f"boss@{slug}.test"
    assert data["schema_revision"] == migrator.tenant_head()
    assert re.fullmatch(r"t_[0-9a-f]{32}", data["schema"])
    assert data["schema"] == "t_" + data["id"].replace("-", "")
    assert registry(engine)[slug] == ("active", data["schema"])
    assert data["schema"] in tenant_schemas(engine)
    admins = schema_rows(engine, data["schema"],
                         "SELECT u.email, r.key FROM {s}.users u JOIN {s}.roles r ON r.id = u.role_id")
    assert admins == [(f"boss@{slug}.test", "admin")]

    plain = create(cli, unique_slug("cli"))
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith("Created tenant ")

    listed = cli("tenants", "list", "--json")
    assert listed.exit_code == 0
    rows = {r["slug"]: r for r in json.loads(listed.stdout)}
    assert rows[slug] == {k: v for k, v in data.items() if k != "admin_email"}

    table = cli("tenants", "list")
    assert table.exit_code == 0
    line = next(line for line in table.stdout.splitlines() if line.startswith(slug))
    assert line.split()[:3] == [slug, "active", migrator.tenant_head()]
    assert "Acme 艾克米" in line


@pytest.mark.parametrize("slug", RESERVED)
def test_create_refuses_reserved_slugs(cli, engine: Engine, slug: str) -> None:
    before, schemas = registry(engine), tenant_schemas(engine)
    result = create(cli, slug)
    assert result.exit_code == 1
    assert f"Error: Invalid slug: '{slug}' is reserved." in result.stderr
    assert registry(engine) == before
    assert tenant_schemas(engine) == schemas


@pytest.mark.parametrize(("args", "message"), [
    ({"slug": "Acme"}, "Invalid slug: Use lower-case letters only."),
    ({"slug": "a_b_c"}, "Invalid slug: Use lower-case letters, digits and single hyphens"),
    ({"slug": "ab"}, "Invalid slug: Use 3 to 40 characters."),
    ({"email": "not-an-email"}, "'not-an-email' is not a valid e-mail address."),
    ({"email": "a@b"}, "'a@b' is not a valid e-mail address."),
    ({"password": "short"}, "Password refused: Use at least 10 characters."),
    ({"password": "aaaaaaaaaaaa"}, "Password refused: This password is too easy to guess."),
])
def test_create_refuses_invalid_input(cli, engine: Engine, args: dict[str, str], message: str) -> None:
    before, schemas = registry(engine), tenant_schemas(engine)
    slug = args.get("slug", unique_slug("bad"))
    result = create(cli, slug, email=args.get("email"), password=args.get("password", PASSWORD))
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stdout == ""
    assert registry(engine) == before
    assert tenant_schemas(engine) == schemas


def test_create_refuses_a_duplicate_slug(cli, engine: Engine) -> None:
    slug = unique_slug("dup")
    assert create(cli, slug).exit_code == 0
    before, schemas = registry(engine), tenant_schemas(engine)
    again = create(cli, slug, email="other@example.com")
    assert again.exit_code == 1
    assert f"Error: The slug '{slug}' is already taken." in again.stderr
    assert registry(engine) == before
    assert tenant_schemas(engine) == schemas
    schema = before[slug][1]
    assert schema_rows(engine, schema, "SELECT email FROM {s}.users") == [(f"boss@{slug}.test",)]


def test_create_requires_its_options(cli, engine: Engine) -> None:
    before = registry(engine)
    result = cli("tenants", "create", unique_slug("x"), "--name", "X")
    assert result.exit_code == 2
    assert "Missing option '--admin-email'" in result.stderr
    assert registry(engine) == before


def test_suspend_resume_rename_delete(cli, engine: Engine) -> None:
    slug, new_slug = unique_slug("life"), unique_slug("renamed")
    assert create(cli, slug).exit_code == 0
    schema = registry(engine)[slug][1]

    result = cli("tenants", "suspend", slug)
    assert (result.exit_code, result.stdout) == (0, f"Tenant {slug} is now suspended.\n")
    assert registry(engine)[slug] == ("suspended", schema)
    result = cli("tenants", "resume", slug)
    assert (result.exit_code, result.stdout) == (0, f"Tenant {slug} is now active.\n")
    assert registry(engine)[slug] == ("active", schema)

    result = cli("tenants", "rename", slug, new_slug)
    assert (result.exit_code, result.stdout) == (0, f"Tenant {slug} is now {new_slug}.\n")
    after = registry(engine)
    assert slug not in after
    assert after[new_slug] == ("active", schema)  # same id, same schema: the data did not move
    assert schema_rows(engine, schema, "SELECT email FROM {s}.users") == [(f"boss@{slug}.test",)]

    result = cli("tenants", "delete", new_slug, "--yes")
    assert (result.exit_code, result.stdout) == (0, f"Tenant {new_slug} deleted.\n")
    assert registry(engine)[new_slug] == ("deleted", schema)
    assert schema not in tenant_schemas(engine)
    listed = [r["slug"] for r in json.loads(cli("tenants", "list", "--json").stdout)]
    assert new_slug not in listed
    listed_all = {r["slug"]: r["status"] for r in json.loads(cli("tenants", "list", "--all", "--json").stdout)}
    assert listed_all[new_slug] == "deleted"

    # A deleted tenant stays a tombstone: it cannot be resumed, suspended, renamed or re-created.
    for args in (("resume", new_slug), ("suspend", new_slug), ("rename", new_slug, unique_slug("z"))):
        refused = cli("tenants", *args)
        assert refused.exit_code == 1, args
        assert f"Tenant '{new_slug}' is deleted" in refused.stderr
    assert create(cli, new_slug).exit_code == 1
    assert registry(engine)[new_slug] == ("deleted", schema)


@pytest.mark.parametrize("args", [
    ("suspend",), ("resume",), ("delete", "--yes"), ("rename", "{new}"), ("export", "{file}"),
])
def test_tenant_commands_refuse_an_unknown_tenant(cli, engine: Engine, tmp_path: Path, args: tuple[str, ...]) -> None:
    before = registry(engine)
    argv = [a.format(new=unique_slug("new"), file=tmp_path / "x.tar.gz") for a in args]
    result = cli("tenants", argv[0], "nope-nope", *argv[1:])
    assert result.exit_code == 1
    assert "Error: No tenant 'nope-nope'." in result.stderr
    assert registry(engine) == before
    assert not (tmp_path / "x.tar.gz").exists()
    assert list(tmp_path.glob(".export-*")) == []


def test_rename_refuses_taken_reserved_and_invalid_slugs(cli, engine: Engine) -> None:
    first, second = unique_slug("one"), unique_slug("two")
    assert create(cli, first).exit_code == 0
    assert create(cli, second).exit_code == 0
    before = registry(engine)
    for target, message in ((second, f"The slug '{second}' is already taken."),
                            ("admin", "Invalid slug: 'admin' is reserved."),
                            ("No_Way", "Invalid slug: Use lower-case letters only.")):
        result = cli("tenants", "rename", first, target)
        assert result.exit_code == 1
        assert message in result.stderr
    assert registry(engine) == before


def test_export_and_import_through_the_cli(cli, engine: Engine, tmp_path: Path) -> None:
    slug, copy = unique_slug("src"), unique_slug("copy")
    assert create(cli, slug).exit_code == 0
    assert cli("users", "create", slug, "li.lei@example.com", "--role", "sales", "--name", "李雷",
               "--password", PASSWORD).exit_code == 0
    archive = tmp_path / "acme.tar.gz"
    exported = cli("tenants", "export", slug, str(archive))
    assert exported.exit_code == 0, exported.output
    assert archive.is_file()
    imported = cli("tenants", "import", str(archive), "--slug", copy)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.startswith(f"Imported {archive} as {copy}: ")
    schema = registry(engine)[copy][1]
    assert sorted(schema_rows(engine, schema, "SELECT email, name FROM {s}.users")) == [
        (f"boss@{slug}.test", "boss"), ("li.lei@example.com", "李雷")]

    # Refusals: a taken slug, a missing directory, a file that is not an archive.
    before, schemas = registry(engine), tenant_schemas(engine)
    again = cli("tenants", "import", str(archive), "--slug", copy)
    assert again.exit_code == 1
    assert f"The slug '{copy}' is already taken." in again.stderr
    nowhere = cli("tenants", "export", slug, str(tmp_path / "missing" / "x.tar.gz"))
    assert nowhere.exit_code == 1
    assert "does not exist" in nowhere.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_text("hello, not an archive")
    refused = cli("tenants", "import", str(junk), "--slug", unique_slug("junk"))
    assert refused.exit_code == 1
    assert "is not a Courtyard tenant archive" in refused.stderr
    assert registry(engine) == before
    assert tenant_schemas(engine) == schemas


def test_archives_between_installations_and_across_a_key_rotation(cli, cli_env: dict[str, str], engine: Engine,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from tenants import archive

    slug = unique_slug("src")
    assert create(cli, slug).exit_code == 0
    ours = tmp_path / "ours.tar.gz"
    exported = cli("tenants", "export", slug, str(ours))
    assert exported.exit_code == 0, exported.output
    derived = cli("tenants", "archive-key", "--show").stdout.strip()
    assert f"signed with archive key {archive.key_id(derived)}" in exported.stdout
    assert cli("tenants", "archive-key").stdout.strip() == f"archive key id: {archive.key_id(derived)}"

    # Another installation (another key) refuses it, and says so; it imports once given the key.
    other_key = "the-other-installation-key-0123456789"
    monkeypatch.setenv("COURTYARD_ARCHIVE_KEY", other_key)
    before, schemas = registry(engine), tenant_schemas(engine)
    foreign = cli("tenants", "import", str(ours), "--slug", unique_slug("x"))
    assert foreign.exit_code == 1
    assert f"signed with a key this server does not accept (key id {archive.key_id(derived)})" in foreign.stderr
    assert (registry(engine), tenant_schemas(engine)) == (before, schemas)
    key_file = tmp_path / "source.key"
    key_file.write_text(derived + "\n")
    moved = cli("tenants", "import", str(ours), "--slug", unique_slug("moved"), "--key-file", str(key_file))
    assert moved.exit_code == 0, moved.output
    junk_key = tmp_path / "junk.key"
    junk_key.write_bytes(b"\xff" * 10)
    assert "does not hold an archive key" in cli("tenants", "import", str(ours), "--slug", unique_slug("j"),
                                                 "--key-file", str(junk_key)).stderr

    # Rotation: the old key stays accepted for import while the new one signs.
    monkeypatch.setenv("COURTYARD_ARCHIVE_OLD_KEYS", derived)
    rotated = cli("tenants", "import", str(ours), "--slug", unique_slug("rot"))
    assert rotated.exit_code == 0, rotated.output
    monkeypatch.setenv("COURTYARD_ARCHIVE_KEY", "short")
    assert "COURTYARD_ARCHIVE_KEY must be at least 32 characters" in cli("tenants", "archive-key").stderr


def test_import_refuses_bombs_and_odd_entries_with_exit_1_and_nothing_written(cli, engine: Engine,
                                                                              tmp_path: Path) -> None:
    from tests.tenants.test_archives import Zeros, info, write_tar

    huge = 64 << 20
    bombs = {
        "first.tar.gz": ([(info("data/users.copy", huge), Zeros(huge))], "no manifest.json as its first member"),
        "fat.tar.gz": ([(info("manifest.json", huge), Zeros(huge))], "manifest.json is 67108864 bytes; at most"),
        "link.tar.gz": ([(info("manifest.json", kind=b"2", link="/etc/passwd"), None)], "is a symbolic link"),
        "abs.tar.gz": ([(info("/etc/cron.d/x"), b"x")], "Unexpected entry in archive: '/etc/cron.d/x'"),
        "dots.tar.gz": ([(info("../../x.copy"), b"x")], "Unexpected entry in archive: '../../x.copy'"),
    }
    before, schemas = registry(engine), tenant_schemas(engine)
    for name, (members, message) in bombs.items():
        path = write_tar(tmp_path / name, members)
        result = cli("tenants", "import", str(path), "--slug", unique_slug("bomb"))
        assert result.exit_code == 1, name
        assert message in result.stderr, (name, result.stderr)
    assert (registry(engine), tenant_schemas(engine)) == (before, schemas)


def test_import_checks_the_slug_and_name_before_reading_the_file(cli, tmp_path: Path) -> None:
    """A taken slug or a bad --name is answered before a pass over the file (which may be 16 GiB):
    here the file is not even an archive, and the answer is still about the slug or the name."""
    slug = unique_slug("taken")
    assert create(cli, slug).exit_code == 0
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    taken = cli("tenants", "import", str(junk), "--slug", slug)
    assert taken.exit_code == 1
    assert f"The slug '{slug}' is already taken." in taken.stderr, taken.stderr
    named = cli("tenants", "import", str(junk), "--slug", unique_slug("free"), "--name", "two\nlines")
    assert named.exit_code == 1
    assert "control characters" in named.stderr, named.stderr


# --------------------------------------------------------------------------- users


def test_users_create_with_password_and_by_invitation(cli, cli_env: dict[str, str], engine: Engine,
                                                      committed_db: Database) -> None:
    slug = unique_slug("users")
    assert create(cli, slug).exit_code == 0
    schema = registry(engine)[slug][1]

    made = cli("users", "create", slug, "Han.Meimei@Example.com", "--role", "manager", "--name", "韩梅梅",
               "--password", PASSWORD)
    assert made.exit_code == 0, made.output
    assert made.stdout == f"Created han.meimei@example.com (manager) in {slug}.\n"
    rows = schema_rows(engine, schema, "SELECT u.name, r.key, u.password_hash IS NOT NULL FROM {s}.users u "
                                       "JOIN {s}.roles r ON r.id = u.role_id WHERE u.email = %(e)s",
                       e="han.meimei@example.com")
    assert rows == [("韩梅梅", "manager", True)]

    invited = cli("users", "create", slug, "Wang@Example.com", "--role", "service")
    assert invited.exit_code == 0, invited.output
    assert invited.stdout.startswith(f"Invited wang@example.com (service) to {slug}; mail sent to ")
    link = re.search(rf"http://localhost:8000/t/{slug}/invitation/(\S+)$", invited.stdout.strip())
    assert link is not None, invited.stdout
    secret = link.group(1)
    # Mailed too: without SMTP the message lands in the outbox under COURTYARD_VAR_DIR.
    mails = list((Path(cli_env["COURTYARD_VAR_DIR"]) / "outbox").glob("*.eml"))
    assert len(mails) == 1
    mail = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    assert mail["To"] == "wang@example.com"
    assert link.group(0) in mail.get_content()
    # In both languages, like the invitations sent from the users page (it was English only).
    assert mail["Subject"] == "邀请您加入 Courtyard 上的 Acme 艾克米 · You are invited to Acme 艾克米 on Courtyard"
    assert mail.get_content().startswith("您受邀加入 Acme 艾克米。请在 7 天内接受邀请：\n"
                                         "You are invited to Acme 艾克米. Accept within 7 days:\n\n")
    assert schema_rows(engine, schema, "SELECT email FROM {s}.users WHERE email = 'wang@example.com'") == []
    assert schema_rows(engine, schema, "SELECT email, accepted_at FROM {s}.invitations") == [
        ("wang@example.com", None)]
    # The printed link is a live invitation: accepting it creates the user with the invited role.
    with committed_db.transaction() as session:
        bind_tenant(session, services.usable(services.get_tenant(session, slug)))
        user = services.accept_invitation(session, secret, name="王", password=PASSWORD)
        assert (user.email, user.role.key) == ("wang@example.com", "service")


@pytest.mark.parametrize(("argv", "message"), [
    (["{slug}", "x@example.com", "--role", "boss", "--password", PASSWORD], "No role 'boss'."),
    (["{slug}", "x@example.com", "--role", "boss"], "No role 'boss'."),
    (["{slug}", "not-an-email", "--role", "sales", "--password", PASSWORD], "is not a valid e-mail address."),
    (["{slug}", "x@example.com", "--role", "sales", "--password", "short"], "Password refused: Use at least"),
    (["{slug}", "boss@{slug}.test", "--role", "sales", "--password", PASSWORD], "already exists"),
    (["{slug}", "boss@{slug}.test", "--role", "sales"], "is already a user of this workspace"),
    (["nope-nope", "x@example.com", "--role", "sales", "--password", PASSWORD], "No tenant 'nope-nope'."),
    (["nope-nope", "x@example.com", "--role", "sales"], "No tenant 'nope-nope'."),
    # An invitation's name is checked as strictly as a user's, not cut to fit.
    (["{slug}", "x@example.com", "--role", "sales", "--name", "名" * 201], "Name is too long (at most 200"),
    (["{slug}", "x@example.com", "--role", "sales", "--name", "a\x00b"], "Name must not contain NUL characters."),
    (["{slug}", "x@example.com", "--role", "sales", "--name", "a\x00b", "--password", PASSWORD],
     "Name must not contain NUL characters."),
    # What a shell passes on when an argument is not UTF-8 (Python holds the bytes as lone surrogates).
    (["{slug}", "x@example.com", "--role", "sales", "--name", "a\udcffb"], "Name is not valid UTF-8 text."),
])
def test_users_create_refuses_bad_input(cli, engine: Engine, argv: list[str], message: str) -> None:
    slug = unique_slug("ubad")
    assert create(cli, slug).exit_code == 0
    schema = registry(engine)[slug][1]
    count_sql = "SELECT (SELECT count(*) FROM {s}.users), (SELECT count(*) FROM {s}.invitations), " \
                "(SELECT count(*) FROM {s}.audit_log)"
    before = schema_rows(engine, schema, count_sql)
    result = cli("users", "create", *[a.format(slug=slug) for a in argv])
    assert result.exit_code == 1
    assert message in result.stderr
    assert schema_rows(engine, schema, count_sql) == before


def test_users_create_refuses_a_suspended_tenant(cli, engine: Engine) -> None:
    slug = unique_slug("susp")
    assert create(cli, slug).exit_code == 0
    assert cli("tenants", "suspend", slug).exit_code == 0
    result = cli("users", "create", slug, "x@example.com", "--role", "sales", "--password", PASSWORD)
    assert result.exit_code == 1
    assert "suspended" in result.stderr
    schema = registry(engine)[slug][1]
    assert schema_rows(engine, schema, "SELECT count(*) FROM {s}.users") == [(1,)]


# --------------------------------------------------------------------------- OAuth clients


def test_users_token_prints_json_and_the_token_acts_as_the_user(cli, app, engine: Engine) -> None:
    # `app` without the `db` fixture serves from the real engine, so it sees what the CLI committed.
    slug, other = unique_slug("pat"), unique_slug("other")
    assert create(cli, slug).exit_code == 0
    assert create(cli, other).exit_code == 0
    assert cli("users", "create", slug, "rep@example.com", "--role", "sales", "--password", PASSWORD).exit_code == 0
    result = cli("users", "token", slug, "Rep@Example.com", "--name", "nightly export", "--expires-days", "30",
                 "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"token", "id", "prefix", "expires_at"}
    assert out["token"].startswith(out["prefix"])
    assert out["prefix"].startswith("cyp_")
    assert out["expires_at"].endswith("+00:00")
    client = app.test_client()
    me = client.get("/api/v1/me", headers={"Host": f"{slug}.localhost", "Authorization": f"Bearer {out['token']}"})
    assert me.status_code == 200, me.get_data(as_text=True)
    assert (me.get_json()["kind"], me.get_json()["label"], me.get_json()["permissions"]) == (
        "user", "rep@example.com", sorted(["users.read", *default_grants("sales")]))
    elsewhere = client.get("/api/v1/me", headers={"Host": f"{other}.localhost",
                                                  "Authorization": f"Bearer {out['token']}"})
    assert elsewhere.status_code == 401
    schema = registry(engine)[slug][1]
    assert schema_rows(engine, schema, "SELECT action, after->>'name' FROM {s}.audit_log "
                                       "WHERE entity_type = 'personal_token'") == [
        ("user.token_created", "nightly export")]
    # Without --json: the token, its id and its expiry ("never" without --expires-days).
    plain = cli("users", "token", slug, "rep@example.com")
    assert plain.exit_code == 0, plain.output
    assert re.search(r"^token: +cyp_\S+$", plain.stdout, re.M)
    assert re.search(r"^expires_at: +never$", plain.stdout, re.M)


@pytest.mark.parametrize(("argv", "message"), [
    (["nope-nope", "rep@example.com"], "No tenant 'nope-nope'."),
    (["{slug}", "nobody@example.com"], "No user nobody@example.com in {slug}."),
    (["{slug}", "not-an-email"], "is not a valid e-mail address."),
    (["{slug}", "gone@example.com"], "gone@example.com is deactivated"),
    (["{slug}", "rep@example.com", "--expires-days", "0"], "A token expires after 1 to 3650 days."),
    (["{slug}", "rep@example.com", "--name", "x" * 101], "Name is too long (at most 100"),
    (["{slug}", "rep@example.com", "--json", "--name", ""], "Name is required."),
])
def test_users_token_refuses_with_a_precise_error(cli, engine: Engine, committed_db: Database, argv: list[str],
                                                  message: str) -> None:
    slug = unique_slug("patbad")
    assert create(cli, slug).exit_code == 0
    for address in ("rep@example.com", "gone@example.com"):
        assert cli("users", "create", slug, address, "--role", "sales", "--password", PASSWORD).exit_code == 0
    with committed_db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        bind_tenant(session, tenant)
        gone = services.find_user_by_email(session, "gone@example.com")
        assert gone is not None
        services.set_active(session, Actor.system("test"), gone.id, False)
    result = cli("users", "token", *[a.format(slug=slug) for a in argv])
    assert result.exit_code == 1, result.output
    assert message.format(slug=slug) in result.stderr
    assert result.stdout == ""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM shared.personal_tokens p JOIN shared.tenants n "
                                 "ON n.id = p.tenant_id WHERE n.slug = :s"), {"s": slug}).scalar() == 0


def test_clients_create_prints_a_pair_that_gets_a_token(cli, app, settings, redis_client,
                                                        engine: Engine) -> None:
    # `app` without the `db` fixture serves from the real engine, so it sees what the CLI committed.
    slug, other = unique_slug("api"), unique_slug("other")
    assert create(cli, slug).exit_code == 0
    assert create(cli, other).exit_code == 0
    result = cli("clients", "create", slug, "--json")
    assert result.exit_code == 0, result.output
    pair = json.loads(result.stdout)
    assert set(pair) == {"client_id", "client_secret"}

    client = app.test_client()
    host = {"Host": f"{slug}.localhost"}
    token = client.post("/oauth/token", headers=host, data={
        "grant_type": "client_credentials", "client_id": pair["client_id"], "client_secret": pair["client_secret"]})
    assert token.status_code == 200, token.get_data(as_text=True)
    body = token.get_json()
    assert body["token_type"].lower() == "bearer"
    bearer = {**host, "Authorization": f"Bearer {body['access_token']}"}
    users = client.get("/api/v1/users", headers=bearer)
    assert users.status_code == 200, users.get_data(as_text=True)
    assert [u["email"] for u in users.get_json()] == [f"boss@{slug}.test"]

    wrong = client.post("/oauth/token", headers=host, data={
        "grant_type": "client_credentials", "client_id": pair["client_id"], "client_secret": "nope"})
    assert wrong.status_code == 401
    assert wrong.get_json()["error"] == "invalid_client"
    # On another tenant's host the client is simply unknown: the same answer as a made-up client id.
    elsewhere = client.post("/oauth/token", headers={"Host": f"{other}.localhost"}, data={
        "grant_type": "client_credentials", "client_id": pair["client_id"], "client_secret": pair["client_secret"]})
    unknown = client.post("/oauth/token", headers={"Host": f"{other}.localhost"}, data={
        "grant_type": "client_credentials", "client_id": "cy_madeup", "client_secret": pair["client_secret"]})
    assert elsewhere.get_json()["error"] == "invalid_client"
    assert (elsewhere.status_code, elsewhere.get_json()) == (unknown.status_code, unknown.get_json())
    assert client.get("/api/v1/users", headers={**bearer, "Host": f"{other}.localhost"}).status_code == 404

    # Scopes limit what the token may do.
    narrow = json.loads(cli("clients", "create", slug, "--scopes", "users.read", "--json").stdout)
    token = client.post("/oauth/token", headers=host, data={
        "grant_type": "client_credentials", "client_id": narrow["client_id"],
        "client_secret": narrow["client_secret"]}).get_json()
    assert token["scope"] == "users.read"
    limited = {**host, "Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/api/v1/users", headers=limited).status_code == 200
    assert client.get("/api/v1/audit-log", headers=limited).status_code == 403

    # Revoking the client kills its tokens.
    assert cli("clients", "revoke", slug, pair["client_id"]).exit_code == 0
    assert client.get("/api/v1/users", headers=bearer).status_code == 401

    # A site served over TLS (secure cookies) refuses token requests over plain HTTP with a 400.
    secure = create_app(settings.with_overrides(secure_cookies=True), engine=engine, redis=redis_client)
    form = {"grant_type": "client_credentials", "client_id": narrow["client_id"],
            "client_secret": narrow["client_secret"]}
    plain = secure.test_client().post("/oauth/token", headers=host, data=form)
    assert plain.status_code == 400
    assert plain.get_json()["code"] == "insecure_transport"
    tls = secure.test_client().post("/oauth/token", headers=host, data=form, base_url=f"https://{slug}.localhost")
    assert tls.status_code == 200, tls.get_data(as_text=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["{slug}", "--scopes", "users.read nope.never"], "Unknown scopes: nope.never."),
    (["{slug}", "--scopes", ","], "Grant at least one scope."),
    (["{slug}", "--name", "  "], "Name is required."),
    (["nope-nope"], "No tenant 'nope-nope'."),
])
def test_clients_create_refuses_bad_input(cli, engine: Engine, argv: list[str], message: str) -> None:
    slug = unique_slug("cbad")
    assert create(cli, slug).exit_code == 0
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM shared.oauth_clients")).scalar_one()
    result = cli("clients", "create", *[a.format(slug=slug) for a in argv], "--json")
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stdout == ""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM shared.oauth_clients")).scalar_one() == before


def test_clients_revoke_refuses_unknown_clients(cli) -> None:
    slug = unique_slug("rev")
    assert create(cli, slug).exit_code == 0
    result = cli("clients", "revoke", slug, "cy_nothing")
    assert result.exit_code == 1
    assert "No such client." in result.stderr


# --------------------------------------------------------------------------- routes, help, configuration


def test_routes_prints_the_url_map(cli) -> None:
    result = cli("routes")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["Endpoint", "Methods", "Rule"]
    rules = {line.split()[-1] for line in lines[2:]}
    assert {"/oauth/token", "/sign-in", "/signup", "/api/v1/users", "/healthz"} <= rules
    by_rule = {line.split()[-1]: line.split()[0] for line in lines[2:]}
    assert by_rule["/oauth/token"] == "oauth.token"


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def test_help_works_everywhere_without_a_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing listens on port 1: any attempt to reach the database would fail loudly.
    monkeypatch.setenv("COURTYARD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    monkeypatch.setenv("COURTYARD_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("COURTYARD_VAR_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    paths = [(), *_all_commands(main)]
    expected = {("tenants", "create"), ("tenants", "list"), ("tenants", "suspend"), ("tenants", "resume"),
                ("tenants", "delete"), ("tenants", "rename"), ("tenants", "export"), ("tenants", "import"),
                ("tenants", "archive-key"), ("users", "create"), ("clients", "create"), ("clients", "revoke"),
                ("migrate",), ("routes",)}
    assert expected <= set(paths)
    for path in paths:
        result = runner.invoke(main, [*path, "--help"], prog_name="courtyard")
        assert result.exit_code == 0, (path, result.output, result.exc_info)
        assert result.stdout.startswith(f"Usage: {' '.join(('courtyard', *path))} "), path
    assert not (tmp_path / "var").exists()


def test_bad_configuration_is_reported_without_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COURTYARD_DATABASE_URL", "mysql://root@localhost/crm")
    monkeypatch.setenv("COURTYARD_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(main, ["tenants", "list"], prog_name="courtyard")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "COURTYARD_DATABASE_URL must be a postgresql:// URL" in result.stderr


# --------------------------------------------------------------------------- a real process


def test_the_installed_command_in_a_subprocess(cli_env: dict[str, str], committed_db: Database,
                                               engine: Engine) -> None:
    exe = project_root() / ".venv" / "bin" / "courtyard"
    if not exe.exists():  # an install outside the checkout: the command next to this interpreter
        exe = Path(sys.executable).with_name("courtyard")
    env = {**os.environ, **cli_env}
    slug = unique_slug("proc")
    with committed_db.transaction() as session:
        services.provision(session, Actor.system("test"), slug=slug, name="Proc 进程", admin_email="a@proc.test",
                           admin_password=PASSWORD)

    listed = subprocess.run([str(exe), "tenants", "list", "--json"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    rows = {r["slug"]: r for r in json.loads(listed.stdout)}
    assert rows[slug]["name"] == "Proc 进程"
    assert rows[slug]["status"] == "active"

    before = registry(engine)
    for argv, message in (
        (["tenants", "create", "www", "--name", "W", "--admin-email", "a@b.co", "--admin-password", PASSWORD],
         "Error: Invalid slug: 'www' is reserved."),
        (["tenants", "suspend", "nope-nope"], "Error: No tenant 'nope-nope'."),
        (["users", "create", slug, "x@example.com", "--role", "boss", "--password", PASSWORD],
         "Error: No role 'boss'."),
    ):
        bad = subprocess.run([str(exe), *argv], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert bad.returncode == 1, (argv, bad.stdout, bad.stderr)
        assert message in bad.stderr
        assert "Traceback" not in bad.stderr
        assert bad.stdout == ""
    assert registry(engine) == before


def test_unreachable_database_and_unconfirmed_delete_are_one_line_errors(cli_env: dict[str, str]) -> None:
    exe = project_root() / ".venv" / "bin" / "courtyard"
    if not exe.exists():
        exe = Path(sys.executable).with_name("courtyard")
    down = {**os.environ, **cli_env, "COURTYARD_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = subprocess.run([str(exe), "tenants", "list"], env=down, capture_output=True, text=True, timeout=60,
                            check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "Error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr
    # No terminal to confirm on (cron, scripts): deleting needs --yes.
    refused = subprocess.run([str(exe), "tenants", "delete", "anything"], env={**os.environ, **cli_env},
                             capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr


def test_outbox_dead_letters_are_listed_retried_and_dropped(cli, committed_db: Database, settings) -> None:
    """Finding 9: an operator sees the tasks that kept failing and decides (retry or drop), with clear exit codes."""
    from sqlalchemy import delete, func

    from core.db import uuid7
    from core.tasks import MAX_ATTEMPTS, DeadTask, OutboxTask, seal

    ids = [uuid7(), uuid7()]
    with committed_db.transaction() as s:
        for n, i in enumerate(ids):
            s.add(DeadTask(id=i, task="tenants.deliver_mail", args=seal([f"secret-{n}"], "cli-test-secret"),
                           created_at=func.now(), attempts=MAX_ATTEMPTS, last_error="TypeError: too many arguments"))
    try:
        listed = cli("outbox", "list", "--json")
        assert listed.exit_code == 0, listed.output
        rows = {r["id"]: r for r in json.loads(listed.output)}
        assert set(rows) >= {str(i) for i in ids}
        assert rows[str(ids[0])]["attempts"] == MAX_ATTEMPTS
        assert rows[str(ids[0])]["last_error"] == "TypeError: too many arguments"
        assert "secret-0" not in listed.output, "arguments stay sealed"
        plain = cli("outbox", "list")
        assert plain.exit_code == 0
        assert str(ids[1]) in plain.output
        status = cli("outbox", "status", "--json")
        assert status.exit_code == 0
        assert json.loads(status.output)["dead_letters"] >= 2

        unknown = cli("outbox", "retry", str(ids[0]), "00000000-0000-7000-8000-000000000000")
        assert unknown.exit_code == 1
        assert "00000000-0000-7000-8000-000000000000" in unknown.output
        assert "nothing was changed" in unknown.output
        assert cli("outbox", "retry").exit_code == 2, "neither ids nor --all is a usage error"
        assert cli("outbox", "retry", "--all", str(ids[0])).exit_code == 2
        assert cli("outbox", "retry", "not-a-uuid").exit_code == 2

        retried = cli("outbox", "retry", str(ids[0]))
        assert retried.exit_code == 0, retried.output
        assert "1 dead letter(s) put back" in retried.output
        with committed_db.transaction() as s:
            row = s.get(OutboxTask, ids[0])
            assert row is not None
            assert row.attempts == 0
            assert s.get(DeadTask, ids[0]) is None

        refused = cli("outbox", "drop", str(ids[1]))
        assert refused.exit_code == 1
        assert "--yes" in refused.output
        dropped = cli("outbox", "drop", str(ids[1]), "--yes")
        assert dropped.exit_code == 0
        assert "1 dead letter(s) dropped" in dropped.output
        with committed_db.transaction() as s:
            assert s.get(DeadTask, ids[1]) is None
        assert cli("outbox", "drop", str(ids[1]), "--yes").exit_code == 1, "already gone"
    finally:
        with committed_db.transaction() as s:
            s.execute(delete(DeadTask).where(DeadTask.id.in_(ids)))
            s.execute(delete(OutboxTask).where(OutboxTask.id.in_(ids)))
