"""Researcher accounts and their login sessions."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import defaultdict, deque

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from communitybots.store import Admin, AdminSession, utcnow

from .security import hash_password, new_token, token_hash, verify_password

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
MIN_PASSWORD = 10


class AccountError(ValueError):
    """An account cannot be created (the message says why, in one line)."""


class LoginThrottle:
    """At most ``limit`` failed logins per username in ``window_s`` seconds (per process).

    Slows password guessing; argon2 already makes each guess cost tens of milliseconds.
    """

    def __init__(self, limit: int = 5, window_s: float = 900.0):
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait_s(self, username: str, now: float | None = None) -> int:
        """Seconds before ``username`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures[username]
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if len(failures) < self.limit:
                return 0
            return max(1, int(failures[0] + self.window_s - now + 0.999))

    def failed(self, username: str, now: float | None = None) -> None:
        with self._lock:
            self._failures[username].append(time.monotonic() if now is None else now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)


def create_admin(db: Session, username: str, password: str) -> Admin:
    if not USERNAME.match(username):
        raise AccountError("username: use 1-100 letters, digits, '_', '.', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if db.scalar(select(Admin).where(Admin.username == username)) is not None:
        raise AccountError(f"username: {username!r} already exists")
    admin = Admin(username=username, password_hash=hash_password(password))
    db.add(admin)
    db.commit()
    return admin


def log_in(db: Session, username: str, password: str, hours: float) -> str | None:
    """A new session token if the password is right, else None."""
    admin = db.scalar(select(Admin).where(Admin.username == username))
    if admin is None:
        verify_password(_DUMMY_HASH, password)  # same time whether or not the user exists
        return None
    if not verify_password(admin.password_hash, password):
        return None
    token = new_token()
    now = utcnow()
    db.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
    db.add(AdminSession(token_hash=token_hash(token), admin_id=admin.id, created_at=now,
                        expires_at=now + dt.timedelta(hours=hours)))
    admin.last_login_at = now
    db.commit()
    return token


def log_out(db: Session, token: str | None) -> None:
    if token:
        db.execute(delete(AdminSession).where(AdminSession.token_hash == token_hash(token)))
        db.commit()


_DUMMY_HASH = hash_password("not a real password, only for timing")
