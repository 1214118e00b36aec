"""The storage engine's settings, which the platform relies on without any test seeing
them: SQLite in WAL mode with foreign keys (so deleting a participant deletes their
messages) and a busy timeout, the connection pool's size, pre-ping on PostgreSQL,
sessions whose objects stay readable after commit, and naive UTC timestamps."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, inspect, select, text

from communitybots.store import (
    Message,
    Participant,
    SurveyRow,
    downgrade,
    make_engine,
    migrate,
    session_factory,
    utcnow,
)


def test_utcnow_is_naive_utc_whatever_the_servers_time_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = utcnow()
        reference = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert now.tzinfo is None
    assert abs((reference - now).total_seconds()) < 5


def test_sqlite_engine_pragmas_and_pool(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10000
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert engine.pool.size() == 40 and engine.pool._max_overflow == 0
        assert engine.hide_parameters is True  # no participant text in error messages or logs
    finally:
        engine.dispose()
    small = make_engine(f"sqlite:///{tmp_path / 'small.sqlite3'}", pool_size=3, max_overflow=4)
    assert small.pool.size() == 3 and small.pool._max_overflow == 4
    small.dispose()


def test_the_pool_keeps_the_connections_a_busy_moment_opened(tmp_path) -> None:
    """15 requests at once open 15 connections; all stay in the pool for the next ones
    (a pool of 10 + 30 overflow closed the 5 beyond the tenth as they came back)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'busy.sqlite3'}")
    try:
        connections = [engine.connect() for _ in range(15)]
        for connection in connections:
            connection.close()
        assert engine.pool.checkedin() == 15
    finally:
        engine.dispose()


def test_postgres_engine_pings_before_use() -> None:
    engine = make_engine("postgresql+psycopg://u:p@127.0.0.1:1/none")  # never connects
    assert engine.pool._pre_ping is True and engine.hide_parameters is True
    assert engine.pool.size() == 40 and engine.pool._max_overflow == 0


def test_deleting_a_participant_deletes_their_messages_and_objects_outlive_commit(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as db:
        survey = SurveyRow(spec_id="s", title="S", spec_hash="h" * 64, spec_json={})
        db.add(survey)
        db.flush()
        p = Participant(public_id="p", token_hash="t" * 64, survey_pk=survey.id, condition="multi",
                        assignment="link", state_json={}, next_seq=0, next_turn=0)
        db.add(p)
        db.flush()
        db.add(Message(participant_id=p.id, seq=0, turn=0, role="participant", client_id="c",
                       kind="message", text="hello"))
        db.commit()
        # expire_on_commit=False: the reply is built from these objects after commit
        assert "public_id" in p.__dict__ and p.public_id == "p"
    with sessions() as db:
        db.execute(text("DELETE FROM participants"))
        db.commit()
        assert db.scalar(select(func.count(Message.id))) == 0
    downgrade(engine)  # to "base" by default: no table of ours is left
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
