"""Wizard-of-Oz conversations: a signed-in researcher (the operator) answers as the team.

The participant's page is the one of the multi-agent condition; the replies come from the
operator console (``routers/wizard.py``). CommunityBots (Jiang et al., CSCW 2023) was
designed through such a study, its study app having an operator screen to type as any
chatbot; here the CTM still runs beside the operator, so each human decision is stored
next to the automatic one.

- A participant message is analysed and stored as in the other conditions, and the CTM
  computes its step, but the step is *not* committed: its new state, replies and events
  wait in ``participants.wizard_pending`` as the suggestion shown to the operator. Only
  the bookkeeping of a message (the turn count, the clock) goes into the stored state.
- The operator answers with a *move*: ``say`` (a text as a chosen agent, about a chosen
  topic: a different agent is a hand-over, a different topic closes the current one as
  covered), ``suggestion`` (send the CTM's suggestion: its state is committed, as if the
  bot had answered) or ``end`` (the farewell; the chat ends). Operator turns are bot
  messages marked with the operator's account (``operator_id``, ``operator_name``) and,
  beside each, the suggestion for the participant's last message (``suggestion``).
- One operator at a time: a conversation is answered by whoever holds its row in
  ``wizard_claims`` (primary key: the conversation). Claiming inserts the row or takes it
  over by a conditional UPDATE that only matches an expired claim or one's own; every
  move renews the claim in the same transaction that stores the move, so a move whose
  claim was lost stores nothing. A claim lives ``CLAIM_S`` seconds unless the open
  console renews it.
- Nothing lives in a login session: the claim belongs to the account, the moves are rows,
  and a move carries a client-made id (unique per conversation), so an operator whose
  login expired mid-chat logs in again and resends the same move without storing it twice.
- With ``Settings.wizard_fallback_s`` a participant message that waited that long while
  no operator held the conversation is answered by the CTM (its suggestion committed, an
  event ``wizard_fallback`` saying so).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from communitybots.ctm import ACTIVE, DONE, PENDING, Event, Reply, State
from communitybots.spec import Survey
from communitybots.store import (
    Admin,
    EventRow,
    Message,
    Participant,
    WizardClaim,
    utcnow,
)

from .conversation import (
    CLIENT_ID,
    MAX_ATTEMPTS,
    TurnError,
    TurnResult,
    _append,
    _message_row,
    _replay,
    active_seconds,
    analysis_columns,
    check_rate,
    cues,
    reply_json,
    validate_message,
)
from .security import completion_code
from .settings import WIZARD, Settings
from .study import Study
from .study_flow import after_chat

#: seconds a claim lasts unless the operator's open console renews it
CLAIM_S = 30.0
#: a researcher whose console made a request this recently is online
ONLINE_S = 20.0
#: reply kind of a text the operator wrote (the CTM's kinds are kept when its
#: suggestion is sent)
OPERATOR_KIND = "wizard"
MOVES = ("say", "suggestion", "end")


@dataclass(frozen=True)
class Move:
    """One operator action. ``agent_id``/``topic_id`` (``say`` only) default to the
    active ones; ``text`` of ``end`` defaults to the survey's farewell."""

    client_id: str
    action: str
    text: str = ""
    agent_id: str | None = None
    topic_id: str | None = None


def _iso(when: dt.datetime) -> str:
    return when.isoformat()


# -- claims ------------------------------------------------------------------------------

def claim(db: Session, admin: Admin, participant_id: int) -> None:
    """Make ``admin`` the operator of the conversation, or TurnError 409 naming who is.

    The INSERT fails on the primary key if anyone holds a row; the UPDATE then takes the
    row over only if it is this operator's or has expired. On PostgreSQL a concurrent
    claim waits for the other transaction and re-checks the condition on the committed
    row; on SQLite writers are serialized. Either way one operator wins."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=CLAIM_S)
    try:
        db.execute(insert(WizardClaim.__table__).values(
            participant_id=participant_id, admin_id=admin.id, claimed_at=now,
            expires_at=expires))
        db.commit()
        return
    except IntegrityError:
        db.rollback()
    taken = db.execute(
        update(WizardClaim.__table__)
        .where(WizardClaim.participant_id == participant_id,
               or_(WizardClaim.admin_id == admin.id, WizardClaim.expires_at <= now))
        .values(admin_id=admin.id, claimed_at=now, expires_at=expires)).rowcount
    db.commit()
    if not taken:
        raise TurnError(409, f"{_holder(db, participant_id) or 'another researcher'} is "
                        "answering this conversation; it is free once they release it or "
                        f"their console has been closed for {CLAIM_S:g} s")


def release(db: Session, admin: Admin, participant_id: int) -> None:
    """Give the conversation back (only one's own claim)."""
    db.execute(delete(WizardClaim.__table__).where(
        WizardClaim.participant_id == participant_id, WizardClaim.admin_id == admin.id))
    db.commit()


def renew(db: Session, admin: Admin, participant_id: int, now: dt.datetime) -> bool:
    """Extend one's own live claim (no commit: a move renews it in its own transaction,
    so a move whose claim was lost or taken over stores nothing)."""
    return bool(db.execute(
        update(WizardClaim.__table__)
        .where(WizardClaim.participant_id == participant_id,
               WizardClaim.admin_id == admin.id, WizardClaim.expires_at > now)
        .values(expires_at=now + dt.timedelta(seconds=CLAIM_S))).rowcount)


def _holder(db: Session, participant_id: int, now: dt.datetime | None = None) -> str | None:
    """The name of the operator with a live claim on the conversation (None: free)."""
    row = db.execute(select(Admin.username).join(WizardClaim, WizardClaim.admin_id == Admin.id)
                     .where(WizardClaim.participant_id == participant_id,
                            WizardClaim.expires_at > (now or utcnow()))).first()
    return row[0] if row else None


def seen(db: Session, admin: Admin) -> None:
    """The operator's console is open: they count as online for ``ONLINE_S`` seconds."""
    admin.wizard_seen_at = utcnow()
    db.commit()


def operators_online(db: Session, now: dt.datetime) -> int:
    return int(db.scalar(select(func.count(Admin.id)).where(
        Admin.wizard_seen_at > now - dt.timedelta(seconds=ONLINE_S),
        Admin.disabled_at.is_(None))) or 0)


# -- the participant's side --------------------------------------------------------------

def take_turn(db: Session, study: Study, settings: Settings, participant_id: int,
              client_id: str, text: str, kind: str = "message") -> TurnResult:
    """Store a participant message of a wizard conversation exactly once, with the CTM's
    suggestion for it waiting (uncommitted) for the operator."""
    validate_message(text, client_id, settings)
    for attempt in range(MAX_ATTEMPTS):
        participant = db.get(Participant, participant_id, populate_existing=attempt > 0)
        if participant is None:
            raise TurnError(404, "no such session")
        survey, ctm = study.engine(participant.survey_pk, participant.condition, db)
        stored = db.scalar(select(Message).where(Message.participant_id == participant.id,
                                                 Message.client_id == client_id))
        if stored is not None:
            result = _replay(db, survey, participant, stored)
            db.rollback()
            return result
        state = State.from_json(participant.state_json)
        if state.finished or participant.status != "chatting":
            db.rollback()
            raise TurnError(409, "the conversation has ended; no more messages are accepted")
        now = utcnow()
        check_rate(db, participant, settings, now)
        active = active_seconds(participant, now)
        step = ctm.step(state, text, now=active)
        suggested, replies, events = step.state, step.replies, step.events
        # ``step`` logs the analysis first: that event is stored now, the decisions wait
        analysed, decisions = events[0], events[1:]
        own = {"client_id": client_id, "agent_id": state.agent_id, "topic_id": state.topic_id,
               "kind": kind, "text": text, **analysis_columns(step.analysis)}
        kept = State.from_json(state.to_json())  # the message is counted, not decided on
        kept.turns, kept.last_at = suggested.turns, suggested.last_at
        try:
            participant.state_json = kept.to_json()
            participant.active_s, participant.last_active_at = active, now
            participant.wizard_pending = {
                "turn": participant.next_turn, "at": _iso(now), "answered": False,
                "state": suggested.to_json(), "replies": [asdict(r) for r in replies],
                "events": [asdict(e) for e in decisions]}
            _append(db, participant, participant.next_turn, [], [analysed], now, first=own)
            db.commit()
        except (IntegrityError, StaleDataError):
            db.rollback()
            continue
        return TurnResult([], cues(survey, kept, participant.status),
                          events=[{"kind": analysed.kind, "reason": analysed.reason}])
    raise TurnError(503, "the server is busy with this session; please send again")


def status(db: Session, settings: Settings, participant: Participant) -> dict[str, Any]:
    """What the participant's page says while waiting: is a message unanswered, is an
    operator online / answering this conversation, when the CTM takes over."""
    now = utcnow()
    pending = participant.wizard_pending
    waiting = bool(pending) and not pending.get("answered")
    answering = _holder(db, participant.id, now) is not None
    fallback_in = None
    if waiting and not answering and settings.wizard_fallback_s is not None:
        since = (now - dt.datetime.fromisoformat(pending["at"])).total_seconds()
        fallback_in = max(0.0, round(settings.wizard_fallback_s - since, 1))
    return {"waiting": waiting, "answering": answering,
            "operator_online": answering or operators_online(db, now) > 0,
            "fallback_in_s": fallback_in}


def fall_back_if_due(db: Session, study: Study, settings: Settings,
                     participant_id: int) -> bool:
    """Let the CTM answer the waiting message if it waited ``wizard_fallback_s`` while no
    operator held the conversation; True if it did (exactly once across processes: the
    participant row's version decides)."""
    if settings.wizard_fallback_s is None:
        return False
    for _attempt in range(MAX_ATTEMPTS):
        participant = db.get(Participant, participant_id, populate_existing=True)
        pending = participant.wizard_pending if participant is not None else None
        if (participant is None or not pending or pending.get("answered")
                or participant.status != "chatting"):
            db.rollback()
            return False
        now = utcnow()
        waited = (now - dt.datetime.fromisoformat(pending["at"])).total_seconds()
        if waited < settings.wizard_fallback_s or _holder(db, participant.id, now):
            db.rollback()
            return False
        survey, _ctm = study.engine(participant.survey_pk, participant.condition, db)
        note = Event("wizard_fallback", f"no operator answered within "
                     f"{settings.wizard_fallback_s:g} s; the CTM's suggestion was sent",
                     participant.state_json.get("agent_id"),
                     participant.state_json.get("topic_id"), {"waited_s": round(waited, 1)})
        try:
            _commit_suggestion(db, survey, participant, pending, now, None, None, [note])
            db.commit()
        except (IntegrityError, StaleDataError):
            db.rollback()
            continue
        return True
    return False


def updates(db: Session, study: Study, settings: Settings, participant: Participant,
            after: int) -> dict[str, Any]:
    """The bot messages from ``after`` on, the cues and the waiting status (the
    participant's page asks for them twice a second)."""
    if fall_back_if_due(db, study, settings, participant.id):
        participant = db.get(Participant, participant.id, populate_existing=True)
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    rows = db.scalars(select(Message).where(
        Message.participant_id == participant.id, Message.seq >= after,
        Message.role == "bot").order_by(Message.seq)).all()
    out = {"messages": [reply_json(survey, m) for m in rows],
           "cues": cues(survey, State.from_json(participant.state_json), participant.status),
           "next_seq": participant.next_seq, "wizard": status(db, settings, participant)}
    db.rollback()
    return out


# -- the operator's side -------------------------------------------------------------------

def _suggestion_record(pending: dict[str, Any] | None) -> dict[str, Any] | None:
    """What is stored beside an operator turn: the CTM's replies and decisions for the
    participant's last message."""
    if not pending:
        return None
    return {"turn": pending["turn"],
            "replies": [{k: r[k] for k in ("agent_id", "topic_id", "kind", "text")}
                        for r in pending["replies"]],
            "decisions": [{"kind": e["kind"], "reason": e["reason"]}
                          for e in pending["events"]]}


def _store(db: Session, participant: Participant, events: list[Event], replies: list[Reply],
           now: dt.datetime, operator: Admin | None, suggestion: dict[str, Any] | None,
           client_id: str | None) -> list[SimpleNamespace]:
    """One turn's events then its bot messages; the first message carries the move's
    client id, every message the operator and the suggestion."""
    turn = participant.next_turn
    _append(db, participant, turn, [], events, now)
    seq = participant.next_seq
    version = {"survey_hash": participant.survey_hash,
               "survey_version": participant.survey_version}
    rows = []
    for i, r in enumerate(replies):
        rows.append(_message_row(
            participant.id, seq + i, turn, "bot", r.kind, r.text, now, agent_id=r.agent_id,
            agent_name=r.agent_name, topic_id=r.topic_id, client_id=client_id if i == 0 else None,
            operator_id=operator.id if operator else None,
            operator_name=operator.username if operator else None,
            suggestion=suggestion, **version))
    participant.next_seq = seq + len(rows)
    if rows:
        db.execute(insert(Message.__table__), rows)
    return [SimpleNamespace(**row) for row in rows]


def _finish(survey: Survey, participant: Participant, state: State, now: dt.datetime) -> None:
    """The chat ended with this move: the questionnaire (or the completion code) next."""
    if state.finished and participant.status == "chatting":
        participant.chat_finished_at = now
        participant.status = after_chat(survey)
        if participant.status == "completed":
            participant.completed_at = now
            participant.completion_code = completion_code()


def _commit_suggestion(db: Session, survey: Survey, participant: Participant,
                       pending: dict[str, Any], now: dt.datetime, operator: Admin | None,
                       client_id: str | None, notes: list[Event]) -> list[SimpleNamespace]:
    state = State.from_json(pending["state"])
    participant.state_json = state.to_json()
    participant.wizard_pending = {**pending, "answered": True}
    _finish(survey, participant, state, now)
    events = notes + [Event(**e) for e in pending["events"]]
    replies = [Reply(**r) for r in pending["replies"]]
    record = _suggestion_record(pending) if operator is not None else None
    return _store(db, participant, events, replies, now, operator, record, client_id)


def _say(survey: Survey, state: State, move: Move, name: str) -> tuple[State, list[Event],
                                                                       list[Reply]]:
    """The state after the operator's text, the hand-over / topic events it makes, and
    the text as a reply."""
    agent_id = move.agent_id or state.agent_id
    topic_id = move.topic_id or state.topic_id
    try:
        agent = survey.agent(agent_id)
    except KeyError:
        raise TurnError(400, f"agent_id: no agent {agent_id!r} in this survey") from None
    try:
        topic = survey.topic(topic_id)[1]
    except KeyError:
        raise TurnError(400, f"topic_id: no topic {topic_id!r} in this survey") from None
    new = State.from_json(state.to_json())
    events: list[Event] = []
    if agent.id != state.agent_id:
        events.append(Event("handover", f"operator {name}: {survey.agent(state.agent_id).name} "
                            f"hands over to {agent.name}", state.agent_id, state.topic_id,
                            {"by": "operator", "from_agent": state.agent_id,
                             "to_agent": agent.id}))
        new.agent_id = agent.id
    if topic.id != state.topic_id:
        old = state.topic_id
        if old is not None and new.topic_status.get(old) == ACTIVE:
            new.topic_status[old] = DONE
        new.topic_id = topic.id
        new.topic_status[topic.id] = ACTIVE
        new.low_quality_run = 0
        new.question_index = min(new.topic_progress.get(topic.id, 0), len(topic.questions) - 1)
        events.append(Event("topic_started", f"operator {name} moved to {topic.title!r}"
                            + (f" ({old!r} counted as covered)" if old else ""),
                            new.agent_id, topic.id,
                            {"by": "operator", "from_topic": old,
                             "progress": list(new.progress)}))
    if move.text in topic.questions:  # one of the topic's questions, asked as written
        new.question_index = topic.questions.index(move.text)
        new.topic_progress[topic.id] = new.question_index
    new.stage, new.pending_text = "question", move.text
    new.probes_asked = new.clarifications = new.redirects = 0
    return new, events, [Reply(agent.id, agent.name, topic.id, move.text, OPERATOR_KIND)]


def _end(survey: Survey, state: State, move: Move, name: str) -> tuple[State, list[Event],
                                                                       list[Reply]]:
    new = State.from_json(state.to_json())
    agent = survey.agent(new.agent_id)
    new.finished, new.end_reason = True, "operator"
    if new.topic_id is not None and new.topic_status.get(new.topic_id) == ACTIVE:
        new.topic_status[new.topic_id] = PENDING
    event = Event("survey_end", f"operator {name} ended the chat", new.agent_id, new.topic_id,
                  {"end_reason": "operator", "progress": list(new.progress),
                   "turns": new.turns, "by": "operator"})
    new.topic_id, new.pending_text = None, ""
    return new, [event], [Reply(agent.id, agent.name, None, move.text or survey.farewell,
                                "end")]


def operator_turn(db: Session, study: Study, settings: Settings, admin: Admin,
                  participant_id: int, move: Move) -> dict[str, Any]:
    """Apply one operator move exactly once (see the module docstring)."""
    if move.action not in MOVES:
        raise TurnError(400, f"action: use one of {', '.join(MOVES)}")
    if move.action == "say" or move.text:
        validate_message(move.text, move.client_id, settings)
    elif not CLIENT_ID.match(move.client_id or ""):
        raise TurnError(400, "client_id: 1 to 64 letters, digits, '.', '_', ':' or '-'")
    for attempt in range(MAX_ATTEMPTS):
        participant = db.get(Participant, participant_id, populate_existing=attempt > 0)
        if participant is None or participant.condition != WIZARD:
            raise TurnError(404, "no such wizard conversation")
        stored = db.scalar(select(Message.id).where(Message.participant_id == participant.id,
                                                    Message.client_id == move.client_id))
        if stored is not None:
            db.rollback()
            return {"replayed": True, "messages": []}
        state = State.from_json(participant.state_json)
        if state.finished or participant.status != "chatting":
            db.rollback()
            raise TurnError(409, "the conversation has ended")
        now = utcnow()
        if not renew(db, admin, participant.id, now):
            holder = _holder(db, participant.id, now)
            db.rollback()
            raise TurnError(409, f"{holder} is answering this conversation" if holder else
                            "claim this conversation before answering it")
        survey, _ = study.engine(participant.survey_pk, participant.condition, db)
        pending = participant.wizard_pending
        try:
            if move.action == "suggestion":
                if not pending or pending.get("answered"):
                    db.rollback()
                    raise TurnError(409, "no suggestion is waiting: the participant's last "
                                    "message has been answered")
                rows = _commit_suggestion(db, survey, participant, pending, now, admin,
                                          move.client_id, [])
            else:
                make = _say if move.action == "say" else _end
                new, events, replies = make(survey, state, move, admin.username)
                participant.state_json = new.to_json()
                if pending and not pending.get("answered"):
                    participant.wizard_pending = {**pending, "answered": True}
                _finish(survey, participant, new, now)
                rows = _store(db, participant, events, replies, now, admin,
                              _suggestion_record(pending), move.client_id)
            db.commit()
        except (IntegrityError, StaleDataError):
            db.rollback()
            continue
        return {"replayed": False, "messages": [reply_json(survey, m) for m in rows]}
    raise TurnError(503, "the server is busy with this conversation; please send again")


def queue(db: Session, settings: Settings) -> list[dict[str, Any]]:
    """The live wizard conversations, oldest first: who is waiting since when, and who
    answers them."""
    now = utcnow()
    idle = now - dt.timedelta(minutes=settings.session_idle_minutes)
    rows = db.execute(
        select(Participant, Admin.username, WizardClaim.expires_at)
        .outerjoin(WizardClaim, WizardClaim.participant_id == Participant.id)
        .outerjoin(Admin, Admin.id == WizardClaim.admin_id)
        .where(Participant.condition == WIZARD, Participant.status == "chatting",
               Participant.session_ended_at.is_(None),
               func.coalesce(Participant.last_active_at, Participant.consented_at) > idle)
        .order_by(Participant.consented_at)).all()
    out = []
    for p, holder, expires in rows:
        pending = p.wizard_pending
        waiting = bool(pending) and not pending.get("answered")
        out.append({
            "participant": p.public_id, "consented_at": _iso(p.consented_at),
            "turns": int(p.state_json.get("turns", 0)),
            "waiting_since": pending["at"] if waiting else None,
            "operator": holder if expires is not None and expires > now else None})
    return out


def console(db: Session, study: Study, admin: Admin, participant: Participant,
            after: int) -> dict[str, Any]:
    """What the operator console shows: the transcript from ``after`` on (messages and
    the CTM's events), the topics and what is covered, the cues, the suggestion waiting,
    and who holds the conversation."""
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    state = State.from_json(participant.state_json)
    now = utcnow()
    items: list[dict[str, Any]] = []
    for m in db.scalars(select(Message).where(Message.participant_id == participant.id,
                                              Message.seq >= after)):
        items.append({**reply_json(survey, m), "type": "message", "intent": m.intent,
                      "quality": m.q_overall, "operator": m.operator_name,
                      "suggestion": m.suggestion})
    for e in db.scalars(select(EventRow).where(EventRow.participant_id == participant.id,
                                               EventRow.seq >= after)):
        items.append({"type": "event", "seq": e.seq, "kind": e.kind, "reason": e.reason,
                      "topic_id": e.topic_id})
    items.sort(key=lambda x: x["seq"])
    claim_row = db.get(WizardClaim, participant.id)
    live = claim_row is not None and claim_row.expires_at > now
    pending = participant.wizard_pending
    return {
        "participant": participant.public_id, "status": participant.status,
        "version": participant.version, "next_seq": participant.next_seq, "items": items,
        "cues": cues(survey, state, participant.status),
        "agents": [{"id": a.id, "name": a.name, "colour": a.colour, "avatar": a.avatar}
                   for a in survey.agents],
        "topics": [{"id": t.id, "title": t.title, "agent_id": a.id,
                    "status": state.topic_status.get(t.id, PENDING),
                    "questions": list(t.questions)} for a, t in survey.topics()],
        "claim": {"operator": _holder(db, participant.id, now) if live else None,
                  "mine": live and claim_row.admin_id == admin.id},
        "suggestion": None if not pending else {
            "answered": bool(pending.get("answered")), "at": pending["at"],
            **(_suggestion_record(pending) or {})},
    }
