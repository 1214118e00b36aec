"""Storage of the platform: SQLAlchemy 2 models, engine and schema migrations.

SQLite in a local file by default; PostgreSQL when the URL says so
(``postgresql+psycopg://user:pass@host/db``). The schema is created and upgraded by
Alembic (``communitybots/migrations``) when the platform starts, never by
``create_all``, so a running database always matches a numbered revision.

Tables
------
surveys         one row per distinct survey specification served (by content hash),
                with its version label
participants    one per consenting person: survey version, condition, CTM state (JSON),
                progress
messages        what each side said: who, agent, topic, text, intent, quality parts,
                survey version
events          the CTM's decisions with their reasons, interleaved with messages by seq
answers         questionnaire answers in long format (participant, phase pre/post, item,
                value)
admins          researcher accounts (argon2 hashes; ``disabled_at`` blocks a login)
admin_sessions  researcher login sessions (hashes of the cookie tokens)
admin_devices   browsers a researcher logged in from (hashes of the device cookies)
throttle        counters shared by all server processes: failed logins per address,
                account and device, consents per address (rows expire after a day)
wizard_claims   which researcher answers a wizard conversation (one row per
                conversation: the primary key lets only one operator hold it)
audit_log       withdrawals, deletions, exclusions and purges: when, by whom, whose

A participant's messages and events share one sequence counter (``seq``) so a
transcript replays in the exact order things happened. A participant message carries
the client's idempotency key (``client_id``), unique per participant: a retried POST
finds the stored turn instead of storing it twice.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///communitybots.sqlite3"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

QUALITY_PARTS: tuple[str, ...] = (
    "length",
    "informativeness",
    "relevance",
    "specificity",
    "gibberish",
    "overall",
)


def utcnow() -> dt.datetime:
    """Naive UTC timestamp: every time in the database is UTC without an offset."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SurveyRow(Base):
    __tablename__ = "surveys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    spec_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the survey's ``version`` label, or the start of ``spec_hash`` when it has none
    label: Mapped[str] = mapped_column(String(100), default="", server_default="")
    spec_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Participant(Base):
    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    survey_pk: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    #: the survey version the participant saw: content hash and label (as in ``surveys``)
    survey_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    survey_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    condition: Mapped[str] = mapped_column(String(16))  # "multi" | "single"
    assignment: Mapped[str] = mapped_column(String(16))  # "random" | "link"
    status: Mapped[str] = mapped_column(String(16), default="chatting")
    state_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=0)
    next_seq: Mapped[int] = mapped_column(Integer, default=0)
    next_turn: Mapped[int] = mapped_column(Integer, default=0)
    completion_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    consented_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    chat_finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: last message (or consent): idle sessions expire, and gaps count towards active time
    last_active_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: seconds of active time (gaps between messages, each capped), the CTM's time budget
    active_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    #: the browser's session was ended (completion, "I'm a new participant", idle expiry)
    session_ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: random id shared by the consents of one address within one rate-limit window
    origin_group: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    #: excluded from the analysis (dashboard, summary) by a researcher, with the reason
    excluded_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    exclusion_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: wizard condition: the CTM's suggestion for the last participant message, not yet
    #: committed (its state, replies and events; ``answered`` once an operator replied)
    wizard_pending: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: recruitment panel: the participant's id there (``?PROLIFIC_PID=``) and the other
    #: parameters the survey keeps (``STUDY_ID``, ``SESSION_ID``)
    panel_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    panel_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: when the chat page opened for the first time after the pre-chat pages (the
    #: elapsed-time clock and "End chat" count from here; None: at consent)
    chat_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: raw text purged after the retention period (measures and word counts stay)
    purged_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    # optimistic locking: an UPDATE whose version moved on raises StaleDataError
    __mapper_args__ = {"version_id_col": version}


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("participant_id", "seq", name="uq_messages_participant_seq"),
        UniqueConstraint("participant_id", "client_id", name="uq_messages_participant_client"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    turn: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # "participant" | "bot"
    #: the survey version of the conversation: content hash and label
    survey_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    survey_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    agent_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    topic_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(32), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_length: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_informativeness: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_relevance: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_specificity: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_gibberish: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_overall: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    #: wizard condition: the researcher who wrote this bot turn (name kept if the account
    #: goes) and what the CTM would have said instead
    operator_id: Mapped[int | None] = mapped_column(
        ForeignKey("admins.id", ondelete="SET NULL"), nullable=True)
    operator_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    suggestion: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: words of ``text``, kept when the text is purged after the retention period
    words: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("participant_id", "seq", name="uq_events_participant_seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    topic_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Answer(Base):
    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("participant_id", "item_id", name="uq_answers_participant_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[str] = mapped_column(String(100))
    #: "pre" (before the chat: demographics) or "post" (the questionnaire after it)
    phase: Mapped[str] = mapped_column(String(8), default="post", server_default="post")
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: last request of the operator console: a researcher seen lately counts as online
    wizard_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AdminSession(Base):
    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(
        ForeignKey("admins.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AdminDevice(Base):
    """A browser that logged in to an account: its failed logins are counted apart from
    the account's, so password guessing elsewhere cannot lock the owner out of it."""

    __tablename__ = "admin_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(
        ForeignKey("admins.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ThrottleRow(Base):
    """One counter of ``web/throttle.py``: (scope, key) with its window and block."""

    __tablename__ = "throttle"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    tag: Mapped[str | None] = mapped_column(String(16), nullable=True)


class WizardClaim(Base):
    """The operator answering a wizard conversation until ``expires_at`` (the console
    renews it while open). One row per conversation: a second operator's claim fails on
    the primary key, or on the conditional UPDATE while the claim is live."""

    __tablename__ = "wizard_claims"

    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"),
                                          index=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AuditRow(Base):
    """One entry of the audit log: what happened to whose data, when, by whom
    (``researcher NAME``, ``participant``, ``retention``). ``detail`` holds counts and
    settings, never what a participant wrote."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    #: the participant's public id (kept after their rows are deleted)
    participant: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str = DEFAULT_DATABASE_URL, *, pool_size: int = 40,
                max_overflow: int = 0) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, foreign keys and a busy timeout.

    The pool holds up to ``pool_size + max_overflow`` (40) connections: as many as the
    server's thread pool has threads, so no request thread waits for a connection. All 40
    are kept once opened: a connection beyond ``pool_size`` is closed when it comes back,
    and under load (10 + 30 before) every request past the tenth opened a new one (on
    PostgreSQL a server process started and authenticated per request).
    """
    # hide_parameters: a failing statement's error (and so the server log) never shows
    # the values it carried, i.e. what a participant wrote
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                               pool_size=pool_size, max_overflow=max_overflow,
                               hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                         pool_pre_ping=True, hide_parameters=True)


def _alembic(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` with Alembic, in-process (idempotent)."""
    _alembic(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to ``revision`` ("base" drops every table)."""
    _alembic(engine, "downgrade", revision)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (replies are built from them)."""
    return sessionmaker(engine, expire_on_commit=False)
