"""What a study needs, over HTTP on SQLite and PostgreSQL: consent text, pre-chat
questions of every kind, the tutorial per condition, the clock and a server-enforced
"End chat", the post-chat questionnaire, the recruitment panel's link and completion
URL, withdrawal, and the exports and transcript that carry it all."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from web_support import RICH, AppFactory, csrf, log_in, make_admin, send

from communitybots.store import Answer, AuditRow, Message, Participant

STUDY = Path(__file__).parent / "data" / "study_survey.yaml"
PRE_OK = {"item_age": "34", "item_gender": "Woman", "item_employment": "Student",
          "item_occupation": "nurse", "item_city": "Springfield"}


@pytest.fixture
def study_client(make_client: AppFactory) -> AppFactory:
    """A fresh app on the study survey (every consent counted: no per-address limit)."""
    return lambda **settings: make_client(survey=STUDY, consents_per_address=0, **settings)


def _post(client: TestClient, path: str, data: dict[str, str], expect: int = 303) -> Any:
    response = client.post(path, data={"csrf_token": csrf(client), **data}, follow_redirects=False)
    assert response.status_code == expect, response.text
    return response


def _participant(client: TestClient) -> Participant:
    public_id = client.get("/api/session").json()["participant"]
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        return db.scalar(select(Participant).where(Participant.public_id == public_id))


def _shift_clock(client: TestClient, public_id: str, minutes: float) -> None:
    """The chat began ``minutes`` earlier (a frozen clock moved by hand)."""
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == public_id))
        p.chat_started_at -= dt.timedelta(minutes=minutes)
        db.commit()


def test_pages_before_during_and_after_the_chat(study_client) -> None:
    client = study_client()
    landing = client.get("/?condition=single")
    assert "We store what you write with a random identifier" in landing.text  # consent text
    assert "usually takes about\n      5 minutes" in landing.text
    r = _post(client, "/consent", {"consent": "yes", "condition": "single"})
    assert r.headers["location"] == "/pre"
    # no chat before the questions and the tutorial
    assert client.get("/chat", follow_redirects=False).headers["location"] == "/pre"
    assert client.post("/api/messages", json={"client_id": "a1", "text": "hi"},
                       headers={"X-CSRF-Token": csrf(client)}).status_code == 409
    page = client.get("/pre")
    for label in ("How old are you?", "Non-binary", "Which town do you live in?"):
        assert label in page.text
    # required answers, a number in range, an option of the list
    bad = _post(client, "/pre", {"item_age": "12", "item_gender": "Cat", "item_city": ""}, 400)
    assert "write a number from 18 to 120" in bad.text
    assert 'name="item_age" value="12"' in bad.text  # kept, to be corrected
    assert "choose one of the options" in bad.text and "please answer this question" in bad.text
    assert _post(client, "/pre", {**PRE_OK, "item_age": "34.5"}, 400).text.count("whole number") == 1
    assert _post(client, "/pre", PRE_OK).headers["location"] == "/tutorial"
    tutorial = client.get("/tutorial")
    assert "One chatbot asks about every topic." in tutorial.text  # the single condition's
    assert "/avatars/single.svg" in tutorial.text
    assert _post(client, "/tutorial", {}).headers["location"] == "/chat"
    session = client.get("/api/session").json()
    clock = session["clock"]
    assert clock["can_end"] is False and clock["limit_s"] == 600 and clock["elapsed_s"] < 60
    # End chat is refused by the server before every topic is done or the time is up
    early = client.post("/api/end", headers={"X-CSRF-Token": csrf(client)})
    assert early.status_code == 409 and "after 10 minutes" in early.json()["error"]
    send(client, RICH["dwelling"])
    _shift_clock(client, session["participant"], 10)
    assert client.get("/api/session").json()["clock"]["can_end"] is True
    end = client.post("/api/end", headers={"X-CSRF-Token": csrf(client)})
    assert end.status_code == 200 and end.json() == {"next": "/survey"}
    send(client, "more words", expect=409)  # the chat has ended
    # the questionnaire: a required Likert item
    assert "please answer this question" in _post(client, "/survey", {"item_comment": "ok"}, 400).text
    _post(client, "/survey", {"item_enjoyed": "4", "item_comment": "Nice bots"})
    done = client.get("/done")
    assert done.status_code == 200 and "completion-code" in done.text  # no panel id: the code
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        p = db.scalar(select(Participant).where(Participant.public_id == session["participant"]))
        answers = {(a.phase, a.item_id): a.value for a in db.scalars(
            select(Answer).where(Answer.participant_id == p.id))}
        events = [e for e in db.execute(select(Message.kind).where(Message.participant_id == p.id))]
    assert answers == {("pre", "age"): "34", ("pre", "gender"): "Woman",
                       ("pre", "employment"): "Student", ("pre", "occupation"): "nurse",
                       ("pre", "city"): "Springfield", ("post", "enjoyed"): "4",
                       ("post", "comment"): "Nice bots"}
    assert p.chat_started_at is not None and p.chat_finished_at is not None and events
    # the researcher sees the answers by phase and exports them
    make_admin(client)
    log_in(client)
    transcript = client.get(f"/admin/participants/{p.public_id}").text
    assert "before the chat" in transcript and "Which town do you live in?" in transcript
    assert "chat_ended" in transcript  # the End chat decision is in the transcript
    rows = list(csv.DictReader(io.StringIO(client.get("/admin/export/answers.csv").text)))
    assert {(r["phase"], r["item_id"], r["condition"], r["survey_version"]) for r in rows} >= {
        ("pre", "city", "single", "v1"), ("post", "enjoyed", "single", "v1")}


def test_end_chat_once_every_topic_is_done(study_client) -> None:
    client = study_client()
    _post(client, "/consent", {"consent": "yes", "condition": "multi"})
    _post(client, "/pre", PRE_OK)
    assert "Two chatbots take turns" in client.get("/tutorial").text  # the multi condition's
    _post(client, "/tutorial", {})
    for _ in range(4):
        send(client, "skip")
    session = client.get("/api/session").json()
    assert session["cues"]["progress"] == [4, 4] and session["clock"]["can_end"] is True
    assert client.post("/api/end", headers={"X-CSRF-Token": csrf(client)}).json() == {"next": "/survey"}


def test_panel_link_to_completion_url(study_client) -> None:
    client = study_client()
    landing = client.get("/?PROLIFIC_PID=5f1e2d3c&STUDY_ID=st-1&SESSION_ID=se-9&OTHER=x&condition=multi")
    assert 'name="panel_PROLIFIC_PID" value="5f1e2d3c"' in landing.text
    assert 'name="panel_STUDY_ID" value="st-1"' in landing.text and "panel_OTHER" not in landing.text
    _post(client, "/consent", {"consent": "yes", "condition": "multi", "panel_PROLIFIC_PID": "5f1e2d3c",
                               "panel_STUDY_ID": "st-1", "panel_SESSION_ID": "se-9"})
    p = _participant(client)
    assert (p.panel_id, p.panel_data) == ("5f1e2d3c", {"STUDY_ID": "st-1", "SESSION_ID": "se-9"})
    _post(client, "/pre", PRE_OK)
    _post(client, "/tutorial", {})
    _shift_clock(client, p.public_id, 11)
    client.post("/api/end", headers={"X-CSRF-Token": csrf(client)})
    _post(client, "/survey", {"item_enjoyed": "5"})
    done = client.get("/done", follow_redirects=False)
    # the study's code, and the page moves on to the panel's completion URL with it
    assert done.status_code == 200 and "C0DE42" in done.text
    assert '<meta http-equiv="refresh" content="2; url=https://panel.example/complete?cc=C0DE42">' in done.text
    make_admin(client)
    log_in(client)
    rows = list(csv.DictReader(io.StringIO(client.get("/admin/export/participants.csv").text)))
    assert rows[0]["panel_id"] == "5f1e2d3c" and '"STUDY_ID": "st-1"' in rows[0]["panel_data"]
    found = client.get("/admin/participants?q=5f1e").text  # search by panel id
    assert p.public_id in found and "1 participant found" in found


def test_withdrawal_deletes_everything_and_is_audited(study_client) -> None:
    client = study_client()
    _post(client, "/consent", {"consent": "yes", "condition": "single"})
    _post(client, "/pre", PRE_OK)
    _post(client, "/tutorial", {})
    send(client, RICH["dwelling"])
    p = _participant(client)
    assert 'href="/withdraw"' in client.get("/chat").text
    assert "Tick the box" in _post(client, "/withdraw", {}, 400).text  # confirmation needed
    gone = _post(client, "/withdraw", {"confirm": "yes"}, 200)
    assert "Your data has been deleted" in gone.text
    assert client.get("/api/session").status_code == 401  # the session went with the data
    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        assert db.get(Participant, p.id) is None
        assert db.scalars(select(Message).where(Message.participant_id == p.id)).all() == []
        assert db.scalars(select(Answer).where(Answer.participant_id == p.id)).all() == []
        entry = db.scalar(select(AuditRow))
    assert (entry.actor, entry.action, entry.participant) == ("participant", "withdraw", p.public_id)
    assert entry.detail["messages"] == 1 and entry.detail["condition"] == "single"
    make_admin(client)
    log_in(client)
    audit = client.get("/admin/audit").text
    assert "withdraw" in audit and p.public_id in audit


def test_the_web_app_phrases_probes_with_the_surveys_llm(database_url: str, tmp_path: Path) -> None:
    """``nlu.llm_url`` in the survey file: the web app's probes come from that endpoint
    (here a local OpenAI-compatible stub), as in ``communitybots chat``; a failing
    endpoint leaves the survey's own probe."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from communitybots.web import Settings, create_app

    asked: list[dict[str, Any]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(body)
            status = 500 if len(asked) > 1 else 200  # the second call fails
            out = json.dumps({"choices": [{"message": {
                "content": "What did the folding desk change for the kids?"}}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *_args: Any) -> None:
            pass

    stub = HTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    survey = tmp_path / "llm.yaml"
    survey.write_text(STUDY.read_text().replace("policy:\n", (
        f"nlu:\n  llm_url: http://127.0.0.1:{stub.server_address[1]}/v1\n"
        "  llm_model: tiny\npolicy:\n"), 1))
    client = TestClient(create_app(survey, Settings(database_url=database_url, relevance="tfidf")),
                        base_url="http://127.0.0.1")
    try:
        _post(client, "/consent", {"consent": "yes", "condition": "multi"})
        _post(client, "/pre", PRE_OK)
        _post(client, "/tutorial", {})
        first = send(client, RICH["dwelling"])["replies"]
        assert [r["text"] for r in first if r["kind"] == "probe"] == [
            "What did the folding desk change for the kids?"]
        assert asked[0]["model"] == "tiny" and RICH["dwelling"][:40] in asked[0]["messages"][1]["content"]
        send(client, "skip")
        second = send(client, RICH["family"])["replies"]  # the endpoint fails: the survey's probe
        assert [r["text"] for r in second if r["kind"] == "probe"] == ["Can you give me an example?"]
        with client.app.state.sessions() as db:  # type: ignore[attr-defined]
            stored = db.scalars(select(Message.text).where(Message.kind == "probe")).all()
        assert stored == ["What did the folding desk change for the kids?", "Can you give me an example?"]
    finally:
        client.close()
        client.app.state.engine.dispose()  # type: ignore[attr-defined]
        stub.shutdown()
