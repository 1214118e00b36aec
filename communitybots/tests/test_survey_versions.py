"""Survey versions: migration 0003 fills in the version of rows stored before it (on
SQLite and PostgreSQL), and the ``version`` label of a survey file."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from web_support import database_url  # noqa: F401  (a fixture)

from communitybots.spec import SpecError, parse_survey
from communitybots.store import downgrade, make_engine, migrate


def test_migration_fills_in_the_version_of_earlier_rows(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        downgrade(engine, "base")
        migrate(engine, "0002")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO surveys (id, spec_id, title, spec_hash, spec_json, created_at) "
                "VALUES (1, 's', 't', :h, '{}', CURRENT_TIMESTAMP)"), {"h": "ab" * 32})
            conn.execute(text(
                "INSERT INTO participants (id, public_id, token_hash, survey_pk, condition, "
                "assignment, status, state_json, version, next_seq, next_turn, consented_at) "
                "VALUES (1, 'p', 'x', 1, 'multi', 'random', 'chatting', '{}', 0, 0, 0, "
                "CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO messages (participant_id, seq, turn, role, kind, text, created_at) "
                "VALUES (1, 0, 0, 'bot', 'intro', 'hello', CURRENT_TIMESTAMP)"))
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT label FROM surveys")).scalar() == "ab" * 6
            assert conn.execute(text(
                "SELECT survey_hash, survey_version FROM participants")).one() == ("ab" * 32, "ab" * 6)
            assert conn.execute(text(
                "SELECT survey_hash, survey_version FROM messages")).one() == ("ab" * 32, "ab" * 6)
        downgrade(engine, "0002")  # and back
        migrate(engine)
    finally:
        engine.dispose()


def test_version_label_in_the_survey_file() -> None:
    base = {"id": "s", "title": "T", "agents": [{
        "id": "a", "name": "A", "domain": "d", "introduction": "hi", "topics": [{
            "id": "t", "title": "T", "opening": "o", "questions": ["q?"], "probes": ["p?"],
            "closing": "c"}]}]}
    assert parse_survey(base).version == ""
    assert parse_survey({**base, "version": "pilot 2"}).version == "pilot 2"
    with pytest.raises(SpecError, match=r"^version: String should have at most 100 characters"):
        parse_survey({**base, "version": "x" * 101})
