"""Researcher side over HTTP on a real database (SQLite file; PostgreSQL when set):
accounts made by the CLI, login sessions, the dashboard comparing the conditions with
its plots, transcripts with the CTM events inline, CSV/JSONL exports, and deleting one
participant's data."""

from __future__ import annotations

import csv
import io
import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner
from web_support import (
    RICH,
    consent,
    csrf,
    log_in,
    make_admin,
    send,
)

from communitybots.cli import app as cli
from communitybots.store import Admin, Answer, EventRow, Message, Participant


def admin_csrf(client) -> str:
    """The CSRF token of the researcher pages (derived from the login session)."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin").text).group(1)


def _study(make_client):
    """Two participants per condition; one multi participant finishes with a questionnaire."""
    clients = []
    for condition in ("multi", "multi", "single", "single"):
        c = make_client()
        consent(c, condition)
        send(c, RICH["dwelling"])
        send(c, "", kind="skip_button")
        clients.append(c)
    done = clients[0]
    while not send(done, RICH["job"])["cues"]["finished"]:
        pass
    done.post("/survey", data={"csrf_token": csrf(done), "item_enjoyed": "5",
                               "item_understood": "4", "item_comment": "=SUM(A1:A9) <b>hi</b>"})
    return clients


def test_admin_create_by_the_cli_then_login_and_logout(make_client, database_url) -> None:
    client = make_client()
    runner = CliRunner()
    made = runner.invoke(cli, ["admin", "create", "grace", "--password-stdin",
                               "--database-url", database_url], input="a long enough secret\n")
    assert made.exit_code == 0, made.output
    assert "created researcher account 'grace'" in made.output
    again = runner.invoke(cli, ["admin", "create", "grace", "--password-stdin",
                                "--database-url", database_url], input="another long secret\n")
    assert again.exit_code == 1 and "already exists" in again.output
    with client.app.state.sessions() as db:
        stored = db.scalar(select(Admin.password_hash).where(Admin.username == "grace"))
    assert stored.startswith("$argon2id$") and "a long enough secret" not in stored
    log_in(client, "grace", "a long enough secret")
    assert client.get("/admin").status_code == 200
    client.post("/admin/logout", data={"csrf_token": admin_csrf(client)})
    assert client.get("/admin/summary.json").status_code == 401  # the session is gone


def test_dashboard_compares_the_conditions(make_client) -> None:
    clients = _study(make_client)
    admin = clients[1]
    make_admin(admin)
    log_in(admin)
    # every participant here took the condition from the link: left out unless included
    default = admin.get("/admin/summary.json").json()
    assert default["conditions"]["multi"]["participants"] == 0
    assert default["view"]["left_out_by_link"] == 4
    summary = admin.get("/admin/summary.json?include_link=1").json()
    assert summary["view"]["include_link"] is True
    multi, single = summary["conditions"]["multi"], summary["conditions"]["single"]
    assert multi["participants"] == 2 and single["participants"] == 2
    words = summary["comparisons"]["words_per_answer"]
    assert words["n"] == [2, 2] and words["testable"] and 0 < words["p"] <= 1
    assert summary["comparisons"]["likert_enjoyed"]["note"].startswith("too few to test")
    assert multi["by_link"] == 2 and multi["completed"] == 1 and single["completed"] == 0
    assert multi["skip_rate"] > 0 and single["skip_rate"] > 0
    assert 0 < multi["quality_mean"]["overall"] <= 1
    assert multi["likert_mean"] == {"enjoyed": 5.0, "understood": 4.0}
    dwelling = summary["topics"]["single"][0]
    assert dwelling["topic_id"] == "dwelling" and dwelling["reached"] == 2 and dwelling["skipped"] == 2
    assert "4 participants whose condition came from the link" in admin.get("/admin").text
    page = admin.get("/admin?include_link=1").text
    for text in ("multi-agent vs single-agent", "Words per answer", "Interruption rate",
                 "Skip rate", "Your home", "Mann-Whitney", "participant-level",
                 "too few to test (n = 1 and 0 participants"):
        assert text in page
    for name in re.findall(r'src="/admin/plots/(\w+)\.png"', page):
        png = admin.get(f"/admin/plots/{name}.png")
        assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert admin.get("/admin/plots/nope.png").status_code == 404


def test_transcript_shows_events_inline(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    send(client, RICH["dwelling"])
    send(client, "", kind="skip_button")
    make_admin(client)
    log_in(client)
    listing = client.get("/admin/participants").text
    public_id = re.search(r"/admin/participants/([0-9a-f]{16})", listing).group(1)
    page = client.get(f"/admin/participants/{public_id}").text
    order = [page.index(s) for s in (
        "survey_start", "Hana the Household bot", RICH["dwelling"][:40], "message_analyzed",
        "answer_accepted", "Skip topic", "topic_skipped", "topic_started</span> [family]")]
    assert order == sorted(order)
    assert "intent answer" in page and "relevance" in page


def test_exports_match_the_database(make_client) -> None:
    clients = _study(make_client)
    admin = clients[0]
    make_admin(admin)
    log_in(admin)
    with admin.app.state.sessions() as db:
        n = {"participants": db.scalar(select(func.count(Participant.id))),
             "messages": db.scalar(select(func.count(Message.id))),
             "events": db.scalar(select(func.count(EventRow.id))),
             "answers": db.scalar(select(func.count(Answer.id)))}
    for table, count in n.items():
        as_csv = admin.get(f"/admin/export/{table}.csv")
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert f'filename="{table}.csv"' in as_csv.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        lines = [json.loads(line) for line in admin.get(f"/admin/export/{table}.jsonl").text.splitlines()]
        assert len(rows) == len(lines) == count, table
        assert {r["participant"] for r in rows} <= {p["participant"] for p in lines}
    messages = [json.loads(x) for x in admin.get("/admin/export/messages.jsonl").text.splitlines()]
    answer = next(m for m in messages if m["role"] == "participant" and m["intent"] == "answer")
    assert answer["q_overall"] is not None and answer["condition"] in ("multi", "single")
    assert answer["created_at"].endswith("Z")
    events = [json.loads(x) for x in admin.get("/admin/export/events.jsonl").text.splitlines()]
    assert any(e["kind"] == "message_analyzed" and "quality" in e["data"] for e in events)
    answers = admin.get("/admin/export/answers.csv").text
    assert "'=SUM(A1:A9) <b>hi</b>" in answers  # no formula runs when opened in a spreadsheet
    raw = [json.loads(x) for x in admin.get("/admin/export/answers.jsonl").text.splitlines()]
    assert "=SUM(A1:A9) <b>hi</b>" in [a["value"] for a in raw]  # JSONL keeps it verbatim
    assert "token" not in admin.get("/admin/export/participants.csv").text.splitlines()[0]
    assert admin.get("/admin/export/secrets.csv").status_code == 404


def test_deleting_one_participant(make_client) -> None:
    clients = _study(make_client)
    admin = clients[1]
    make_admin(admin)
    log_in(admin)
    with admin.app.state.sessions() as db:
        victim = db.scalar(select(Participant).order_by(Participant.id))
        keep = db.scalar(select(func.count(Message.id)).where(Message.participant_id != victim.id))
    unconfirmed = admin.post(f"/admin/participants/{victim.public_id}/delete",
                             data={"csrf_token": admin_csrf(admin)})
    assert "Tick the box to confirm the deletion." in unconfirmed.text
    with admin.app.state.sessions() as db:
        assert db.get(Participant, victim.id) is not None  # nothing deleted unconfirmed
    response = admin.post(f"/admin/participants/{victim.public_id}/delete",
                          data={"csrf_token": admin_csrf(admin), "confirm": victim.public_id})
    assert response.status_code == 200 and f"Deleted all data of participant {victim.public_id}" in response.text
    with admin.app.state.sessions() as db:
        for table in (Message, EventRow, Answer):
            assert db.scalar(select(func.count(table.id)).where(table.participant_id == victim.id)) == 0
        assert db.get(Participant, victim.id) is None
        assert db.scalar(select(func.count(Message.id))) == keep  # the others are untouched
    assert clients[0].get("/api/session").status_code == 401  # the deleted session is gone
    assert admin.get(f"/admin/participants/{victim.public_id}").status_code == 404


def test_survey_versions_are_stored_filtered_and_exported(make_client, database_url) -> None:
    from web_support import SURVEY

    from communitybots.spec import load_survey
    from communitybots.web import Settings, create_app
    from communitybots.web.study import spec_hash

    first = make_client()
    consent(first, "multi")
    send(first, RICH["dwelling"])
    # the researcher edits the survey file and labels it; the server starts again
    edited = load_survey(SURVEY).model_copy(update={"version": "v2", "title": "Daily life, edited"})
    with TestClient(create_app(edited, Settings(database_url=database_url,
                                                relevance="tfidf")),
                    base_url="http://127.0.0.1") as second:
        for _ in range(2):
            consent(second, "single")
            send(second, RICH["dwelling"])
        send(first, RICH["dwelling"])  # the first participant goes on with their version
        make_admin(second)
        log_in(second)
        old_hash, new_hash = spec_hash(load_survey(SURVEY)), spec_hash(edited)
        with second.app.state.sessions() as db:
            people = db.execute(select(Participant.survey_hash, Participant.survey_version)
                                .order_by(Participant.id)).all()
            assert people == [(old_hash, old_hash[:12]), (new_hash, "v2"), (new_hash, "v2")]
            by_message = db.execute(select(Participant.survey_hash, Message.survey_hash,
                                           Message.survey_version)
                                    .join(Participant, Participant.id == Message.participant_id)
                                    ).all()
            assert len(by_message) > 6
            assert all(p == m and v for p, m, v in by_message)
        # the dashboard shows the served version by default, any other by its hash, or all
        def n(query: str) -> int:
            got = second.get(f"/admin/summary.json?include_link=1{query}").json()
            return sum(c["participants"] for c in got["conditions"].values())
        assert n("") == 2 and n(f"&version={old_hash}") == 1 and n("&version=all") == 3
        assert second.get("/admin/summary.json?version=nope").status_code == 404
        page = second.get("/admin").text
        assert "v2" in page and old_hash[:12] in page and "all versions pooled" in page
        rows = list(csv.DictReader(io.StringIO(second.get("/admin/export/messages.csv").text)))
        assert {(r["survey_version"], r["survey_hash"]) for r in rows} == {
            (old_hash[:12], old_hash), ("v2", new_hash)}
        for table in ("participants", "events", "answers"):
            header = second.get(f"/admin/export/{table}.csv").text.splitlines()[0]
            assert header.startswith("participant,condition,survey_version,survey_hash")
        second.app.state.engine.dispose()
