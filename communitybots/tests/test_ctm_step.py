"""``CTM.step`` returns a :class:`Step`: the triple it always returned plus the message's
analysis as a typed value, the same one the ``message_analyzed`` event reports."""

import dataclasses
from pathlib import Path

import pytest

from communitybots.ctm import CTM, Step
from communitybots.nlu import NLU, Analysis, Intent
from communitybots.spec import load_survey

SURVEY = load_survey(Path(__file__).parents[1] / "src/communitybots/surveys/covid_daily_life.yaml")
CTM_ = CTM(SURVEY, nlu=NLU(SURVEY, relevance="tfidf"))
ANSWER = "We mostly lived in the kitchen, the only room with space for the kids to do homework."


def test_step_carries_the_analysis_the_event_reports() -> None:
    state, _, _ = CTM_.start()
    step = CTM_.step(state, ANSWER, now=10.0)
    assert isinstance(step, Step) and isinstance(step.analysis, Analysis)
    new_state, replies, events = step  # still unpacks as (state, replies, events)
    assert (new_state, replies, events) == (step.state, step.replies, step.events)
    assert step[0] is step.state and len(step) == 3
    a = step.analysis
    assert a == CTM_.nlu.analyze(ANSWER, state.pending_text, CTM_.survey.topic(state.topic_id)[1])
    assert a.intent.intent is Intent.ANSWER and a.quality.overall > 0.0
    assert events[0].kind == "message_analyzed"
    assert events[0].data == a.to_event_data(ANSWER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.analysis = a  # type: ignore[misc]


def test_a_message_after_the_end_is_analysed_too() -> None:
    state, _, _ = CTM_.start()
    state = CTM_.step(state, "stop", now=1.0).state
    assert state.finished
    step = CTM_.step(state, "asdkjh qwpoeiru zxmcnv", now=2.0)
    assert [e.kind for e in step.events] == ["message_analyzed", "message_after_end"]
    assert step.analysis.intent.intent is Intent.GIBBERISH
    assert step.events[0].data["intent"] == "gibberish"
