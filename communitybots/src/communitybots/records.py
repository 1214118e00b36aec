"""What happens to participants' data after it is collected: withdrawal and deletion,
the retention period after which raw text is purged, and the audit log recording both.

A deletion removes a participant's rows (messages, events, answers, the participant);
a purge keeps the rows and every measure (intents, quality parts, word counts, Likert,
choice and number answers, the CTM's decisions) but blanks what the participant wrote:
their messages' text, the text the CTM's events quote, and free-text answers. Every
withdrawal, deletion, exclusion and purge adds a row to ``audit_log`` naming the
participant's public id, never their words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from communitybots.spec import parse_survey
from communitybots.store import (
    Answer,
    AuditRow,
    EventRow,
    Message,
    Participant,
    SurveyRow,
    WizardClaim,
    utcnow,
)

#: event data keys that quote the participant (``message_analyzed`` keeps the text)
_QUOTING_KEYS: tuple[str, ...] = ("text",)


def audit(db: Session, actor: str, action: str, participant: str | None = None,
          at: dt.datetime | None = None, **detail: Any) -> None:
    """Add one audit entry (committed with the caller's transaction)."""
    db.add(AuditRow(at=at or utcnow(), actor=actor, action=action, participant=participant,
                    detail=detail))


def delete_participants(db: Session, participants: Iterable[Participant], actor: str,
                        action: str) -> int:
    """Delete the participants' messages, events, answers, claims and rows, one audit
    entry each, in one transaction; returns how many were deleted."""
    people = list(participants)
    if not people:
        return 0
    ids = [p.id for p in people]
    counts = dict(db.execute(select(Message.participant_id, func.count(Message.id))
                             .where(Message.participant_id.in_(ids), Message.role == "participant")
                             .group_by(Message.participant_id)).all())
    for p in people:
        audit(db, actor, action, p.public_id, condition=p.condition,
              survey_version=p.survey_version, status=p.status,
              messages=int(counts.get(p.id, 0)))
    for table in (Answer, EventRow, Message, WizardClaim):
        db.execute(delete(table).where(table.participant_id.in_(ids)))
    db.execute(delete(Participant).where(Participant.id.in_(ids)))
    db.commit()
    return len(ids)


def _free_text_items(db: Session, survey_pk: int, cache: dict[int, set[str]]) -> set[str]:
    """Ids of the free-text questionnaire items of a stored survey version."""
    if survey_pk not in cache:
        row = db.get(SurveyRow, survey_pk)
        found: set[str] = set()
        if row is not None:
            survey = parse_survey(row.spec_json)
            found = {i.id for i in [*survey.pre_survey, *survey.post_survey] if i.kind == "text"}
        cache[survey_pk] = found
    return cache[survey_pk]


def purge_due(db: Session, days: int, now: dt.datetime | None = None) -> list[Participant]:
    """Participants whose last activity is more than ``days`` before ``now`` and whose
    text has not been purged yet."""
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    last = func.coalesce(Participant.last_active_at, Participant.consented_at)
    return list(db.scalars(select(Participant).where(Participant.purged_at.is_(None),
                                                     last < cutoff).order_by(Participant.id)))


def purge(db: Session, days: int, now: dt.datetime | None = None,
          actor: str = "retention") -> int:
    """Blank the raw text of every participant due (see :func:`purge_due`): their
    messages' text (its word count is kept in ``words``), the text quoted in events,
    free-text answers; the wizard's pending suggestion. Returns how many participants
    were purged, each recorded in the audit log."""
    now = now or utcnow()
    cache: dict[int, set[str]] = {}
    due = purge_due(db, days, now)
    for p in due:
        n = 0
        for m in db.scalars(select(Message).where(Message.participant_id == p.id,
                                                  Message.role == "participant")):
            m.words = len(m.text.split()) if m.words is None else m.words
            m.text = ""
            n += 1
        for e in db.scalars(select(EventRow).where(EventRow.participant_id == p.id)):
            if any(k in (e.data or {}) for k in _QUOTING_KEYS):
                e.data = {k: v for k, v in e.data.items() if k not in _QUOTING_KEYS}
        free = _free_text_items(db, p.survey_pk, cache)
        answers = 0
        if free:
            answers = db.execute(update(Answer).where(
                Answer.participant_id == p.id, Answer.item_id.in_(free),
                Answer.value != "").values(value="")).rowcount or 0
        p.wizard_pending = None
        p.purged_at = now
        audit(db, actor, "purge", p.public_id, at=now, retention_days=days, messages=n,
              free_text_answers=int(answers))
        db.commit()
    return len(due)
