"""The pages of a participant, in order: consent, pre-chat questions (when the survey
has ``pre_survey``), the tutorial (when it has ``tutorial``), the chat, the post-chat
questionnaire (when it has ``post_survey``), completion. ``Participant.status`` names
the page they are on; and the chat's clock: "End chat" is allowed once every topic is
done or the study's time limit (``policy.max_minutes`` since the chat began) is up."""

from __future__ import annotations

import datetime as dt
from typing import Any

from communitybots.ctm import State
from communitybots.spec import Survey
from communitybots.store import Participant, utcnow

NEXT_PAGE: dict[str, str] = {"pre_survey": "/pre", "tutorial": "/tutorial", "chatting": "/chat",
                             "post_survey": "/survey", "completed": "/done"}


def first_status(survey: Survey) -> str:
    """The status of a participant who just consented."""
    return "pre_survey" if survey.pre_survey else after_pre(survey)


def after_pre(survey: Survey) -> str:
    """The status after the pre-chat questions."""
    return "tutorial" if survey.tutorial is not None else "chatting"


def after_chat(survey: Survey) -> str:
    """The status once the chat has ended."""
    return "post_survey" if survey.post_survey else "completed"


def begin_chat(participant: Participant, now: dt.datetime) -> None:
    """The chat page opens: the clock starts and the active time counts from now (the
    time spent on the questions and the tutorial is not chat time)."""
    participant.status = "chatting"
    participant.chat_started_at = now
    participant.last_active_at = now


def clock(survey: Survey, participant: Participant, now: dt.datetime | None = None) -> dict[str, Any]:
    """The elapsed-time indicator and whether "End chat" is allowed (and why not)."""
    now = now or utcnow()
    started = participant.chat_started_at or participant.consented_at
    elapsed = max(0.0, (now - started).total_seconds())
    limit = survey.policy.max_minutes * 60
    state = State.from_json(participant.state_json)
    done, total = state.progress
    topics_done = total > 0 and done >= total
    can_end = bool(state.finished) or topics_done or elapsed >= limit \
        or participant.status != "chatting"
    return {"elapsed_s": round(elapsed, 1), "limit_s": limit, "topics_done": topics_done,
            "can_end": can_end, "end_in_s": 0.0 if can_end else round(limit - elapsed, 1)}
