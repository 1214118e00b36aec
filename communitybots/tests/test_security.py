"""Security of the platform: markup is shown escaped, researcher pages refuse anonymous
requests, forms without the CSRF token are refused, one participant cannot read
another's session, and message length and rate limits answer with clear errors."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from web_support import (
    consent,
    csrf,
    log_in,
    make_admin,
    send,
)

from communitybots.store import Message, Participant

SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'
ADMIN_PAGES = ["/admin", "/admin/participants", "/admin/participants/0123456789abcdef",
               "/admin/plots/funnel.png", "/admin/summary.json", "/admin/export/messages.csv",
               "/admin/export/answers.jsonl"]


def _public_id(client) -> str:
    with client.app.state.sessions() as db:
        return db.scalars(select(Participant.public_id).order_by(Participant.id)).first()


def test_markup_is_stored_verbatim_and_shown_escaped(make_client) -> None:
    client = make_client()
    consent(client, "multi")
    send(client, SCRIPT)
    texts = [m["text"] for m in client.get("/api/session").json()["messages"]]
    assert SCRIPT in texts  # the API returns the text as data; the page sets it as text
    make_admin(client)
    log_in(client)
    page = client.get(f"/admin/participants/{_public_id(client)}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    chat_js = client.get("/static/chat.js").text
    assert "innerHTML" not in chat_js and "textContent" in chat_js


def test_pages_send_security_headers(make_client) -> None:
    response = make_client().get("/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text  # no inline script anywhere


def test_researcher_pages_refuse_anonymous_requests(make_client) -> None:
    client = make_client()
    consent(client)  # a participant session grants nothing on the researcher side
    for path in ADMIN_PAGES:
        api = client.get(path, follow_redirects=False)
        assert api.status_code == 401, path
        assert api.json() == {"error": "researcher login required"}
        browser = client.get(path, headers={"accept": "text/html"}, follow_redirects=False)
        assert browser.status_code == 303 and browser.headers["location"].startswith("/admin/login")
    client.cookies.set("cb_admin", "forged-token", path="/admin")
    assert client.get("/admin/summary.json").status_code == 401


def test_login_errors_and_no_open_redirect(make_client) -> None:
    client = make_client()
    make_admin(client)
    wrong = client.post("/admin/login", data={"csrf_token": csrf(client), "username": "ada",
                                              "password": "wrong password!"})
    assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
    unknown = client.post("/admin/login", data={"csrf_token": csrf(client), "username": "eve",
                                                "password": "correct horse battery"})
    assert unknown.status_code == 401
    ok = client.post("/admin/login", data={"csrf_token": csrf(client), "username": "ada",
                                           "password": "correct horse battery",
                                           "next": "//evil.example/admin"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/admin"
    assert "HttpOnly" in ok.headers["set-cookie"] and "SameSite=strict" in ok.headers["set-cookie"]


def test_password_guessing_is_throttled(make_client, monkeypatch) -> None:
    from communitybots.web import accounts
    from communitybots.web.throttle import Backoff

    monkeypatch.setattr(accounts, "ACCOUNT", Backoff("login_acct", free=5, base_s=60))
    client = make_client()
    make_admin(client)
    for _ in range(5):
        wrong = client.post("/admin/login", data={"csrf_token": csrf(client), "username": "ada",
                                                  "password": "guess guess guess"})
        assert wrong.status_code == 401
    blocked = client.post("/admin/login", data={"csrf_token": csrf(client), "username": "ada",
                                                "password": "correct horse battery"})
    assert blocked.status_code == 429 and "Too many failed logins for this account" in blocked.text
    assert 1 <= int(blocked.headers["retry-after"]) <= 60


def test_login_backoff_doubles_and_resets(database_url) -> None:
    import datetime as dt

    from communitybots.store import make_engine, migrate
    from communitybots.web.throttle import Backoff

    engine = make_engine(database_url)
    migrate(engine)
    backoff = Backoff("t", free=2, base_s=10, max_s=35, reset_s=3600)
    t0 = dt.datetime(2026, 1, 1)
    at = lambda s: t0 + dt.timedelta(seconds=s)  # noqa: E731
    assert backoff.reserve(engine, "ada", at(0)) == 0  # 1st failure: free
    assert backoff.reserve(engine, "ada", at(1)) == 0  # 2nd: now blocked 10 s
    assert backoff.reserve(engine, "ada", at(2)) == 9  # refused, and not counted
    assert backoff.failures(engine, "ada") == 2
    assert backoff.reserve(engine, "ada", at(11)) == 0  # 3rd: 20 s
    assert backoff.wait_s(engine, "ada", at(12)) == 19
    assert backoff.reserve(engine, "ada", at(31)) == 0  # 4th: 40 s, capped at 35
    assert backoff.wait_s(engine, "ada", at(31)) == 35
    assert backoff.reserve(engine, "bob", at(31)) == 0  # other keys are apart
    assert backoff.reserve(engine, "ada", at(31 + 35 + 3600)) == 0  # an hour quiet: reset
    assert backoff.failures(engine, "ada") == 1
    backoff.clear(engine, "ada")
    assert backoff.failures(engine, "ada") == 0
    engine.dispose()


def test_forms_without_the_csrf_token_are_refused(make_client) -> None:
    client = make_client()
    csrf(client)
    for data in ({"consent": "yes"}, {"consent": "yes", "csrf_token": "guessed"}):
        refused = client.post("/consent", data=data, headers={"accept": "text/html"})
        assert refused.status_code == 403 and "CSRF token missing or wrong" in refused.text
    consent(client)
    no_header = client.post("/api/messages", json={"client_id": "x", "text": "hello"})
    assert no_header.status_code == 403
    assert no_header.json()["error"].startswith("CSRF token missing or wrong")
    make_admin(client)
    assert client.post("/admin/login", data={"username": "ada", "password": "correct horse battery"}).status_code == 403
    log_in(client)
    public_id = _public_id(client)
    assert client.post(f"/admin/participants/{public_id}/delete").status_code == 403
    assert client.post("/admin/logout").status_code == 403
    assert client.get("/admin/summary.json").status_code == 200  # still logged in, nothing deleted
    with client.app.state.sessions() as db:
        assert db.scalar(select(Participant.public_id)) == public_id
    with client.app.state.sessions() as db:
        assert db.scalar(select(Message.id).where(Message.role == "participant")) is None


def test_one_participant_cannot_read_another(make_client) -> None:
    alice, bob = make_client(), make_client()
    consent(alice, "multi")
    send(alice, "My secret: we live at 12 Elm Street.", client_id="shared-id")
    consent(bob, "multi")
    assert "12 Elm Street" not in bob.get("/api/session").text
    # Bob reusing Alice's idempotency key gets his own new turn, not Alice's replay
    reply = send(bob, "We live in a house by the river.", client_id="shared-id")
    assert not reply["replayed"]
    assert "12 Elm Street" not in bob.get("/api/session").text
    # a participant cannot open the researcher's transcript of anyone
    assert bob.get(f"/admin/participants/{_public_id(alice)}").status_code == 401
    # and a guessed session cookie opens nothing
    stranger = make_client()
    stranger.cookies.set("cb_session", "0" * 43)
    assert stranger.get("/api/session").status_code == 401
    assert stranger.get("/api/session").json()["error"].startswith("no participant session")


def test_message_length_limit(make_client) -> None:
    client = make_client(max_message_chars=200)
    consent(client)
    too_long = send(client, "a" * 201, expect=413)
    assert too_long["error"] == "message too long: 201 characters, the limit is 200"
    assert send(client, "   ", expect=400)["error"] == "message is empty"
    assert send(client, "ok", client_id="x" * 65, expect=400)["error"] == "client_id must be 1 to 64 characters"
    send(client, "b" * 200)  # at the limit: accepted


def test_rate_limit(make_client) -> None:
    client = make_client(rate_limit_messages=3, rate_limit_window_s=60)
    consent(client)
    for i in range(3):
        send(client, f"We cooked at home, day {i}.")
    response = client.post("/api/messages", json={"client_id": "4th", "text": "again"},
                           headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == 429
    assert re.fullmatch(r"too many messages: at most 3 per 60 s; try again in \d+ s",
                        response.json()["error"])
    assert 1 <= int(response.headers["retry-after"]) <= 60


@pytest.mark.parametrize("body", [{"text": "no id"}, {"client_id": "a", "text": 5},
                                  {"client_id": "a", "text": "x", "kind": "admin"}])
def test_malformed_messages_are_refused(body, tmp_path) -> None:
    from fastapi.testclient import TestClient
    from web_support import SURVEY

    from communitybots.web import Settings, create_app

    app = create_app(SURVEY, Settings(database_url=f"sqlite:///{tmp_path / 'm.sqlite3'}",
                                         relevance="tfidf"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        consent(client)
        response = client.post("/api/messages", json=body, headers={"X-CSRF-Token": csrf(client)})
        assert response.status_code == 422
    app.state.engine.dispose()
