"""The message path's cheaper parts (issue 19): a turn is written with one INSERT per
table and the rows are what the engine said; the request holds no pooled connection
between its dependencies and its endpoint; a turn runs on the event loop only where it
cannot wait on the network; ``serve`` starts one worker per usable core."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner
from web_support import SURVEY, consent, send

from communitybots.ctm import State
from communitybots.store import EventRow, Message, Participant
from communitybots.web import commands


def _db(client):
    return client.app.state.sessions()


def test_a_turn_is_one_insert_per_table_with_the_engines_rows(make_client) -> None:
    client = make_client()
    consent(client)
    app = client.app
    with _db(client) as db:
        before = db.scalar(select(Participant))
        state_before = State.from_json(before.state_json)
        seq_before, turn = before.next_seq, before.next_turn
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        words = statement.split()[:3]
        statements.append(" ".join([words[0].upper()] + words[1:]))

    engine = app.state.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        text = "We cooked together every evening in our small kitchen."
        reply = send(client, text, client_id="one-turn")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    writes = sorted(s for s in statements if s.split()[0] in {"INSERT", "UPDATE", "DELETE"})
    assert writes == ["INSERT INTO events", "INSERT INTO messages", "UPDATE participants SET"]

    with _db(client) as db:
        after = db.scalar(select(Participant))
        ctm = app.state.study.engine(after.survey_pk, after.condition, db)[1]
        # the pure engine, given the same state, message and clock, says the same
        _state, replies, events = ctm.step(state_before, text, now=after.active_s)
        assert after.state_json == _state.to_json()
        messages = db.scalars(select(Message).where(Message.turn == turn)
                              .order_by(Message.seq)).all()
        rows = db.scalars(select(EventRow).where(EventRow.turn == turn)
                          .order_by(EventRow.seq)).all()
    own, bots = messages[0], messages[1:]
    assert (own.seq, own.role, own.client_id, own.text, own.agent_name) == (
        seq_before, "participant", "one-turn", text, None)
    assert (own.agent_id, own.topic_id) == (state_before.agent_id, state_before.topic_id)
    analysed = events[0].data
    assert own.intent == analysed["intent"] and own.confidence == pytest.approx(
        analysed["confidence"])
    assert own.q_overall == pytest.approx(analysed["quality"]["overall"])
    assert own.created_at is not None and all(m.created_at == own.created_at for m in messages)
    # events first, then the replies, on the participant's one sequence
    assert [r.seq for r in rows] == list(range(seq_before + 1, seq_before + 1 + len(events)))
    assert [(r.kind, r.reason, r.agent_id, r.topic_id, r.data) for r in rows] == [
        (e.kind, e.reason or "", e.agent_id, e.topic_id, dict(e.data or {})) for e in events]
    assert [b.seq for b in bots] == list(range(rows[-1].seq + 1, rows[-1].seq + 1 + len(replies)))
    assert [(b.role, b.kind, b.text, b.agent_id, b.agent_name, b.topic_id, b.client_id,
             b.intent) for b in bots] == [
        ("bot", r.kind, r.text, r.agent_id, r.agent_name, r.topic_id, None, None) for r in replies]
    assert [(r["seq"], r["text"]) for r in reply["replies"]] == [(b.seq, b.text) for b in bots]
    assert after.next_seq == bots[-1].seq + 1 and after.next_turn == turn + 1
    # a retry of the same message is answered from these rows
    assert send(client, text, client_id="one-turn")["replies"] == reply["replies"]


def test_no_request_holds_a_connection_while_it_waits_for_a_thread(make_client) -> None:
    """A message is looked up and taken in the endpoint's one thread, from a pool with
    none of the request's connections checked out; a page whose participant comes from
    a dependency (another thread) gives that connection back before its endpoint runs.
    So threads waiting for connections cannot deadlock with requests waiting for
    threads."""
    import threading

    from communitybots.web import conversation

    client = make_client()
    consent(client)
    pool = client.app.state.engine.pool
    calls: list[tuple[str, int, int]] = []

    def spy(name, original):
        def wrapped(db, *args, **kwargs):
            calls.append((name, threading.get_ident(), pool.checkedout()))
            return original(db, *args, **kwargs)
        return wrapped

    mp = pytest.MonkeyPatch()
    for name in ("find_participant", "take_turn", "transcript"):
        mp.setattr(conversation, name, spy(name, getattr(conversation, name)))
    try:
        send(client, "We walked in the park near our flat every day.")
        message_calls = list(calls)
        calls.clear()
        assert client.get("/api/session").status_code == 200
    finally:
        mp.undo()
    (lookup, lookup_thread, held), (turn, turn_thread, _) = message_calls
    assert (lookup, turn, held) == ("find_participant", "take_turn", 0)
    assert lookup_thread == turn_thread  # one thread hop per message
    assert [(name, held) for name, _thread, held in calls] == [
        ("find_participant", 0), ("transcript", 0)]


def test_a_turn_runs_on_the_event_loop_only_where_it_cannot_wait_on_the_network(
        make_client, database_url: str, tmp_path: Path) -> None:
    """On a SQLite file with no LLM a message's turn runs on the event loop (a pool
    thread cost each message about 0.8 ms of CPU); on PostgreSQL (a network round trip
    per statement), or once any survey version in the database phrases probes with an
    LLM, in a pool thread."""
    import asyncio

    from communitybots.web import conversation

    def on_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    seen: list[bool] = []
    original = conversation.take_turn

    def spy(*args, **kwargs):
        seen.append(on_loop())
        return original(*args, **kwargs)

    client = make_client()
    consent(client)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conversation, "take_turn", spy)
        send(client, "We walked in the park near our flat every day.")
    sqlite = database_url.startswith("sqlite")
    assert seen == [sqlite] and client.app.state.turns_on_loop is sqlite

    llm = tmp_path / "llm.yaml"
    llm.write_text(SURVEY.read_text().replace(
        "policy:\n", "nlu:\n  llm_url: http://127.0.0.1:9/v1\npolicy:\n", 1))
    assert make_client(survey=llm).app.state.turns_on_loop is False
    # the plain survey again: its old participants may still be on the LLM version
    assert make_client().app.state.turns_on_loop is False


def test_serve_defaults_to_one_worker_per_usable_core(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(commands.os, "sched_getaffinity", lambda _pid: {0, 2, 5}, raising=False)
    assert commands.default_workers() == 3
    monkeypatch.delattr(commands.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(commands.os, "cpu_count", lambda: None)
    assert commands.default_workers() == 1
    monkeypatch.setattr(commands.os, "cpu_count", lambda: 6)
    assert commands.default_workers() == 6

    import uvicorn

    from communitybots.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(SURVEY), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert calls[-1]["workers"] == 6 and "6 worker processes" in result.output
    result = runner.invoke(app, ["serve", str(SURVEY), "--database-url", url, "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["workers"] == 1 and "1 worker process" in result.output


def test_a_serve_worker_takes_its_startup_objects_out_of_the_collectors_view(
        monkeypatch, tmp_path: Path) -> None:
    """``serve``'s workers freeze what they built at start-up (models, tables, caches):
    a full collection would otherwise walk all of it while the worker answers nothing."""
    import gc
    import json

    url = f"sqlite:///{tmp_path / 'frozen.sqlite3'}"
    from communitybots.store import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    monkeypatch.setenv(commands._SERVE_ENV, json.dumps({
        "survey": str(SURVEY), "database_url": url, "relevance": "tfidf"}))
    gc.unfreeze()
    try:
        app = commands.app_from_env()
        assert gc.get_freeze_count() > 50_000  # the app's objects, the NLU models among them
        app.state.engine.dispose()
    finally:
        gc.unfreeze()
