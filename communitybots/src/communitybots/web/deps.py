"""FastAPI dependencies: database session, the current participant, the current
researcher, and CSRF checks.

The ones that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency in a
worker thread, and every such hop costs a request a thread switch and a wait for a free
thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from communitybots.store import Admin, AdminSession, Participant, utcnow

from . import conversation
from .security import (
    ADMIN_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    PARTICIPANT_COOKIE,
    csrf_matches,
    expected_csrf,
    token_hash,
)
from .settings import Settings
from .study import Study


class NotAuthenticated(Exception):
    """A researcher page was asked for without a valid login."""


class CSRFError(Exception):
    """A state-changing request came without the page's CSRF token."""


class NoSession(Exception):
    """A participant page was asked for without a valid session cookie."""


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session for one request. Its teardown runs on the event loop, not in the thread
    pool: under load, a sync teardown would wait for a pool thread while every pool
    thread waits for a database connection that only teardowns give back."""
    db: Session = request.app.state.sessions()
    try:
        yield db
    finally:
        db.close()


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_study(request: Request) -> Study:
    return request.app.state.study


def secure_cookie(request: Request, settings: Settings) -> bool:
    """Cookies are ``Secure`` over HTTPS (directly or through a trusted proxy) or when
    the platform is told so (``--secure-cookies``)."""
    return settings.secure_cookies or request.url.scheme == "https"


def csrf_token(request: Request) -> str:
    """The CSRF token of this page (see ``security.expected_csrf``; the middleware of
    ``app.py`` sets it)."""
    return request.state.csrf_token


def _expected(request: Request) -> str | None:
    return expected_csrf(request.url.path, dict(request.cookies))


async def check_csrf_form(request: Request) -> None:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not csrf_matches(_expected(request), submitted if isinstance(submitted, str) else None):
        raise CSRFError()


async def check_csrf_header(request: Request) -> None:
    if not csrf_matches(_expected(request), request.headers.get(CSRF_HEADER)):
        raise CSRFError()


def optional_participant(request: Request,
                         db: Annotated[Session, Depends(get_db)]) -> Participant | None:
    """The participant of the session cookie. The read transaction ends here, so the
    request holds no pooled connection while it waits for a thread to run its endpoint:
    otherwise, under load, every thread of the pool could wait for a connection that
    only requests waiting for a thread could give back (the row stays loaded)."""
    settings: Settings = request.app.state.settings
    participant = conversation.find_participant(db, request.cookies.get(PARTICIPANT_COOKIE),
                                                idle_minutes=settings.session_idle_minutes)
    db.commit()
    return participant


async def current_participant(
        participant: Annotated[Participant | None, Depends(optional_participant)]) -> Participant:
    if participant is None:
        raise NoSession()
    return participant


def current_admin(request: Request, db: Annotated[Session, Depends(get_db)]) -> Admin:
    token = request.cookies.get(ADMIN_COOKIE)
    if not token:
        raise NotAuthenticated()
    login = db.scalar(select(AdminSession).where(AdminSession.token_hash == token_hash(token)))
    if login is None or login.expires_at <= utcnow():
        raise NotAuthenticated()
    admin = db.get(Admin, login.admin_id)
    if admin is None or admin.disabled_at is not None:
        raise NotAuthenticated()
    return admin


# the dependencies as annotated types, for the routers' signatures
DB = Annotated[Session, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_settings)]
CurrentStudy = Annotated[Study, Depends(get_study)]
OptionalParticipant = Annotated[Participant | None, Depends(optional_participant)]
CurrentParticipant = Annotated[Participant, Depends(current_participant)]
CurrentAdmin = Annotated[Admin, Depends(current_admin)]
