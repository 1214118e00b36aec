"""Recruitment panels (Prolific, MTurk): the participant's panel id and the other
parameters the survey names are read from the link (``/?PROLIFIC_PID=...``), carried
through the consent form, stored with the participant, and the participant goes back
to the panel's completion URL with the code at the end."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from communitybots.spec import Survey
from communitybots.store import Participant

#: what a panel's id or parameter may look like (longer or other values are dropped)
VALUE = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
FIELD_PREFIX = "panel_"


def params(survey: Survey, query: Mapping[str, Any]) -> dict[str, str]:
    """The panel parameters of a landing-page link that the survey names (id first)."""
    if survey.panel is None:
        return {}
    out: dict[str, str] = {}
    for name in (survey.panel.id_param, *survey.panel.keep_params):
        value = query.get(name)
        if isinstance(value, str) and VALUE.match(value):
            out[name] = value
    return out


def from_form(survey: Survey, form: Mapping[str, Any]) -> tuple[str | None, dict[str, str] | None]:
    """(panel id, the other parameters) carried by the consent form; (None, None)
    without a panel id."""
    if survey.panel is None:
        return None, None
    values = params(survey, {k.removeprefix(FIELD_PREFIX): v for k, v in form.items()
                             if k.startswith(FIELD_PREFIX)})
    panel_id = values.pop(survey.panel.id_param, None)
    if panel_id is None:
        return None, None
    return panel_id, values


def completion_code(survey: Survey, participant: Participant, code: str | None) -> str | None:
    """The code a participant is shown: the panel's study code when they came from the
    panel and the survey gives one, else their own."""
    if survey.panel is not None and participant.panel_id is not None:
        return survey.panel.completion_code or code
    return code


def completion_link(survey: Survey, participant: Participant, code: str | None) -> str | None:
    """Where a participant who came from the panel goes at the end, or None."""
    if survey.panel is None or participant.panel_id is None:
        return None
    return survey.panel.completion_link(completion_code(survey, participant, code) or "")
