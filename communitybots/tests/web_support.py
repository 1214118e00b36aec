"""Fixtures and helpers of the web platform's tests (imported by the test_web_* files).

``database_url`` runs a test on a real SQLite file and, when
``COMMUNITYBOTS_TEST_POSTGRES_URL`` is set (``ci/services.sh`` sets it), again on a
real PostgreSQL server whose ``public`` schema is emptied first. Without that
variable the PostgreSQL runs are skipped locally and fail under ``CI=true``
(``services.missing``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from services import missing
from sqlalchemy import create_engine, text

SURVEY = Path(__file__).parent / "data" / "web_survey.yaml"
PG_URL = os.environ.get("COMMUNITYBOTS_TEST_POSTGRES_URL")
PG_SKIP = "COMMUNITYBOTS_TEST_POSTGRES_URL is not set (communitybots/ci/services.sh sets it in CI)"


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        # connections left by an earlier, interrupted run would block the DROP; only our own
        # role's: autovacuum workers in the database belong to the superuser and may not be ended
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"))
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'communitybots.sqlite3'}"
    if not PG_URL:
        missing(PG_SKIP)
    reset_postgres(PG_URL)
    return PG_URL


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(database_url: str) -> Iterator[AppFactory]:
    """``make_client(survey=SURVEY, **settings)``: a fresh app (a 'server start') on the test's database."""
    clients: list[TestClient] = []

    from communitybots.web import Settings, create_app

    def make(survey: Path = SURVEY, **settings: Any) -> TestClient:
        settings.setdefault("relevance", "tfidf")  # the web layer's tests, not the NLU's
        app = create_app(survey, Settings(database_url=database_url, **settings))
        client = TestClient(app, base_url="http://127.0.0.1")
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
        client.app.state.engine.dispose()  # type: ignore[attr-defined]


def csrf(client: TestClient) -> str:
    if "cb_csrf" not in client.cookies:
        client.get("/")
    return client.cookies["cb_csrf"]


def consent(client: TestClient, condition: str | None = None) -> dict[str, Any]:
    """Consent on the landing page; returns the session state of the chat."""
    data = {"csrf_token": csrf(client), "consent": "yes"}
    if condition:
        data["condition"] = condition
    response = client.post("/consent", data=data, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/chat"
    state = client.get("/api/session")
    assert state.status_code == 200
    return state.json()


def send(client: TestClient, text_: str, client_id: str | None = None, kind: str = "message",
         expect: int = 200) -> dict[str, Any]:
    response = client.post("/api/messages", json={
        "client_id": client_id or uuid.uuid4().hex, "text": text_, "kind": kind},
        headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == expect, response.text
    return response.json()


def make_admin(client: TestClient, username: str = "ada", password: str = "correct horse battery") -> None:
    from communitybots.web.accounts import create_admin

    with client.app.state.sessions() as db:  # type: ignore[attr-defined]
        create_admin(db, username, password)


def log_in(client: TestClient, username: str = "ada", password: str = "correct horse battery") -> None:
    response = client.post("/admin/login", data={
        "csrf_token": csrf(client), "username": username, "password": password, "next": "/admin"},
        follow_redirects=False)
    assert response.status_code == 303, response.text


RICH = {
    "dwelling": "We live in a two bedroom flat on Elm Street; during the lockdown the living "
                "room became an office and a classroom for our two kids, so we bought a folding "
                "desk and moved the sofa next to the window.",
    "family": "My partner and I both worked from home with the children, so we made a daily "
              "schedule: walks at noon, homework until three, and board games with my parents "
              "over video on Sundays.",
    "commute": "Before the pandemic I drove 40 minutes to the office every day; after March "
               "2020 I stopped driving and used the saved time for cycling and cooking breakfast.",
    "job": "My job as a nurse changed completely: twelve hour shifts, protective equipment all "
           "day and meetings on Zoom with colleagues from three hospitals.",
}
