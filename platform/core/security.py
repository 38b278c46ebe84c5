"""Authentication primitives: password hashing, opaque tokens, constant-time checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.i18n import Message, _l, _ln

# argon2id with the library's RFC 9106 "low memory" profile (64 MiB): ~0.13 s per hash on a 2-core machine,
# which is most of what provisioning a tenant costs (bench/README.md) and worth it for every password.
_hasher = PasswordHasher()
# A fixed hash to verify against when the user does not exist, so a wrong e-mail costs the same time
# as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("courtyard-dummy-password")

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def password_problem(password: str) -> Message | None:
    """Why a new password is refused, or None. Length beats composition rules (NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return _ln("Use at least %(num)d character.", "Use at least %(num)d characters.", MIN_PASSWORD_LENGTH)
    if len(password) > MAX_PASSWORD_LENGTH:
        return _ln("Use at most %(num)d character.", "Use at most %(num)d characters.", MAX_PASSWORD_LENGTH)
    if password.strip() == "" or len(set(password)) < 4:
        return _l("This password is too easy to guess.")
    return None


def password_hash_problem(value: str) -> Message | None:
    """Why a stored password hash is not one this platform could have written, or None.

    Hashes arrive from outside through tenant archives: one with a larger memory or time cost than ours
    would let a crafted account make every sign-in attempt allocate gigabytes.
    """
    try:
        params = extract_parameters(value)
    except (InvalidHashError, ValueError):
        return _l("Not an argon2 password hash.")
    if params.type is not Type.ID:
        return _l("Not an argon2id password hash.")
    if (params.memory_cost > _hasher.memory_cost or params.time_cost > _hasher.time_cost
            or params.parallelism > _hasher.parallelism):
        return _l("The password hash costs more than this server's own.")
    return None


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """Tokens are stored as SHA-256 digests: a leaked table does not leak usable credentials."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
