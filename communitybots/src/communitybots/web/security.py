"""Secrets of the platform: session tokens, password hashes, CSRF tokens.

- Session tokens (participants and researchers) are 32 random bytes, URL-safe; the
  database keeps only their SHA-256, so a leaked database opens no session.
- Researcher passwords are hashed with argon2id (``argon2-cffi`` defaults).
- CSRF: double-submit. Every browser gets a random ``cb_csrf`` cookie; every form
  carries it in a hidden ``csrf_token`` field and every script request in an
  ``X-CSRF-Token`` header. Another site can make the browser send the cookie but cannot
  read it, so it cannot put the matching value in the form. Cookies are also
  ``SameSite=Lax`` (participants) / ``Strict`` (researchers). Once a researcher is
  logged in, the researcher pages' token is derived from the login session instead
  (``session_csrf``): a token seen in one session is worth nothing in another, and it
  changes at every login.
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
DEVICE_COOKIE = "cb_device"

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


def session_csrf(session_token: str) -> str:
    """The CSRF token of a researcher login session (derived from its cookie's token)."""
    return hashlib.sha256(b"csrf/" + session_token.encode("utf-8", "replace")).hexdigest()


def expected_csrf(path: str, cookies: dict[str, str]) -> str | None:
    """The CSRF token a request to ``path`` must carry: the login session's on researcher
    pages when logged in, else the browser's ``cb_csrf`` cookie."""
    admin = cookies.get(ADMIN_COOKIE)
    if admin and path.startswith("/admin"):
        return session_csrf(admin)
    return cookies.get(CSRF_COOKIE)


def csrf_matches(cookie_value: str | None, submitted: str | None) -> bool:
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(cookie_value.encode("utf-8", "replace"),
                               submitted.encode("utf-8", "replace"))


def completion_code() -> str:
    """A code participants paste back into a crowdsourcing platform (e.g. CB-7K3QX9MZ)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "CB-" + "".join(secrets.choice(alphabet) for _ in range(8))
