"""Conversations that listen: relevance takes part in the CTM's decision (an off-topic
answer is steered back to the question, once per question, and counted), and a sensitive
disclosure is detected offline and answered with care instead of a probe."""

from __future__ import annotations

import pytest
from test_ctm_decisions import SURVEY, converse, engine, kinds

from communitybots import analytics
from communitybots.ctm import CARE, CTM, State
from communitybots.nlu import sensitive_disclosure


def test_an_off_topic_answer_is_steered_back_once_per_question():
    # scripted answers: quality (relevance included) 0.05, four words: off-topic
    steps = converse(engine(), ["a 0.05 football last night", "a 0.05 football again today",
                                "a 0.5", "a 0.05 football once more"])
    (_, s1, r1, e1), (_, s2, _, e2), (_, s3, _, _), (_, s4, r4, e4) = steps[1:]
    assert kinds(e1) == ["message_analyzed", "off_topic"]
    assert e1[1].data["relevance"] == 0.05 and "off-topic" in e1[1].reason
    question = SURVEY.topic("dwelling")[1].questions[0]
    assert [r.kind for r in r1] == ["ack", "question"]
    assert "different subject" in r1[0].text and "dwelling" in r1[0].text
    assert r1[1].text == f"Back to my question: {question}"
    assert (s1.stage, s1.question_index, s1.redirects, s1.low_quality_run) == ("question", 0, 1, 0)
    # the second off-topic answer to the same question is accepted (low quality)
    assert kinds(e2)[1] == "answer_accepted" and e2[1].data["low_quality"] is True
    assert s2.stage == "probe" and s2.redirects == 0  # a new (probe) question: count reset
    # a probe answered, the next question: off-topic again gets its own redirect
    assert s3.question_index == 1
    assert kinds(e4) == ["message_analyzed", "off_topic"] and r4[-1].kind == "question"


def test_short_answers_and_relevant_answers_are_not_redirected():
    # "a 0.05": one word, too short to judge; 0.1 is not below the threshold
    for message in ("a 0.05", "a 0.1 about the kitchen"):
        steps = converse(engine(), [message])
        assert "off_topic" not in kinds(steps[1][3]), message
    # the survey can turn redirects off
    steps = converse(engine(off_topic_relevance=0.0), ["a 0.05 football last night"])
    assert "off_topic" not in kinds(steps[1][3])


def test_old_states_load_without_the_redirect_counter():
    state, _, _ = engine().start()
    saved = state.to_json()
    del saved["redirects"]
    assert State.from_json(saved).redirects == 0


@pytest.mark.parametrize(("text", "category"), [
    ("My father died of covid and we could not visit him", "bereavement"),
    ("Grandma passed away in the care home in April", "bereavement"),
    ("My husband was in intensive care for three weeks", "illness"),
    ("I still have long covid", "illness"),
    ("I lost my job in April", "job_loss"),
    ("I was laid off and we struggled", "job_loss"),
    ("I fell into a depression during the winter", "mental_health"),
    ("There was domestic violence at home", "violence"),
])
def test_sensitive_disclosures_are_detected(text: str, category: str) -> None:
    assert sensitive_disclosure(text) == category


@pytest.mark.parametrize("text", [
    "We mostly stayed in the kitchen", "I worked from home and my job changed a lot",
    "We cooked more and watched films", "The hospital parking was free",
    "I don't know", "My plants died because I forgot to water them",
])
def test_ordinary_answers_are_not_sensitive(text: str) -> None:
    if text.startswith("My plants"):  # a known limit of word patterns: "died" is enough
        assert sensitive_disclosure(text) == "bereavement"
        return
    assert sensitive_disclosure(text) is None


def test_a_death_gets_care_not_a_probe():
    ctm = CTM(SURVEY, relevance="tfidf")
    state, _, _ = ctm.start()
    state, replies, events = ctm.step(
        state, "My father died of covid and we could not visit him", now=30.0)
    assert kinds(events)[:3] == ["message_analyzed", "answer_accepted", "sensitive_disclosure"]
    assert events[0].data["sensitive"] == "bereavement"
    assert events[2].data == {"category": "bereavement"}
    assert "probe" not in kinds(events)  # never "could you tell me more?" after a death
    assert replies[0].text == CARE["bereavement"] and "Thanks for sharing" not in replies[0].text
    assert state.stage == "question" and state.low_quality_run == 0
    # an ordinary answer carries no "sensitive" key at all
    _, _, events = ctm.step(state, "We mostly stayed in the kitchen", now=60.0)
    assert "sensitive" not in events[0].data


def test_redirects_and_disclosures_are_counted_per_participant():
    from test_analytics import _e, _m, _p

    study = analytics.StudyData(
        participants=[_p(1, "multi", True, True), _p(2, "single", True, True)],
        messages=[_m(1, 0, "dwelling", "football last night"), _m(1, 2, "dwelling", "kitchen"),
                  _m(2, 0, "dwelling", "we stayed home"), _m(2, 1, "family", "with my kids")],
        events=[_e(1, 1, "off_topic", "dwelling"), _e(2, 2, "sensitive_disclosure", "family")])
    values = analytics.participant_values(study)
    assert values["off_topic_rate"] == {"multi": [0.5], "single": [0.0]}
    assert values["sensitive_disclosures"] == {"multi": [0.0], "single": [1.0]}
    s = analytics.summary(study, ["dwelling", "family"])
    assert s["conditions"]["multi"]["off_topic_redirects"] == 1
    assert s["conditions"]["single"]["sensitive_disclosures"] == 1


def _off_topic_eval(backend: str) -> tuple[list[float], list[float]]:
    """Relevance of the labelled answers of ``data/off_topic_eval.tsv`` to the first
    question of their topic: (on-topic scores, off-topic scores)."""
    from pathlib import Path

    from communitybots.nlu import NLU

    nlu = NLU(SURVEY, relevance=backend)
    scores: dict[str, list[float]] = {"on": [], "off": []}
    rows = (Path(__file__).parent / "data" / "off_topic_eval.tsv").read_text().splitlines()[1:]
    for row in rows:
        topic_id, label, text = row.split("\t")
        topic = SURVEY.topic(topic_id)[1]
        scores[label].append(nlu.analyze(text, topic.questions[0], topic).quality.relevance)
    return scores["on"], scores["off"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tfidf", "embeddings"])
def test_off_topic_separation_measured(backend: str) -> None:
    """Prints how many answers the default threshold redirects, per backend:
    ``pytest tests/test_ctm_listening.py -k separation -s``."""
    from services import require

    from communitybots import nlu as nlu_mod

    if backend == "embeddings":
        require(nlu_mod.embeddings_available(), "embeddings extra not installed "
                "(pip install 'communitybots[embeddings]'; make install does)")
    threshold = SURVEY.policy.off_topic_relevance
    on, off = _off_topic_eval(backend)
    caught = sum(x < threshold for x in off)
    wrong = sum(x < threshold for x in on)
    print(f"\n{backend}: off-topic redirected {caught}/{len(off)} "
          f"(relevance {min(off):.3f}-{max(off):.3f}); on-topic redirected {wrong}/{len(on)} "
          f"(relevance {min(on):.3f}-{max(on):.3f}); threshold {threshold}")
    if backend == "embeddings":
        assert caught == len(off) and wrong == 0
    else:  # word overlap: a weaker separation, pinned so a change shows
        assert caught >= len(off) - 2 and wrong <= 1


def test_an_agent_introduces_itself_once():
    # Hanna asks about dwelling; a jump to work hands over to Walter (first meeting: his
    # introduction); skipping on reaches Helen, then back to Hanna: no second introduction
    steps = converse(engine(), ["jump work"] + ["skip"] * 7)
    intros = [(r.agent_id, r.text) for _, _, replies, _ in steps for r in replies
              if r.kind == "intro"]
    assert intros[1:] == [
        ("household", SURVEY.agent("household").introduction),
        ("work", SURVEY.agent("work").introduction),
        ("healthcare", SURVEY.agent("healthcare").introduction),
        ("household", "Hi again, it's Hanna."),
    ]


@pytest.mark.parametrize(("text", "hedged"), [
    ("I don't know, maybe we cooked more?", True),
    ("not sure, we probably walked the dog more often", True),
    ("I don't know, sorry", False),
    ("I really don't know what to say", False),
    ("I can't remember exactly when it was", False),
    ("We cooked more", False),  # no hedge at all: an answer anyway
])
def test_a_hedge_followed_by_content_is_an_answer(text: str, hedged: bool) -> None:
    from communitybots.nlu import hedged_answer

    assert hedged_answer(text) is hedged


def test_a_hedged_answer_keeps_its_content():
    ctm = CTM(SURVEY, relevance="tfidf")
    state, _, _ = ctm.start()
    _, _, events = ctm.step(state, "I don't know, maybe we cooked more?", now=30.0)
    assert events[0].data["intent"] == "answer" and events[0].data["rule"] == "hedged_answer"
    assert events[0].data["predicted"] == "dont_know"
    assert "dont_know" not in kinds(events)
    _, _, events = ctm.step(state, "I don't know, sorry", now=30.0)
    assert "dont_know" in kinds(events)
