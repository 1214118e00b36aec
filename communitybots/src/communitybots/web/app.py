"""The FastAPI application: ``create_app(survey, settings)``.

One router per area (``routers/participant.py``, ``routers/admin.py``,
``routers/export.py``); the database session, the participant and the researcher
come from the dependencies of ``deps.py``. At creation the app opens the database,
runs the Alembic migrations and records the survey specification.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from communitybots.spec import Survey, load_survey
from communitybots.store import make_engine, migrate, session_factory

from .accounts import LoginThrottle
from .conversation import TurnError
from .deps import CSRFError, NoSession, NotAuthenticated
from .routers import admin, export, participant
from .security import CSRF_COOKIE, new_token
from .settings import Settings
from .study import Study, register_survey
from .templating import templates

STATIC_DIR = Path(__file__).with_name("static")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class BrowserMiddleware:
    """Gives every browser a CSRF cookie and every response the security headers."""

    def __init__(self, app: ASGIApp, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # a malformed cookie header: treat as absent
                    continue
                if CSRF_COOKIE in jar:
                    token = jar[CSRF_COOKIE].value
        is_new = not token
        token = token or new_token()
        scope.setdefault("state", {})["csrf_token"] = token

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if is_new:
                    cookie = f"{CSRF_COOKIE}={token}; Path=/; SameSite=Lax; HttpOnly"
                    if self.secure:
                        cookie += "; Secure"
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def create_app(survey: Survey | str | Path, settings: Settings | None = None) -> FastAPI:
    """The platform serving ``survey`` (a spec or a YAML path) with ``settings``."""
    settings = settings or Settings.from_env()
    if not isinstance(survey, Survey):
        survey = load_survey(survey)
    engine = make_engine(settings.database_url)
    if settings.migrate:
        migrate(engine)
    sessions = session_factory(engine)
    with sessions() as db:
        survey_pk = register_survey(db, survey)

    app = FastAPI(title=f"CommunityBots: {survey.title}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.study = Study(survey, survey_pk, relevance=settings.relevance)
    app.state.login_throttle = LoginThrottle()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(participant.router)
    app.include_router(admin.router)
    app.include_router(export.router)
    app.add_middleware(BrowserMiddleware, secure=settings.secure_cookies)

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, _exc: NotAuthenticated) -> Any:
        if _wants_html(request) and request.method == "GET":
            return RedirectResponse(f"/admin/login?next={request.url.path}", status_code=303)
        return JSONResponse({"error": "researcher login required"}, status_code=401)

    @app.exception_handler(CSRFError)
    async def _csrf(request: Request, _exc: CSRFError) -> Any:
        message = "CSRF token missing or wrong: reload the page and try again"
        if _wants_html(request):
            return templates.TemplateResponse(request, "error.html",
                                              {"message": message}, status_code=403)
        return JSONResponse({"error": message}, status_code=403)

    @app.exception_handler(NoSession)
    async def _no_session(request: Request, _exc: NoSession) -> Any:
        if request.method == "GET" and not request.url.path.startswith("/api/"):
            return RedirectResponse("/", status_code=303)
        return JSONResponse({"error": "no participant session: start from the consent page"},
                            status_code=401)

    @app.exception_handler(TurnError)
    async def _turn_error(request: Request, exc: TurnError) -> Any:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    return app
