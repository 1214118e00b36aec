"""Storage: the Alembic migrations build exactly the models' schema, on SQLite and
PostgreSQL; the database enforces what the platform relies on (one message per client
id, one seq per participant, one answer per item)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from communitybots.store import (
    Answer,
    Base,
    Message,
    Participant,
    SurveyRow,
    downgrade,
    make_engine,
    migrate,
    session_factory,
)

TABLES = {"surveys", "participants", "messages", "events", "answers", "admins",
          "admin_sessions", "admin_devices", "throttle", "wizard_claims", "audit_log",
          "alembic_version"}


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_migrations_build_the_models_schema(engine) -> None:
    assert set(inspect(engine).get_table_names()) == TABLES
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    migrate(engine)  # running again at the next start-up changes nothing
    downgrade(engine, "base")  # and the downgrade removes every table
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def _participant(db, public_id: str = "p1") -> Participant:
    survey = SurveyRow(spec_id="s", title="S", spec_hash=public_id * 4, spec_json={"id": "s"})
    db.add(survey)
    db.flush()
    p = Participant(public_id=public_id, token_hash=public_id * 8, survey_pk=survey.id,
                    condition="multi", assignment="random", status="chatting", state_json={},
                    next_seq=0, next_turn=0)
    db.add(p)
    db.commit()
    return p


def test_database_refuses_duplicates(engine) -> None:
    sessions = session_factory(engine)
    with sessions() as db:
        p = _participant(db)
        db.add(Message(participant_id=p.id, seq=0, turn=0, role="participant", client_id="c1",
                       kind="message", text="hello"))
        db.commit()
        for dup in (dict(seq=1, client_id="c1"), dict(seq=0, client_id="c2")):
            db.add(Message(participant_id=p.id, turn=1, role="participant", kind="message",
                           text="again", **dup))
            with pytest.raises(IntegrityError):
                db.commit()
            db.rollback()
        # bot messages have no client id: any number of them is fine
        db.add_all([Message(participant_id=p.id, seq=s, turn=0, role="bot", kind="question",
                            text="?") for s in (1, 2)])
        db.add(Answer(participant_id=p.id, item_id="enjoyed", value="4"))
        db.commit()
        db.add(Answer(participant_id=p.id, item_id="enjoyed", value="5"))
        with pytest.raises(IntegrityError):
            db.commit()
        db.rollback()
        assert db.scalar(select(func.count(Message.id))) == 3


def test_text_is_stored_verbatim(engine) -> None:
    sessions = session_factory(engine)
    weird = "<script>alert('x')</script> ünïcödé 🙂 \" ' ; DROP TABLE messages; --" + "x" * 5000
    with sessions() as db:
        p = _participant(db)
        db.add(Message(participant_id=p.id, seq=0, turn=0, role="participant", client_id="c",
                       kind="message", text=weird))
        db.commit()
    with sessions() as db:
        assert db.scalar(select(Message.text)) == weird
