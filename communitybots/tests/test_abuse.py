"""Abuse, bad input and shared devices (issue 12), over HTTP on a real database (SQLite
file; PostgreSQL when set): the login throttle in the database (per address, per
account, a known browser not locked out, shared by two app instances = two worker
processes), consent limits per address, the study quota, excluding a flood from the
analysis, the body cap while reading, NUL and lone surrogates, right-to-left text,
sessions that end on completion / on "I'm a new participant" / when idle, active time,
researcher passwords and account commands, session-tied CSRF, Secure/HSTS and no-store."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner
from web_support import RICH, consent, csrf, log_in, make_admin, send

from communitybots.cli import app as cli
from communitybots.store import Admin, Message, Participant, ThrottleRow
from communitybots.web import accounts
from communitybots.web.throttle import Backoff

PASSWORD = "correct horse battery"


def twin(client: TestClient, address: str) -> TestClient:
    """Another browser on the same server, from ``address``."""
    return TestClient(client.app, base_url="http://127.0.0.1", client=(address, 40000))


def attempt(client: TestClient, username: str, password: str):
    token = page_csrf(client, "/admin/login")  # the session's token once logged in
    return client.post("/admin/login", data={"csrf_token": token, "username": username,
                                             "password": password}, follow_redirects=False)


def page_csrf(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def rows(client: TestClient, model) -> int:
    with client.app.state.sessions() as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def slow_backoff(monkeypatch) -> Iterator[None]:
    """Blocks of a minute, so that timing on a busy machine cannot unblock a test."""
    monkeypatch.setattr(accounts, "ADDRESS", Backoff("login_addr", free=10, base_s=60))
    monkeypatch.setattr(accounts, "ACCOUNT", Backoff("login_acct", free=5, base_s=60))
    monkeypatch.setattr(accounts, "DEVICE", Backoff("login_dev", free=5, base_s=60))
    yield


# --- login throttle -------------------------------------------------------------------

def test_many_usernames_from_one_address_are_throttled(make_client, slow_backoff) -> None:
    client = make_client()
    for i in range(10):
        assert attempt(client, f"user{i}", "Password1").status_code == 401
    blocked = attempt(client, "user10", "Password1")
    assert blocked.status_code == 429
    assert "Too many failed logins from this address; try again in" in blocked.text
    other = twin(client, "203.0.113.9")  # another address is not slowed by this one
    assert attempt(other, "user11", "Password1").status_code == 401


def test_two_workers_share_the_count(make_client, slow_backoff) -> None:
    one, two = make_client(), make_client()  # two app instances = two server processes
    make_admin(one)
    for i in range(5):
        worker = one if i % 2 else two
        assert attempt(worker, "ada", "wrong password").status_code == 401
    for worker in (one, two):
        assert attempt(worker, "ada", PASSWORD).status_code == 429


def test_guessing_cannot_lock_the_owner_out_of_a_known_browser(make_client, slow_backoff,
                                                                 database_url) -> None:
    owner = make_client()
    make_admin(owner)
    log_in(owner)  # the owner's browser now holds a device cookie for "ada"
    assert "cb_device" in owner.cookies
    attacker = twin(owner, "198.51.100.7")
    for _ in range(5):
        assert attempt(attacker, "ada", "guess guess guess").status_code == 401
    assert attempt(attacker, "ada", PASSWORD).status_code == 429  # the account is locked
    new_browser = twin(owner, "192.0.2.50")
    assert attempt(new_browser, "ada", PASSWORD).status_code == 429
    # ... but not for the browser the owner used before
    assert attempt(owner, "ada", PASSWORD).status_code == 303
    # and the reset path opens it for a new browser
    result = CliRunner().invoke(cli, ["admin", "unlock", "ada", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert attempt(new_browser, "ada", PASSWORD).status_code == 303


def test_long_or_unstorable_credentials_are_refused_before_anything_is_stored(make_client) -> None:
    client = make_client()
    make_admin(client)
    for username, password, message in (
            ("a" * 101, PASSWORD, "username: at most 100 characters"),
            ("ada", "p" * 1025, "password: at most 1024 characters"),
            ("ad\x00a", PASSWORD, "username contains a NUL character (U+0000)")):
        refused = attempt(client, username, password)
        assert refused.status_code == 400 and message in refused.text
    assert rows(client, ThrottleRow) == 0
    huge = attempt(client, "a" * 300_000, PASSWORD)  # past the body cap: not even parsed
    assert huge.status_code == 413
    assert rows(client, ThrottleRow) == 0


def test_the_throttle_table_is_bounded(make_client, monkeypatch) -> None:
    from communitybots.web import throttle

    client = make_client()
    engine = client.app.state.engine
    monkeypatch.setattr(throttle, "MAX_ROWS", 20)
    backoff = Backoff("t", free=5)
    old = dt.datetime(2026, 1, 1)
    for i in range(10):  # a day old: deleted at the next new row
        backoff.reserve(engine, f"old{i}", old)
    for i in range(60):
        backoff.reserve(engine, f"key{i}", old + dt.timedelta(days=2, seconds=i))
    assert rows(client, ThrottleRow) <= 21
    assert backoff.failures(engine, "key59") == 1 and backoff.failures(engine, "old0") == 0


# --- consent: per address, quota, flood exclusion ---------------------------------------

def test_consents_per_address_and_flood_exclusion(make_client) -> None:
    first = make_client(consents_per_address=3)
    flood = [first] + [twin(first, "testclient") for _ in range(3)]
    for browser in flood[:3]:
        consent(browser, "multi")
    refused = flood[3].post("/consent", data={"csrf_token": csrf(flood[3]), "consent": "yes"},
                            follow_redirects=False)
    assert refused.status_code == 429 and "Too many new conversations from this address" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    consent(twin(first, "203.0.113.20"), "single")  # another address is not limited
    assert rows(first, Participant) == 4
    with first.app.state.sessions() as db:
        groups = db.scalars(select(Participant.origin_group).order_by(Participant.id)).all()
    assert groups[0] == groups[1] == groups[2] != groups[3]

    researcher = twin(first, "192.0.2.1")
    make_admin(researcher)
    log_in(researcher)
    assert researcher.get("/admin/summary.json?include_link=1").json()["conditions"]["multi"]["participants"] == 3
    listing = researcher.get("/admin/participants").text
    assert f"{groups[0]} (3)" in listing
    public_id = re.search(r"/admin/participants/([0-9a-f]{16})", listing).group(1)
    page = researcher.get(f"/admin/participants/{public_id}").text
    token = page_csrf(researcher, f"/admin/participants/{public_id}")
    if "Exclude all 3" not in page:  # the newest participant is the other address's
        with first.app.state.sessions() as db:
            public_id = db.scalar(select(Participant.public_id).order_by(Participant.id))
    done = researcher.post(f"/admin/groups/{groups[0]}/exclude",
                           data={"csrf_token": token, "reason": "flood"})
    assert done.status_code == 200
    summary = researcher.get("/admin/summary.json?include_link=1").json()["conditions"]
    assert summary["multi"]["participants"] == 0 and summary["single"]["participants"] == 1
    assert "3 excluded participants" in researcher.get("/admin").text
    exported = researcher.get("/admin/export/participants.csv").text
    assert exported.count(",flood") == 3  # the exports keep them, marked
    # one participant back in
    researcher.post(f"/admin/participants/{public_id}/include", data={"csrf_token": token})
    assert researcher.get("/admin/summary.json?include_link=1").json()["conditions"]["multi"]["participants"] == 1


def test_study_quota(make_client) -> None:
    client = make_client(max_participants=2)
    consent(twin(client, "203.0.113.1"))
    consent(twin(client, "203.0.113.2"))
    late = twin(client, "203.0.113.3")
    assert "This study has all the participants it needs" in late.get("/").text
    refused = late.post("/consent", data={"csrf_token": csrf(late), "consent": "yes"},
                        follow_redirects=False)
    assert refused.status_code == 403 and "all the participants it needs" in refused.text
    assert rows(client, Participant) == 2


# --- request bodies and text ------------------------------------------------------------

def test_bodies_are_capped_while_reading(make_client) -> None:
    client = make_client(max_body_bytes=10_000)
    consent(client)
    declared = client.post("/api/messages", content=b"{" + b" " * 20_000 + b"}",
                           headers={"X-CSRF-Token": csrf(client),
                                    "content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"error": "request body too large: the limit is 10000 bytes"}
    assert "content-security-policy" in declared.headers  # the security headers too
    # no Content-Length (chunked): the server stops reading by itself, a chunk past the cap
    pulled: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        pulled.append(1)
        return {"type": "http.request", "body": b" " * 1000, "more_body": len(pulled) < 1000}

    async def send_(message: dict) -> None:
        sent.append(message)

    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/messages", "raw_path": b"/api/messages",
             "root_path": "", "query_string": b"", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked"), (b"cookie", cookie.encode()),
                         (b"x-csrf-token", csrf(client).encode())]}
    anyio.run(client.app, scope, receive, send_)
    assert sent[0]["status"] == 413
    assert b"request body too large" in b"".join(m.get("body", b"") for m in sent[1:])
    assert len(pulled) <= 11  # 10 kB read of the 1 MB offered
    assert send(client, "We cooked at home.")["replies"]  # a normal message still works


@pytest.mark.parametrize("raw, message", [
    ('"We cooked\\u0000 at home"', "message contains a NUL character (U+0000)"),
    ('"We cooked \\ud800 at home"', "message contains an unpaired surrogate (U+D800)"),
])
def test_nul_and_lone_surrogates_are_a_clear_400(make_client, caplog, raw, message) -> None:
    client = make_client()
    consent(client)
    with client.app.state.sessions() as db:
        before = db.scalar(select(Participant.version))
    response = client.post("/api/messages", content=(
        '{"client_id": "m1", "text": ' + raw + "}").encode(),
        headers={"X-CSRF-Token": csrf(client), "content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]
    with client.app.state.sessions() as db:  # nothing stored, not even half
        assert db.scalar(select(func.count(Message.id)).where(Message.role == "participant")) == 0
        assert db.scalar(select(Participant.version)) == before
    assert "cooked" not in caplog.text
    assert send(client, "We cooked at home.", client_id="m1")["replies"]  # the id is still free


def test_unstorable_questionnaire_text_and_client_ids(make_client) -> None:
    client = make_client()
    consent(client)
    bad_id = send(client, "hello", client_id="a\x00b", expect=400)
    assert "client_id may hold only" in bad_id["error"]
    while not send(client, RICH["job"])["cues"]["finished"]:
        pass
    refused = client.post("/survey", data={"csrf_token": csrf(client), "item_enjoyed": "5",
                                            "item_comment": "fine\x00"})
    assert refused.status_code == 400 and "contains a NUL character" in refused.text


def test_ids_in_paths_are_checked_before_any_lookup(make_client) -> None:
    client = make_client()
    make_admin(client)
    log_in(client)
    token = page_csrf(client, "/admin")
    assert client.get("/admin/participants/ab%00cd").status_code == 404  # was a 500 on PostgreSQL
    assert client.post("/admin/groups/ab%00cd/exclude", data={"csrf_token": token}).status_code == 404


def test_database_errors_never_show_the_values(make_client) -> None:
    client = make_client()
    assert client.app.state.engine.hide_parameters


def test_right_to_left_text_is_isolated(make_client) -> None:
    client = make_client()
    consent(client)
    send(client, "\u202eevil reversed text")
    make_admin(client)
    log_in(client)
    public_id = re.search(r"/admin/participants/([0-9a-f]{16})",
                          client.get("/admin/participants").text).group(1)
    page = client.get(f"/admin/participants/{public_id}").text
    assert '<p class="text" dir="auto">\u202eevil reversed text</p>' in page
    assert 'text.dir = "auto"' in client.get("/static/chat.js").text
    assert "unicode-bidi: isolate" in client.get("/static/style.css").text


# --- shared devices and sessions --------------------------------------------------------

def test_the_session_ends_on_completion(make_client) -> None:
    client = make_client()
    consent(client)
    while not send(client, RICH["job"])["cues"]["finished"]:
        pass
    client.post("/survey", data={"csrf_token": csrf(client), "item_enjoyed": "4"})
    # the POST above followed the redirect to /done, which showed the code and ended it
    assert client.get("/api/session").status_code == 401
    landing = client.get("/").text
    assert "continue where you left off" not in landing
    assert client.get("/done", follow_redirects=False).status_code == 303


def test_a_new_participant_at_the_same_browser(make_client) -> None:
    client = make_client()
    consent(client)
    send(client, "My secret: we live at 12 Elm Street.")
    landing = client.get("/").text
    assert "continue where you left off" in landing and "I'm a new participant" in landing
    token = re.search(r'action="/leave">\s*<input type="hidden" name="csrf_token" value="([^"]+)"',
                      landing).group(1)
    left = client.post("/leave", data={"csrf_token": token}, follow_redirects=False)
    assert left.status_code == 303
    assert client.get("/api/session").status_code == 401
    assert "continue where you left off" not in client.get("/").text


def test_an_idle_session_expires(make_client) -> None:
    client = make_client(session_idle_minutes=30)
    consent(client)
    assert client.get("/api/session").status_code == 200
    with client.app.state.sessions() as db:
        p = db.scalar(select(Participant))
        p.last_active_at = p.last_active_at - dt.timedelta(minutes=31)
        db.commit()
    assert client.get("/api/session").status_code == 401


def test_the_time_limit_counts_active_time(make_client) -> None:
    client = make_client()
    consent(client)
    with client.app.state.sessions() as db:  # consented two hours ago, then a long break
        p = db.scalar(select(Participant))
        p.consented_at -= dt.timedelta(hours=2)
        p.last_active_at -= dt.timedelta(minutes=100)
        db.commit()
    reply = send(client, RICH["dwelling"])
    assert not reply["cues"]["finished"]
    with client.app.state.sessions() as db:
        assert 299 <= db.scalar(select(Participant.active_s)) <= 301  # the break counts 5 min


def test_consent_page_faq_and_limit_agree(make_client) -> None:
    client = make_client()
    landing = client.get("/").text
    assert "It usually takes about\n      20 minutes" in landing
    assert "after 60 minutes of chatting" in landing
    consent(client)
    answer = send(client, "how long will this take?")["replies"][0]["text"]
    assert "about 20 minutes" in answer and "after 60 minutes" in answer


# --- accounts ---------------------------------------------------------------------------

def test_weak_passwords_are_refused() -> None:
    from communitybots.web.accounts import AccountError, check_password

    for weak in ("password123", "aaaaaaaaaaaa", "ada12345678", "qwertyuiop1"):
        with pytest.raises(AccountError, match="too easy to guess"):
            check_password(weak, "ada")
    check_password(PASSWORD, "ada")


def test_account_commands(make_client, database_url) -> None:
    client = make_client()
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, ["admin", *args, "--database-url", database_url], input=input)

    weak = run("create", "grace", "--password-stdin", input="password123\n")
    assert weak.exit_code == 1 and "too easy to guess" in weak.output
    assert run("create", "grace", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    log_in(client, "grace", PASSWORD)
    listed = run("list")
    assert listed.exit_code == 0 and re.search(r"grace\tenabled\tlast login .+\t1 open", listed.output)
    assert run("revoke-sessions", "grace").output.startswith("ended 1 session(s)")
    assert client.get("/admin/summary.json").status_code == 401
    assert attempt(client, "grace", PASSWORD).status_code == 303
    assert run("disable", "grace").exit_code == 0
    assert client.get("/admin/summary.json").status_code == 401  # sessions ended
    assert attempt(twin(client, "192.0.2.3"), "grace", PASSWORD).status_code == 401
    assert run("enable", "grace").exit_code == 0
    reset = run("reset-password", "grace", "--password-stdin", input="a long enough secret\n")
    assert reset.exit_code == 0, reset.output
    assert attempt(client, "grace", "a long enough secret").status_code == 303
    assert run("delete", "grace", "--yes").exit_code == 0
    assert rows(client, Admin) == 0
    assert client.get("/admin/summary.json").status_code == 401
    missing = run("disable", "nobody")
    assert missing.exit_code == 1 and "no account 'nobody'" in missing.output


# --- CSRF, HTTPS, caching ---------------------------------------------------------------

def test_csrf_token_is_tied_to_the_login_session(make_client) -> None:
    client = make_client()
    make_admin(client)
    log_in(client)
    session_token = page_csrf(client, "/admin")
    assert session_token != client.cookies["cb_csrf"]
    # the browser-wide token no longer works on researcher pages
    assert client.post("/admin/logout", data={"csrf_token": client.cookies["cb_csrf"]}).status_code == 403
    other = twin(client, "192.0.2.8")
    log_in(other)
    assert page_csrf(other, "/admin") != session_token  # each login has its own
    assert other.post("/admin/logout", data={"csrf_token": session_token}).status_code == 403
    assert client.post("/admin/logout", data={"csrf_token": session_token},
                       follow_redirects=False).status_code == 303


def test_https_gets_secure_cookies_and_hsts_and_private_pages_no_store(make_client) -> None:
    plain = make_client()
    response = plain.get("/")
    assert "strict-transport-security" not in response.headers
    assert "Secure" not in response.headers["set-cookie"]
    secure = TestClient(plain.app, base_url="https://127.0.0.1")
    response = secure.get("/")
    assert response.headers["strict-transport-security"] == "max-age=15552000"
    assert "; Secure" in response.headers["set-cookie"]
    made = secure.post("/consent", data={"csrf_token": secure.cookies["cb_csrf"],
                                         "consent": "yes"}, follow_redirects=False)
    assert "; Secure" in made.headers["set-cookie"]
    for path in ("/api/session", "/admin/login", "/chat"):
        assert secure.get(path, follow_redirects=False).headers["cache-control"] == "no-store", path
    assert "no-store" not in plain.get("/static/style.css").headers.get("cache-control", "")
