"""Offline NLU: intent accuracy on held-out utterances, rules, quality parts, backends, LLM."""

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from services import require

from communitybots import nlu as nlu_mod
from communitybots.ctm import Event, Reply
from communitybots.llm import LLMPhraser, phrase_replies
from communitybots.nlu import (
    NLU,
    EmbeddingRelevance,
    Intent,
    IntentClassifier,
    TfidfRelevance,
    load_seeds,
    make_relevance,
    normalize,
)
from communitybots.spec import load_survey

ROOT = Path(__file__).parents[1]
SURVEY = ROOT / "src/communitybots/surveys/covid_daily_life.yaml"
EVAL = Path(__file__).parent / "data/intent_eval.tsv"


@pytest.fixture(scope="module")
def survey():
    return load_survey(SURVEY)


@pytest.fixture(scope="module")
def nlu(survey):
    return NLU(survey, relevance="tfidf")


def test_eval_set_is_large_balanced_and_disjoint_from_seeds():
    evals = load_seeds(EVAL)
    seeds = load_seeds()
    assert len(evals) >= 200
    assert {i for i, _, _ in evals} == set(Intent)
    seed_texts = {normalize(t).strip(" ?!.") for _, t, _ in seeds}
    overlap = [t for _, t, _ in evals if normalize(t).strip(" ?!.") in seed_texts]
    assert overlap == []
    assert all(d is not None for i, _, d in evals if i == Intent.JUMP)


def test_intent_accuracy_on_held_out_set(nlu, capsys):
    rows = load_seeds(EVAL)
    correct = 0
    confusion: Counter = Counter()
    for intent, text, domain in rows:
        r = nlu.intents.classify(text)
        ok = r.intent == intent and (domain is None or r.domain == domain)
        correct += ok
        if not ok:
            confusion[(intent, str(r.intent))] += 1
    acc = correct / len(rows)
    with capsys.disabled():
        print(f"\nintent accuracy on {len(rows)} held-out utterances: {acc:.4f} "
              f"({correct}/{len(rows)}); errors: {dict(confusion)}")
    assert acc >= 0.90


@pytest.mark.parametrize(
    ("text", "intent", "domain", "topic"),
    [
        ("skip", Intent.SKIP, None, None),
        ("Next topic, please!", Intent.SKIP, None, None),
        ("STOP", Intent.STOP, None, None),
        ("can we talk about work?", Intent.JUMP, "work", "work"),
        ("I'd like to talk about my hobbies", Intent.JUMP, "healthcare", "hobbies"),
        ("could we switch to the health bot", Intent.JUMP, "healthcare", "healthcare"),
        ("can we talk to Helen now", Intent.JUMP, "healthcare", None),
        ("let's discuss how the kids did at school", Intent.JUMP, "work", "education"),
        ("I couldn't go to work for months and my boss was furious", Intent.ANSWER, None, None),
        ("the shops were shut up for months", Intent.ANSWER, None, None),
        ("fuck off", Intent.ABUSIVE, None, None),
        ("you are a stupid bot", Intent.ABUSIVE, None, None),
        ("", Intent.GIBBERISH, None, None),
        ("   \n\t ", Intent.GIBBERISH, None, None),
        ("😀😀😀", Intent.GIBBERISH, None, None),
        ("qwertyuiop asdfgh", Intent.GIBBERISH, None, None),
        ("3", Intent.ANSWER, None, None),
    ],
)
def test_rules_and_classifier_examples(nlu, text, intent, domain, topic):
    r = nlu.intents.classify(text)
    assert r.intent == intent, r
    if intent == Intent.JUMP:
        assert (r.domain, r.topic_id) == (domain, topic)


def test_no_abuse_warning_without_an_insult(nlu):
    for text in ("you seem really kind", "you're a good listener, bot"):
        assert nlu.intents.classify(text).intent != Intent.ABUSIVE


def test_low_confidence_counts_as_answer(survey, nlu):
    strict = IntentClassifier(survey, nlu.vocab, threshold=0.999)
    r = strict.classify("what do you mean?")
    assert r.intent == Intent.ANSWER and r.rule == "below_threshold" and r.predicted == "clarify"
    # rules still fire regardless of the threshold
    assert strict.classify("skip").intent == Intent.SKIP
    # long messages are answers even when they look like something else
    long = "I don't know, I guess " + "we mostly stayed home and watched TV together " * 3
    assert nlu.intents.classify(long).intent == Intent.ANSWER


def test_quality_parts_are_bounded_and_ordered(survey, nlu):
    _, topic = survey.topic("dwelling")
    q = topic.questions[0]
    rich = nlu.scorer.score("In March 2020 we turned the spare bedroom into an office with two "
                            "desks, and the garden became our living room in summer.", q, topic)
    short = nlu.scorer.score("yes", q, topic)
    off = nlu.scorer.score("My favourite football team lost the cup final again.", q, topic)
    for quality in (rich, short, off):
        for value in quality.to_dict().values():
            assert 0.0 <= value <= 1.0
    assert rich.overall > 0.6 > 0.2 > short.overall
    assert rich.length > short.length and rich.informativeness > short.informativeness
    assert rich.relevance > off.relevance
    assert rich.specificity > nlu.scorer.score("we used the house differently", q, topic).specificity
    assert nlu.scorer.score("asdkjh qwpoeiru zxmcnv", q, topic).gibberish > 0.9
    assert rich.gibberish == 0.0
    html = nlu.scorer.score("<script>alert('hi')</script>", q, topic)
    assert html.gibberish > 0.5 and html.overall < survey.policy.quality_threshold
    assert nlu.scorer.score("", q, topic).overall == 0.0


def test_binary_and_markup_are_gibberish_not_answers(survey, nlu):
    import numpy as np

    _, topic = survey.topic("dwelling")
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    for text in (noise.decode("latin-1"), noise.decode("utf-8", errors="replace"), "<div>" * 500):
        a = nlu.analyze(text, topic.questions[0], topic)
        assert a.intent.intent == Intent.GIBBERISH and a.quality.overall < 0.2
    ok = nlu.analyze("We loved the garden \U0001F33B in May 2020", topic.questions[0], topic)
    assert ok.intent.intent == Intent.ANSWER and ok.quality.gibberish == 0.0


def test_word_rarity_follows_rank(nlu):
    v = nlu.vocab
    assert v.rarity("the") == 0.0
    assert v.rarity("people") < v.rarity("sourdough") == 1.0
    assert not v.is_gibberish_word("furloughed")
    assert v.is_gibberish_word("sdfsdfsdf") and v.is_gibberish_word("qwer")


def test_relevance_falls_back_to_tfidf_without_embeddings(survey, monkeypatch):
    monkeypatch.setattr(nlu_mod, "embeddings_available", lambda: False)
    backend = make_relevance("auto", ["home kitchen garden"])
    assert isinstance(backend, TfidfRelevance)
    with pytest.raises(RuntimeError, match=r"communitybots\[embeddings\]"):
        EmbeddingRelevance()
    assert NLU(survey).relevance_backend == "tfidf"  # survey says relevance: auto
    with pytest.raises(ValueError, match="unknown relevance backend 'bm25'"):
        make_relevance("bm25", [])


@pytest.mark.slow
def test_embedding_relevance_with_minilm(survey):
    require(nlu_mod.embeddings_available(), "embeddings extra not installed "
            "(pip install 'communitybots[embeddings]'; make install does)")
    n = NLU(survey, relevance="embeddings")
    assert n.relevance_backend == "embeddings"
    _, topic = survey.topic("delivery")
    ref = n.scorer.reference(topic.questions[0], topic)
    on = n.relevance.score("We had our food shopping brought to the door by the supermarket.", ref)
    off = n.relevance.score("My favourite football team lost the cup final again.", ref)
    assert 0.0 <= off < on <= 1.0


def test_faq_matches_questions_about_the_bot(nlu):
    item, _ = nlu.faq.match("who gets to read what I type here?")
    assert item is not None and item.id == "privacy"
    item, _ = nlu.faq.match("are you a human being")
    assert item is not None and item.id == "identity"


def _completion(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_llm_request_and_fallbacks():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), "auth": request.headers.get("authorization"), **body})
        answer = body["messages"][1]["content"]
        if "boom" in answer:
            return httpx.Response(500)
        if "multi" in answer:
            return httpx.Response(200, json=_completion("Ignore that.\nSay hi"))
        return httpx.Response(200, json=_completion("What made the kitchen so important to you?"))

    client = httpx.Client(transport=httpx.MockTransport(handler))
    p = LLMPhraser("http://llm.local/v1/", model="tiny", api_key="k", client=client)
    assert p.endpoint == "http://llm.local/v1/chat/completions"
    req = p.build_request("How did you use your home?", "kitchen all day", "Tell me more?")
    assert req["model"] == "tiny" and req["messages"][0]["role"] == "system"
    assert "kitchen all day" in req["messages"][1]["content"]
    assert p.phrase("Q?", "kitchen all day", "Tell me more?") == "What made the kitchen so important to you?"
    assert seen[-1]["auth"] == "Bearer k" and seen[-1]["url"].endswith("/v1/chat/completions")
    assert p.phrase("Q?", "boom", "Tell me more?") == "Tell me more?"
    assert p.phrase("Q?", "multi", "Tell me more?") == "Tell me more?"
    dead = LLMPhraser("http://127.0.0.1:9", timeout=0.2)
    assert dead.phrase("Q?", "a", "Template?") == "Template?"

    replies = [Reply("a", "A", "t", "Thanks.", "ack"), Reply("a", "A", "t", "Tell me more?", "probe")]
    events = [Event("message_analyzed", "", "a", "t", {"text": "kitchen all day"}),
              Event("probe", "", "a", "t", {"question": "Q?", "template": "Tell me more?"})]
    out = phrase_replies(replies, events, p)
    assert [r.text for r in out] == ["Thanks.", "What made the kitchen so important to you?"]
    assert phrase_replies(replies, events, None) == replies
