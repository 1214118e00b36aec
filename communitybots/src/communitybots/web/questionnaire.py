"""Questionnaire forms: the pre-chat questions and the post-chat questionnaire of the
survey file (``spec.QuestionItem``), read from a submitted form and stored in the
``answers`` table in long format with their phase ("pre" or "post")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from communitybots.spec import QuestionItem
from communitybots.store import Answer, Participant, utcnow

from .inputs import text_problem

MAX_TEXT = 5000


def _check(item: QuestionItem, value: str) -> tuple[str | None, str | None]:
    """(the value to store, a problem) of one non-empty answer."""
    if item.kind == "likert":
        if not (value.isdigit() and 1 <= int(value) <= item.scale):
            return None, f"choose a value from 1 to {item.scale}"
        return value, None
    if item.kind == "choice":
        return (value, None) if value in item.options else (None, "choose one of the options")
    if item.kind == "number":
        try:
            number = float(value.replace(",", "."))
        except ValueError:
            return None, "write a number"
        if not math.isfinite(number) or (item.integer and number != int(number)):
            return None, "write a whole number" if item.integer else "write a number"
        if item.min is not None and number < item.min or item.max is not None and number > item.max:
            return None, f"write a number from {item.min:g} to {item.max:g}" \
                if item.min is not None and item.max is not None else "the number is out of range"
        return (str(int(number)) if item.integer else f"{number:g}"), None
    if len(value) > MAX_TEXT:
        return None, f"at most {MAX_TEXT} characters"
    problem = text_problem(value, "the answer")
    return (None, problem) if problem else (value, None)


def read(items: Sequence[QuestionItem], form: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(answers by item id, problems by item id) of a submitted form (fields
    ``item_<id>``); a required item left empty is a problem."""
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for item in items:
        raw = form.get(f"item_{item.id}")
        value = raw.strip() if isinstance(raw, str) else ""
        if not value:
            if item.required:
                problems[item.id] = "please answer this question"
            continue
        kept, problem = _check(item, value)
        if problem:
            problems[item.id] = problem
        elif kept is not None:
            values[item.id] = kept
    return values, problems


def submitted(items: Sequence[QuestionItem], form: Mapping[str, Any]) -> dict[str, str]:
    """What the form held for each item (shown again when it comes back with problems,
    so a wrong answer can be corrected rather than retyped)."""
    raw = {item.id: form.get(f"item_{item.id}") for item in items}
    return {k: v[:MAX_TEXT] for k, v in raw.items() if isinstance(v, str)}


def store(db: Session, participant: Participant, phase: str, values: Mapping[str, str]) -> None:
    """Add the answers not stored yet (a form submitted twice keeps the first); the
    caller commits."""
    existing = set(db.scalars(select(Answer.item_id).where(Answer.participant_id == participant.id)))
    now = utcnow()
    for item_id, value in values.items():
        if item_id not in existing:
            db.add(Answer(participant_id=participant.id, phase=phase, item_id=item_id,
                          value=value, created_at=now))
