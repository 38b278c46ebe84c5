"""`courtyard crm import|export`: records of any entity from and to CSV or xlsx files, thin over the services."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import bind_tenant
from core.i18n import LOCALE_NAMES
from crm.records import exporting, importing, tabular
from crm.records.entity import Entity, entities, find_entity
from crm.records.scope import Viewer, viewer_for
from tenants import services
from tenants.cli import _rt, domain_errors
from tenants.models import Role, User

#: Errors listed by the plain-text report (all of them are in --json).
SHOWN_ERRORS = 50


@click.group()
def crm() -> None:
    """Import and export CRM records (customers, contacts, activities, tasks …)."""


def _entity(key: str) -> Entity:
    ent = find_entity(key)
    if ent is None:
        known = ", ".join(sorted(e.key for e in entities()))
        raise click.ClickException(f"No entity '{key}'; choose one of: {known}.")
    return ent


def _viewer(session: Session, email: str | None, locale: str) -> Viewer:
    """The user the command acts as: ``--as EMAIL``, else the tenant's longest-standing active admin."""
    if email:
        user = services.find_user_by_email(session, email)
        if user is None or not user.active:
            raise click.ClickException(f"No active user {email} in this workspace.")
    else:
        user = session.scalar(select(User).join(Role, User.role_id == Role.id).where(
            Role.key == "admin", User.active).order_by(User.created_at, User.id).limit(1))
        if user is None:
            raise click.ClickException("This workspace has no active administrator; name a user with --as EMAIL.")
    return viewer_for(session, services.actor_for(user, request_id="cli"), locale=locale)


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise click.ClickException(f"{path} is {size / 1_048_576:.1f} MB; the limit is "
                                       f"{max_bytes / 1_048_576:.1f} MB (COURTYARD_IMPORT_MAX_BYTES).")
        return path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"Cannot read {path}: {exc.strerror or exc}.") from None


@crm.command("import")
@click.argument("slug")
@click.argument("entity_key", metavar="ENTITY")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Import the good rows and skip the bad ones.")
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"total", "imported", "skipped", "errors": [{"line", "field", "message"}]}.')
@click.option("--as", "as_email", default=None, metavar="EMAIL",
              help="Act as this user (their rights; records are theirs). Default: the first administrator.")
@click.option("--locale", type=click.Choice(sorted(LOCALE_NAMES)), default="en", show_default=True,
              help="Language of the messages and of dictionary labels.")
@domain_errors
def import_command(slug: str, entity_key: str, file: Path, skip_invalid: bool, dry_run: bool, as_json: bool,
                   as_email: str | None, locale: str) -> None:
    """Import FILE (CSV in UTF-8 or GB18030, or xlsx) as records of ENTITY into the workspace SLUG.

    Headers are matched to fields by their Chinese or English labels; other columns are left out. Nothing
    is imported while any row is bad, unless --skip-invalid. Exits 0 only when every row was imported
    (with --dry-run: would be).
    """
    ent = _entity(entity_key)
    runtime = _rt()
    runtime.engine  # noqa: B018 - the settings are resolved with the engine
    settings = runtime.settings
    data = _read(file, settings.import_max_bytes)
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        bind_tenant(session, tenant)
        viewer = _viewer(session, as_email, locale)
        result = importing.run(session, viewer, ent, lambda: tabular.read_table(
            data, file.name, max_rows=settings.import_max_rows, max_bytes=settings.import_max_bytes),
            filename=file.name, dry_run=dry_run, skip_invalid=skip_invalid)
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        _report(result, ent)
    if not result.complete:
        sys.exit(1)


def _report(result: importing.ImportResult, ent: Entity) -> None:
    verb = "would import" if result.dry_run else "imported"
    click.echo(f"{result.total} row(s): {verb} {result.imported} {ent.key}, skipped {result.skipped}"
               f" ({result.bad_rows} bad).")
    if result.ignored_columns:
        click.echo(f"Columns left out (no matching field): {', '.join(result.ignored_columns)}")
    for error in result.errors[:SHOWN_ERRORS]:
        click.echo(f"  line {error.line}, {error.field}: {error.message}")
    if len(result.errors) > SHOWN_ERRORS:
        click.echo(f"  … and {len(result.errors) - SHOWN_ERRORS} more (use --json for all).")
    if result.bad_rows and not result.imported and not result.dry_run:
        click.echo("Nothing was imported. Fix these rows, or run again with --skip-invalid.")


@crm.command("export")
@click.argument("slug")
@click.argument("entity_key", metavar="ENTITY")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(exporting.FORMATS), default=None,
              help="csv or xlsx (default: from FILE's extension, else csv).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A list parameter, as in the list's URL: region=beijing, q=华为, columns=name,phone …")
@click.option("--as", "as_email", default=None, metavar="EMAIL",
              help="Export what this user may see. Default: the first administrator (everything).")
@click.option("--locale", type=click.Choice(sorted(LOCALE_NAMES)), default="en", show_default=True,
              help="Language of the headers and labels.")
@domain_errors
def export_command(slug: str, entity_key: str, file: Path, fmt: str | None, params: tuple[str, ...],
                   as_email: str | None, locale: str) -> None:
    """Export the records of ENTITY in the workspace SLUG to FILE (CSV in UTF-8 with a BOM, or xlsx)."""
    ent = _entity(entity_key)
    chosen = fmt or ("xlsx" if file.suffix.lower() == ".xlsx" else "csv")
    pairs = []
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"'{item}' is not NAME=VALUE.", param_hint="--param")
        pairs.append((name, value))
    count = 0
    with _rt().db.transaction() as session:
        tenant = services.usable(services.get_tenant(session, slug))
        bind_tenant(session, tenant)
        viewer = _viewer(session, as_email, locale)
        plan = exporting.prepare(session, viewer, ent, pairs, fmt=chosen)

        def counted() -> Iterator[list[Any]]:
            nonlocal count
            for row in exporting.rows(session, plan):
                count += 1
                yield row

        try:
            with file.open("wb") as out:
                for chunk in exporting.chunks(plan, counted()):
                    out.write(chunk)
        except OSError as exc:
            raise click.ClickException(f"Cannot write {file}: {exc.strerror or exc}.") from None
    click.echo(f"Exported {count} {ent.key} to {file} ({chosen}).")


COMMANDS = [crm]
