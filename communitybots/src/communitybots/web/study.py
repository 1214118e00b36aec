"""The survey a platform serves, its two conditions, and one CTM engine per condition.

The specification is stored in the database (``surveys``, keyed by a hash of its
content) when the platform starts. A participant keeps the specification they started
with: if the YAML file changes between two runs, sessions begun under the old one go on
with the old one, rebuilt from the database.
"""

from __future__ import annotations

import hashlib
import json
import threading

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from communitybots.ctm import CTM, Event, Reply
from communitybots.llm import LLMPhraser, phrase_replies
from communitybots.spec import Survey, parse_survey, single_agent
from communitybots.store import SurveyRow

from .settings import CONDITIONS, LINK_CONDITIONS, WIZARD


def spec_hash(survey: Survey) -> str:
    canonical = json.dumps(survey.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def version_label(survey: Survey, digest: str) -> str:
    """The survey's ``version`` label, or the first 12 hex digits of its hash."""
    return survey.version or digest[:12]


def register_survey(db: Session, survey: Survey) -> int:
    """The primary key of ``survey`` in the ``surveys`` table, inserting it if new."""
    digest = spec_hash(survey)
    row = db.scalar(select(SurveyRow).where(SurveyRow.spec_hash == digest))
    if row is None:
        row = SurveyRow(spec_id=survey.id, title=survey.title, spec_hash=digest,
                        label=version_label(survey, digest),
                        spec_json=survey.model_dump(mode="json"))
        db.add(row)
        try:
            db.commit()
        except IntegrityError:  # another worker process registered it first
            db.rollback()
            row = db.scalar(select(SurveyRow).where(SurveyRow.spec_hash == digest))
            assert row is not None
    return row.id


def any_survey_calls_llm(db: Session) -> bool:
    """Whether a survey version stored in the database phrases probes through an LLM
    endpoint (``nlu.llm_url``): its participants' turns may wait seconds on the network."""
    return any((spec.get("nlu") or {}).get("llm_url")
               for spec in db.scalars(select(SurveyRow.spec_json)))


def variant(survey: Survey, condition: str) -> Survey:
    """The survey as one condition sees it: the team ("multi", and "wizard", where a
    researcher speaks for it) or one persona ("single")."""
    if condition not in LINK_CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {LINK_CONDITIONS}")
    return single_agent(survey) if condition == "single" else survey


#: conditions that share another's engine: the wizard's suggestions are the team's CTM
_SAME_ENGINE = {WIZARD: "multi"}


class Study:
    """The served survey and the CTM engine of each (survey version, condition)."""

    def __init__(self, survey: Survey, survey_pk: int, relevance: str | None = None):
        self.survey = survey
        self.relevance = relevance
        self.survey_pk = survey_pk
        #: the served version, stored with each new participant and every message
        self.survey_hash = spec_hash(survey)
        self.survey_version = version_label(survey, self.survey_hash)
        self._surveys: dict[int, Survey] = {survey_pk: survey}
        self._engines: dict[tuple[int, str], tuple[Survey, CTM]] = {}
        self._lock = threading.Lock()
        self._phrasers: dict[tuple[str, str], LLMPhraser] = {}
        for condition in CONDITIONS:
            self.engine(survey_pk, condition, None)

    def engine(self, survey_pk: int, condition: str, db: Session | None) -> tuple[Survey, CTM]:
        """(the condition's survey, its CTM) for a participant's survey version."""
        key = (survey_pk, _SAME_ENGINE.get(condition, condition))
        found = self._engines.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._engines:
                base = self._surveys.get(survey_pk)
                if base is None:
                    if db is None:
                        raise KeyError(f"survey {survey_pk} is not loaded")
                    row = db.get(SurveyRow, survey_pk)
                    if row is None:
                        raise KeyError(f"survey {survey_pk} is not in the database")
                    base = parse_survey(row.spec_json)
                    self._surveys[survey_pk] = base
                shown = variant(base, key[1])
                self._engines[key] = (shown, CTM(shown, relevance=self.relevance))
            return self._engines[key]

    def phrase(self, survey: Survey, replies: list[Reply], events: list[Event]) -> list[Reply]:
        """The replies with each probe phrased by the survey's OpenAI-compatible
        endpoint (``nlu.llm_url``, model ``nlu.llm_model``), as ``communitybots chat``
        does; the survey's own probe on any error, and unchanged without an endpoint."""
        url = survey.nlu.llm_url
        if not url or not any(r.kind == "probe" for r in replies):
            return replies
        key = (url, survey.nlu.llm_model)
        phraser = self._phrasers.get(key)
        if phraser is None:
            phraser = self._phrasers.setdefault(key, LLMPhraser(url, survey.nlu.llm_model))
        return phrase_replies(replies, events, phraser)
