"""`courtyard tenants|users|clients|migrate`: operator commands, thin over the services."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from core.db import Database, bind_tenant, make_engine
from core.errors import ConfigError, CourtyardError, DomainError
from core.i18n import _l, both
from core.mail import Mail, make_mailer
from core.permissions import Actor, all_names
from core.settings import Settings
from tenants import archive, migrator, services

F = TypeVar("F", bound=Callable[..., Any])


class CliRuntime:
    """Resolved lazily: `--help` must work without starting a database."""

    def __init__(self, factory: Callable[[], tuple[Engine, Any]]) -> None:
        self._factory = factory
        self._engine: Engine | None = None
        self.settings: Any = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine, self.settings = self._factory()
        return self._engine

    @property
    def db(self) -> Database:
        return Database(self.engine)

    def close(self) -> None:
        """Return the connections when the command ends (it also runs in-process, e.g. in tests)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _rt() -> CliRuntime:
    runtime: CliRuntime = click.get_current_context().meta["courtyard_runtime"]
    return runtime


def domain_errors(fn: F) -> F:
    """A refused operation prints its reason and exits 1: never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DomainError as exc:
            detail = "".join(f"\n  {k}: {'; '.join(map(str, v))}" for k, v in exc.field_errors.items())
            raise click.ClickException(f"{exc.message}{detail}") from None
        except CourtyardError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _tenant_json(t: Any) -> dict[str, Any]:
    # Always in UTC: a row read back comes in the database session's time zone, a row just created
    # carries the application's UTC time, and `create --json` and `list --json` must print the same.
    return {"id": str(t.id), "slug": t.slug, "name": t.name, "status": t.status, "schema": f"t_{t.id.hex}",
            "schema_revision": t.schema_revision, "created_at": t.created_at.astimezone(dt.UTC).isoformat()}


# --------------------------------------------------------------------------- tenants


@click.group()
def tenants() -> None:
    """Create, list, rename, suspend, resume, delete, export and import tenants."""


@tenants.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Company name shown in the app.")
@click.option("--admin-email", required=True, help="E-mail of the first administrator.")
@click.option("--admin-password", required=True, help="Password of the first administrator (10+ characters).")
@click.option("--admin-name", default=None, help="Display name of the first administrator.")
@click.option("--json", "as_json", is_flag=True, help="Print the new tenant as JSON.")
@domain_errors
def tenants_create(slug: str, name: str, admin_email: str, admin_password: str, admin_name: str | None,
                   as_json: bool) -> None:
    """Provision a tenant: registry row, schema at head and its admin, all or nothing."""
    with _rt().db.transaction() as session:
        result = services.provision(session, Actor.system("cli"), slug=slug, name=name, admin_email=admin_email,
                                    admin_password=admin_password, admin_name=admin_name)
        data = _tenant_json(result.tenant) | {"admin_email": result.admin.email}
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"Created tenant {data['slug']} ({data['name']}) in schema {data['schema']}; "
                   f"admin {data['admin_email']}.")


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted tenants.")
def tenants_list(as_json: bool, include_deleted: bool) -> None:
    """List tenants with status and schema revision."""
    with _rt().db.transaction() as session:
        rows = [_tenant_json(t) for t in services.list_tenants(session, include_deleted=include_deleted)]
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'SLUG':<24} {'STATUS':<10} {'REVISION':<10} NAME")
    for r in rows:
        click.echo(f"{r['slug']:<24} {r['status']:<10} {r['schema_revision']:<10} {r['name']}")


def _status_command(name: str, status: str, help_text: str) -> None:
    @tenants.command(name, help=help_text)
    @click.argument("slug")
    @domain_errors
    def command(slug: str) -> None:
        with _rt().db.transaction() as session:
            services.set_status(session, slug, status)
        click.echo(f"Tenant {slug} is now {status}.")


_status_command("suspend", "suspended", "Suspend a tenant: its site and API answer 403 until resumed.")
_status_command("resume", "active", "Resume a suspended tenant.")


@tenants.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@domain_errors
def tenants_delete(slug: str, yes: bool) -> None:
    """Drop a tenant's schema and all its data; the slug stays reserved and answers "deleted"."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("Refusing to delete without confirmation: pass --yes.")
        click.confirm(f"Delete tenant {slug} and all its data?", abort=True)
    with _rt().db.transaction() as session:
        services.delete_tenant(session, slug)
    click.echo(f"Tenant {slug} deleted.")


@tenants.command("rename")
@click.argument("slug")
@click.argument("new_slug")
@domain_errors
def tenants_rename(slug: str, new_slug: str) -> None:
    """Change a tenant's slug (its sub-domain); the data and schema stay where they are."""
    with _rt().db.transaction() as session:
        services.rename_tenant(session, slug, new_slug)
    click.echo(f"Tenant {slug} is now {new_slug}.")


@tenants.command("export")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@domain_errors
def tenants_export(slug: str, file: Path) -> None:
    """Write a signed, portable archive (.tar.gz) of one tenant's data (no pending invitations or reset links)."""
    if not file.parent.exists():
        raise click.ClickException(f"Directory {file.parent} does not exist.")
    rt = _rt()
    engine = rt.engine
    summary = archive.export_tenant(engine, slug, file, key=rt.settings.archive_signing_key)
    click.echo(f"Exported {slug} at revision {summary.revision}: {sum(summary.tables.values())} rows "
               f"in {len(summary.tables)} tables → {file} (signed with archive key "
               f"{archive.key_id(rt.settings.archive_signing_key)})")


MAX_KEY_FILE_BYTES = 4096


def _keys_from(path: Path) -> list[str]:
    with path.open("rb") as fh:
        raw = fh.read(MAX_KEY_FILE_BYTES + 1)
    try:
        keys = raw.decode().split()
    except UnicodeDecodeError:
        keys = []
    if len(raw) > MAX_KEY_FILE_BYTES or not keys:
        raise click.ClickException(f"{path} does not hold an archive key (one or more keys separated by "
                                   f"spaces or lines, at most {MAX_KEY_FILE_BYTES} bytes).")
    return keys


@tenants.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--slug", "new_slug", required=True, help="Slug of the new tenant.")
@click.option("--name", default=None, help="Company name (default: the archived one).")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file holding another installation's archive key, to import an archive it signed.")
@domain_errors
def tenants_import(file: Path, new_slug: str, name: str | None, key_file: Path | None) -> None:
    """Restore a signed archive as a new tenant, migrating it forward from an older revision.

    Refuses, writing nothing, an archive that is unsigned, signed with a key this server does not
    accept, damaged, over the size limits, from a newer Courtyard, or holding rows the application
    would not accept.
    """
    rt = _rt()
    db = rt.db  # resolves the settings too
    keys = [*(_keys_from(key_file) if key_file else ()), *rt.settings.archive_verify_keys]
    max_bytes = rt.settings.archive_max_bytes
    with db.transaction() as session:  # a typo or a taken slug should not cost a pass over the file
        archive.check_destination(session, new_slug, name)
    manifest = archive.verify_archive(file, keys, max_bytes=max_bytes)  # before the transaction opens
    with db.transaction() as session:
        summary = archive.import_tenant(session, file, new_slug, name=name, keys=keys, max_bytes=max_bytes,
                                        verified=manifest)
    migrated = (f" (migrated from revision {summary.archived_revision} to {summary.revision})"
                if summary.archived_revision != summary.revision else "")
    click.echo(f"Imported {file} as {summary.slug}: {sum(summary.tables.values())} rows "
               f"in {len(summary.tables)} tables{migrated}.")


@tenants.command("archive-key")
@click.option("--show", is_flag=True, help="Print the key itself (a secret), not only its id.")
def tenants_archive_key(show: bool) -> None:
    """Print the id of the key archives are signed with (and the key with --show, for another installation)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    key = settings.archive_signing_key
    click.echo(key if show else f"archive key id: {archive.key_id(key)}")


# --------------------------------------------------------------------------- migrate


@click.command("migrate")
@click.option("--workers", "-j", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Tenant schemas migrated in parallel.")
@click.option("--tenant", "only", multiple=True, help="Only these tenants (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate(workers: int, only: tuple[str, ...], as_json: bool) -> None:
    """Migrate the shared schema, then every tenant schema in parallel; resumable, per-tenant results."""
    # A pool as large as the worker count: a thread waiting for a connection would time out and be
    # recorded as a failed tenant.
    engine = make_engine(_rt().engine.url.render_as_string(hide_password=False), pool_size=workers + 1,
                         max_overflow=2, timeouts=_rt().settings.cli_timeouts)
    policy = migrator.lock_policy(_rt().settings)
    migrator.upgrade_shared(engine, policy)

    def progress(result: migrator.TenantResult) -> None:
        if result.status == "failed" and not as_json:
            click.echo(f"  FAILED {result.slug}: {result.error}", err=True)

    report = migrator.migrate_fleet(engine, workers=workers, only=only or None, progress=progress, policy=policy)
    if as_json:
        click.echo(json.dumps({"head": report.head, "seconds": round(report.seconds, 3),
                               "done": [r.slug for r in report.done],
                               "failed": {r.slug: r.error for r in report.failed}}))
    else:
        click.echo(f"Shared schema at head. Tenants at {report.head}: {len(report.done)} migrated, "
                   f"{len(report.failed)} failed, in {report.seconds:.2f}s.")
    if report.failed:
        sys.exit(1)


# --------------------------------------------------------------------------- users & clients


@click.group()
def users() -> None:
    """Manage a tenant's staff users."""


@users.command("create")
@click.argument("slug")
@click.argument("email")
@click.option("--role", required=True, help="admin, manager, sales, service or a custom role key.")
@click.option("--name", default=None, help="Display name.")
@click.option("--password", default=None, help="Set a password now; without it an invitation link is printed.")
@domain_errors
def users_create(slug: str, email: str, role: str, name: str | None, password: str | None) -> None:
    """Create a user in a tenant (or invite them when no password is given)."""
    actor = Actor.system("cli")
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        bind_tenant(session, tenant)
        if password:
            user = services.create_user(session, actor, email=email, name=name, role=role, password=password)
            click.echo(f"Created {user.email} ({role}) in {slug}.")
        else:
            invitation, token = services.invite(session, actor, email=email, role=role, name=name or "")
            address = invitation.email
    if not password:
        settings = _rt().settings
        link = settings.tenant_link(slug, f"/invitation/{token.secret}")
        # Bilingual like every mail of the platform: the invitee's language is not known yet.
        where = make_mailer(settings.smtp_url, settings.outbox_dir, settings.mail_from).send(Mail(
            to=address, subject=both(_l("You are invited to %(name)s on Courtyard", name=tenant.name)),
            text=both(_l("You are invited to %(name)s. Accept within 7 days:", name=tenant.name), sep="\n")
            + f"\n\n{link}\n"))
        click.echo(f"Invited {address} ({role}) to {slug}; mail sent to {where}.\nAccept link (valid 7 days): {link}")


@users.command("token")
@click.argument("slug")
@click.argument("email")
@click.option("--name", default="CLI token", show_default=True, help="What the token is for (at most 100 characters).")
@click.option("--expires-days", type=int, default=None, help="Lifetime in days (1-3650); without it, until revoked.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"token": ..., "id": ..., "prefix": ..., "expires_at": ...}.')
@domain_errors
def users_token(slug: str, email: str, name: str, expires_days: int | None, as_json: bool) -> None:
    """Create a personal API token for a user: it acts with exactly that user's permissions; shown only now."""
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        bind_tenant(session, tenant)
        address = services.clean_email(email)
        user = services.find_user_by_email(session, address)
        if user is None:
            raise click.ClickException(f"No user {address} in {slug}.")
        new = services.create_personal_token(session, Actor.system("cli"), tenant, user_id=user.id, name=name,
                                             expires_days=expires_days)
        token_id, prefix, expires_at = str(new.token.id), new.token.prefix, new.token.expires_at
    expires = expires_at.astimezone(dt.UTC).isoformat() if expires_at else None
    if as_json:
        click.echo(json.dumps({"token": new.secret, "id": token_id, "prefix": prefix, "expires_at": expires}))
    else:
        click.echo(f"token:      {new.secret}\nid:         {token_id}\nexpires_at: {expires or 'never'}\n"
                   f"It acts as {address} in {slug}; it is not shown again.")


@click.group()
def clients() -> None:
    """Manage a tenant's OAuth clients (machine access)."""


@clients.command("create")
@click.argument("slug")
@click.option("--scopes", default=None, help="Space- or comma-separated scopes (default: every scope).")
@click.option("--name", default="CLI client", show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"client_id": ..., "client_secret": ...}.')
@domain_errors
def clients_create(slug: str, scopes: str | None, name: str, as_json: bool) -> None:
    """Create an OAuth client for the client-credentials grant; the secret is shown only now."""
    wanted = sorted(all_names()) if not scopes else [s for s in scopes.replace(",", " ").split() if s]
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        new = services.create_client(session, Actor.system("cli"), tenant, name=name, scopes=wanted)
        client_id, secret, granted = new.client.client_id, new.secret, new.client.scopes
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "client_secret": secret}))
    else:
        click.echo(f"client_id:     {client_id}\nclient_secret: {secret}\nscopes:        {' '.join(granted)}")


@clients.command("revoke")
@click.argument("slug")
@click.argument("client_id")
@domain_errors
def clients_revoke(slug: str, client_id: str) -> None:
    """Revoke a client and all its tokens."""
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        services.revoke_client(session, Actor.system("cli"), tenant, client_id)
    click.echo(f"Revoked {client_id}.")


COMMANDS = [tenants, migrate, users, clients]
