"""Participant side: consent, chat (page + JSON API), post-survey, completion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from communitybots.store import Answer, utcnow

from .. import conversation
from ..deps import (
    DB,
    AppSettings,
    CurrentParticipant,
    CurrentStudy,
    OptionalParticipant,
    check_csrf_form,
    check_csrf_header,
)
from ..security import PARTICIPANT_COOKIE, completion_code
from ..settings import CONDITIONS
from ..templating import templates

router = APIRouter(tags=["participant"])

_NEXT_PAGE = {"chatting": "/chat", "post_survey": "/survey", "completed": "/done"}


class MessageIn(BaseModel):
    client_id: str = Field(description="client-made idempotency key of this message")
    text: str
    kind: str = Field(default="message", pattern="^(message|skip_button)$")


@router.get("/", response_class=HTMLResponse)
def landing(request: Request, participant: OptionalParticipant, study: CurrentStudy,
            condition: str | None = None) -> Response:
    fixed = condition if condition in CONDITIONS else None
    return templates.TemplateResponse(request, "landing.html", {
        "survey": study.survey, "condition": fixed, "bad_condition": bool(condition) and not fixed,
        "resume": _NEXT_PAGE[participant.status] if participant else None,
    })


@router.post("/consent", dependencies=[Depends(check_csrf_form)])
async def consent(request: Request, db: DB,
                  study: CurrentStudy,
                  settings: AppSettings) -> Response:
    form = await request.form()
    if form.get("consent") != "yes":
        return templates.TemplateResponse(request, "landing.html", {
            "survey": study.survey, "condition": form.get("condition") or None,
            "error": "Please tick the consent box to take part.", "resume": None,
        }, status_code=400)
    requested = form.get("condition")
    condition, assignment = conversation.choose_condition(
        requested if isinstance(requested, str) and requested else None)
    _participant, token = conversation.start(db, study, condition, assignment)
    response = RedirectResponse("/chat", status_code=303)
    response.set_cookie(PARTICIPANT_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies, max_age=60 * 60 * 24 * 30)
    return response


@router.get("/chat", response_class=HTMLResponse)
def chat_page(request: Request, participant: CurrentParticipant,
              study: CurrentStudy,
              settings: AppSettings) -> Response:
    if participant.status != "chatting":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    return templates.TemplateResponse(request, "chat.html", {
        "survey": study.survey, "max_chars": settings.max_message_chars,
    })


@router.get("/api/session")
def session_state(participant: CurrentParticipant,
                  db: DB, study: CurrentStudy,
                  settings: AppSettings) -> dict[str, Any]:
    data = conversation.transcript(db, study, participant)
    data["limits"] = {"max_chars": settings.max_message_chars,
                      "messages_per_window": settings.rate_limit_messages,
                      "window_s": settings.rate_limit_window_s}
    return data


@router.post("/api/messages", dependencies=[Depends(check_csrf_header)])
def send_message(body: MessageIn, participant: CurrentParticipant,
                 db: DB, study: CurrentStudy,
                 settings: AppSettings) -> dict[str, Any]:
    text = conversation.SKIP_TEXT if body.kind == "skip_button" else body.text
    result = conversation.take_turn(db, study, settings, participant.id, body.client_id,
                                    text, kind=body.kind)
    return {"replies": result.replies, "cues": result.cues, "replayed": result.replayed}


@router.get("/survey", response_class=HTMLResponse)
def post_survey_page(request: Request, participant: CurrentParticipant,
                     db: DB, study: CurrentStudy) -> Response:
    if participant.status != "post_survey":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    return templates.TemplateResponse(request, "survey.html", {"survey": survey, "errors": []})


@router.post("/survey", dependencies=[Depends(check_csrf_form)])
async def post_survey_submit(request: Request,
                             participant: CurrentParticipant,
                             db: DB,
                             study: CurrentStudy) -> Response:
    if participant.status != "post_survey":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    form = await request.form()
    values: dict[str, str] = {}
    errors: list[str] = []
    for item in survey.post_survey:
        raw = form.get(f"item_{item.id}")
        value = raw.strip() if isinstance(raw, str) else ""
        if item.kind == "likert":
            if value and not (value.isdigit() and 1 <= int(value) <= item.scale):
                errors.append(f"{item.text}: choose a value from 1 to {item.scale}")
                continue
        elif len(value) > 5000:
            errors.append(f"{item.text}: at most 5000 characters")
            continue
        if value:
            values[item.id] = value
    if errors:
        return templates.TemplateResponse(request, "survey.html",
                                          {"survey": survey, "errors": errors}, status_code=400)
    now = utcnow()
    existing = set(db.scalars(select(Answer.item_id).where(Answer.participant_id == participant.id)))
    for item_id, value in values.items():
        if item_id not in existing:
            db.add(Answer(participant_id=participant.id, item_id=item_id, value=value, created_at=now))
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
              study: CurrentStudy) -> Response:
    if participant.status != "completed":
        return RedirectResponse(_NEXT_PAGE[participant.status], status_code=303)
    return templates.TemplateResponse(request, "done.html", {
        "survey": study.survey, "code": participant.completion_code,
    })


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
