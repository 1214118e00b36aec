"""CTM engine: every decision, purity, JSON state, bad input, a full scripted conversation."""

import dataclasses
import json
from pathlib import Path

import pytest

from communitybots.ctm import CTM, EVENT_KINDS, REPLY_KINDS, State
from communitybots.nlu import NLU
from communitybots.spec import load_survey, single_agent

ROOT = Path(__file__).parents[1]
SURVEY = ROOT / "src/communitybots/surveys/covid_daily_life.yaml"
FULL = Path(__file__).parent / "data/full_conversation.txt"

GOOD = "We mostly lived in the kitchen, the only room with space for the kids to do homework."
RICH = ("In March 2020 we turned the spare bedroom into an office with two desks by the window, "
        "moved the sofa into the hall, and the garden became our living room all summer.")
LOW = "yes"


# Built once per process, at import: the NLU's classifiers take seconds to train, and the
# mutation runs (``make mutate``) fork a fresh pytest per mutant after importing this module.
_SURVEY = load_survey(SURVEY)
_NLU = NLU(_SURVEY, relevance="tfidf")


@pytest.fixture(scope="module")
def survey():
    return _SURVEY


@pytest.fixture(scope="module")
def ctm(survey):
    return CTM(survey, nlu=_NLU)


def with_policy(ctm: CTM, **policy) -> CTM:
    s = ctm.survey.model_copy(update={"policy": ctm.survey.policy.model_copy(update=policy)})
    return CTM(s, nlu=ctm.nlu)


def kinds(events):
    return [e.kind for e in events]


def decisions(events):
    assert events[0].kind == "message_analyzed"
    return [e.kind for e in events[1:]]


def run(ctm, messages, state=None, start_at=0.0, dt=30.0):
    if state is None:
        state, _, _ = ctm.start(now=start_at)
    log = []
    for i, m in enumerate(messages, 1):
        state, replies, events = ctm.step(state, m, now=start_at + i * dt)
        log.append((replies, events))
    return state, log


def assert_serialisable(replies, events, state):
    json.dumps([dataclasses.asdict(r) for r in replies])
    json.dumps([dataclasses.asdict(e) for e in events])
    json.dumps(state.to_json())
    assert all(r.kind in REPLY_KINDS for r in replies)
    assert all(e.kind in EVENT_KINDS and e.reason for e in events)


def test_start_introduces_the_first_agent_and_asks(ctm):
    state, replies, events = ctm.start(now=5.0)
    assert kinds(events) == ["survey_start", "topic_started"]
    assert [r.kind for r in replies] == ["intro", "intro", "opening", "question"]
    assert replies[1].agent_name == "Hanna" and replies[-1].topic_id == "dwelling"
    assert (state.agent_id, state.topic_id, state.progress) == ("household", "dwelling", (0, 11))
    assert state.started_at == 5.0 and not state.finished
    assert_serialisable(replies, events, state)


def test_step_is_pure_and_state_round_trips_json(ctm):
    state, _, _ = ctm.start()
    before = json.dumps(state.to_json(), sort_keys=True)
    out1 = ctm.step(state, GOOD, now=10.0)
    assert json.dumps(state.to_json(), sort_keys=True) == before  # input not mutated
    out2 = ctm.step(State.from_json(json.loads(before)), GOOD, now=10.0)
    assert out1[0].to_json() == out2[0].to_json()
    assert [dataclasses.asdict(r) for r in out1[1]] == [dataclasses.asdict(r) for r in out2[1]]
    assert [dataclasses.asdict(e) for e in out1[2]] == [dataclasses.asdict(e) for e in out2[2]]
    restored = State.from_json(json.loads(json.dumps(out1[0].to_json())))
    assert restored == out1[0]
    with pytest.raises(ValueError, match="unknown state fields"):
        State.from_json({**restored.to_json(), "bogus": 1})
    with pytest.raises(TypeError):
        ctm.step(state, b"bytes", now=1.0)


def test_every_message_is_analyzed_first(ctm):
    state, _, _ = ctm.start()
    _, replies, events = ctm.step(state, GOOD, now=1.0)
    data = events[0].data
    assert events[0].kind == "message_analyzed"
    assert set(data["quality"]) == {"length", "informativeness", "relevance", "specificity",
                                    "gibberish", "overall"}
    assert data["intent"] == "answer" and 0 <= data["confidence"] <= 1 and data["text"] == GOOD
    assert all(r.agent_id == "household" and r.topic_id == "dwelling" for r in replies)


def test_good_answer_is_accepted_then_probed_then_next_question(ctm):
    state, log = run(ctm, [GOOD, GOOD])
    (r1, e1), (r2, e2) = log
    assert decisions(e1) == ["answer_accepted", "probe"]
    assert e1[1].data["low_quality"] is False and "low-quality run reset" in e1[1].reason
    assert [r.kind for r in r1] == ["ack", "probe"]
    assert decisions(e2) == ["answer_accepted", "next_question"]
    assert e2[-1].reason == "probe answered"
    assert r2[-1].kind == "question" and r2[-1].text == ctm.survey.topic("dwelling")[1].questions[1]
    assert state.question_index == 1 and state.stage == "question"


def test_rich_answer_needs_no_probe(ctm):
    _, log = run(ctm, [RICH])
    events = log[0][1]
    assert events[0].data["quality"]["overall"] >= ctm.policy.rich_threshold
    assert decisions(events) == ["answer_accepted", "next_question"]
    assert "no probe needed" in events[-1].reason


def test_no_probes_when_policy_has_none(ctm):
    c = with_policy(ctm, probes_per_question=0)
    _, log = run(c, [GOOD])
    assert decisions(log[0][1]) == ["answer_accepted", "next_question"]


def test_low_quality_run_switches_topic_and_good_answer_resets(ctm):
    state, log = run(ctm, [LOW, LOW])
    assert decisions(log[0][1]) == ["answer_accepted", "probe"]
    assert log[0][1][1].data["low_quality"] is True
    assert decisions(log[1][1])[:2] == ["answer_accepted", "topic_switched_low_quality"]
    assert "2 low-quality answers in a row (k=2)" in log[1][1][2].reason
    assert state.topic_status["dwelling"] == "switched" and state.topic_id == "family"
    # low, good, low: the good answer resets the run, so no switch
    state, log = run(ctm, [LOW, GOOD, LOW])
    assert "topic_switched_low_quality" not in kinds(log[2][1])
    assert state.topic_id == "dwelling" and state.low_quality_run == 1
    # k is configurable
    c3 = with_policy(ctm, low_quality_k=3)
    state, log = run(c3, [LOW, LOW])
    assert state.topic_id == "dwelling"
    state, log = run(c3, [LOW], state)
    assert "topic_switched_low_quality" in kinds(log[0][1])


def test_skip_and_topic_finished(ctm):
    state, log = run(ctm, ["skip this topic"])
    assert decisions(log[0][1]) == ["topic_skipped", "topic_started"]
    assert state.topic_status["dwelling"] == "skipped" and state.topic_id == "family"
    # two questions, each answered and probed -> topic finished with its closing line
    state, log = run(ctm, [GOOD, GOOD, GOOD, GOOD])
    replies, events = log[-1]
    assert decisions(events) == ["answer_accepted", "topic_finished", "topic_started"]
    assert "all 2 questions" in events[2].reason
    closing = ctm.survey.topic("dwelling")[1].closing
    assert [r.text for r in replies if r.kind == "closing"] == [closing]
    assert state.topic_status["dwelling"] == "done" and state.progress == (1, 11)


def test_handover_to_next_agent_at_domain_boundary(ctm):
    state, log = run(ctm, ["skip"] * 4)
    replies, events = log[-1]
    assert decisions(events) == ["topic_skipped", "handover", "topic_started"]
    assert events[2].data == {"from_agent": "household", "to_agent": "work", "to_topic": "commute"}
    assert [r.kind for r in replies] == ["ack", "handover", "intro", "opening", "question"]
    assert replies[1].agent_name == "Hanna" and "Walter" in replies[1].text
    assert replies[2].agent_name == "Walter" and replies[2].text.startswith("Hello, I'm Walter")
    assert state.agent_id == "work" and state.topic_id == "commute"


def test_domain_jump_hands_over_and_resumes_later(ctm):
    state, log = run(ctm, [GOOD, GOOD, "can we talk about healthcare?"])
    replies, events = log[-1]
    assert decisions(events) == ["domain_jump", "handover", "topic_started"]
    assert events[1].data["domain"] == "healthcare" and events[1].data["from_topic"] == "dwelling"
    assert state.agent_id == "healthcare" and state.topic_id == "healthcare"
    assert state.topic_status["dwelling"] == "pending"
    assert replies[-1].agent_name == "Helen"
    # finish healthcare/leisure/hobbies by skipping; then wrap around to dwelling, resumed at q2
    state, log = run(ctm, ["skip", "skip", "skip"], state)
    replies, events = log[-1]
    assert state.topic_id == "dwelling" and state.question_index == 1
    assert "Let's come back to dwelling." in [r.text for r in replies]
    # a jump to a covered domain is declined
    state, log = run(ctm, ["let's talk about hobbies"], state)
    assert decisions(log[0][1]) == ["jump_declined"]
    assert state.topic_id == "dwelling"


def test_jump_without_known_domain_and_to_current_topic(ctm):
    state, log = run(ctm, ["can we talk about dwelling"])
    assert decisions(log[0][1]) == ["jump_declined"] and "already talking" in log[0][1][1].reason
    assert state.topic_id == "dwelling"


def test_clarification_rephrases_repeats_then_moves_on(ctm):
    state, log = run(ctm, ["what do you mean?"] * 3)
    actions = [e[1].data.get("action") for _, e in log]
    assert [decisions(e)[0] for _, e in log] == ["clarification"] * 3
    assert actions == ["rephrase", "repeat", "move_on"]
    assert log[0][0][0].kind == "clarify" and "another way" in log[0][0][0].text
    assert "next_question" in kinds(log[2][1]) and state.question_index == 1


def test_question_to_bot_is_answered_and_question_repeated(ctm):
    state, log = run(ctm, ["are you a real person?"])
    replies, events = log[0]
    assert decisions(events) == ["bot_question"] and events[1].data["faq_id"] == "identity"
    assert [r.kind for r in replies] == ["answer_to_question", "question"]
    assert "Hanna" in replies[0].text and replies[1].text.startswith("Back to my question")
    _, log = run(ctm, ["how many topics are left?"])
    assert "11 topics left" in log[0][0][0].text


def test_chit_chat_dont_know_gibberish(ctm):
    state, log = run(ctm, ["hello there", "I don't know"])
    assert decisions(log[0][1]) == ["chit_chat"] and log[0][0][0].text.startswith("Hello")
    assert decisions(log[1][1]) == ["dont_know", "next_question"]
    assert state.question_index == 1 and state.low_quality_run == 1
    state, log = run(ctm, ["asdfgh jkl"])
    assert decisions(log[0][1]) == ["gibberish"] and log[0][0][0].kind == "clarify"
    state, log = run(ctm, ["asdfgh jkl", "qwerty"])
    assert decisions(log[1][1])[:2] == ["gibberish", "topic_switched_low_quality"]


def test_stop_ends_and_later_messages_are_answered_politely(ctm):
    state, log = run(ctm, [GOOD, "I want to stop"])
    assert decisions(log[1][1]) == ["survey_end"]
    assert state.finished and state.end_reason == "stopped" and state.topic_id is None
    assert log[1][0][-1].kind == "end"
    state2, replies, events = ctm.step(state, "hello?", now=999.0)
    assert decisions(events) == ["message_after_end"] and replies[0].kind == "end"
    assert state2.finished


def test_abusive_messages_warn_then_end(ctm):
    state, log = run(ctm, ["you are a stupid bot"] * 3)
    assert [decisions(e) for _, e in log] == [["abusive"], ["abusive"], ["abusive", "survey_end"]]
    assert log[0][0][0].kind == "warning" and state.end_reason == "abusive"


def test_turn_and_time_budgets(ctm):
    c = with_policy(ctm, max_turns=3)
    state, log = run(c, [GOOD, GOOD, GOOD])
    assert decisions(log[2][1]) == ["answer_accepted", "budget_reached", "survey_end"]
    assert state.end_reason == "turn_budget"
    c = with_policy(ctm, max_minutes=1.0)
    state, log = run(c, [GOOD, GOOD], start_at=100.0, dt=45.0)
    assert "budget_reached" not in kinds(log[0][1])
    assert decisions(log[1][1])[-2:] == ["budget_reached", "survey_end"]
    assert "time budget reached (1.5 of 1 minutes)" == log[1][1][-2].reason
    assert state.end_reason == "time_budget"


@pytest.mark.parametrize(
    "message",
    [
        "",
        "word " * 20_000 + "end",  # 100 KB
        bytes(range(256)).decode("latin-1"),  # binary bytes decoded
        b"\x00\xff\xfe\x89PNG\r\n\x1a\n".decode("utf-8", errors="surrogateescape"),
        "😀🎉👍",
        "<script>alert('x')</script><img src=x onerror=alert(1)>",
        "{{ 7*7 }} ${7*7} '; DROP TABLE messages; --",
    ],
    ids=["empty", "100kb", "latin1-bytes", "surrogates", "emoji", "html", "template-sql"],
)
def test_bad_input_is_kept_verbatim_and_never_interpreted(ctm, message):
    state, _, _ = ctm.start()
    new, replies, events = ctm.step(state, message, now=1.0)
    assert events[0].kind == "message_analyzed" and events[0].data["text"] == message
    assert events[0].data["chars"] == len(message)
    assert not any(message and message in r.text for r in replies)
    assert all(0.0 <= v <= 1.0 for v in events[0].data["quality"].values())
    assert_serialisable(replies, events, new)
    if len(message) > 4000:
        assert events[0].data["truncated_for_analysis"] is True


def _explain_transitions(replies_events):
    """Check every change of topic or agent in the transcript is explained by an event."""
    topic, agent = None, None
    for replies, events in replies_events:
        ks = kinds(events)
        for r in replies:
            if r.topic_id is not None and r.topic_id != topic:
                if topic is not None:
                    assert "topic_started" in ks, (topic, r.topic_id, ks)
                    assert {"topic_finished", "topic_skipped", "topic_switched_low_quality",
                            "domain_jump"} & set(ks), ks
                topic = r.topic_id
            if r.agent_id != agent:
                if agent is not None:
                    assert "handover" in ks, (agent, r.agent_id, ks)
                agent = r.agent_id


def test_scripted_full_conversation_through_all_topics_and_agents(ctm):
    lines = FULL.read_text(encoding="utf-8").splitlines()
    state, replies, events = ctm.start(now=0.0)
    transcript = [(replies, events)]
    for i, line in enumerate(lines, 1):
        state, replies, events = ctm.step(state, line, now=i * 40.0)
        assert_serialisable(replies, events, state)
        transcript.append((replies, events))
        if state.finished:
            break
    assert state.finished and state.end_reason == "complete"
    assert state.progress == (11, 11)
    assert set(state.topic_status.values()) == {"done"}
    all_events = [e for _, es in transcript for e in es]
    assert [e.data["to_agent"] for e in all_events if e.kind == "handover"] == ["work", "healthcare"]
    assert [e.topic_id for e in all_events if e.kind == "topic_finished"] == [
        t.id for _, t in ctm.survey.topics()]
    assert all_events[-1].kind == "survey_end" and "all topics" in all_events[-1].reason
    agents_speaking = []
    for rs, _ in transcript:
        for r in rs:
            if not agents_speaking or agents_speaking[-1] != r.agent_id:
                agents_speaking.append(r.agent_id)
    assert agents_speaking == ["household", "work", "healthcare"]
    _explain_transitions(transcript)


def test_single_agent_condition_has_no_handovers(ctm, survey):
    c = CTM(single_agent(survey), nlu=ctm.nlu)
    state, log = run(c, ["skip"] * 4 + ["can we talk about hobbies?"])
    all_events = [e for _, es in log for e in es]
    assert "handover" not in kinds(all_events)
    assert state.agent_id == "single" and state.topic_id == "hobbies"
    assert {r.agent_id for rs, _ in log for r in rs} == {"single"}
