"""Intents (:class:`Intent`): rules for commands and messages without words, then a
TF-IDF + logistic-regression classifier trained on the shipped seed utterances."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.utils.extmath import softmax

from communitybots.nlu.text import _DATA, _STOP, normalize, stem, words
from communitybots.nlu.tfidf import SparseTfidf
from communitybots.nlu.vocabulary import Vocabulary
from communitybots.spec import Survey


class Intent(StrEnum):
    """What a participant's message asks the CTM engine to do."""

    ANSWER = "answer"
    SKIP = "skip"
    JUMP = "jump_to_domain"
    DONT_KNOW = "dont_know"
    CLARIFY = "clarify"
    BOT_QUESTION = "question_to_bot"
    CHIT_CHAT = "chit_chat"
    GIBBERISH = "gibberish"
    STOP = "stop"
    ABUSIVE = "abusive"


@dataclass(frozen=True)
class IntentResult:
    """The intent of a message.

    Attributes:
        intent: the decided intent.
        confidence: classifier probability of ``intent`` (1.0 for rules).
        rule: name of the rule that decided, or ``"classifier"`` /
            ``"below_threshold"`` (classifier unsure, so an answer).
        domain: for jumps, the domain asked for (None if not recognised); for a skip
            that names one ("skip the health questions"), the domain to leave out.
        topic_id: for jumps, a specific topic asked for (None if only a domain); for a
            skip, the one topic to leave out (None: the whole domain).
        predicted: the classifier's top intent before the threshold (None for rules).
    """

    intent: Intent
    confidence: float
    rule: str
    domain: str | None = None
    topic_id: str | None = None
    predicted: str | None = None


def load_seeds(path: Path | None = None) -> list[tuple[str, str, str | None]]:
    """Read an intent TSV file: ``intent<TAB>utterance[<TAB>domain]``; ``#`` comments."""
    text = path.read_text(encoding="utf-8") if path else (_DATA / "intent_seeds.tsv").read_text(
        encoding="utf-8")
    rows: list[tuple[str, str, str | None]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or parts[0] not in Intent.__members__.values():
            raise ValueError(f"{path or 'intent_seeds.tsv'}:{i}: expected '<intent>\\t<text>', got {line!r}")
        domain = parts[2].strip() if len(parts) > 2 and parts[2].strip() else None
        rows.append((parts[0], parts[1].strip(), domain))
    return rows


@functools.lru_cache(maxsize=4)
def _trained_classifier(seed_path: str | None) -> object:
    rows = load_seeds(Path(seed_path) if seed_path else None)
    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                 token_pattern=r"(?u)\b\w[\w']*\b")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)),
    ])
    model = make_pipeline(features, LogisticRegression(C=20.0, solver="newton-cg", max_iter=1000))
    model.fit([normalize(t) for _, t, _ in rows], [i for i, _, _ in rows])
    return model


class _OneTextProba:
    """``pipeline.predict_proba([text])[0]`` of the trained intent classifier, bit-for-bit,
    without scikit-learn's per-call validation: the two TF-IDF rows (:class:`SparseTfidf`)
    side by side as ``FeatureUnion`` stacks them, the same sparse product with the
    coefficients plus the intercepts, and the softmax of multinomial logistic regression
    (a two-class model, whose probabilities are not a softmax, goes through scikit-learn)."""

    def __init__(self, pipeline: Pipeline):
        union, logistic = pipeline.steps[0][1], pipeline.steps[-1][1]
        self._pipeline = pipeline
        self._parts = [SparseTfidf(vectorizer) for _, vectorizer in union.transformer_list]
        self._offsets = np.cumsum([0] + [p.n_features for p in self._parts])
        self._coef_t = logistic.coef_.T
        self._intercept = logistic.intercept_
        self._multinomial = len(logistic.classes_) > 2

    def __call__(self, text: str) -> np.ndarray:
        if not self._multinomial:
            return self._pipeline.predict_proba([text])[0]
        rows = [part.vector(text) for part in self._parts]
        indices = np.concatenate([idx + off for (idx, _), off in zip(rows, self._offsets,
                                                                        strict=False)])
        values = np.concatenate([v for _, v in rows])
        x = sp.csr_array((values, indices.astype(np.int32),
                          np.array([0, len(indices)], dtype=np.int32)),
                         shape=(1, int(self._offsets[-1])))
        scores = x @ self._coef_t + self._intercept
        return softmax(scores, copy=False)[0]


_SKIP_COMMANDS = {"skip", "next", "pass", "skip this", "skip it", "next topic", "skip topic",
                  "next question", "skip question", "move on", "next please", "skip please"}
_STOP_COMMANDS = {"stop", "quit", "exit", "end", "bye", "goodbye", "cancel", "end chat",
                  "end survey", "stop survey", "i quit", "bye bye"}
_JUMP_VERB = re.compile(
    r"\b(talk|discuss|chat|speak|switch|jump|move on to|move to|skip to|take me|what about|"
    r"how about|tell you about|come back to|go back to|get back to)\b")
_JUMP_MARKER = re.compile(
    r"(^|\b)(can|could|shall|may|let's|lets|let us|let me|want|wanna|would like|'d like|rather|"
    r"prefer|please|instead|take me|what about|how about)\b")
_JUMP_IMPERATIVE = re.compile(
    r"^(talk|discuss|switch|jump|go|move|skip) (to|about|on to)\b|"
    r"\b(go to|do|start) (the )?(\w+ ){0,2}(topic|topics|questions|part|section|bit|bot)\b")
_INSULTS = re.compile(
    r"\b(stupid|idiot\w*|dumb\w*|moron\w*|useless|pathetic|loser|brainless|suck|sucks|"
    r"crap|junk|annoying|hate)\b")
_PROFANE = re.compile(r"\b(fuck you|fuck off|f off|stfu|piss off|screw (you|this)|go to hell|"
                      r"bugger off|damn you)\b|^(shut up|get lost)\b")
_ADDRESSEE = re.compile(r"\b(you|you're|youre|u|ur|bot|machine|thing|this survey|this bot)\b")


def is_jump_request(norm: str) -> bool:
    """Whether normalised text is phrased as a request to change topic ("can we talk about")."""
    return bool((_JUMP_VERB.search(norm) and _JUMP_MARKER.search(norm))
                or _JUMP_IMPERATIVE.search(norm))


#: asking to leave something out: "skip the health questions", "no more questions about
#: work", "I don't want to talk about health" (not "skip to work": a jump)
_SKIP_REQUEST = re.compile(
    r"^(please )?(skip|skip over|leave out|pass on|no more|enough)\b(?! to\b)|"
    r"^(please )?(don't|dont|do not) ask( me)? about\b|"
    r"\b((don't|dont|do not) (want to|wanna)|rather not) (talk|discuss|answer|go into|get into)\b")


_GENERIC = frozenset("talk talking discuss chat speak switch go jump move skip take want like "
                     "topic topics part section question questions bot bots instead now please "
                     "let let's can could would rather prefer about tell back stuff "
                     "things thing maybe area".split())


class IntentClassifier:
    """Rules for commands plus a TF-IDF + logistic-regression classifier on seed utterances.

    Rules, in order: empty text and text without letters or digits -> gibberish; exact
    commands ("skip", "next topic", "stop", "quit") -> skip / stop; a request to leave a
    named domain or topic out ("skip the health questions", "no more questions about
    work", "I don't want to talk about health") -> skip with that domain (and topic, when
    only a topic is named); a request verb ("talk
    about", "switch to", "what about") naming a known domain or topic -> jump_to_domain;
    insults or profanity aimed at the bot -> abusive; key-mashing -> gibberish. Otherwise
    the classifier decides; its answer counts only with probability >= ``threshold``, and
    messages of more than ``long_answer_words`` words are answers unless a rule fired, and
    the classifier alone never calls a message abusive without an insult word in it.

    Args:
        survey: domains, agent names and topics recognised in jump requests.
        vocab: the vocabulary (for key-mash detection).
        threshold (float): minimum classifier confidence for a non-answer intent (0.45).
        long_answer_words (int): longer messages are answers (15).
        seeds (Path | None): seed TSV; default the shipped ``data/intent_seeds.tsv``.
    """

    def __init__(self, survey: Survey, vocab: Vocabulary, threshold: float = 0.45,
                 long_answer_words: int = 15, seeds: Path | None = None):
        self.vocab = vocab
        self.threshold = threshold
        self.long_answer_words = long_answer_words
        self.model = _trained_classifier(str(seeds) if seeds else None)
        self._proba = _OneTextProba(self.model)
        self._targets = self._index_targets(survey)

    @staticmethod
    def _index_targets(survey: Survey) -> list[tuple[str, str, str | None, float]]:
        """(stem, domain, topic_id | None, weight) for every name a participant may use."""
        out: list[tuple[str, str, str | None, float]] = []
        for agent in survey.agents:
            for name in (agent.domain, agent.name, agent.id):
                for w in words(name):
                    if w not in _GENERIC and w != "all":
                        out.append((stem(w), agent.domain, None, 3.0))
        for agent, topic in survey.topics():
            domain = topic.domain or agent.domain
            for w in words(domain):
                out.append((stem(w), domain, None, 3.0))
            for w in words(topic.title) + words(topic.id.replace("_", " ")):
                if w not in _STOP and w not in _GENERIC:
                    out.append((stem(w), domain, topic.id, 2.0))
            for kw in topic.keywords:
                for w in words(kw):
                    if w not in _STOP and w not in _GENERIC:
                        out.append((stem(w), domain, topic.id, 1.0))
        return out

    def resolve_target(self, text: str) -> tuple[str | None, str | None]:
        """The (domain, topic_id) a message names; topic_id None when only a domain is named.

        Each mentioned word scores its domain (domain and agent names weigh 3, topic
        titles 2, keywords 1); the best domain wins (first in survey order on ties), and
        within it the best-scoring topic if a topic word was named.
        """
        stems = {stem(w) for w in words(text) if w not in _GENERIC}
        stems |= {s[:6] for s in stems if len(s) > 6}
        domain_score: dict[str, float] = {}
        topic_score: dict[tuple[str, str], float] = {}
        for s, domain, topic_id, weight in self._targets:
            hit = s in stems or (len(s) > 6 and s[:6] in stems)
            if not hit:
                continue
            domain_score[domain] = domain_score.get(domain, 0.0) + weight
            if topic_id is not None:
                topic_score[(domain, topic_id)] = topic_score.get((domain, topic_id), 0.0) + weight
        if not domain_score:
            return None, None
        best = max(domain_score.values())
        domain = next(d for d in domain_score if domain_score[d] == best)
        topics = {t: v for (d, t), v in topic_score.items() if d == domain}
        if not topics:
            return domain, None
        top = max(topics.values())
        return domain, next(t for t in topics if topics[t] == top)

    def names_domain(self, text: str, domain: str) -> bool:
        """Whether the text names ``domain`` itself (its name or its agent's), not only
        one of its topics."""
        stems = {stem(w) for w in words(text) if w not in _GENERIC}
        stems |= {s[:6] for s in stems if len(s) > 6}
        return any(d == domain and t is None and (s in stems or (len(s) > 6 and s[:6] in stems))
                   for s, d, t, _w in self._targets)

    def classify(self, text: str) -> IntentResult:
        norm = normalize(text).strip()
        if not norm:
            return IntentResult(Intent.GIBBERISH, 1.0, "empty")
        if not any(c.isalnum() for c in norm):
            return IntentResult(Intent.GIBBERISH, 1.0, "no_words")
        bare = re.sub(r"[^\w' ]+", " ", norm).strip()
        bare = re.sub(r"^(please|ok|okay|pls|just)\s+", "", re.sub(r"\s+", " ", bare))
        bare = re.sub(r"\s+(please|pls|now|then)$", "", bare)
        if bare in _SKIP_COMMANDS:
            return IntentResult(Intent.SKIP, 1.0, "skip_command")
        if bare in _STOP_COMMANDS:
            return IntentResult(Intent.STOP, 1.0, "stop_command")
        toks = words(norm)
        if _PROFANE.search(norm) or (_INSULTS.search(norm) and _ADDRESSEE.search(norm)
                                     and len(toks) <= 8):
            return IntentResult(Intent.ABUSIVE, 1.0, "abuse_lexicon")
        if len(toks) <= self.long_answer_words and _SKIP_REQUEST.search(norm):
            domain, topic_id = self.resolve_target(norm)
            if domain is not None:  # a domain (or one topic) to leave out
                scope = None if self.names_domain(norm, domain) else topic_id
                return IntentResult(Intent.SKIP, 1.0, "skip_request", domain, scope)
        if len(toks) <= self.long_answer_words and is_jump_request(norm):
            domain, topic_id = self.resolve_target(norm)
            if domain is not None:
                return IntentResult(Intent.JUMP, 1.0, "jump_request", domain, topic_id)
        alpha = [w for w in toks if len(w) > 1]
        if alpha and all(self.vocab.is_gibberish_word(w) for w in alpha):
            return IntentResult(Intent.GIBBERISH, 1.0, "key_mash")
        probs = self._proba(norm)
        k = int(np.argmax(probs))
        predicted = Intent(self.model.classes_[k])
        conf = float(probs[k])
        if predicted is Intent.ANSWER:
            return IntentResult(Intent.ANSWER, conf, "classifier", predicted=predicted)
        if len(toks) > self.long_answer_words:
            return IntentResult(Intent.ANSWER, conf, "long_message", predicted=predicted)
        if conf < self.threshold:
            return IntentResult(Intent.ANSWER, conf, "below_threshold", predicted=predicted)
        if predicted is Intent.ABUSIVE and not _INSULTS.search(norm):
            # never warn a participant without an insult in the message ("you seem nice")
            order = np.argsort(probs)[::-1]
            second = Intent(self.model.classes_[order[1]])
            if second is not Intent.ANSWER and float(probs[order[1]]) >= self.threshold:
                return IntentResult(second, float(probs[order[1]]), "classifier", predicted=predicted)
            return IntentResult(Intent.ANSWER, conf, "abuse_without_insult", predicted=predicted)
        if predicted is Intent.JUMP:
            domain, topic_id = self.resolve_target(norm)
            return IntentResult(Intent.JUMP, conf, "classifier", domain, topic_id, predicted)
        if predicted is Intent.DONT_KNOW and hedged_answer(norm):
            # "I don't know, maybe we cooked more?": the content after the hedge is an answer
            return IntentResult(Intent.ANSWER, conf, "hedged_answer", predicted=predicted)
        return IntentResult(predicted, conf, "classifier", predicted=predicted)


_HEDGE = re.compile(
    r"^\W*(i\s+)?(really\s+|honestly\s+)?(don'?t|do not|dont|can'?t|cannot)\s+(really\s+)?"
    r"(know|say|remember|recall|tell)\b|^\W*(not sure|no idea|idk|dunno|hard to say|"
    r"difficult to say|i'?m not sure|i am not sure)\b")


#: words that talk about the answer rather than give one ("... what to say")
_HEDGE_WORDS = frozenset({"say", "said", "tell", "think", "answer", "question", "remember",
                          "recall", "sure", "know", "idea", "honestly", "sorry", "clue",
                          "really", "exactly", "mean", "maybe", "guess", "sense"})


def hedged_answer(text: str) -> bool:
    """A "don't know" that goes on to answer: after the hedge ("I don't know", "not
    sure", ...) come at least three words, one of them a content word (not a stop word),
    e.g. "I don't know, maybe we cooked more?" but not "I don't know, sorry"."""
    norm = normalize(text)
    match = _HEDGE.search(norm)
    if match is None:
        return False
    rest = words(norm[match.end():])
    return len(rest) >= 3 and any(w not in _STOP and w not in _HEDGE_WORDS and len(w) > 2
                                  for w in rest)
