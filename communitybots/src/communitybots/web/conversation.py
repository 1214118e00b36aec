"""A participant's conversation, persisted: start, take a turn, replay a turn.

The CTM engine is pure; this module wraps each of its steps in one database
transaction that stores the participant's message, the engine's events and the bots'
replies, and the new engine state. Two rules keep the record exact:

- Idempotency: a participant message carries a client-made key (``client_id``); the
  pair (participant, client_id) is unique in the database, so a retried request (lost
  response, double click, page reloaded while sending) gets the stored turn back instead
  of creating a second one.
- Optimistic locking: the participant row has a version counter; if two requests of
  the same participant race, the second one's UPDATE finds the version moved on, rolls
  back and runs again on the new state. No step is applied twice or lost.

Within one turn the rows follow each other as: the participant's message, the engine's
events, the bots' replies (the engine returns events and replies as two lists), all
numbered by the participant's one sequence counter.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
import secrets
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from communitybots.ctm import Event, Reply, State
from communitybots.nlu import Analysis
from communitybots.spec import Survey
from communitybots.store import QUALITY_PARTS, EventRow, Message, Participant, utcnow

from .inputs import text_problem
from .security import completion_code, new_token, token_hash
from .settings import CONDITIONS, LINK_CONDITIONS, Settings
from .study import Study

SKIP_TEXT = "Skip topic"  # the NLU rules read it as a skip command
MAX_ATTEMPTS = 8
#: a gap between two messages counts towards the time budget up to this long: a break
#: does not end the conversation, thinking and typing count
ACTIVE_GAP_S = 300.0
CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class TurnError(Exception):
    """A message the platform refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class TurnResult:
    replies: list[dict[str, Any]]
    cues: dict[str, Any]
    replayed: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


def active_seconds(participant: Participant, now: dt.datetime) -> float:
    """The participant's active time at ``now``: what was counted so far plus the gap
    since their last message (or consent), that gap counting at most ``ACTIVE_GAP_S``."""
    last = participant.last_active_at or participant.consented_at
    gap = min(max(0.0, (now - last).total_seconds()), ACTIVE_GAP_S)
    return (participant.active_s or 0.0) + gap


def cues(survey: Survey, state: State, status: str) -> dict[str, Any]:
    """What the chat interface shows beside the messages: active agent, topic, progress."""
    done, total = state.progress
    topic_title = None
    if state.topic_id is not None:
        try:
            topic_title = survey.topic(state.topic_id)[1].title
        except KeyError:
            topic_title = None
    return {
        "agent_id": state.agent_id,
        "topic_id": state.topic_id,
        "topic_title": topic_title,
        "progress": [done, total],
        "finished": bool(state.finished),
        "status": status,
    }


def reply_json(survey: Survey, message: Message | SimpleNamespace) -> dict[str, Any]:
    colour = None
    avatar = None
    if message.agent_id is not None:
        try:
            agent = survey.agent(message.agent_id)
            colour, avatar = agent.colour, agent.avatar
        except KeyError:
            pass
    return {
        "seq": message.seq,
        "role": message.role,
        "agent_id": message.agent_id,
        "agent_name": message.agent_name,
        "topic_id": message.topic_id,
        "kind": message.kind,
        "text": message.text,
        "colour": colour,
        "avatar": avatar,
    }


def choose_condition(requested: str | None, rng: random.Random | None = None) -> tuple[str, str]:
    """(condition, how it was assigned): fixed by the link, else drawn at random."""
    if requested:
        if requested not in LINK_CONDITIONS:
            raise TurnError(400, f"unknown condition {requested!r}; use one of "
                            f"{', '.join(LINK_CONDITIONS)}")
        return requested, "link"
    return (rng or random.SystemRandom()).choice(CONDITIONS), "random"


@functools.cache
def _blank_row(table: Any) -> dict[str, None]:
    """NULL for every column of ``table`` that has no default and is not the primary key:
    the rows of one executemany must all name the same columns, and a column left out
    gets its default, as with ORM objects."""
    return {c.name: None for c in table.columns
            if not c.primary_key and c.default is None and c.server_default is None}


def _message_row(participant_id: int, seq: int, turn: int, role: str, kind: str, text: str,
                 now: dt.datetime, **values: Any) -> dict[str, Any]:
    """A ``messages`` row: every column named (None unless given or defaulted)."""
    return {**_blank_row(Message.__table__), "participant_id": participant_id, "seq": seq,
            "turn": turn, "role": role, "kind": kind, "text": text, "created_at": now, **values}


def _append(db: Session, participant: Participant, turn: int, replies: list[Reply],
            events: list[Event], now: dt.datetime,
            first: dict[str, Any] | None = None) -> list[SimpleNamespace]:
    """Store one step's events then replies after ``first`` (the participant's message,
    as the column values of its row): one INSERT statement per table (an executemany of
    Core rows, not one ORM object per row); the participant's counters move on in the
    unit of work. Returns the bots' messages as read-only objects with the attributes of
    a stored ``Message``."""
    event_rows, messages, bots, seq = _rows(participant, turn, replies, events, now, first)
    participant.next_seq = seq
    participant.next_turn = turn + 1
    _insert(db, event_rows, messages)
    return [SimpleNamespace(**row) for row in bots]


#: the statements of a turn, built once: a statement built per call costs its
#: construction and the computation of its cache key (SQLAlchemy then finds the compiled
#: form in its cache), several times what executing it costs on SQLite
_INSERT_EVENTS = insert(EventRow.__table__)
_INSERT_MESSAGES = insert(Message.__table__)


def _insert(db: Session | Connection, event_rows: list[dict[str, Any]],
            message_rows: list[dict[str, Any]]) -> None:
    if event_rows:
        db.execute(_INSERT_EVENTS, event_rows)
    if message_rows:
        db.execute(_INSERT_MESSAGES, message_rows)


def _rows(participant: Participant, turn: int, replies: list[Reply], events: list[Event],
          now: dt.datetime, first: dict[str, Any] | None
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int]:
    """(event rows, message rows, the bots' rows among them, the next free ``seq``) of
    one step, numbered from the participant's ``next_seq``."""
    seq = participant.next_seq
    # every message carries the survey version of its conversation
    version = {"survey_hash": participant.survey_hash,
               "survey_version": participant.survey_version}
    messages: list[dict[str, Any]] = []
    if first is not None:
        messages.append(_message_row(participant.id, seq, turn, "participant", now=now,
                                     **first, **version))
        seq += 1
    event_rows = []
    for ev in events:
        event_rows.append({**_blank_row(EventRow.__table__),
                           "participant_id": participant.id, "seq": seq, "turn": turn,
                           "kind": ev.kind, "reason": ev.reason or "", "agent_id": ev.agent_id,
                           "topic_id": ev.topic_id, "data": dict(ev.data or {}),
                           "created_at": now})
        seq += 1
    bots = []
    for rp in replies:
        bots.append(_message_row(participant.id, seq, turn, "bot", rp.kind, rp.text, now,
                                 agent_id=rp.agent_id, agent_name=rp.agent_name,
                                 topic_id=rp.topic_id, **version))
        seq += 1
    return event_rows, messages + bots, bots, seq


def _update_participant(db: Session | Connection, participant: Participant,
                        values: dict[str, Any]) -> None:
    """One Core UPDATE of the participant's row, guarded by its version counter as the
    ORM's optimistic locking does (StaleDataError when a concurrent turn moved it on),
    without the unit of work's bookkeeping; ``values`` gets the new version."""
    version = participant.version
    result = db.execute(_participant_update(tuple(values)),
                        {**values, "_id": participant.id, "_version": version,
                         "version": version + 1})
    if result.rowcount != 1:
        raise StaleDataError(f"participant {participant.id} changed meanwhile")
    values["version"] = version + 1


@functools.cache
def _participant_update(columns: tuple[str, ...]) -> Any:
    """``UPDATE participants SET <columns>, version = :version WHERE id = :_id AND
    version = :_version``, built once per set of columns (a turn sets one of two)."""
    table = Participant.__table__
    return (update(table)
            .where(table.c.id == bindparam("_id"), table.c.version == bindparam("_version"))
            .values({name: bindparam(name) for name in (*columns, "version")}))


def start(db: Session, study: Study, condition: str, assignment: str,
          origin_group: str | None = None, status: str = "chatting",
          **columns: Any) -> tuple[Participant, str]:
    """Create a consenting participant and the engine's opening turn; returns the token.
    ``status`` is "pre_survey" or "tutorial" when pages come before the chat;
    ``columns`` are further ``Participant`` columns (the recruitment panel's id)."""
    survey, ctm = study.engine(study.survey_pk, condition, db)
    state, replies, events = ctm.start(now=0.0)
    token = new_token()
    now = utcnow()
    participant = Participant(
        public_id=secrets.token_hex(8), token_hash=token_hash(token), survey_pk=study.survey_pk,
        survey_hash=study.survey_hash, survey_version=study.survey_version,
        condition=condition, assignment=assignment, status=status,
        state_json=state.to_json(), next_seq=0, next_turn=0, consented_at=now,
        last_active_at=now, active_s=0.0, origin_group=origin_group, **columns,
    )
    db.add(participant)
    db.flush()
    _append(db, participant, 0, list(replies), list(events), now)
    db.commit()
    return participant, token


_BY_TOKEN = select(Participant).where(Participant.token_hash == bindparam("token_hash"),
                                      Participant.session_ended_at.is_(None))


def find_participant(db: Session, token: str | None,
                     idle_minutes: float | None = None) -> Participant | None:
    """The participant of a session cookie, unless that session ended (completion, "I'm a
    new participant") or has been idle for more than ``idle_minutes``."""
    if not token or len(token) > 100:
        return None
    participant = db.scalar(_BY_TOKEN, {"token_hash": token_hash(token)})
    if participant is None or idle_minutes is None:
        return participant
    last = participant.last_active_at or participant.consented_at
    if utcnow() - last > dt.timedelta(minutes=idle_minutes):
        return None
    return participant


def end_session(db: Session, participant: Participant) -> None:
    """The browser's cookie opens this participant's session no more (their data stays)."""
    if participant.session_ended_at is None:
        participant.session_ended_at = utcnow()
        try:
            db.commit()
        except StaleDataError:  # a turn of this session committed meanwhile: end it anyway
            db.rollback()
            fresh = db.get(Participant, participant.id, populate_existing=True)
            if fresh is not None and fresh.session_ended_at is None:
                fresh.session_ended_at = utcnow()
                db.commit()


def transcript(db: Session, study: Study, participant: Participant) -> dict[str, Any]:
    """What the participant's browser needs to redraw the chat after a reload."""
    survey, _ = study.engine(participant.survey_pk, participant.condition, db)
    state = State.from_json(participant.state_json)
    messages = db.scalars(select(Message).where(Message.participant_id == participant.id)
                          .order_by(Message.seq)).all()
    return {
        "participant": participant.public_id,
        "condition": participant.condition,
        "title": survey.title,
        "agents": [{"id": a.id, "name": a.name, "domain": a.domain, "colour": a.colour,
                    "avatar": a.avatar} for a in survey.agents],
        "messages": [reply_json(survey, m) | {"client_id": m.client_id} for m in messages],
        "cues": cues(survey, state, participant.status),
    }


def _replay(db: Session, survey: Survey, participant: Participant, message: Message) -> TurnResult:
    return _replay_turn(db, survey, participant, message.turn)


def _replay_turn(db: Session, survey: Survey, participant: Participant, turn: int) -> TurnResult:
    """The stored replies of ``turn`` (a retried message gets its own turn's replies)."""
    replies = db.scalars(select(Message).where(
        Message.participant_id == participant.id, Message.turn == turn,
        Message.role == "bot").order_by(Message.seq)).all()
    state = State.from_json(participant.state_json)
    return TurnResult([reply_json(survey, m) for m in replies],
                      cues(survey, state, participant.status), replayed=True)


def check_rate(db: Session, participant: Participant, settings: Settings, now: dt.datetime) -> None:
    window = dt.timedelta(seconds=settings.rate_limit_window_s)
    recent = db.scalars(select(Message.created_at).where(
        Message.participant_id == participant.id, Message.role == "participant",
        Message.created_at > now - window).order_by(Message.created_at)).all()
    _check_rate(list(recent), settings, now)


def _check_rate(recent: list[dt.datetime], settings: Settings, now: dt.datetime) -> None:
    """429 when ``recent`` (the participant's message times within the window, oldest
    first) already holds ``rate_limit_messages``."""
    window = dt.timedelta(seconds=settings.rate_limit_window_s)
    if len(recent) >= settings.rate_limit_messages:
        wait = (recent[len(recent) - settings.rate_limit_messages] + window - now).total_seconds()
        retry = max(1, int(wait + 0.999))
        raise TurnError(429, f"too many messages: at most {settings.rate_limit_messages} per "
                        f"{settings.rate_limit_window_s:g} s; try again in {retry} s",
                        retry_after=retry)


#: one statement for the two reads of a turn: the participant's message with this
#: idempotency key (any role: a wizard's move stores its key on a bot row) and the
#: participant's messages within the rate-limit window (built once, so each turn only
#: binds its values)
_TURN_LOOKUP = (
    select(Message.role, Message.client_id, Message.turn, Message.created_at)
    .where(Message.participant_id == bindparam("participant_id"),
           or_(Message.client_id == bindparam("client_id"),
               and_(Message.role == "participant", Message.created_at > bindparam("since"))))
    .order_by(Message.created_at)
)


def _turn_lookup(db: Session | Connection, participant_id: int, client_id: str,
                 settings: Settings,
                 now: dt.datetime) -> tuple[int | None, list[dt.datetime]]:
    """(the turn already stored under ``client_id`` or None, the times of the
    participant's messages within the rate-limit window, oldest first)."""
    since = now - dt.timedelta(seconds=settings.rate_limit_window_s)
    rows = db.execute(_TURN_LOOKUP, {"participant_id": participant_id, "client_id": client_id,
                                     "since": since}).all()
    stored = next((row.turn for row in rows if row.client_id == client_id), None)
    recent = [row.created_at for row in rows
              if row.role == "participant" and row.created_at > since]
    return stored, recent


def validate_message(text: str, client_id: str, settings: Settings) -> None:
    if not client_id or len(client_id) > 64:
        raise TurnError(400, "client_id must be 1 to 64 characters")
    if not CLIENT_ID.match(client_id):
        raise TurnError(400, "client_id may hold only letters, digits, '.', '_', ':' and '-'")
    problem = text_problem(text, "message")
    if problem:
        raise TurnError(400, problem)
    if len(text) > settings.max_message_chars:
        raise TurnError(413, f"message too long: {len(text)} characters, the limit is "
                        f"{settings.max_message_chars}")
    if not text.strip():
        raise TurnError(400, "message is empty")


def analysis_columns(analysis: Analysis) -> dict[str, Any]:
    """A participant message's ``intent``, ``confidence`` and ``q_*`` columns, from the
    analysis that ``CTM.step`` returns (rounded as the ``message_analyzed`` event has them)."""
    quality = analysis.quality.to_dict()
    return {"intent": str(analysis.intent.intent),
            "confidence": round(analysis.intent.confidence, 4),
            **{f"q_{part}": quality[part] for part in QUALITY_PARTS}}


def take_turn(db: Session, study: Study, settings: Settings, participant_id: int,
              client_id: str, text: str, kind: str = "message") -> TurnResult:
    """Apply one participant message exactly once and store everything it caused."""
    validate_message(text, client_id, settings)
    for attempt in range(MAX_ATTEMPTS):
        # the first attempt may use the row the request already loaded; a retry reloads it
        participant = db.get(Participant, participant_id, populate_existing=attempt > 0)
        if participant is None:
            raise TurnError(404, "no such session")
        survey, ctm = study.engine(participant.survey_pk, participant.condition, db)
        now = utcnow()
        # the turn's own statements go to the session's connection: no ORM entity is
        # loaded or flushed by them, and the session's execute costs each several times
        # what SQLite takes to run it
        conn = db.connection()
        stored_turn, recent = _turn_lookup(conn, participant.id, client_id, settings, now)
        if stored_turn is not None:
            result = _replay_turn(db, survey, participant, stored_turn)
            db.rollback()
            return result
        state = State.from_json(participant.state_json)
        if state.finished or participant.status != "chatting":
            db.rollback()
            raise TurnError(409, "the conversation has ended; no more messages are accepted")
        _check_rate(recent, settings, now)
        active = active_seconds(participant, now)
        step = ctm.step(state, text, now=active)
        new_state, events = step.state, step.events
        replies = study.phrase(survey, list(step.replies), list(events))  # the survey's LLM, if any
        turn = participant.next_turn
        own = {"client_id": client_id, "agent_id": state.agent_id, "topic_id": state.topic_id,
               "kind": kind, "text": text, **analysis_columns(step.analysis)}
        event_rows, message_rows, bots, next_seq = _rows(
            participant, turn, list(replies), list(events), now, own)
        values: dict[str, Any] = {"state_json": new_state.to_json(), "active_s": active,
                                  "last_active_at": now, "next_seq": next_seq,
                                  "next_turn": turn + 1}
        if new_state.finished:
            values["chat_finished_at"] = now
            values["status"] = "post_survey" if survey.post_survey else "completed"
            if not survey.post_survey:
                values["completed_at"] = now
                values["completion_code"] = completion_code()
        try:
            # everything is computed before the first write: on SQLite the write lock is
            # held from the UPDATE to the commit, so that span is only statements
            _update_participant(conn, participant, values)
            _insert(conn, event_rows, message_rows)
            db.commit()
        except (IntegrityError, StaleDataError):
            db.rollback()  # a concurrent request won the race: look again
            continue
        for name, value in values.items():  # the loaded row as stored, not to be flushed
            set_committed_value(participant, name, value)
        bot_messages = [SimpleNamespace(**row) for row in bots]
        return TurnResult([reply_json(survey, m) for m in bot_messages],
                          cues(survey, new_state, participant.status),
                          events=[{"kind": e.kind, "reason": e.reason} for e in events])
    raise TurnError(503, "the server is busy with this session; please send again")


def count_messages(db: Session, participant_id: int | None = None) -> int:
    query = select(func.count(Message.id)).where(Message.role == "participant")
    if participant_id is not None:
        query = query.where(Message.participant_id == participant_id)
    return int(db.scalar(query) or 0)
