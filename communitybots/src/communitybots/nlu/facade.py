"""The facade: :class:`NLU` builds the parts for one survey and :meth:`NLU.analyze` gives
one message's :class:`Analysis` (intent, quality, sensitive disclosure)."""

from __future__ import annotations

from dataclasses import dataclass

from communitybots.nlu.faq import FAQMatcher, default_faq
from communitybots.nlu.intents import Intent, IntentClassifier, IntentResult, load_seeds
from communitybots.nlu.quality import Quality, QualityScorer
from communitybots.nlu.relevance import make_relevance
from communitybots.nlu.sensitive import sensitive_disclosure
from communitybots.nlu.vocabulary import Vocabulary
from communitybots.spec import NLUConfig, Survey, Topic


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
