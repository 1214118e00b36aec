"""The participant's pages around the chat: pre-chat questions, the tutorial, "End
chat", withdrawal, and the agents' SVG avatars (see ``study_flow.py``)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm.exc import StaleDataError

from communitybots import records
from communitybots.store import EventRow, utcnow

from .. import avatars, questionnaire, study_flow
from ..conversation import TurnError
from ..deps import (
    DB,
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
NEXT_PAGE = study_flow.NEXT_PAGE


def _elsewhere(status: str) -> Response:
    return RedirectResponse(NEXT_PAGE[status], status_code=303)


@router.get("/pre", response_class=HTMLResponse)
def pre_page(request: Request, participant: CurrentParticipant, db: DB,
             study: CurrentStudy) -> Response:
    if participant.status != "pre_survey":
        return _elsewhere(participant.status)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    return templates.TemplateResponse(request, "pre_survey.html", {
        "survey": survey, "values": {}, "problems": {}})


@router.post("/pre", dependencies=[Depends(check_csrf_form)])
async def pre_submit(request: Request, participant: CurrentParticipant, db: DB,
                     study: CurrentStudy) -> Response:
    if participant.status != "pre_survey":
        return _elsewhere(participant.status)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    form = await request.form()
    values, problems = questionnaire.read(survey.pre_survey, form)
    if problems:
        values = questionnaire.submitted(survey.pre_survey, form)
        return templates.TemplateResponse(request, "pre_survey.html", {
            "survey": survey, "values": values, "problems": problems}, status_code=400)
    questionnaire.store(db, participant, "pre", values)
    following = study_flow.after_pre(survey)
    if following == "chatting":
        study_flow.begin_chat(participant, utcnow())
    else:
        participant.status = following
    try:
        db.commit()
    except StaleDataError:  # submitted twice at once: the first counts
        db.rollback()
    return _elsewhere(following)


@router.get("/tutorial", response_class=HTMLResponse)
def tutorial_page(request: Request, participant: CurrentParticipant, db: DB,
                  study: CurrentStudy) -> Response:
    if participant.status != "tutorial":
        return _elsewhere(participant.status)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    tutorial = survey.tutorial
    if tutorial is None:  # the status exists only when the survey has one
        return _elsewhere("chatting")
    return templates.TemplateResponse(request, "tutorial.html", {
        "survey": survey, "condition": participant.condition, "agents": survey.agents,
        "text": tutorial.single if participant.condition == "single" else tutorial.multi,
        "topics": len(survey.topics()), "max_minutes": f"{survey.policy.max_minutes:g}"})


@router.post("/tutorial", dependencies=[Depends(check_csrf_form)])
def tutorial_done(participant: CurrentParticipant, db: DB) -> Response:
    if participant.status == "tutorial":
        study_flow.begin_chat(participant, utcnow())
        try:
            db.commit()
        except StaleDataError:
            db.rollback()
    return _elsewhere("chatting" if participant.status == "tutorial" else participant.status)


@router.post("/api/end", dependencies=[Depends(check_csrf_header)])
def end_chat(participant: CurrentParticipant, db: DB, study: CurrentStudy) -> dict[str, Any]:
    """"End chat": allowed once every topic is done or the time limit is up (checked
    here, whatever the page shows); the chat ends and the questionnaire follows."""
    if participant.status != "chatting":
        return {"next": NEXT_PAGE.get(participant.status, "/")}
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    now = utcnow()
    clock = study_flow.clock(survey, participant, now)
    if not clock["can_end"]:
        minutes = math.ceil(clock["end_in_s"] / 60)
        raise TurnError(409, f"End chat is available once every topic is done or after "
                        f"{survey.policy.max_minutes:g} minutes ({minutes} min to go)")
    db.add(EventRow(participant_id=participant.id, seq=participant.next_seq,
                    turn=participant.next_turn, kind="chat_ended", created_at=now,
                    reason="the participant pressed End chat ("
                    + ("every topic done" if clock["topics_done"] else "the time limit is up")
                    + ")", data={"elapsed_s": clock["elapsed_s"]}))
    participant.next_seq += 1
    participant.chat_finished_at = participant.chat_finished_at or now
    participant.status = study_flow.after_chat(survey)
    if participant.status == "completed":
        participant.completed_at = now
        participant.completion_code = participant.completion_code or completion_code()
    try:
        db.commit()
    except StaleDataError:
        db.rollback()
        raise TurnError(409, "a message was being answered; press End chat again") from None
    return {"next": NEXT_PAGE[participant.status]}


@router.get("/withdraw", response_class=HTMLResponse)
def withdraw_page(request: Request, participant: OptionalParticipant,
                  study: CurrentStudy) -> Response:
    if participant is None:
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "withdraw.html", {
        "survey": study.survey, "withdrawn": False, "error": None,
        "back": NEXT_PAGE.get(participant.status, "/")})


@router.post("/withdraw", dependencies=[Depends(check_csrf_form)])
async def withdraw(request: Request, participant: OptionalParticipant, db: DB,
                   study: CurrentStudy) -> Response:
    """Delete everything of this participant (confirmed), recorded in the audit log."""
    if participant is None:
        return RedirectResponse("/", status_code=303)
    form = await request.form()
    if form.get("confirm") != "yes":
        return templates.TemplateResponse(request, "withdraw.html", {
            "survey": study.survey, "withdrawn": False, "back": NEXT_PAGE.get(participant.status, "/"),
            "error": "Tick the box to confirm that your data should be deleted."}, status_code=400)
    came_from_panel = participant.panel_id is not None
    records.delete_participants(db, [participant], "participant", "withdraw")
    response = templates.TemplateResponse(request, "withdraw.html", {
        "survey": study.survey, "withdrawn": True, "panel": came_from_panel})
    response.delete_cookie(PARTICIPANT_COOKIE)
    return response


@router.get("/avatars/{agent_id}.svg")
def avatar(agent_id: str, study: CurrentStudy) -> Response:
    for condition in CONDITIONS:
        survey, _ = study.engine(study.survey_pk, condition, None)
        for agent in survey.agents:
            if agent.id == agent_id:
                return Response(avatars.svg(agent), media_type="image/svg+xml",
                                headers={"Cache-Control": "max-age=300"})
    raise HTTPException(404, f"no agent {agent_id[:100]!r}")

