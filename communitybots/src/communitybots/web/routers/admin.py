"""Researcher side: login, dashboard with plots, participants (paged, searchable),
transcripts, deletion (one or many), exclusion, and the audit log."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from communitybots import analytics, records
from communitybots.store import (
    Admin,
    Answer,
    AuditRow,
    EventRow,
    Message,
    Participant,
    SurveyRow,
    utcnow,
)

from .. import accounts, plots
from ..deps import DB, AppSettings, CurrentAdmin, CurrentStudy, check_csrf_form, secure_cookie
from ..inputs import InputError, check_text
from ..security import ADMIN_COOKIE, DEVICE_COOKIE
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

    def page(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        return templates.TemplateResponse(request, "admin_login.html",
                                          {"next": target, "error": error},
                                          status_code=status, headers=headers)

    try:
        accounts.check_login_input(username, password)
    except InputError as err:
        return page(str(err), 400)
    result = accounts.attempt_login(
        db, request.app.state.engine, username, password,
        address=request.client.host if request.client else None,
        device_token=request.cookies.get(DEVICE_COOKIE), hours=settings.admin_session_hours)
    if result.wait_s:
        return page(result.why, 429, {"Retry-After": str(result.wait_s)})
    if result.session is None:
        return page("Wrong username or password.", 401)
    secure = secure_cookie(request, settings)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(ADMIN_COOKIE, result.session, httponly=True, samesite="strict",
                        path="/admin", secure=secure,
                        max_age=int(settings.admin_session_hours * 3600))
    if result.device:
        response.set_cookie(DEVICE_COOKIE, result.device, httponly=True, samesite="strict",
                            path="/admin/login", secure=secure,
                            max_age=accounts.DEVICE_DAYS * 86400)
    return response


@router.post("/logout", dependencies=[Depends(check_csrf_form)])
def logout(request: Request, db: DB) -> Response:
    accounts.log_out(db, request.cookies.get(ADMIN_COOKIE))
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


def _topic_titles(study: Study) -> dict[str, str]:
    return {t.id: t.title for _a, t in study.survey.topics()}


def _versions(db: Session) -> list[dict[str, Any]]:
    """Every stored survey version with its number of participants, oldest first."""
    counts = dict(db.execute(select(Participant.survey_pk, func.count(Participant.id))
                             .group_by(Participant.survey_pk)).all())
    return [{"pk": row.id, "hash": row.spec_hash, "label": row.label or row.spec_hash[:12],
             "created_at": row.created_at, "participants": counts.get(row.id, 0)}
            for row in db.scalars(select(SurveyRow).order_by(SurveyRow.id))]


def _view(db: Session, study: Study, version: str | None,
          include_link: bool) -> tuple[analytics.StudyData, dict[str, Any]]:
    """The participants a dashboard request analyses: one survey version (``version`` is
    its content hash; default the version being served; "all" pools them) and, unless
    ``include_link``, only participants whose condition was drawn at random."""
    versions = _versions(db)
    if version == "all":
        chosen = None
    else:
        wanted = version or study.survey_hash
        chosen = next((v for v in versions if v["hash"] == wanted), None)
        if chosen is None:
            raise HTTPException(404, f"no survey version with hash {wanted[:64]!r}")
    pk = chosen["pk"] if chosen else None
    data = analytics.load(db, pk, include_link=include_link)
    by_link = select(func.count(Participant.id)).where(
        Participant.assignment == "link", Participant.excluded_at.is_(None))
    if pk is not None:
        by_link = by_link.where(Participant.survey_pk == pk)
    return data, {"versions": versions, "version": chosen, "include_link": include_link,
                  "by_link": db.scalar(by_link) or 0}


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, admin: CurrentAdmin, db: DB, study: CurrentStudy,
              version: str | None = None, include_link: bool = False) -> Response:
    order = [t.id for _a, t in study.survey.topics()]
    data, view = _view(db, study, version, include_link)
    summary = analytics.summary(data, order)
    excluded = db.scalar(select(func.count(Participant.id))
                         .where(Participant.excluded_at.is_not(None))) or 0
    query = urlencode({"version": view["version"]["hash"] if view["version"] else "all",
                       **({"include_link": "1"} if include_link else {})})
    return templates.TemplateResponse(request, "admin_dashboard.html", {
        "excluded": excluded, "view": view, "query": query,
        "admin": admin, "survey": study.survey, "s": summary, "fmt": analytics.fmt,
        "conditions": analytics.CONDITIONS, "titles": _topic_titles(study),
        "plots": [(name, caption) for name, (caption, _r) in plots.PLOTS.items()],
        "parts": analytics.QUALITY_PARTS, "compared": _compared_labels(study),
        "min_n": analytics.MIN_PER_CONDITION,
    })


def _compared_labels(study: Study) -> dict[str, str]:
    """The dashboard's name of each compared measure."""
    labels = {"words_per_answer": "Words per answer (participant mean)",
              "skip_rate": "Skip rate (per participant)",
              "interruption_rate": "Interruption rate (per participant)",
              "off_topic_rate": "Off-topic answers steered back (share of answers)",
              "messages": "Messages sent"}
    labels.update({f"quality_{p}": f"Quality: {p} (participant mean)"
                   for p in analytics.QUALITY_PARTS})
    labels.update({f"likert_{item.id}": f"Questionnaire: {item.text}"
                   for item in study.survey.post_survey})
    return labels


@router.get("/summary.json")
def summary_json(_admin: CurrentAdmin, db: DB, study: CurrentStudy,
                 version: str | None = None, include_link: bool = False) -> dict[str, Any]:
    order = [t.id for _a, t in study.survey.topics()]
    data, view = _view(db, study, version, include_link)
    out = analytics.public(analytics.summary(data, order))
    chosen = view["version"]
    out["view"] = {"survey_hash": chosen["hash"] if chosen else "all",
                   "survey_version": chosen["label"] if chosen else "all",
                   "include_link": include_link, "left_out_by_link":
                   0 if include_link else view["by_link"]}
    return out


@router.get("/plots/{name}.png")
def plot(name: str, _admin: CurrentAdmin, db: DB, study: CurrentStudy,
         version: str | None = None, include_link: bool = False) -> Response:
    if name not in plots.PLOTS:
        raise HTTPException(404, f"no plot named {name!r}")
    order = [t.id for _a, t in study.survey.topics()]
    data, _view_ = _view(db, study, version, include_link)
    summary = analytics.summary(data, order)
    png = plots.render(name, summary, _topic_titles(study))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


PAGE_SIZE = 50
_SEARCH = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")


@router.get("/participants", response_class=HTMLResponse)
def participants(request: Request, admin: CurrentAdmin, db: DB, deleted: str | None = None,
                 q: str = "", page: int = 1) -> Response:
    """Participants, newest first, ``PAGE_SIZE`` a page; ``q`` finds a public id,
    panel id or completion code (by its start) or a condition or status (exactly)."""
    query = select(Participant)
    q = q.strip()
    if q:
        if not _SEARCH.match(q):
            raise InputError("search: letters, digits and . _ : @ - only (at most 100)")
        start = q.replace("_", "\\_").replace("%", "\\%") + "%"
        query = query.where(or_(Participant.public_id.like(start, escape="\\"),
                                Participant.panel_id.like(start, escape="\\"),
                                Participant.completion_code.like(start, escape="\\"),
                                Participant.condition == q, Participant.status == q))
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = db.scalars(query.order_by(Participant.id.desc())
                      .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    ids = [p.id for p in rows]
    counts = dict(db.execute(select(Message.participant_id, func.count(Message.id))
                             .where(Message.role == "participant", Message.participant_id.in_(ids))
                             .group_by(Message.participant_id)).all()) if ids else {}
    return templates.TemplateResponse(request, "admin_participants.html", {
        "admin": admin, "rows": rows, "counts": counts, "deleted": deleted,
        "groups": _group_sizes(db), "q": q, "page": page, "pages": pages, "total": total,
        "link": lambda n: "/admin/participants?" + urlencode({**({"q": q} if q else {}), "page": n})})


@router.post("/participants/delete", dependencies=[Depends(check_csrf_form)])
async def delete_many(request: Request, admin: CurrentAdmin, db: DB) -> Response:
    """Bulk deletion of the ticked participants, confirmed by a second box."""
    form = await request.form()
    chosen = [v for v in form.getlist("ids") if isinstance(v, str) and _HEX_ID.match(v)]
    if not chosen:
        raise InputError("no participants ticked: tick the ones to delete")
    if form.get("confirm") != "yes":
        raise InputError("tick 'Yes, delete the ticked participants' to confirm the deletion")
    rows = db.scalars(select(Participant).where(Participant.public_id.in_(chosen))).all()
    n = records.delete_participants(db, rows, _actor(admin), "delete")
    return RedirectResponse(f"/admin/participants?deleted={n}+participants", status_code=303)


def _actor(admin: Admin) -> str:
    return f"researcher {admin.username}"


AUDIT_PAGE = 100


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, admin: CurrentAdmin, db: DB, page: int = 1) -> Response:
    """The audit log, newest first: withdrawals, deletions, exclusions, purges."""
    total = db.scalar(select(func.count(AuditRow.id))) or 0
    pages = max(1, -(-total // AUDIT_PAGE))
    page = min(max(1, page), pages)
    rows = db.scalars(select(AuditRow).order_by(AuditRow.id.desc())
                      .offset((page - 1) * AUDIT_PAGE).limit(AUDIT_PAGE)).all()
    return templates.TemplateResponse(request, "admin_audit.html", {
        "admin": admin, "rows": rows, "page": page, "pages": pages, "total": total})


def _group_sizes(db: Session) -> dict[str, int]:
    """Participants per origin group (consents of one address in one window)."""
    return dict(db.execute(select(Participant.origin_group, func.count(Participant.id))
                           .where(Participant.origin_group.is_not(None))
                           .group_by(Participant.origin_group)).all())


_HEX_ID = re.compile(r"^[0-9a-f]{1,32}$")


def _participant(db: Session, public_id: str) -> Participant:
    # ids are hex: anything else (a NUL included) is looked up nowhere
    p = _HEX_ID.match(public_id) and db.scalar(
        select(Participant).where(Participant.public_id == public_id))
    if p is None:
        raise HTTPException(404, f"no participant {public_id!r}")
    return p


@router.get("/participants/{public_id}", response_class=HTMLResponse)
def transcript(request: Request, public_id: str, admin: CurrentAdmin,
               db: DB, study: CurrentStudy, confirm_delete: bool = False) -> Response:
    p = _participant(db, public_id)
    survey, _ = study.engine(p.survey_pk, p.condition, db)
    messages = db.scalars(select(Message).where(Message.participant_id == p.id)).all()
    events = db.scalars(select(EventRow).where(EventRow.participant_id == p.id)).all()
    items: list[tuple[int, str, Any]] = sorted(
        [(m.seq, "message", m) for m in messages] + [(e.seq, "event", e) for e in events],
        key=lambda x: x[0])
    order = {item.id: i for i, item in enumerate([*survey.pre_survey, *survey.post_survey])}
    answers = sorted(db.scalars(select(Answer).where(Answer.participant_id == p.id)).all(),
                     key=lambda a: (a.phase != "pre", order.get(a.item_id, len(order)), a.item_id))
    texts = {item.id: item.text for item in [*survey.pre_survey, *survey.post_survey]}
    group = _group_sizes(db).get(p.origin_group or "", 0)
    return templates.TemplateResponse(request, "admin_transcript.html", {
        "admin": admin, "p": p, "items": items, "answers": answers, "survey": survey,
        "texts": texts,
        "parts": analytics.QUALITY_PARTS, "group_size": group,
        "confirm_delete": confirm_delete})


@router.post("/participants/{public_id}/delete", dependencies=[Depends(check_csrf_form)])
async def delete_one(request: Request, public_id: str, admin: CurrentAdmin,
                     db: DB) -> Response:
    participant = _participant(db, public_id)
    form = await request.form()
    if form.get("confirm") != public_id:  # the form's "yes, delete" box carries the id
        return RedirectResponse(f"/admin/participants/{public_id}?confirm_delete=true",
                                status_code=303)
    records.delete_participants(db, [participant], _actor(admin), "delete")
    return RedirectResponse(f"/admin/participants?deleted=participant+{public_id}",
                            status_code=303)


MAX_REASON = 200


async def _reason(request: Request) -> str:
    form = await request.form()
    raw = form.get("reason")
    reason = raw.strip() if isinstance(raw, str) else ""
    return check_text(reason, "reason", MAX_REASON) or "excluded by a researcher"


@router.post("/participants/{public_id}/exclude", dependencies=[Depends(check_csrf_form)])
async def exclude_one(request: Request, public_id: str, admin: CurrentAdmin,
                      db: DB) -> Response:
    """Leave one participant out of the analysis (``include`` takes them back)."""
    p = _participant(db, public_id)
    p.excluded_at, p.exclusion_reason = utcnow(), await _reason(request)
    records.audit(db, _actor(admin), "exclude", p.public_id, reason=p.exclusion_reason)
    db.commit()
    return RedirectResponse(f"/admin/participants/{public_id}", status_code=303)


@router.post("/participants/{public_id}/include", dependencies=[Depends(check_csrf_form)])
def include_one(public_id: str, admin: CurrentAdmin, db: DB) -> Response:
    p = _participant(db, public_id)
    p.excluded_at, p.exclusion_reason = None, None
    records.audit(db, _actor(admin), "include", p.public_id)
    db.commit()
    return RedirectResponse(f"/admin/participants/{public_id}", status_code=303)


@router.post("/groups/{group}/exclude", dependencies=[Depends(check_csrf_form)])
async def exclude_group(request: Request, group: str, admin: CurrentAdmin,
                        db: DB) -> Response:
    """Leave out every participant of one origin group (a flood from one address)."""
    reason = await _reason(request)
    rows = db.scalars(select(Participant).where(Participant.origin_group == group)).all() \
        if _HEX_ID.match(group) else []
    if not rows:
        raise HTTPException(404, f"no origin group {group!r}")
    now = utcnow()
    for p in rows:
        if p.excluded_at is None:
            p.excluded_at, p.exclusion_reason = now, reason
            records.audit(db, _actor(admin), "exclude", p.public_id, reason=reason)
    db.commit()
    return RedirectResponse("/admin/participants", status_code=303)
