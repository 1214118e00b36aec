"""Leaving a domain or a topic out by asking: "skip the health questions" closes every
open topic of that domain (those not reached as ``topics_left_out``, the current one as
``topic_skipped``), "skip the commute questions" only that topic; what is left out is
never asked, and look-alike answers stay answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from communitybots.ctm import CTM, SKIPPED
from communitybots.nlu import Intent
from communitybots.spec import load_survey

SURVEY = Path(__file__).resolve().parents[1] / "src" / "communitybots" / "surveys" / "covid_daily_life.yaml"
HEALTH = ["healthcare", "leisure", "hobbies"]


@pytest.fixture(scope="module")
def ctm() -> CTM:
    return CTM(load_survey(SURVEY), relevance="tfidf")


@pytest.mark.parametrize(("text", "domain", "topic"), [
    ("skip the health questions", "healthcare", None),
    ("I don't want to talk about health", "healthcare", None),
    ("no more questions about work please", "work", None),
    ("don't ask me about work", "work", None),
    ("skip the commute questions", "work", "commute"),
])
def test_skip_requests_name_what_to_leave_out(ctm: CTM, text: str, domain: str, topic: str | None) -> None:
    result = ctm.nlu.intents.classify(text)
    assert (result.intent, result.rule, result.domain, result.topic_id) == (
        Intent.SKIP, "skip_request", domain, topic)


@pytest.mark.parametrize(("text", "intent"), [
    ("I don't talk about work with my kids", Intent.ANSWER),  # an answer, not a request
    ("I do not like to do sports", Intent.ANSWER),
    ("skip to work", Intent.JUMP),
])
def test_look_alikes_keep_their_intent(ctm: CTM, text: str, intent: Intent) -> None:
    assert ctm.nlu.intents.classify(text).intent is intent


def test_a_domain_left_out_is_never_asked(ctm: CTM) -> None:
    state, replies, _ = ctm.start(now=0.0)
    state, replies, events = ctm.step(state, "skip the health questions", now=5.0)
    assert [e.kind for e in events] == ["message_analyzed", "topics_left_out"]
    assert events[1].data["topics"] == HEALTH
    assert all(state.topic_status[t] == SKIPPED for t in HEALTH)
    assert state.topic_id == "dwelling" and state.progress == (3, 11)
    assert replies[-1].text == "Back to my question: How did the pandemic change the way you used your home?"
    state, replies, events = ctm.step(state, "skip health", now=8.0)  # again: nothing open
    assert [e.kind for e in events][1:] == ["skip_declined"]
    assert replies[0].text == "We've already covered healthcare, so let's continue here."
    # the current domain: its topic is skipped, the rest left out, on to the next agent
    state, replies, events = ctm.step(state, "no more questions about the household", now=12.0)
    assert [e.kind for e in events][1:] == ["topics_left_out", "topic_skipped", "handover",
                                            "topic_started"]
    assert state.agent_id == "work" and state.topic_id == "commute"
    state, replies, events = ctm.step(state, "skip the commute questions", now=15.0)
    assert [e.kind for e in events][1:] == ["topic_skipped", "topic_started"]
    assert state.topic_id == "work"
    entered = []
    while not state.finished:  # skip through what is left: no health topic comes back
        state, replies, events = ctm.step(state, "skip", now=20.0)
        entered += [e.topic_id for e in events if e.kind == "topic_started"]
    assert entered == ["education", "screens"] and state.end_reason == "complete"
