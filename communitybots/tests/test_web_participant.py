"""Participant side over HTTP on a real database (SQLite file; PostgreSQL when set):
consent and condition assignment, turns stored with their analysis and events, exactly
once under retries and races, sessions that survive a server restart, the post-survey
in long format and the completion code."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select
from web_support import (
    RICH,
    consent,
    csrf,
    send,
)

from communitybots.store import Answer, EventRow, Message, Participant
from communitybots.web import conversation
from communitybots.web.settings import CONDITIONS


def _db(client):
    return client.app.state.sessions()


def test_consent_is_required_and_the_link_fixes_the_condition(make_client) -> None:
    client = make_client()
    page = client.get("/?condition=single")
    assert page.status_code == 200 and 'name="condition" value="single"' in page.text
    refused = client.post("/consent", data={"csrf_token": csrf(client), "condition": "single"})
    assert refused.status_code == 400 and "tick the consent box" in refused.text
    assert client.get("/chat", follow_redirects=False).headers["location"] == "/"
    state = consent(client, "single")
    assert state["condition"] == "single"
    assert [a["id"] for a in state["agents"]] == ["single"]
    assert {m["agent_id"] for m in state["messages"]} == {"single"}
    other = make_client()
    state = consent(other)  # no link parameter: drawn at random
    assert state["condition"] in CONDITIONS
    with _db(client) as db:
        rows = db.execute(select(Participant.condition, Participant.assignment)
                          .order_by(Participant.id)).all()
    assert rows[0] == ("single", "link") and rows[1][1] == "random"


def test_random_assignment_draws_both_conditions() -> None:
    rng = random.Random(7)
    drawn = [conversation.choose_condition(None, rng) for _ in range(200)]
    counts = {c: sum(1 for d, how in drawn if d == c and how == "random") for c in CONDITIONS}
    assert min(counts.values()) > 70  # roughly balanced
    assert conversation.choose_condition("multi") == ("multi", "link")
    with pytest.raises(conversation.TurnError, match="unknown condition"):
        conversation.choose_condition("triple")


def test_a_turn_is_stored_with_its_analysis_and_events(make_client) -> None:
    client = make_client()
    state = consent(client, "multi")
    assert state["cues"]["agent_id"] == "household" and state["cues"]["topic_id"] == "dwelling"
    assert state["cues"]["progress"] == [0, 4]
    reply = send(client, RICH["dwelling"], client_id="m1")
    assert reply["replies"] and not reply["replayed"]
    for r in reply["replies"]:
        assert r["role"] == "bot" and r["agent_name"] and r["colour"].startswith("#")
    with _db(client) as db:
        own = db.scalar(select(Message).where(Message.client_id == "m1"))
        assert own.role == "participant" and own.text == RICH["dwelling"]
        assert own.agent_id == "household" and own.topic_id == "dwelling"
        assert own.intent == "answer" and own.confidence is not None
        for part in ("length", "informativeness", "relevance", "specificity", "gibberish", "overall"):
            assert 0.0 <= getattr(own, f"q_{part}") <= 1.0
        events = db.scalars(select(EventRow).where(EventRow.turn == own.turn)
                            .order_by(EventRow.seq)).all()
        assert events[0].kind == "message_analyzed" and events[0].seq == own.seq + 1
        assert set(events[0].data["quality"]) >= {"overall", "relevance"}
        seqs = [m.seq for m in db.scalars(select(Message))] + [e.seq for e in db.scalars(select(EventRow))]
        assert sorted(seqs) == list(range(len(seqs)))  # one sequence, no gaps, no repeats


def test_a_retried_message_is_stored_once(make_client) -> None:
    client = make_client()
    consent(client)
    first = send(client, "We live in a small flat with a balcony.", client_id="same-id")
    again = send(client, "We live in a small flat with a balcony.", client_id="same-id")
    assert again["replayed"] and again["replies"] == first["replies"]
    with _db(client) as db:
        assert conversation.count_messages(db) == 1


def test_racing_requests_of_one_participant_are_each_applied_once(make_client) -> None:
    client = make_client()
    consent(client)
    app = client.app
    with _db(client) as db:
        pid = db.scalar(select(Participant.id))
    ids = [f"race-{i % 4}" for i in range(8)]  # 4 distinct messages, each sent twice at once
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(ids))

    def worker(client_id: str) -> None:
        try:
            with app.state.sessions() as db:
                barrier.wait()
                conversation.take_turn(db, app.state.study, app.state.settings, pid, client_id,
                                       f"At home we cooked a lot of {client_id} soup.")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with _db(client) as db:
        stored = db.scalars(select(Message.client_id).where(Message.role == "participant")).all()
        assert sorted(stored) == sorted(set(ids))
        turns = db.scalars(select(Message.turn).where(Message.role == "participant")).all()
        assert sorted(turns) == [1, 2, 3, 4]
        p = db.get(Participant, pid)
        n = db.scalar(select(func.count(Message.id))) + db.scalar(select(func.count(EventRow.id)))
        assert p.next_seq == n


def test_the_session_survives_a_server_restart(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    send(client, RICH["dwelling"])
    before = client.get("/api/session").json()
    restarted = make_client()  # a new app process on the same database
    restarted.cookies.update(client.cookies)
    after = restarted.get("/api/session").json()
    assert after["messages"] == before["messages"] and after["cues"] == before["cues"]
    reply = send(restarted, "skip", kind="message")
    order = ["dwelling", "family", "commute", "job"]
    assert order.index(reply["cues"]["topic_id"]) == order.index(before["cues"]["topic_id"]) + 1
    assert reply["cues"]["progress"][0] == before["cues"]["progress"][0] + 1


def test_skipping_to_the_end_then_questionnaire_and_code(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    seen_agents = set()
    for _ in range(4):
        reply = send(client, "", kind="skip_button")
        seen_agents |= {r["agent_id"] for r in reply["replies"]}
    assert reply["cues"]["finished"] and reply["cues"]["status"] == "post_survey"
    assert {"household", "work"} <= seen_agents
    refused = send(client, "one more thing", expect=409)
    assert "conversation has ended" in refused["error"]
    assert client.get("/chat", follow_redirects=False).headers["location"] == "/survey"
    page = client.get("/survey")
    assert "I enjoyed the conversation." in page.text
    bad = client.post("/survey", data={"csrf_token": csrf(client), "item_enjoyed": "9"})
    assert bad.status_code == 400 and "choose a value from 1 to 5" in bad.text
    done = client.post("/survey", data={"csrf_token": csrf(client), "item_enjoyed": "4",
                                        "item_understood": "5", "item_comment": "Nice bots"})
    assert done.status_code == 200 and "CB-" in done.text
    with _db(client) as db:
        answers = dict(db.execute(select(Answer.item_id, Answer.value)).all())
        assert answers == {"enjoyed": "4", "understood": "5", "comment": "Nice bots"}
        p = db.scalar(select(Participant))
        assert p.status == "completed" and p.completion_code in done.text
        skips = db.scalars(select(Message.text).where(Message.kind == "skip_button")).all()
        assert skips == [conversation.SKIP_TEXT] * 4


def test_the_single_agent_condition_has_no_handover(make_client) -> None:
    client = make_client()
    consent(client, "single")
    for _ in range(4):
        reply = send(client, "", kind="skip_button")
        assert {r["agent_id"] for r in reply["replies"]} <= {"single"}
    with _db(client) as db:
        kinds = set(db.scalars(select(EventRow.kind)))
    assert "handover" not in kinds and "topic_skipped" in kinds


