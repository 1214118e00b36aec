"""Researcher side: login, dashboard with plots, participants, transcripts, deletion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from communitybots import analytics
from communitybots.store import Answer, EventRow, Message, Participant

from .. import accounts, plots
from ..deps import DB, AppSettings, CurrentAdmin, CurrentStudy, check_csrf_form
from ..security import ADMIN_COOKIE
from ..study import Study
from ..templating import templates

router = APIRouter(prefix="/admin", tags=["admin"])


def _safe_next(target: str | None) -> str:
    """Only local researcher pages are allowed after login (no open redirect)."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(request, "admin_login.html",
                                      {"next": _safe_next(next), "error": None})


@router.post("/login", dependencies=[Depends(check_csrf_form)])
async def login(request: Request, db: DB,
                settings: AppSettings) -> Response:
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    throttle: accounts.LoginThrottle = request.app.state.login_throttle
    wait = throttle.wait_s(username)
    if wait:
        return templates.TemplateResponse(request, "admin_login.html", {
            "next": target, "error": f"Too many failed logins for this account; try again "
                                     f"in {wait} s."}, status_code=429,
            headers={"Retry-After": str(wait)})
    token = accounts.log_in(db, username, password, settings.admin_session_hours)
    if token is None:
        throttle.failed(username)
        return templates.TemplateResponse(request, "admin_login.html", {
            "next": target, "error": "Wrong username or password."}, status_code=401)
    throttle.succeeded(username)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", path="/admin",
                        secure=settings.secure_cookies,
                        max_age=int(settings.admin_session_hours * 3600))
    return response


@router.post("/logout", dependencies=[Depends(check_csrf_form)])
def logout(request: Request, db: DB) -> Response:
    accounts.log_out(db, request.cookies.get(ADMIN_COOKIE))
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


def _topic_titles(study: Study) -> dict[str, str]:
    return {t.id: t.title for _a, t in study.survey.topics()}


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, admin: CurrentAdmin,
              db: DB, study: CurrentStudy) -> Response:
    order = [t.id for _a, t in study.survey.topics()]
    summary = analytics.summary(analytics.load(db), order)
    return templates.TemplateResponse(request, "admin_dashboard.html", {
        "admin": admin, "survey": study.survey, "s": summary, "fmt": analytics.fmt,
        "conditions": analytics.CONDITIONS, "titles": _topic_titles(study),
        "plots": [(name, caption) for name, (caption, _r) in plots.PLOTS.items()],
        "parts": analytics.QUALITY_PARTS,
    })


@router.get("/summary.json")
def summary_json(_admin: CurrentAdmin, db: DB,
                 study: CurrentStudy) -> dict[str, Any]:
    order = [t.id for _a, t in study.survey.topics()]
    return analytics.public(analytics.summary(analytics.load(db), order))


@router.get("/plots/{name}.png")
def plot(name: str, _admin: CurrentAdmin, db: DB,
         study: CurrentStudy) -> Response:
    if name not in plots.PLOTS:
        raise HTTPException(404, f"no plot named {name!r}")
    order = [t.id for _a, t in study.survey.topics()]
    summary = analytics.summary(analytics.load(db), order)
    png = plots.render(name, summary, _topic_titles(study))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/participants", response_class=HTMLResponse)
def participants(request: Request, admin: CurrentAdmin,
                 db: DB, deleted: str | None = None) -> Response:
    counts = dict(db.execute(select(Message.participant_id, func.count(Message.id))
                             .where(Message.role == "participant")
                             .group_by(Message.participant_id)).all())
    rows = db.scalars(select(Participant).order_by(Participant.id.desc())).all()
    return templates.TemplateResponse(request, "admin_participants.html", {
        "admin": admin, "rows": rows, "counts": counts, "deleted": deleted})


def _participant(db: Session, public_id: str) -> Participant:
    p = db.scalar(select(Participant).where(Participant.public_id == public_id))
    if p is None:
        raise HTTPException(404, f"no participant {public_id!r}")
    return p


@router.get("/participants/{public_id}", response_class=HTMLResponse)
def transcript(request: Request, public_id: str, admin: CurrentAdmin,
               db: DB, study: CurrentStudy) -> Response:
    p = _participant(db, public_id)
    survey, _ = study.engine(p.survey_pk, p.condition, db)
    messages = db.scalars(select(Message).where(Message.participant_id == p.id)).all()
    events = db.scalars(select(EventRow).where(EventRow.participant_id == p.id)).all()
    items: list[tuple[int, str, Any]] = sorted(
        [(m.seq, "message", m) for m in messages] + [(e.seq, "event", e) for e in events],
        key=lambda x: x[0])
    answers = db.scalars(select(Answer).where(Answer.participant_id == p.id)
                         .order_by(Answer.item_id)).all()
    return templates.TemplateResponse(request, "admin_transcript.html", {
        "admin": admin, "p": p, "items": items, "answers": answers, "survey": survey,
        "parts": analytics.QUALITY_PARTS})


def delete_participant(db: Session, participant: Participant) -> None:
    """Remove one participant's messages, events, answers and session."""
    for table in (Answer, EventRow, Message):
        db.execute(delete(table).where(table.participant_id == participant.id))
    db.execute(delete(Participant).where(Participant.id == participant.id))
    db.commit()


@router.post("/participants/{public_id}/delete", dependencies=[Depends(check_csrf_form)])
def delete_one(public_id: str, _admin: CurrentAdmin,
               db: DB) -> Response:
    delete_participant(db, _participant(db, public_id))
    return RedirectResponse(f"/admin/participants?deleted={public_id}", status_code=303)
