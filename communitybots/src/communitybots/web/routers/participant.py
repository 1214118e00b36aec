"""Participant side: consent, pre-chat questions, tutorial, chat (page + JSON API),
post-survey, completion (or the recruitment panel's completion URL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from starlette.concurrency import run_in_threadpool

from communitybots.store import Participant, utcnow

from .. import assignment as assignment_
from .. import conversation, panel, questionnaire, study_flow, wizard
from ..conversation import ACTIVE_GAP_S
from ..deps import (
    DB,
    AppSettings,
    CurrentParticipant,
    CurrentStudy,
    NoSession,
    OptionalParticipant,
    check_csrf_form,
    check_csrf_header,
    secure_cookie,
)
from ..security import PARTICIPANT_COOKIE, completion_code
from ..settings import CONDITIONS, LINK_CONDITIONS, WIZARD, Settings
from ..study import Study
from ..templating import templates
from ..throttle import Window, address_key

router = APIRouter(tags=["participant"])

_NEXT_PAGE = study_flow.NEXT_PAGE


class MessageIn(BaseModel):
    client_id: str = Field(description="client-made idempotency key of this message")
    text: str
    kind: str = Field(default="message", pattern="^(message|skip_button)$")


SESSION_COOKIE_S = 24 * 3600  # the server ends idle sessions well before (settings)


def _quota_left(db: Session, settings: Settings) -> int | None:
    """Participants the quota still admits (None: no quota). Participants a researcher
    excluded do not count."""
    if settings.max_participants is None:
        return None
    taken = db.scalar(select(func.count(Participant.id))
                      .where(Participant.excluded_at.is_(None))) or 0
    return max(0, settings.max_participants - taken)


def _landing(request: Request, study: Study, status: int = 200,
             headers: dict[str, str] | None = None, **context: Any) -> Response:
    policy = study.survey.policy
    return templates.TemplateResponse(request, "landing.html", {
        "survey": study.survey, "condition": None, "bad_condition": False, "resume": None,
        "error": None, "full": False, "expected_minutes": f"{policy.expected_minutes:g}",
        "max_minutes": f"{policy.max_minutes:g}", "break_minutes": f"{ACTIVE_GAP_S / 60:g}",
        "panel_params": {}, **context}, status_code=status, headers=headers)


@router.get("/", response_class=HTMLResponse)
def landing(request: Request, participant: OptionalParticipant, study: CurrentStudy,
            db: DB, settings: AppSettings, condition: str | None = None) -> Response:
    fixed = condition if condition in LINK_CONDITIONS else None
    return _landing(request, study, condition=fixed,
                    panel_params=panel.params(study.survey, request.query_params),
                    bad_condition=bool(condition) and not fixed,
                    resume=_NEXT_PAGE[participant.status] if participant else None,
                    full=_quota_left(db, settings) == 0)


@router.post("/leave", dependencies=[Depends(check_csrf_form)])
def leave(participant: OptionalParticipant, db: DB) -> Response:
    """"I'm a new participant": end this browser's session and start over."""
    if participant is not None:
        conversation.end_session(db, participant)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(PARTICIPANT_COOKIE)
    return response


@router.post("/consent", dependencies=[Depends(check_csrf_form)])
async def consent(request: Request, db: DB,
                  study: CurrentStudy,
                  settings: AppSettings) -> Response:
    form = await request.form()
    requested = form.get("condition")
    requested = requested if isinstance(requested, str) and requested else None
    fixed = requested if requested in LINK_CONDITIONS else None
    if form.get("consent") != "yes":
        return _landing(request, study, 400, condition=fixed,
                        error="Please tick the consent box to take part.")
    if _quota_left(db, settings) == 0:
        return _landing(request, study, 403, condition=fixed, full=True)
    group = None
    if settings.consents_per_address:
        window = Window("consent", settings.consents_per_address, settings.consent_window_s)
        wait, group = window.take(request.app.state.engine, address_key(
            request.client.host if request.client else None))
        if wait:
            minutes = max(1, round(wait / 60))
            return _landing(request, study, 429, condition=fixed, error=(
                f"Too many new conversations from this address; try again in about "
                f"{minutes} minute{'s' if minutes != 1 else ''}."),
                headers={"Retry-After": str(wait)})
    panel_id, panel_data = panel.from_form(study.survey, form)
    condition, assignment = assignment_.assign(db, study.survey_pk, requested)
    started, token = conversation.start(
        db, study, condition, assignment, group,
        status=study_flow.first_status(study.survey), panel_id=panel_id, panel_data=panel_data)
    response = RedirectResponse(_NEXT_PAGE[started.status], status_code=303)
    response.set_cookie(PARTICIPANT_COOKIE, token, httponly=True, samesite="lax",
                        secure=secure_cookie(request, settings), max_age=SESSION_COOKIE_S)
    return response


@router.get("/chat", response_class=HTMLResponse)
def chat_page(request: Request, participant: CurrentParticipant,
              study: CurrentStudy,
              settings: AppSettings) -> Response:
    if participant.status != "chatting":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    return templates.TemplateResponse(request, "chat.html", {
        "survey": study.survey, "max_chars": settings.max_message_chars,
        "max_minutes": f"{study.survey.policy.max_minutes:g}",
    })


@router.get("/api/session")
def session_state(participant: CurrentParticipant,
                  db: DB, study: CurrentStudy,
                  settings: AppSettings) -> dict[str, Any]:
    data = conversation.transcript(db, study, participant)
    data["limits"] = {"max_chars": settings.max_message_chars,
                      "messages_per_window": settings.rate_limit_messages,
                      "window_s": settings.rate_limit_window_s}
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    data["clock"] = study_flow.clock(survey, participant)
    if participant.status not in ("chatting",):  # ended by "End chat": the page is done
        data["cues"]["finished"] = True
    return data


@router.post("/api/messages", dependencies=[Depends(check_csrf_header)])
async def send_message(body: MessageIn, request: Request) -> Response:
    """One participant message: its whole database work (the session's participant, the
    turn, the session's end) is one call, and the answer is encoded here: a dependency or
    a return value that FastAPI validates and encodes would each cost every message more
    than the turn's statements.

    The call runs on the event loop when the app says a turn waits on nothing slow (a
    local SQLite file, no LLM: ``app.state.turns_on_loop``), else in a pool thread. The
    hop to a thread cost each message 0.7 ms of server CPU over HTTP (``load.py``, 200
    participants x 30 messages, 2 workers: 5.67 and 5.95 ms with it, 5.00 and 5.28 without):
    the thread wakes on the other core, where the turn's data are not in the cache. On the loop, a turn that meets the other
    worker's SQLite write lock holds this worker's other requests while it waits."""
    state = request.app.state
    args = (state.sessions, state.study, state.settings,
            request.cookies.get(PARTICIPANT_COOKIE), body)
    if state.turns_on_loop:
        result = _send_message(*args)
    else:
        result = await run_in_threadpool(_send_message, *args)
    return JSONResponse({"replies": result.replies, "cues": result.cues,
                         "replayed": result.replayed})


def _send_message(sessions: Callable[[], Session], study: Study, settings: Settings,
                  token: str | None, body: MessageIn) -> conversation.TurnResult:
    with sessions() as db:
        participant = conversation.find_participant(db, token,
                                                    idle_minutes=settings.session_idle_minutes)
        if participant is None:
            raise NoSession()
        text = conversation.SKIP_TEXT if body.kind == "skip_button" else body.text
        # wizard: the message waits for the operator (the replies come by /api/wizard/updates)
        take = wizard.take_turn if participant.condition == WIZARD else conversation.take_turn
        return take(db, study, settings, participant.id, body.client_id, text, kind=body.kind)


@router.get("/survey", response_class=HTMLResponse)
def post_survey_page(request: Request, participant: CurrentParticipant,
                     db: DB, study: CurrentStudy) -> Response:
    if participant.status != "post_survey":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    return templates.TemplateResponse(request, "survey.html", {
        "survey": survey, "values": {}, "problems": {}})


@router.post("/survey", dependencies=[Depends(check_csrf_form)])
async def post_survey_submit(request: Request,
                             participant: CurrentParticipant,
                             db: DB,
                             study: CurrentStudy) -> Response:
    if participant.status != "post_survey":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    form = await request.form()
    values, problems = questionnaire.read(survey.post_survey, form)
    if problems:
        values = questionnaire.submitted(survey.post_survey, form)
        return templates.TemplateResponse(request, "survey.html", {
            "survey": survey, "values": values, "problems": problems}, status_code=400)
    now = utcnow()
    questionnaire.store(db, participant, "post", values)
    participant.status = "completed"
    participant.completed_at = now
    participant.completion_code = participant.completion_code or completion_code()
    try:
        db.commit()
    except (IntegrityError, StaleDataError):  # the form submitted twice at once: first wins
        db.rollback()
    return RedirectResponse("/done", status_code=303)


@router.get("/done", response_class=HTMLResponse)
def done_page(request: Request, participant: CurrentParticipant,
              study: CurrentStudy, db: DB) -> Response:
    """The completion code, shown once: the session ends here, so the next person at
    this browser (a kiosk, a library computer) starts afresh and sees nothing of it."""
    if participant.status != "completed":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    code = participant.completion_code
    conversation.end_session(db, participant)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    # came from a recruitment panel: back there with the code (a page that moves on by
    # itself, not a redirect: the questionnaire's form may not end on another site,
    # the Content-Security-Policy's form-action says)
    response = templates.TemplateResponse(request, "done.html", {
        "survey": study.survey, "code": panel.completion_code(survey, participant, code),
        "panel_url": panel.completion_link(survey, participant, code),
    })
    response.delete_cookie(PARTICIPANT_COOKIE)
    return response


@router.get("/agents.css")
def agents_css(study: CurrentStudy) -> Response:
    """Each agent's colour as ``--agent`` on ``.agent-<id>`` (ids and colours are
    validated by the spec: ``[a-z][a-z0-9_-]*`` and hex, so they are safe in CSS)."""
    rules = []
    for condition in CONDITIONS:
        survey, _ = study.engine(study.survey_pk, condition, None)
        rules += [f".agent-{a.id} {{ --agent: {a.colour}; }}" for a in survey.agents]
    return Response("\n".join(dict.fromkeys(rules)) + "\n", media_type="text/css",
                    headers={"Cache-Control": "max-age=300"})
