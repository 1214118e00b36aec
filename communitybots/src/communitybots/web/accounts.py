"""Researcher accounts, their login sessions, and the login throttle.

Password guessing is slowed in the database (``throttle.py``), so every server process
counts the same failures, and nothing grows with what clients send:

- per client address: after 10 failures in a row the address waits 1 s, then 2 s, 4 s
  ... up to 15 min after each further failure (so many usernames tried with one
  password are slowed too);
- per account: the same after 5 failures;
- a browser that has logged in to the account before holds a device cookie
  (``cb_device``); its attempts on that account are counted for that device alone, so
  guessing from elsewhere cannot lock the owner out of a browser they used before. On a
  new browser, ``communitybots admin unlock`` or ``reset-password`` clears the account's
  counter.

An attempt refused by the account's counter still counts against its address (guessing
at a locked account slows that address down too). Usernames longer than 100 and
passwords longer than 1024 characters are refused before anything is counted, looked up
or hashed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from communitybots.store import Admin, AdminDevice, AdminSession, utcnow

from .inputs import InputError, check_text
from .security import hash_password, new_token, token_hash, verify_password
from .throttle import Backoff, address_key

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
MAX_USERNAME = 100
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MIN_STRENGTH = 3  # zxcvbn's score, 0-4: 3 is "safely unguessable" for online attacks
DEVICE_DAYS = 90
DEVICES_PER_ACCOUNT = 10

ADDRESS = Backoff("login_addr", free=10)
ACCOUNT = Backoff("login_acct", free=5)
DEVICE = Backoff("login_dev", free=5)


class AccountError(ValueError):
    """An account cannot be created or changed (the message says why, in one line)."""


def check_password(password: str, username: str) -> None:
    """AccountError unless ``password`` is long and hard enough to guess (zxcvbn)."""
    from zxcvbn import zxcvbn

    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password: at most {MAX_PASSWORD} characters")
    try:
        check_text(password, "password")
    except InputError as err:
        raise AccountError(str(err)) from None
    # zxcvbn's cost grows with the length; its first 100 characters judge it well enough
    result = zxcvbn(password[:100], user_inputs=[username, "communitybots", "researcher"])
    if result["score"] < MIN_STRENGTH:
        warning = result["feedback"].get("warning") or "too easy to guess"
        raise AccountError(f"password: too easy to guess (strength {result['score']} of 4, "
                           f"{MIN_STRENGTH} needed): {warning.rstrip('.')}")


def create_admin(db: Session, username: str, password: str) -> Admin:
    if not USERNAME.match(username):
        raise AccountError("username: use 1-100 letters, digits, '_', '.', '@' or '-'")
    check_password(password, username)
    if db.scalar(select(Admin).where(Admin.username == username)) is not None:
        raise AccountError(f"username: {username!r} already exists")
    admin = Admin(username=username, password_hash=hash_password(password))
    db.add(admin)
    db.commit()
    return admin


def get_admin(db: Session, username: str) -> Admin:
    admin = db.scalar(select(Admin).where(Admin.username == username))
    if admin is None:
        raise AccountError(f"username: no account {username!r}")
    return admin


def revoke_sessions(db: Session, admin: Admin) -> int:
    """End every login session of ``admin``; the number ended."""
    ended = db.execute(delete(AdminSession).where(AdminSession.admin_id == admin.id)).rowcount
    db.commit()
    return int(ended or 0)


def set_password(db: Session, engine: Engine, admin: Admin, password: str) -> None:
    """A new password: every session and known device of the account ends, and its
    failed-login counter is cleared."""
    check_password(password, admin.username)
    admin.password_hash = hash_password(password)
    db.execute(delete(AdminDevice).where(AdminDevice.admin_id == admin.id))
    revoke_sessions(db, admin)
    unlock(engine, admin.username)


def set_disabled(db: Session, admin: Admin, disabled: bool) -> None:
    """Disable (every session ends, no login) or enable an account."""
    admin.disabled_at = utcnow() if disabled else None
    if disabled:
        revoke_sessions(db, admin)
    db.commit()


def delete_admin(db: Session, admin: Admin) -> None:
    db.execute(delete(AdminSession).where(AdminSession.admin_id == admin.id))
    db.execute(delete(AdminDevice).where(AdminDevice.admin_id == admin.id))
    db.delete(admin)
    db.commit()


def unlock(engine: Engine, username: str) -> None:
    """Clear the failed-login counter of an account (not those of addresses)."""
    ACCOUNT.clear(engine, username.lower())


@dataclass
class LoginResult:
    """``session`` is the new session token (None: refused); ``wait_s`` > 0 when the
    throttle refused before checking the password, with ``why`` the one-line reason;
    ``device`` is a new device cookie to set (None: keep the one sent)."""

    session: str | None = None
    wait_s: int = 0
    why: str = ""
    device: str | None = None


def check_login_input(username: str, password: str) -> None:
    """InputError for a username or password that cannot be an account's."""
    check_text(username, "username", MAX_USERNAME)
    check_text(password, "password", MAX_PASSWORD)


def _known_device(db: Session, token: str | None, username: str,
                  now: dt.datetime) -> AdminDevice | None:
    if not token or len(token) > 100:
        return None
    return db.scalar(select(AdminDevice).join(Admin, Admin.id == AdminDevice.admin_id).where(
        AdminDevice.token_hash == token_hash(token), Admin.username == username,
        AdminDevice.expires_at > now))


def attempt_login(db: Session, engine: Engine, username: str, password: str, *,
                  address: str | None, device_token: str | None,
                  hours: float) -> LoginResult:
    """One login attempt through the throttle (call ``check_login_input`` first)."""
    now = utcnow()
    device = _known_device(db, device_token, username, now)
    if device is not None:
        buckets = [(DEVICE, f"{device.id}", "from this browser")]
    else:
        buckets = [(ADDRESS, address_key(address), "from this address"),
                   (ACCOUNT, username.lower(), "for this account")]
    for backoff, value, where in buckets:
        wait = backoff.reserve(engine, value, now)
        if wait:
            return LoginResult(wait_s=wait, why=f"Too many failed logins {where}; "
                                                f"try again in {wait} s.")
    token = log_in(db, username, password, hours)
    if token is None:
        return LoginResult()
    for backoff, value, _where in buckets:
        if backoff is ADDRESS:
            backoff.release(engine, value)  # a success from an address is no failure
        else:
            backoff.clear(engine, value)
    new_device = None
    if device is None:
        new_device = new_token()
        admin = db.scalar(select(Admin).where(Admin.username == username))
        assert admin is not None
        db.add(AdminDevice(token_hash=token_hash(new_device), admin_id=admin.id,
                           created_at=now, expires_at=now + dt.timedelta(days=DEVICE_DAYS)))
        db.flush()
        keep = db.scalars(select(AdminDevice.id).where(AdminDevice.admin_id == admin.id)
                          .order_by(AdminDevice.id.desc()).limit(DEVICES_PER_ACCOUNT)).all()
        db.execute(delete(AdminDevice).where(AdminDevice.admin_id == admin.id,
                                             AdminDevice.id.not_in(keep)))
        db.execute(delete(AdminDevice).where(AdminDevice.expires_at <= now))
        db.commit()
    return LoginResult(session=token, device=new_device)


def log_in(db: Session, username: str, password: str, hours: float) -> str | None:
    """A new session token if the password is right and the account enabled, else None."""
    admin = db.scalar(select(Admin).where(Admin.username == username))
    if admin is None:
        verify_password(_DUMMY_HASH, password)  # same time whether or not the user exists
        return None
    if not verify_password(admin.password_hash, password) or admin.disabled_at is not None:
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
