"""The CTM's decisions given the NLU's analysis, pinned exactly.

A scripted NLU stands in for the real one: each message names its intent and quality
(``"a 0.8"`` is an answer of overall quality 0.8, ``"jump work education"`` a jump request), so
these tests pin the engine alone and do not move when the NLU's models change. They
check a few decisions by hand, then compare whole scripted conversations — every
reply, every event with its reason and data, the state after each step — with the
golden record ``data/ctm_golden.json``, which a researcher reads the same way in a
transcript. After a deliberate change of the engine, review the new record and write
it with ``UPDATE_CTM_GOLDEN=1 pytest tests/test_ctm_decisions.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from communitybots.ctm import CTM, State
from communitybots.nlu import (
    Analysis,
    FAQMatcher,
    Intent,
    IntentResult,
    NLUConfig,
    Quality,
    default_faq,
)
from communitybots.spec import load_survey, single_agent

ROOT = Path(__file__).parents[1]
SURVEY = load_survey(ROOT / "src/communitybots/surveys/covid_daily_life.yaml")
GOLDEN = Path(__file__).parent / "data" / "ctm_golden.json"

INTENTS = {"dk": Intent.DONT_KNOW, "skip": Intent.SKIP, "jump": Intent.JUMP,
           "clarify": Intent.CLARIFY, "?": Intent.BOT_QUESTION, "chat": Intent.CHIT_CHAT,
           "gib": Intent.GIBBERISH, "stop": Intent.STOP, "abuse": Intent.ABUSIVE}


class ScriptedNLU:
    """Reads the intent and quality off the message: ``a Q`` (answer of quality Q),
    ``jump DOMAIN [TOPIC]`` (``jump ?`` names no known domain), or a word of ``INTENTS``
    followed by free text (the text of ``?``/``chat`` messages reaches the FAQ and the
    small-talk table)."""

    def __init__(self) -> None:
        self.config = NLUConfig()
        self.faq = FAQMatcher(SURVEY.faq or default_faq())

    def analyze(self, text: str, question: str, topic) -> Analysis:  # noqa: ANN001
        word, *rest = text.split() or ["gib"]
        q = float(rest[0]) if word == "a" else 0.0
        quality = Quality(q, q, q, q, 0.0 if word == "a" else 1.0, q)
        if word == "a":
            intent = IntentResult(Intent.ANSWER, 0.9, "script")
        elif word == "jump":
            domain = None if not rest or rest[0] == "?" else rest[0]
            intent = IntentResult(Intent.JUMP, 1.0, "script", domain=domain,
                                  topic_id=rest[1] if len(rest) > 1 else None)
        else:
            intent = IntentResult(INTENTS[word], 1.0, f"script_{word}")
        return Analysis(intent, quality, len(text), False)


NLU_ = ScriptedNLU()


def engine(condition: str = "multi", **policy: object) -> CTM:
    survey = SURVEY if condition == "multi" else single_agent(SURVEY)
    if policy:
        survey = survey.model_copy(update={"policy": survey.policy.model_copy(update=policy)})
    return CTM(survey, nlu=NLU_)


def converse(ctm: CTM, messages: list[str], dt: float = 30.0):
    state, replies, events = ctm.start(now=0.0)
    steps = [("<start>", state, replies, events)]
    for i, message in enumerate(messages, 1):
        state, replies, events = ctm.step(state, message, now=i * dt)
        steps.append((message, state, replies, events))
    return steps


def kinds(events) -> list[str]:
    return [e.kind for e in events]


# -- decisions checked by hand -------------------------------------------------------------


def test_answers_probe_below_the_rich_threshold_and_low_runs_switch():
    steps = converse(engine(), ["a 0.5", "a 0.5", "a 0.75", "a 0.29", "a 0.29"])
    (_, s1, r1, e1), (_, s2, _, e2), (_, s3, _, e3), (_, s4, r4, e4), (_, s5, _, e5) = steps[1:]
    assert kinds(e1) == ["message_analyzed", "answer_accepted", "probe"]
    assert (s1.stage, s1.probes_asked, s1.pending_text) == ("probe", 1, r1[-1].text)
    assert r1[-1].kind == "probe" and r1[-1].text in SURVEY.topic("dwelling")[1].probes
    assert kinds(e2)[1:] == ["answer_accepted", "next_question"] and e2[-1].reason == "probe answered"
    assert (s2.question_index, s2.stage, s2.probes_asked) == (1, "question", 0)
    # exactly at the rich threshold: no probe; the topic's last question, so it finishes
    assert kinds(e3)[1:3] == ["answer_accepted", "topic_finished"]
    assert s3.topic_status["dwelling"] == "done" and s3.topic_id == "family"
    # just below the quality threshold: low; the first low answer probes, the second switches
    assert e4[1].data["low_quality"] is True and r4[0].text in ("Okay.", "I see.", "Got it.", "Thanks.")
    assert s4.low_quality_run == 1
    assert kinds(e5)[1:3] == ["answer_accepted", "topic_switched_low_quality"]
    assert s5.topic_status["family"] == "switched" and s5.low_quality_run == 0


def test_each_main_question_gets_up_to_probes_per_question_probes():
    steps = converse(engine(probes_per_question=2), ["a 0.5", "a 0.5", "a 0.5", "a 0.5", "a 0.9"])
    assert [kinds(e)[-1] for _, _, _, e in steps[1:]] == [
        "probe", "probe", "next_question", "probe", "topic_started"]
    assert [s.probes_asked for _, s, _, _ in steps[1:4]] == [1, 2, 0]
    probes = [r[-1].text for _, _, r, _ in steps[1:3]]
    assert probes == SURVEY.topic("dwelling")[1].probes[:2]  # the next probe, not the same one
    assert steps[3][3][-1].reason == "probe answered"
    # a rich answer to a probe needs no further probe
    steps = converse(engine(probes_per_question=2), ["a 0.5", "a 0.8"])
    assert kinds(steps[2][3])[-1] == "next_question"
    # and no probes at all when the policy has none
    steps = converse(engine(probes_per_question=0), ["a 0.1"])
    assert kinds(steps[1][3])[-1] == "next_question"
    assert steps[1][3][-1].reason == "answer accepted; no probes left for this question"


def test_small_talk_gets_a_matching_reply():
    replies = {m: r[0].text for m, _, r, _ in converse(engine(), [
        "chat thanks a lot", "chat thank you", "chat how are you", "chat hey there",
        "chat have a nice day", "chat lol"])[1:]}
    assert replies == {"chat thanks a lot": "You're welcome!", "chat thank you": "You're welcome!",
                       "chat how are you": "I'm doing well, thanks for asking!",
                       "chat hey there": "Hello! Nice to meet you.",
                       "chat have a nice day": "Thanks! We're not quite done yet, though.",
                       "chat lol": "😊"}


def test_events_carry_the_agent_and_topic_they_were_decided_in():
    steps = converse(engine(), ["skip"] * 4)
    _, state, replies, events = steps[-1]
    skipped, handover, started = events[1:]
    assert (skipped.agent_id, skipped.topic_id) == ("household", "delivery")
    assert (handover.agent_id, handover.topic_id) == ("household", "delivery")
    assert (started.agent_id, started.topic_id) == ("work", "commute")
    assert replies[1].text == SURVEY.agent("household").handover.replace("{next}", "Walter")
    assert [(r.agent_id, r.topic_id) for r in replies] == [
        ("household", "delivery"), ("household", "delivery"), ("work", "commute"),
        ("work", "commute"), ("work", "commute")]


def test_a_re_asked_probe_stays_a_probe():
    steps = converse(engine(), ["a 0.5", "? are you a real person", "chat hello", "gib",
                                "jump ?", "clarify"])
    for _, state, replies, _ in steps[2:6]:
        assert state.stage == "probe"
        assert replies[-1].kind == "probe" and replies[-1].text.endswith(state.pending_text)
    assert steps[2][2][-1].text == "Back to my question: " + steps[2][1].pending_text
    assert steps[3][2][-1].text == steps[3][1].pending_text  # no prefix
    _, state, replies, events = steps[6]  # a rephrasing of the probe, not of the main question
    assert replies[-1].kind == "clarify" and state.pending_text in replies[-1].text
    assert state.pending_text in SURVEY.topic("dwelling")[1].probes


def test_dont_know_counts_towards_the_low_quality_run_only_when_the_policy_says_so():
    counted = converse(engine(), ["dk", "dk"])
    assert kinds(counted[-1][3])[1:3] == ["dont_know", "topic_switched_low_quality"]
    not_counted = converse(engine(count_dont_know_as_low_quality=False), ["dk", "dk"])
    assert kinds(not_counted[-1][3])[1:] == ["dont_know", "topic_finished", "topic_started"]
    assert all(s.low_quality_run == 0 for _, s, _, _ in not_counted)


def test_time_budget_counts_from_the_start_and_the_turn_budget_counts_messages():
    ctm = engine(max_minutes=1.0)
    state, _, _ = ctm.start(now=100.0)
    state, _, events = ctm.step(state, "a 0.9", now=159.0)
    assert "budget_reached" not in kinds(events)
    state, _, events = ctm.step(state, "a 0.9", now=160.0)
    assert kinds(events)[-2:] == ["budget_reached", "survey_end"]
    assert state.end_reason == "time_budget" and state.topic_status["dwelling"] == "pending"
    steps = converse(engine(max_turns=2), ["a 0.9", "dk"])
    assert kinds(steps[1][3])[-1] != "survey_end"
    assert kinds(steps[2][3])[1:] == ["answer_accepted", "budget_reached", "survey_end"]
    assert steps[2][3][1].data["low_quality"] is True  # the don't-know, counted as low


def test_start_and_step_arguments():
    state, _, _ = engine().start(now=5.0)
    assert (state.started_at, state.last_at) == (5.0, 5.0)
    state, _, _ = engine().start()
    assert (state.started_at, state.last_at) == (0.0, 0.0)
    with pytest.raises(TypeError, match=r"^message must be str, got bytes$"):
        engine().step(state, b"hello", now=1.0)
    stub = ScriptedNLU()
    assert CTM(SURVEY, nlu=stub).nlu is stub


def test_without_an_nlu_the_engine_builds_the_surveys_own():
    ctm = CTM(SURVEY, relevance="tfidf")
    assert ctm.nlu.relevance_backend == "tfidf"
    state, _, _ = ctm.start()
    _, _, events = ctm.step(state, "skip this topic", now=1.0)
    assert kinds(events)[1] == "topic_skipped"


def test_state_json_is_a_deep_copy():
    state, _, _ = engine().start()
    data = state.to_json()
    data["topic_status"]["dwelling"] = "done"
    assert state.topic_status["dwelling"] == "active"
    again = State.from_json(data)
    data["topic_status"]["family"] = "done"
    assert again.topic_status["family"] == "pending"
    with pytest.raises(ValueError, match=r"invalid state: .*survey_id"):
        State.from_json({"agent_id": None, "topic_id": None})


# -- whole conversations against the golden record --------------------------------------------

SCRIPTS: dict[str, tuple[dict, list[str]]] = {
    "answers": ({}, ["a 0.5", "a 0.6", "a 0.9", "a 0.2", "a 0.8", "a 0.1", "a 0.1",
                     "a 0.4", "a 0.3", "a 0.75", "a 0.74"]),
    "probes_2_k_3": ({"probes_per_question": 2, "low_quality_k": 3},
                     ["a 0.5", "a 0.5", "a 0.5", "a 0.1", "a 0.1", "dk", "a 0.2"]),
    "dont_know": ({}, ["dk", "a 0.9", "dk", "dk", "dk"]),
    "dont_know_not_low": ({"count_dont_know_as_low_quality": False}, ["dk", "dk", "dk"]),
    "jumps": ({}, ["a 0.5", "jump ?", "jump household", "jump household dwelling",
                   "jump healthcare", "a 0.9", "jump work education", "skip", "jump healthcare",
                   "skip", "skip", "jump healthcare healthcare", "jump household family",
                   "skip", "skip", "skip", "skip", "skip", "jump healthcare", "skip"]),
    "clarify": ({}, ["clarify", "clarify", "clarify", "a 0.5", "clarify", "clarify",
                     "clarify", "a 0.9"]),
    "clarify_none": ({"max_clarifications": 0}, ["clarify", "a 0.5", "clarify"]),
    "bot_and_chat": ({}, ["? are you a real person", "? how many topics are left",
                          "? what is the meaning of life", "a 0.5", "? who are you",
                          "chat how are you", "chat thanks a lot", "chat hi", "chat bye now",
                          "chat lol", "chat good morning to you"]),
    "gibberish": ({}, ["gib", "a 0.9", "gib", "gib", "gib"]),
    "abusive": ({}, ["abuse", "a 0.5", "abuse", "abuse", "a 0.9", "stop"]),
    "abusive_once": ({"max_abusive": 1}, ["abuse"]),
    "stop": ({}, ["a 0.9", "stop", "a 0.9", "skip"]),
    "turn_budget": ({"max_turns": 3}, ["a 0.5", "gib", "a 0.3", "a 0.9"]),
    "turn_budget_low": ({"max_turns": 2}, ["a 0.5", "a 0.29"]),
    "covered": ({}, ["skip"] * 4 + ["jump household", "? how many topics are left",
                                    "? xyzzy plugh", "a 0.123456", "a 0.654321"]),
    "time_budget": ({"max_minutes": 2.0}, ["a 0.5", "a 0.9", "dk", "a 0.9", "a 0.9"]),
    "all_skipped": ({}, ["skip"] * 12),
    "complete": ({"probes_per_question": 0}, ["a 0.9"] * 40),
    "single": ({"condition": "single"}, ["skip"] * 4 + ["jump healthcare hobbies", "jump healthcare",
                                                        "a 0.5", "clarify"]),
}


def _record(name: str) -> list[dict]:
    policy, messages = SCRIPTS[name]
    policy = dict(policy)
    condition = policy.pop("condition", "multi")
    dt = 45.0 if "time" in name else 30.0
    out = []
    for message, state, replies, events in converse(engine(condition, **policy), messages, dt):
        out.append({"message": message,
                    "replies": [dataclasses.asdict(r) for r in replies],
                    "events": [dataclasses.asdict(e) for e in events],
                    "state": state.to_json()})
    return json.loads(json.dumps(out))  # as stored: tuples become lists


def test_scripted_conversations_match_the_golden_record():
    record = {name: _record(name) for name in SCRIPTS}
    if os.environ.get("UPDATE_CTM_GOLDEN"):
        GOLDEN.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(golden) == sorted(record)
    for name in SCRIPTS:
        assert len(record[name]) == len(golden[name]), name
        for i, (got, want) in enumerate(zip(record[name], golden[name], strict=True)):
            assert got == want, f"{name}, step {i} ({got['message']!r})"
