"""Secrets of the platform: session tokens, password hashes, CSRF tokens.

- Session tokens (participants and researchers) are 32 random bytes, URL-safe; the
  database keeps only their SHA-256, so a leaked database opens no session.
- Researcher passwords are hashed with argon2id (``argon2-cffi`` defaults).
- CSRF: double-submit. Every browser gets a random ``cb_csrf`` cookie; every form
  carries it in a hidden ``csrf_token`` field and every script request in an
  ``X-CSRF-Token`` header. Another site can make the browser send the cookie but cannot
  read it, so it cannot put the matching value in the form. Cookies are also
  ``SameSite=Lax`` (participants) / ``Strict`` (researchers).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

CSRF_COOKIE = "cb_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PARTICIPANT_COOKIE = "cb_session"
ADMIN_COOKIE = "cb_admin"

_hasher = PasswordHasher()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def csrf_matches(cookie_value: str | None, submitted: str | None) -> bool:
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(cookie_value.encode(), submitted.encode())


def completion_code() -> str:
    """A code participants paste back into a crowdsourcing platform (e.g. CB-7K3QX9MZ)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "CB-" + "".join(secrets.choice(alphabet) for _ in range(8))
