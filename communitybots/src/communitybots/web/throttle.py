"""Counters shared by every server process through the database (table ``throttle``).

Two kinds, each one row per (scope, key), the key a SHA-256 of what is counted (a client
address, an account name, a device cookie), so nothing a client sends is stored as is
and every key has the same small size:

- ``Backoff`` (failed logins): ``free`` failures in a row block the key for ``base_s``
  seconds, each further one twice as long as the one before, at most ``max_s``. A key with no
  failure for ``reset_s`` starts again from zero. An attempt is *reserved* before the
  password is checked, in one transaction that holds the row: two processes cannot both
  spend the last free attempt.
- ``Window`` (consents per address): at most ``limit`` per ``window_s``; each window has
  a random ``tag`` that the participants created in it keep (``origin_group``), so that
  a flood from one address can be found and excluded from the analysis without storing
  the address.

Rows whose last use is older than ``KEEP`` are deleted whenever a new row is made, and
the table never holds more than ``MAX_ROWS`` rows (the oldest go first): its size is
bounded whatever clients send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from communitybots.store import ThrottleRow, utcnow

KEEP = dt.timedelta(days=1)
MAX_ROWS = 100_000
_T = ThrottleRow.__table__


def key_of(value: str) -> str:
    """The stored key of ``value`` (SHA-256, hex)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def address_key(host: str | None) -> str:
    """A client address as counted: IPv6 addresses by their /64 (one host usually holds a
    whole /64), anything unparsable as itself."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _insert_ignore(conn: Connection, scope: str, key: str, now: dt.datetime) -> bool:
    """Create the row if missing; True when it was created."""
    values = {"scope": scope, "key": key, "count": 0, "window_start": now, "last_at": now,
              "blocked_until": None, "tag": secrets.token_hex(8)}
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(_T).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(_T).values(**values).on_conflict_do_nothing()
    return bool(conn.execute(stmt).rowcount)


def _prune(conn: Connection, now: dt.datetime) -> None:
    conn.execute(delete(_T).where(_T.c.last_at < now - KEEP))
    total = conn.scalar(select(func.count()).select_from(_T)) or 0
    if total > MAX_ROWS:
        cutoff = conn.scalar(select(_T.c.last_at).order_by(_T.c.last_at.desc())
                             .offset(MAX_ROWS).limit(1))
        if cutoff is not None:
            conn.execute(delete(_T).where(_T.c.last_at <= cutoff))


def _locked_row(conn: Connection, scope: str, key: str, now: dt.datetime):
    if _insert_ignore(conn, scope, key, now):
        _prune(conn, now)
    # SQLite: the INSERT above already took the database's write lock for this
    # transaction; PostgreSQL: FOR UPDATE locks the row until commit
    return conn.execute(select(_T).where(_T.c.scope == scope, _T.c.key == key)
                        .with_for_update()).one()


def _seconds(delta: dt.timedelta) -> int:
    return max(1, int(delta.total_seconds() + 0.999))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff of failures per key (see the module's docstring)."""

    scope: str
    free: int
    base_s: float = 1.0
    max_s: float = 900.0
    reset_s: float = 3600.0

    def delay_s(self, failures: int) -> float:
        """Seconds a key is blocked after its ``failures``-th failure."""
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - self.free, 60))

    def reserve(self, engine: Engine, value: str, now: dt.datetime | None = None) -> int:
        """Count one attempt of ``value`` as a failure (undone by ``clear`` on success).
        Returns 0 if the attempt may go on, else the seconds to wait (nothing counted)."""
        now = now or utcnow()
        key = key_of(value)
        with engine.begin() as conn:
            row = _locked_row(conn, self.scope, key, now)
            if row.blocked_until is not None and row.blocked_until > now:
                return _seconds(row.blocked_until - now)
            count = row.count
            if row.last_at < now - dt.timedelta(seconds=self.reset_s):
                count = 0
            count += 1
            delay = self.delay_s(count)
            blocked = now + dt.timedelta(seconds=delay) if delay else None
            conn.execute(update(_T).where(_T.c.scope == self.scope, _T.c.key == key)
                         .values(count=count, last_at=now, blocked_until=blocked))
        return 0

    def wait_s(self, engine: Engine, value: str, now: dt.datetime | None = None) -> int:
        """Seconds before ``value`` may try again (0: now); counts nothing."""
        now = now or utcnow()
        with engine.connect() as conn:
            blocked = conn.scalar(select(_T.c.blocked_until).where(
                _T.c.scope == self.scope, _T.c.key == key_of(value)))
        return _seconds(blocked - now) if blocked is not None and blocked > now else 0

    def failures(self, engine: Engine, value: str) -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(_T.c.count).where(
                _T.c.scope == self.scope, _T.c.key == key_of(value))) or 0)

    def release(self, engine: Engine, value: str) -> None:
        """Take back one reserved attempt that turned out not to be a failure."""
        key = key_of(value)
        with engine.begin() as conn:
            conn.execute(update(_T).where(_T.c.scope == self.scope, _T.c.key == key,
                                          _T.c.count > 0).values(count=_T.c.count - 1))
            count = conn.scalar(select(_T.c.count).where(_T.c.scope == self.scope,
                                                         _T.c.key == key))
            if count is not None and not self.delay_s(count):
                conn.execute(update(_T).where(_T.c.scope == self.scope, _T.c.key == key)
                             .values(blocked_until=None))

    def clear(self, engine: Engine, value: str) -> None:
        with engine.begin() as conn:
            conn.execute(delete(_T).where(_T.c.scope == self.scope,
                                          _T.c.key == key_of(value)))


@dataclass(frozen=True)
class Window:
    """At most ``limit`` events per key in a fixed window of ``window_s`` seconds."""

    scope: str
    limit: int
    window_s: float

    def take(self, engine: Engine, value: str,
             now: dt.datetime | None = None) -> tuple[int, str]:
        """Count one event: (0, the window's tag), or (seconds to wait, "") when full."""
        now = now or utcnow()
        key = key_of(value)
        window = dt.timedelta(seconds=self.window_s)
        with engine.begin() as conn:
            row = _locked_row(conn, self.scope, key, now)
            count, start, tag = row.count, row.window_start, row.tag or secrets.token_hex(8)
            if start <= now - window:
                count, start, tag = 0, now, secrets.token_hex(8)
            if count >= self.limit:
                return _seconds(start + window - now), ""
            conn.execute(update(_T).where(_T.c.scope == self.scope, _T.c.key == key)
                         .values(count=count + 1, window_start=start, last_at=now, tag=tag))
        return 0, tag
