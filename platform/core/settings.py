"""One typed settings object, read from ``COURTYARD_*`` environment variables and validated once."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """Server-side limits every connection of a process starts with, in milliseconds (0: none).

    ``statement_ms`` cancels a statement that runs longer; ``lock_ms`` gives up a lock wait (a request
    must not queue behind a migration's ``ALTER TABLE``, nor one behind a long export); ``idle_in_transaction_ms``
    ends a session whose transaction sits idle that long (a process stuck between statements must not
    hold its locks and snapshot forever).
    """

    statement_ms: int = 15_000
    lock_ms: int = 5_000
    idle_in_transaction_ms: int = 60_000

    def options(self) -> str:
        """The libpq ``options`` startup parameter that sets them, so no round trip is spent per checkout."""
        return (f"-c statement_timeout={self.statement_ms} -c lock_timeout={self.lock_ms} "
                f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_ms}")


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    msg = f"{name} must be a boolean (1/0, true/false), got {raw!r}"
    raise ConfigError(msg)


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = f"{name} must be an integer, got {raw!r}"
        raise ConfigError(msg) from None
    if value < minimum:
        msg = f"{name} must be at least {minimum}, got {value}"
        raise ConfigError(msg)
    return value


def _locale(name: str, raw: str) -> str:
    if raw not in ("en", "zh"):
        msg = f"{name} must be 'en' or 'zh', got {raw!r}"
        raise ConfigError(msg)
    return raw


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        msg = f"{name} must be one of {', '.join(choices)}, got {raw!r}"
        raise ConfigError(msg)
    return raw


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        msg = f"{name} must start with http:// or https://, got {raw!r}"
        raise ConfigError(msg)
    return raw.rstrip("/")


def _bucket(name: str, raw: str) -> str:
    # The rules AWS, MinIO and OSS share: 3-63 lower-case letters, digits, dots and hyphens.
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", raw):
        msg = f"{name} must be a bucket name (3-63 lower-case letters, digits, '.' and '-'), got {raw!r}"
        raise ConfigError(msg)
    return raw


def _prefix(name: str, raw: str) -> str:
    """A key prefix inside the bucket, kept with one trailing slash, so keys sit in their own folder."""
    from core.storage import KEY_RE  # core.storage needs core.i18n, which needs this module

    prefix = raw.strip("/")
    if not KEY_RE.fullmatch(prefix) or len(prefix) > 200:
        msg = f"{name} must be folder names of letters, digits, '.', '_' and '-' separated by '/', got {raw!r}"
        raise ConfigError(msg)
    return prefix + "/"


def _types(name: str, raw: str) -> frozenset[str]:
    from core.storage import parse_types

    return parse_types(name, raw)


def _default_types() -> frozenset[str]:
    from core.storage import DEFAULT_ALLOWED_TYPES

    return DEFAULT_ALLOWED_TYPES


#: An explicit archive key must be long enough that it cannot be guessed offline from a signed archive.
MIN_ARCHIVE_KEY_LENGTH = 32


def _archive_key(name: str, raw: str) -> str:
    if len(raw) < MIN_ARCHIVE_KEY_LENGTH or any(c.isspace() for c in raw):
        msg = f"{name} must be at least {MIN_ARCHIVE_KEY_LENGTH} characters without spaces"
        raise ConfigError(msg)
    return raw


def _archive_keys(name: str, raw: str) -> tuple[str, ...]:
    return tuple(_archive_key(name, key) for key in raw.split())


#: Optional settings and how each is parsed; the field name upper-cased is the variable's suffix.
_OPTIONAL: dict[str, Callable[[str, str], object]] = {
    "port": lambda n, v: _int(n, v, 1),
    "secure_cookies": _bool,
    "mail_from": lambda _n, v: v,
    "max_body_bytes": lambda n, v: _int(n, v, 1024),
    "signup_limit_per_hour": lambda n, v: _int(n, v, 1),
    "invitations_per_hour": lambda n, v: _int(n, v, 1),
    "web_workers": lambda n, v: _int(n, v, 1),
    "proxy_hops": lambda n, v: _int(n, v, 0),
    "token_requests_per_minute": lambda n, v: _int(n, v, 1),
    "api_requests_per_minute": lambda n, v: _int(n, v, 1),
    "session_ttl_s": lambda n, v: _int(n, v, 60),
    "session_max_age_s": lambda n, v: _int(n, v, 60),
    "token_ttl_s": lambda n, v: _int(n, v, 60),
    "login_attempts": lambda n, v: _int(n, v, 1),
    "login_window_s": lambda n, v: _int(n, v, 10),
    "log_json": _bool,
    "default_locale": _locale,
    "archive_key": _archive_key,
    "archive_old_keys": _archive_keys,
    "archive_max_bytes": lambda n, v: _int(n, v, 1 << 20),
    "import_max_rows": lambda n, v: _int(n, v, 1),
    "import_max_bytes": lambda n, v: _int(n, v, 1024),
    "import_inline_bytes": lambda n, v: _int(n, v, 0),
    "db_statement_timeout_ms": lambda n, v: _int(n, v, 0),
    "db_lock_timeout_ms": lambda n, v: _int(n, v, 0),
    "db_idle_in_transaction_timeout_ms": lambda n, v: _int(n, v, 0),
    "cli_statement_timeout_ms": lambda n, v: _int(n, v, 0),
    "cli_lock_timeout_ms": lambda n, v: _int(n, v, 0),
    "cli_idle_in_transaction_timeout_ms": lambda n, v: _int(n, v, 0),
    "migration_lock_timeout_ms": lambda n, v: _int(n, v, 10),
    "migration_attempts": lambda n, v: _int(n, v, 1),
    "storage_backend": lambda n, v: _choice(n, v, ("local", "s3")),
    "s3_endpoint_url": _url,
    "s3_bucket": _bucket,
    "s3_prefix": _prefix,
    "s3_region": lambda _n, v: v,
    "s3_access_key_id": lambda _n, v: v,
    "s3_secret_access_key": lambda _n, v: v,
    "s3_addressing_style": lambda n, v: _choice(n, v, ("auto", "path", "virtual")),
    "attachment_max_bytes": lambda n, v: _int(n, v, 1),
    "attachment_types": _types,
}


def project_root() -> Path:
    """The checkout (or install) root: ``platform/core/settings.py`` lives two levels below it."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Settings:
    var_dir: Path
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str = ""
    base_domain: str = "localhost"
    port: int = 8000
    single_tenant: str | None = None
    secure_cookies: bool = False
    smtp_url: str | None = None
    mail_from: str = "Courtyard <no-reply@courtyard.local>"
    max_body_bytes: int = 2 * 1024 * 1024
    signup_limit_per_hour: int = 10
    invitations_per_hour: int = 100  # per tenant
    login_attempts: int = 5
    login_window_s: int = 900
    #: Idle lifetime of a signed-in session (each request moves it forward) ...
    session_ttl_s: int = 8 * 3600
    #: ... and its absolute cap, counted from sign-in.
    session_max_age_s: int = 24 * 3600
    token_ttl_s: int = 3600
    token_requests_per_minute: int = 60
    api_requests_per_minute: int = 1200  # per tenant: all its API callers share it
    default_locale: str = "en"
    web_workers: int = 2
    #: Where people reach the platform, for links in mail (never taken from a request's Host header,
    #: which a client controls). Default: http://<base domain>:<port>.
    public_url: str = ""
    #: Reverse proxies in front of the app whose X-Forwarded-* headers are trusted (0: none).
    proxy_hops: int = 0
    log_json: bool = True
    #: Signs tenant archives (HMAC-SHA256); empty: a key derived from ``secret_key``.
    archive_key: str = ""
    #: Keys still accepted when importing (after a rotation), never used to sign.
    archive_old_keys: tuple[str, ...] = ()
    #: The most uncompressed table data one archive may hold (import refuses more, before loading).
    archive_max_bytes: int = 16 << 30
    #: The most data rows and bytes one import file may have (CSV or xlsx), checked before it is read.
    import_max_rows: int = 200_000
    import_max_bytes: int = 50 << 20
    #: Uploads up to this size are imported within the request; larger ones run as a background job.
    import_inline_bytes: int = 1 << 20
    #: Database limits of the web app and the Celery workers (milliseconds, 0: none): see core.db.DbTimeouts.
    db_statement_timeout_ms: int = 15_000
    db_lock_timeout_ms: int = 5_000
    db_idle_in_transaction_timeout_ms: int = 60_000
    #: The same for the `courtyard` command (migrations, exports, imports, tenant deletion): larger, as an
    #: export reads a whole tenant in one snapshot and a migration may rewrite a big table.
    cli_statement_timeout_ms: int = 3_600_000
    cli_lock_timeout_ms: int = 30_000
    cli_idle_in_transaction_timeout_ms: int = 600_000
    #: A migration's DDL waits this long for its locks, then rolls back and tries again (this many
    #: attempts in all, with a doubling pause), so requests never queue behind a waiting ALTER TABLE.
    migration_lock_timeout_ms: int = 2_000
    migration_attempts: int = 5
    #: Where attachments are kept: ``local`` (files under var/attachments/) or ``s3`` (an S3-compatible bucket).
    storage_backend: str = "local"
    #: The S3 service; None: AWS itself (in ``s3_region``). MinIO, OSS etc. give their endpoint here.
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    #: Keys are stored under this folder of the bucket ("" or "name/"), so a bucket can be shared.
    s3_prefix: str = ""
    s3_region: str | None = None
    #: None: boto3's own lookup (AWS_* variables, an instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    #: ``path`` for MinIO and most self-hosted services, ``virtual`` for OSS, ``auto`` for AWS.
    s3_addressing_style: str = "auto"
    #: The largest attachment accepted (an upload route must let a request body this large through).
    attachment_max_bytes: int = 20 * 1024 * 1024
    #: Content types an attachment may have once sniffed (core.storage.sniff).
    attachment_types: frozenset[str] = field(default_factory=_default_types)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def app_timeouts(self) -> DbTimeouts:
        return DbTimeouts(self.db_statement_timeout_ms, self.db_lock_timeout_ms,
                          self.db_idle_in_transaction_timeout_ms)

    @property
    def cli_timeouts(self) -> DbTimeouts:
        return DbTimeouts(self.cli_statement_timeout_ms, self.cli_lock_timeout_ms,
                          self.cli_idle_in_transaction_timeout_ms)

    @property
    def embedded(self) -> bool:
        """True when Courtyard starts its own PostgreSQL and Redis under ``var/``."""
        return self.database_url is None

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def attachments_dir(self) -> Path:
        return self.var_dir / "attachments"

    def tenant_link(self, slug: str, path: str) -> str:
        """An absolute link into a tenant's site for mail: ``<public url>/t/<slug><path>``, or
        ``<public url><path>`` for the single tenant of an intranet install."""
        base = self.public_url or f"http://{self.base_domain}:{self.port}"
        return f"{base}{path}" if self.single_tenant else f"{base}/t/{slug}{path}"

    @property
    def archive_signing_key(self) -> str:
        """The key new archives are signed with: the configured one, or one derived from the secret key
        (so a zero-configuration install signs too, and changing the secret key changes it)."""
        if self.archive_key:
            return self.archive_key
        return hmac.new(self.secret_key.encode(), b"courtyard tenant archive key", hashlib.sha256).hexdigest()

    @property
    def archive_verify_keys(self) -> tuple[str, ...]:
        """Keys an archive may be signed with to be imported: the signing key first, then the old ones."""
        return (self.archive_signing_key, *self.archive_old_keys)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = env.get(f"COURTYARD_{name}")
            return value if value not in (None, "") else None

        var_dir = Path(get("VAR_DIR") or project_root() / "var").resolve()
        database_url = get("DATABASE_URL")
        if database_url is not None and not database_url.startswith(("postgresql", "postgres")):
            msg = f"COURTYARD_DATABASE_URL must be a postgresql:// URL, got {database_url!r}"
            raise ConfigError(msg)
        redis_url = get("REDIS_URL")
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            msg = f"COURTYARD_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {redis_url!r}"
            raise ConfigError(msg)
        single = get("SINGLE_TENANT")
        if single is not None:
            from core.errors import ValidationFailed
            from core.tenancy import validate_slug

            try:
                validate_slug(single, check_reserved=False)
            except ValidationFailed as exc:
                msg = f"COURTYARD_SINGLE_TENANT is not a valid slug: {exc.message}"
                raise ConfigError(msg) from None
        secret = get("SECRET_KEY") or _persistent_secret(var_dir)
        kwargs: dict[str, object] = {
            "var_dir": var_dir,
            "database_url": database_url,
            "redis_url": redis_url,
            "secret_key": secret,
            "base_domain": (get("BASE_DOMAIN") or "localhost").lower(),
            "single_tenant": single,
            "smtp_url": get("SMTP_URL"),
        }
        public_url = get("PUBLIC_URL")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            msg = f"COURTYARD_PUBLIC_URL must start with http:// or https://, got {public_url!r}"
            raise ConfigError(msg)
        for field_name, parse in _OPTIONAL.items():
            raw = get(field_name.upper())
            if raw is not None:
                kwargs[field_name] = parse(f"COURTYARD_{field_name.upper()}", raw)
        settings = cls(**kwargs)  # type: ignore[arg-type]
        if settings.session_max_age_s < settings.session_ttl_s:
            msg = (f"COURTYARD_SESSION_MAX_AGE_S ({settings.session_max_age_s}) must be at least "
                   f"COURTYARD_SESSION_TTL_S ({settings.session_ttl_s})")
            raise ConfigError(msg)
        if settings.storage_backend == "s3" and settings.s3_bucket is None:
            msg = "COURTYARD_STORAGE_BACKEND=s3 needs COURTYARD_S3_BUCKET"
            raise ConfigError(msg)
        if (settings.s3_access_key_id is None) != (settings.s3_secret_access_key is None):
            msg = "COURTYARD_S3_ACCESS_KEY_ID and COURTYARD_S3_SECRET_ACCESS_KEY are set together or not at all"
            raise ConfigError(msg)
        return replace(settings, public_url=(public_url or f"http://{settings.base_domain}:{settings.port}").rstrip("/"))


def _persistent_secret(var_dir: Path) -> str:
    """A development secret kept under var/, so sessions survive a restart of ``make run``.

    Production sets COURTYARD_SECRET_KEY; generating one here keeps the zero-configuration promise
    without shipping a known key in the repository.
    """
    path = var_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        var_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # O_EXCL: two processes starting together must agree on one secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
        return secret
