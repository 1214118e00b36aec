"""The FastAPI application: ``create_app(survey, settings)``.

One router per area (``routers/participant.py``, ``routers/study.py``, ``routers/admin.py``,
``routers/export.py``, ``routers/wizard.py``); the database session, the participant and the researcher
come from the dependencies of ``deps.py``. At creation the app opens the database,
runs the Alembic migrations and records the survey specification.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from communitybots import records
from communitybots.spec import Survey, load_survey
from communitybots.store import make_engine, migrate, session_factory

from .conversation import TurnError
from .deps import CSRFError, NoSession, NotAuthenticated
from .inputs import InputError
from .routers import admin, export, participant, study, wizard
from .security import CSRF_COOKIE, expected_csrf, new_token
from .settings import Settings
from .study import Study, any_survey_calls_llm, register_survey
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


HSTS = (b"strict-transport-security", b"max-age=15552000")  # 180 days, this host only
#: pages and answers that show a participant's words or researcher data: never cached
#: (a shared computer's browser cache, a proxy)
NO_STORE_PREFIXES: tuple[str, ...] = ("/admin", "/api/", "/chat", "/survey", "/done")


def is_https(scope: Scope) -> bool:
    """The client's request came over HTTPS (directly, or per a trusted proxy's
    ``X-Forwarded-Proto``, which uvicorn applies to the scope)."""
    return scope.get("scheme") == "https"


class BrowserMiddleware:
    """Gives every browser a CSRF cookie and the page its CSRF token, and every response
    the security headers: HSTS over HTTPS, ``Cache-Control: no-store`` on pages with
    participant or researcher data."""

    def __init__(self, app: ASGIApp, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # a malformed cookie header: treat as absent
                    continue
                cookies.update({k: m.value for k, m in jar.items()})
        token = cookies.get(CSRF_COOKIE)
        is_new = not token
        if is_new:
            token = cookies[CSRF_COOKIE] = new_token()
        path = scope.get("path", "")
        scope.setdefault("state", {})["csrf_token"] = expected_csrf(path, cookies) or token
        https = is_https(scope)
        no_store = path.startswith(NO_STORE_PREFIXES)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if https:
                    headers.append(HSTS)
                if no_store and not any(k.lower() == b"cache-control" for k, _v in headers):
                    headers.append((b"cache-control", b"no-store"))
                if is_new:
                    cookie = f"{CSRF_COOKIE}={token}; Path=/; SameSite=Lax; HttpOnly"
                    if self.secure or https:
                        cookie += "; Secure"
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


class BodyTooLarge(HTTPException):
    """The request body passed the limit while it was being read (an HTTPException, so
    that FastAPI's body parsing lets it through unchanged)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body too large: the limit is {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413: at once when its
    ``Content-Length`` says so, else as soon as the bytes read pass the limit (a chunked
    body is never read whole)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = (b'{"error":"request body too large: the limit is %d bytes"}' % self.max_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"connection", b"close"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)


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
        # raw text past the retention period goes; once per start, with the migrations
        # (``serve`` runs both in the parent before its workers start)
        if settings.migrate and survey.retention_days is not None:
            records.purge(db, survey.retention_days)
        # a turn on a local SQLite file that no LLM phrases waits on nothing slow: it runs
        # on the event loop (``participant.send_message``); versions registered later by
        # another server are served by that server
        turns_on_loop = engine.dialect.name == "sqlite" and not any_survey_calls_llm(db)

    app = FastAPI(title=f"CommunityBots: {survey.title}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.turns_on_loop = turns_on_loop
    app.state.study = Study(survey, survey_pk, relevance=settings.relevance)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(participant.router)
    app.include_router(study.router)
    app.include_router(admin.router)
    app.include_router(export.router)
    app.include_router(wizard.router)
    # the last added runs first: the security headers go on every answer, the 413 too
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
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

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge) -> Any:
        return JSONResponse({"error": exc.detail}, status_code=413,
                            headers={"Connection": "close"})

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> Any:
        if _wants_html(request):
            return templates.TemplateResponse(request, "error.html",
                                              {"message": str(exc)}, status_code=400)
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(TurnError)
    async def _turn_error(request: Request, exc: TurnError) -> Any:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    return app
