"""Wizard-of-Oz: the operator console (``/admin/wizard``) and the participant's updates.

The console's transcript comes by server-sent events (``/admin/wizard/{id}/stream``):
every ``POLL_S`` the stream reads what is new in the database (so it works with any
number of server processes) and sends it; after ``STREAM_S`` it ends and the browser's
``EventSource`` reconnects with ``Last-Event-ID`` (the next sequence number), so nothing
is missed and no connection is held for ever. The stream renews the operator's claim
and presence every ``BEAT_S``. The participant's page polls ``/api/wizard/updates``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from communitybots.store import Participant, utcnow

from .. import wizard
from ..deps import (
    DB,
    AppSettings,
    CurrentAdmin,
    CurrentParticipant,
    CurrentStudy,
    NotAuthenticated,
    check_csrf_header,
    current_admin,
)
from ..settings import WIZARD
from ..templating import templates
from .admin import _participant

router = APIRouter(tags=["wizard"])

POLL_S = 0.4
BEAT_S = 5.0
STREAM_S = 25.0


class MoveIn(BaseModel):
    client_id: str = Field(description="client-made idempotency key of this move")
    action: str = Field(pattern="^(say|suggestion|end)$")
    text: str = ""
    agent_id: str | None = None
    topic_id: str | None = None


def _conversation(db: Session, public_id: str) -> Participant:
    participant = _participant(db, public_id)
    if participant.condition != WIZARD:
        raise HTTPException(404, f"participant {public_id!r} is not in the wizard condition")
    return participant


@router.get("/admin/wizard", response_class=HTMLResponse)
def queue_page(request: Request, admin: CurrentAdmin, db: DB, study: CurrentStudy,
               settings: AppSettings) -> Response:
    wizard.seen(db, admin)
    return templates.TemplateResponse(request, "admin_wizard_queue.html", {
        "admin": admin, "survey": study.survey, "fallback_s": settings.wizard_fallback_s})


@router.get("/admin/wizard/queue.json")
def queue_json(admin: CurrentAdmin, db: DB, settings: AppSettings) -> dict[str, Any]:
    wizard.seen(db, admin)
    return {"conversations": wizard.queue(db, settings)}


@router.get("/admin/wizard/{public_id}", response_class=HTMLResponse)
def console_page(request: Request, public_id: str, admin: CurrentAdmin, db: DB,
                 study: CurrentStudy, settings: AppSettings) -> Response:
    participant = _conversation(db, public_id)
    wizard.seen(db, admin)
    return templates.TemplateResponse(request, "admin_wizard.html", {
        "admin": admin, "survey": study.survey, "p": participant,
        "max_chars": settings.max_message_chars, "fallback_s": settings.wizard_fallback_s})


@router.post("/admin/wizard/{public_id}/claim", dependencies=[Depends(check_csrf_header)])
def claim(public_id: str, admin: CurrentAdmin, db: DB) -> dict[str, Any]:
    wizard.claim(db, admin, _conversation(db, public_id).id)
    return {"claimed": True, "operator": admin.username}


@router.post("/admin/wizard/{public_id}/release", dependencies=[Depends(check_csrf_header)])
def release(public_id: str, admin: CurrentAdmin, db: DB) -> dict[str, Any]:
    wizard.release(db, admin, _conversation(db, public_id).id)
    return {"claimed": False}


@router.post("/admin/wizard/{public_id}/moves", dependencies=[Depends(check_csrf_header)])
def move(public_id: str, body: MoveIn, admin: CurrentAdmin, db: DB, study: CurrentStudy,
         settings: AppSettings) -> dict[str, Any]:
    participant = _conversation(db, public_id)
    return wizard.operator_turn(db, study, settings, admin, participant.id, wizard.Move(
        body.client_id, body.action, body.text, body.agent_id, body.topic_id))


def _snapshot(app: FastAPI, request: Request, public_id: str, after: int,
              beat: bool) -> dict[str, Any] | None:
    """One read of the console's data (None: the login is no longer valid; ``gone``:
    the conversation was deleted meanwhile)."""
    with app.state.sessions() as db:
        try:
            admin = current_admin(request, db)
        except NotAuthenticated:
            return None
        try:
            participant = _conversation(db, public_id)
        except HTTPException:
            return {"gone": True}
        if beat:
            wizard.renew(db, admin, participant.id, utcnow())
            wizard.seen(db, admin)  # commits the renewal too
        return wizard.console(db, app.state.study, admin, participant, after)


@router.get("/admin/wizard/{public_id}/stream")
async def stream(request: Request, public_id: str, _admin: CurrentAdmin) -> StreamingResponse:
    try:
        after = max(0, int(request.headers.get("last-event-id") or 0))
    except ValueError:
        after = 0

    async def events() -> AsyncIterator[str]:
        nonlocal after
        yield "retry: 1000\n\n"
        started = last_beat = time.monotonic()
        last_state = None
        while True:
            now = time.monotonic()
            beat = now - last_beat >= BEAT_S
            last_beat = now if beat else last_beat
            snap = await run_in_threadpool(_snapshot, request.app, request, public_id,
                                           after, beat)
            if snap is None or snap.get("gone"):
                yield f"event: {'expired' if snap is None else 'gone'}\ndata: {{}}\n\n"
                return
            state = {k: v for k, v in snap.items() if k != "items"}
            if snap["items"] or state != last_state:
                after, last_state = snap["next_seq"], state
                yield f"id: {after}\ndata: {json.dumps(snap, ensure_ascii=False)}\n\n"
            if time.monotonic() - started >= STREAM_S:
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/api/wizard/updates")
def participant_updates(participant: CurrentParticipant, db: DB, study: CurrentStudy,
                        settings: AppSettings, after: int = 0) -> dict[str, Any]:
    """The operator's replies from sequence number ``after`` on, for a wizard
    participant's page (which asks twice a second)."""
    if participant.condition != WIZARD:
        raise HTTPException(404, "this conversation is answered by the chatbots directly")
    return wizard.updates(db, study, settings, participant, max(0, after))
