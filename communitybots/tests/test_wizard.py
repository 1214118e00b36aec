"""Wizard-of-Oz condition: a researcher answers as the team, the CTM's uncommitted
suggestion beside every operator turn, one operator per conversation (claims in the
database, on SQLite and PostgreSQL), a login expiring mid-chat, the CTM fallback."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from web_support import RICH, consent, csrf, log_in, send

from communitybots.ctm import State
from communitybots.store import (
    Admin,
    AdminSession,
    EventRow,
    Message,
    Participant,
    WizardClaim,
    utcnow,
)
from communitybots.web import wizard
from communitybots.web.conversation import TurnError
from communitybots.web.routers import wizard as wizard_router
from communitybots.web.settings import Settings
from communitybots.web.study import variant

PASSWORD = "correct horse battery"


def _admin_csrf(client: TestClient) -> str:
    page = client.get("/admin/wizard").text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


#: argon2id at its cheapest: the login checks it with the parameters stored in the hash,
#: so the tests log in fast; the production hash is covered by the account tests
_CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _operator(make_client: Any, name: str = "ada",
              **settings: Any) -> tuple[TestClient, dict[str, str]]:
    client = make_client(**settings)
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        db.add(Admin(username=name, password_hash=_CHEAP.hash(PASSWORD)))
        db.commit()
    log_in(client, name, PASSWORD)
    return client, {"X-CSRF-Token": _admin_csrf(client)}


def _move(client: TestClient, headers: dict[str, str], pid: str, action: str = "say",
          expect: int = 200, client_id: str | None = None, **body: Any) -> dict[str, Any]:
    response = client.post(f"/admin/wizard/{pid}/moves", headers=headers, json={
        "client_id": client_id or uuid.uuid4().hex, "action": action, **body})
    assert response.status_code == expect, response.text
    return response.json()


def _updates(client: TestClient, after: int = 0) -> dict[str, Any]:
    response = client.get(f"/api/wizard/updates?after={after}")
    assert response.status_code == 200, response.text
    return response.json()


def _state(client: TestClient, public_id: str) -> tuple[Participant, State]:
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == public_id))
        return p, State.from_json(p.state_json)


def test_the_wizard_condition_shows_the_team_and_stays_out_of_the_comparison() -> None:
    from web_support import SURVEY

    from communitybots.spec import load_survey

    survey = load_survey(SURVEY)
    assert variant(survey, "wizard") is survey  # the team, as in "multi"
    assert len(variant(survey, "single").agents) == 1
    with pytest.raises(ValueError, match="unknown condition 'duo'"):
        variant(survey, "duo")
    with pytest.raises(ValueError, match="wizard_fallback_s must be > 0"):
        Settings(wizard_fallback_s=0)


def test_an_operator_answers_hands_over_changes_topic_and_ends(
        make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    participant = make_client()
    chat = consent(participant, "wizard")
    pid = chat["participant"]
    assert chat["condition"] == "wizard" and len(chat["agents"]) == 2
    after_opening = chat["messages"][-1]["seq"] + 1  # the opening, sent by the platform

    # the participant's message waits: no reply, the CTM's step is not committed
    body = send(participant, RICH["dwelling"])
    assert body["replies"] == []
    _p, stored = _state(participant, pid)
    assert (stored.turns, stored.stage, stored.probes_asked) == (1, "question", 0)
    status = _updates(participant)["wizard"]
    assert status == {"waiting": True, "answering": False, "operator_online": False,
                      "fallback_in_s": None}

    operator, headers = _operator(make_client)
    assert operator.post(f"/admin/wizard/{pid}/claim", headers=headers).status_code == 200
    queue = operator.get("/admin/wizard/queue.json").json()["conversations"]
    assert [(c["participant"], c["operator"], c["waiting_since"] is not None)
            for c in queue] == [(pid, "ada", True)]
    # the console's snapshot: the suggestion is what the bot would have said (an
    # acknowledgement and the topic's probe, rich_threshold 1.0 in the test survey)
    monkeypatch.setattr(wizard_router, "STREAM_S", 0.0)  # one snapshot, then the stream ends
    stream = operator.get(f"/admin/wizard/{pid}/stream")
    assert stream.headers["content-type"].startswith("text/event-stream")
    snap = json.loads(stream.text.split("data: ", 1)[1].split("\n\n")[0])
    suggestion = snap["suggestion"]
    assert not suggestion["answered"]
    assert [r["kind"] for r in suggestion["replies"]] == ["ack", "probe"]
    assert suggestion["replies"][1]["text"] == "Could you tell me more about that?"
    assert [d["kind"] for d in suggestion["decisions"]] == ["answer_accepted", "probe"]
    assert snap["claim"] == {"operator": "ada", "mine": True}
    assert [t["status"] for t in snap["topics"]] == ["active", "pending", "pending", "pending"]
    assert _updates(participant)["wizard"]["answering"] is True

    # 1. an own text as the active agent
    own = _move(operator, headers, pid, text="Which room did you use the most?")
    assert own["messages"][0]["agent_id"] == "household"
    got = _updates(participant, after=after_opening)
    assert [m["text"] for m in got["messages"]] == ["Which room did you use the most?"]
    assert got["wizard"]["waiting"] is False

    # 2. a hand-over with a topic change: Wally asks about the commute
    send(participant, "The kitchen, we cooked a lot there.")
    handover = _move(operator, headers, pid, text="Hello, I'm Wally. How did your commute change?",
                     agent_id="work", topic_id="commute")
    cues = _updates(participant)["cues"]
    assert (cues["agent_id"], cues["topic_id"], cues["progress"]) == ("work", "commute", [1, 4])
    _p, stored = _state(participant, pid)
    assert stored.topic_status == {"dwelling": "done", "family": "pending",
                                   "commute": "active", "job": "pending"}
    assert stored.pending_text == "Hello, I'm Wally. How did your commute change?"

    # 3. the CTM's suggestion sent as it is: its state is committed
    send(participant, RICH["commute"])
    sent = _move(operator, headers, pid, action="suggestion")
    assert [m["kind"] for m in sent["messages"]] == ["ack", "probe"]
    _p, stored = _state(participant, pid)
    assert (stored.stage, stored.probes_asked) == ("probe", 1)
    _move(operator, headers, pid, action="suggestion", expect=409)  # answered already

    # 4. the operator ends the chat
    _move(operator, headers, pid, action="end")
    participant_row, stored = _state(participant, pid)
    assert stored.finished and stored.end_reason == "operator"
    assert participant_row.status == "post_survey"
    _move(operator, headers, pid, expect=409, text="Are you still there?")
    send(participant, "hello?", expect=409)

    # the export: every operator turn names the operator, with the CTM's suggestion
    rows = [json.loads(line) for line in
            operator.get("/admin/export/messages.jsonl").text.splitlines()]
    by_operator = [r for r in rows if r["operator"] == "ada"]
    assert [r["text"] for r in by_operator] == [
        "Which room did you use the most?", handover["messages"][0]["text"],
        "That's interesting, thanks.", "What did you do with the time?",  # the CTM's, sent
        "Thank you for taking part. Your answers have been saved."]
    assert all(r["role"] == "bot" and r["suggestion"] for r in by_operator)
    assert by_operator[0]["suggestion"]["replies"][1]["text"] == "Could you tell me more about that?"
    assert by_operator[2]["suggestion"]["replies"][0]["text"] == "That's interesting, thanks."
    assert all(r["operator"] is None for r in rows if r["role"] == "participant")
    csv_text = operator.get("/admin/export/messages.csv").text
    assert {"operator", "suggestion"} <= set(csv_text.splitlines()[0].split(","))
    assert '""decisions"": [{""kind"": ""answer_accepted""' in csv_text
    events = [json.loads(line) for line in
              operator.get("/admin/export/events.jsonl").text.splitlines()]
    assert [(e["kind"], e["data"].get("by")) for e in events
            if e["data"].get("by") == "operator"] == [
        ("handover", "operator"), ("topic_started", "operator"), ("survey_end", "operator")]
    page = operator.get(f"/admin/participants/{pid}").text
    assert "written by ada" in page and "CTM suggested: That&#39;s interesting, thanks." in page
    # wizard participants are not compared with the two randomized conditions
    summary = operator.get("/admin/summary.json?include_link=1").json()
    assert "wizard" not in summary["conditions"]


def test_two_operators_cannot_answer_the_same_conversation(
        make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    participant = make_client()
    pid = consent(participant, "wizard")["participant"]
    send(participant, RICH["dwelling"])
    ada, ada_h = _operator(make_client, "ada")
    bob, bob_h = _operator(make_client, "bob")  # another server process on the same database

    # the console needs a researcher, and its moves the session's CSRF token
    assert participant.get(f"/admin/wizard/{pid}", headers={"Accept": "text/html"},
                           follow_redirects=False).status_code == 303
    assert participant.get(f"/admin/wizard/{pid}/stream").status_code == 401
    assert ada.post(f"/admin/wizard/{pid}/claim",
                    headers={"X-CSRF-Token": csrf(ada)}).status_code == 403
    assert ada.post(f"/admin/wizard/{pid}/claim").status_code == 403
    assert _move(ada, ada_h, pid, expect=409, text="unclaimed")["error"] == \
        "claim this conversation before answering it"
    other = consent(make_client(), "multi")["participant"]
    assert ada.get(f"/admin/wizard/{other}").status_code == 404  # not a wizard conversation
    assert participant.get("/api/wizard/updates").status_code == 200
    assert ada.get("/api/wizard/updates").status_code == 401  # no participant session
    assert ada.post(f"/admin/wizard/{pid}/claim", headers=ada_h).status_code == 200
    refused = bob.post(f"/admin/wizard/{pid}/claim", headers=bob_h)
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("ada is answering this conversation")
    assert _move(bob, bob_h, pid, expect=409, text="Hi from Bob")["error"] == \
        "ada is answering this conversation"
    with participant.app.state.sessions() as db:  # type: ignore[attr-defined]
        assert db.scalar(select(func.count(Message.id)).where(
            Message.operator_name.is_not(None))) == 0

    # ada's console closed: once her claim has expired, bob takes over and she is refused
    with participant.app.state.sessions() as db:  # type: ignore[attr-defined]
        db.execute(update(WizardClaim).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        db.commit()
    assert bob.post(f"/admin/wizard/{pid}/claim", headers=bob_h).status_code == 200
    _move(bob, bob_h, pid, text="Hi, tell me more.")
    assert _move(ada, ada_h, pid, expect=409, text="Hi from Ada")["error"] == \
        "bob is answering this conversation"
    assert ada.post(f"/admin/wizard/{pid}/release", headers=ada_h).status_code == 200  # not hers
    assert bob.post(f"/admin/wizard/{pid}/claim", headers=bob_h).status_code == 200  # still his
    assert "agent_id: no agent 'nobody'" in _move(
        bob, bob_h, pid, expect=400, text="x", agent_id="nobody")["error"]
    assert _move(bob, bob_h, pid, expect=400, text="a\x00b")["error"].startswith(
        "message contains a NUL character")

    # the conversation deleted while its console is open: the stream says so and ends
    with bob.app.state.sessions() as db:  # type: ignore[attr-defined]
        db.execute(delete(Participant).where(Participant.public_id == pid))
        db.commit()
        assert db.scalar(select(func.count()).select_from(WizardClaim)) == 0  # cascaded
    monkeypatch.setattr(wizard_router, "STREAM_S", 0.0)
    assert "event: gone" in bob.get(f"/admin/wizard/{pid}/stream").text


def test_concurrent_claims_have_one_winner(make_client) -> None:
    """Eight operators claim a free conversation at the same instant, each in its own
    transaction: the database lets exactly one through."""
    client = make_client()
    pid = consent(client, "wizard")["participant"]
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    with sessions() as db:
        admins = [Admin(username=f"op{i}", password_hash="x") for i in range(8)]
        db.add_all(admins)
        db.commit()
        ids = [a.id for a in admins]
        participant_id = db.scalar(select(Participant.id).where(Participant.public_id == pid))
    barrier = threading.Barrier(len(ids))
    won: list[int] = []
    refused: list[str] = []

    def contend(admin_id: int) -> None:
        with sessions() as db:
            admin = db.get(Admin, admin_id)
            barrier.wait()
            try:
                wizard.claim(db, admin, participant_id)
                won.append(admin_id)
            except TurnError as err:
                refused.append(err.message)

    threads = [threading.Thread(target=contend, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    with sessions() as db:
        assert db.scalars(select(WizardClaim.admin_id)).all() == won


def test_no_operator_online_then_the_ctm_answers_after_the_timeout(make_client) -> None:
    """Nobody online: the participant is told; an operator's claim keeps the CTM out; once
    released and past the timeout the CTM answers. Then the operator's login expires
    mid-chat: the move in flight is refused, stored once when sent again."""
    participant = make_client(wizard_fallback_s=30.0)
    pid = consent(participant, "wizard")["participant"]
    send(participant, RICH["dwelling"])
    status = _updates(participant)["wizard"]
    assert status["waiting"] and not status["operator_online"]
    assert 0 < status["fallback_in_s"] <= 30.0

    def wait_since(seconds: float) -> None:
        with participant.app.state.sessions() as db:  # type: ignore[attr-defined]
            p = db.scalar(select(Participant).where(Participant.public_id == pid))
            at = utcnow() - dt.timedelta(seconds=seconds)
            p.wizard_pending = {**p.wizard_pending, "at": at.isoformat()}
            db.commit()

    # an operator holding the conversation is not overtaken by the CTM
    operator, headers = _operator(make_client, wizard_fallback_s=30.0)
    operator.post(f"/admin/wizard/{pid}/claim", headers=headers)
    wait_since(40)
    assert _updates(participant)["wizard"] == {"waiting": True, "answering": True,
                                               "operator_online": True, "fallback_in_s": None}
    operator.post(f"/admin/wizard/{pid}/release", headers=headers)
    got = _updates(participant)
    assert [m["kind"] for m in got["messages"][-2:]] == ["ack", "probe"]
    assert got["wizard"]["waiting"] is False
    with participant.app.state.sessions() as db:  # type: ignore[attr-defined]
        fallback = db.scalars(select(EventRow).where(EventRow.kind == "wizard_fallback")).all()
        assert len(fallback) == 1 and "within 30 s" in fallback[0].reason
        assert db.scalar(select(func.count(Message.id)).where(
            Message.operator_name.is_not(None))) == 0
    _p, stored = _state(participant, pid)
    assert stored.stage == "probe"  # the CTM's step was committed
    _updates(participant)  # asked again: nothing more happens
    with participant.app.state.sessions() as db:  # type: ignore[attr-defined]
        assert db.scalar(select(func.count(EventRow.id)).where(
            EventRow.kind == "wizard_fallback")) == 1

    # the operator's login expires with a move in flight: nothing is lost
    assert operator.post(f"/admin/wizard/{pid}/claim", headers=headers).status_code == 200
    with operator.app.state.sessions() as db:  # type: ignore[attr-defined]
        db.execute(update(AdminSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        db.commit()
    response = operator.post(f"/admin/wizard/{pid}/moves", headers=headers, json={
        "client_id": "move-7", "action": "say", "text": "What did you cook?"})
    assert response.status_code == 401
    # logging in again from the same browser (its stale cookie still sent) on the form
    # the login page shows: a new session and a new CSRF token; the claim is the account's
    login = operator.get("/admin/login").text
    token = login.split('name="csrf-token" content="')[1].split('"')[0]
    assert operator.post("/admin/login", data={
        "csrf_token": token, "username": "ada", "password": PASSWORD, "next": "/admin"},
        follow_redirects=False).status_code == 303
    headers = {"X-CSRF-Token": _admin_csrf(operator)}
    for _ in range(2):  # sent again (twice, a double click): stored once
        _move(operator, headers, pid, client_id="move-7", text="What did you cook?")
    texts = [m["text"] for m in _updates(participant)["messages"]]
    assert texts[-2:] == ["Could you tell me more about that?", "What did you cook?"]
    assert texts.count("What did you cook?") == 1
    _p, stored = _state(participant, pid)
    assert stored.pending_text == "What did you cook?"
