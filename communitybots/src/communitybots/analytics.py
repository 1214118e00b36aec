"""The study's measures, per topic and per condition (multi-agent vs single-agent).

CommunityBots (Jiang et al., CSCW 2023) compared a team of chatbots with one chatbot,
between subjects, on engagement, response quality and interruptions. This module
computes those measures from the stored record:

- participants per condition, completion rate, and drop-off per topic (where the
  participants who never finished the chat stopped);
- per topic: participants who reached it, finished it normally, skipped it, or were
  moved on by the engine;
- words per answer and the response-quality parts (length, informativeness,
  relevance, specificity, gibberish, overall) of answers;
- skip rate (topics the participant asked to skip / topics reached) and interruption
  rate (topics the engine switched away from without being asked / topics reached);
- post-survey answers (Likert means per item);
- a two-sided Mann-Whitney U test between the conditions for the per-answer measures.

``load(db)`` reads the tables; everything else is a pure function of ``StudyData``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from communitybots.store import QUALITY_PARTS, Answer, EventRow, Message, Participant

CONDITIONS: tuple[str, ...] = ("multi", "single")

#: how each CTM event that leaves a topic counts: the participant asked ("skipped",
#: "jumped_away") or the engine moved on by itself before the topic's dialog ended
#: ("interrupted": a run of low-quality answers, the time or turn budget)
OUTCOMES: dict[str, str] = {
    "topic_finished": "finished",
    "topic_skipped": "skipped",
    "domain_jump": "jumped_away",
    "topic_switched_low_quality": "interrupted",
    "budget_reached": "interrupted",
}
#: intents whose messages count as answers for words and quality
ANSWER_INTENTS: frozenset[str] = frozenset({"answer"})


@dataclass
class StudyData:
    """Rows of the study as plain dictionaries (one list per table)."""

    participants: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)


def _row(obj: Any, columns: list[str]) -> dict[str, Any]:
    return {c: getattr(obj, c) for c in columns}


def load(db: Session, survey_pk: int | None = None, *,
         include_excluded: bool = False) -> StudyData:
    """Read the study's tables (optionally one survey version) into ``StudyData``;
    participants a researcher excluded (e.g. a flood from one address) are left out
    unless ``include_excluded``."""
    pq = select(Participant)
    if not include_excluded:
        pq = pq.where(Participant.excluded_at.is_(None))
    if survey_pk is not None:
        pq = pq.where(Participant.survey_pk == survey_pk)
    participants = db.scalars(pq.order_by(Participant.id)).all()
    ids = [p.id for p in participants]
    if not ids:
        return StudyData()
    pcols = ["id", "public_id", "condition", "assignment", "status", "consented_at",
             "chat_finished_at", "completed_at"]
    mcols = ["participant_id", "seq", "turn", "role", "agent_id", "topic_id", "kind", "text",
             "intent", "confidence", "created_at"] + [f"q_{p}" for p in QUALITY_PARTS]
    ecols = ["participant_id", "seq", "turn", "kind", "reason", "agent_id", "topic_id", "data"]
    acols = ["participant_id", "item_id", "value"]
    in_ids = Message.participant_id.in_(ids)
    return StudyData(
        participants=[_row(p, pcols) for p in participants],
        messages=[_row(m, mcols) for m in db.scalars(
            select(Message).where(in_ids).order_by(Message.participant_id, Message.seq))],
        events=[_row(e, ecols) for e in db.scalars(
            select(EventRow).where(EventRow.participant_id.in_(ids))
            .order_by(EventRow.participant_id, EventRow.seq))],
        answers=[_row(a, acols) for a in db.scalars(
            select(Answer).where(Answer.participant_id.in_(ids)))],
    )


def words(text: str) -> int:
    return len(text.split())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def mann_whitney(a: list[float], b: list[float]) -> dict[str, float] | None:
    """Two-sided Mann-Whitney U test of two samples (None if either is empty)."""
    if not a or not b:
        return None
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:
        return {"u": len(a) * len(b) / 2, "p": 1.0}
    result = mannwhitneyu(a, b, alternative="two-sided")
    return {"u": float(result.statistic), "p": float(result.pvalue)}


def answers_of(data: StudyData) -> dict[str, list[dict[str, Any]]]:
    """Participant messages counted as answers, by condition."""
    condition = {p["id"]: p["condition"] for p in data.participants}
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for m in data.messages:
        if m["role"] == "participant" and (m["intent"] in ANSWER_INTENTS or m["intent"] is None):
            out.setdefault(condition[m["participant_id"]], []).append(m)
    return out


def topic_table(data: StudyData, topic_order: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per condition, one row per topic: participants who reached it, how often it ended
    in each outcome of ``OUTCOMES``, and how many unfinished chats stopped there."""
    condition = {p["id"]: p["condition"] for p in data.participants}
    unfinished = {p["id"] for p in data.participants if p["chat_finished_at"] is None}
    reached: dict[tuple[str, str], set[int]] = defaultdict(set)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    last_topic: dict[int, str] = {}
    for m in data.messages:
        if m["topic_id"] is not None:
            reached[(condition[m["participant_id"]], m["topic_id"])].add(m["participant_id"])
            last_topic[m["participant_id"]] = m["topic_id"]
    for e in data.events:
        outcome = OUTCOMES.get(e["kind"])
        if outcome is not None and e["topic_id"] is not None:
            counts[(condition[e["participant_id"]], e["topic_id"], outcome)] += 1
    dropped: dict[tuple[str, str], int] = defaultdict(int)
    for pid in unfinished:
        if pid in last_topic:
            dropped[(condition[pid], last_topic[pid])] += 1
    table: dict[str, list[dict[str, Any]]] = {}
    for c in CONDITIONS:
        rows = []
        for t in topic_order:
            n = len(reached[(c, t)])
            rows.append({
                "topic_id": t, "reached": n,
                **{o: counts[(c, t, o)] for o in dict.fromkeys(OUTCOMES.values())},
                "dropped": dropped[(c, t)],
                "drop_rate": _rate(dropped[(c, t)], n),
            })
        table[c] = rows
    return table


def summary(data: StudyData, topic_order: list[str]) -> dict[str, Any]:
    """All measures, per condition, plus the between-condition tests."""
    by_condition: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for p in data.participants:
        by_condition.setdefault(p["condition"], []).append(p)
    answers = answers_of(data)
    topics = topic_table(data, topic_order)
    condition = {p["id"]: p["condition"] for p in data.participants}
    sent: dict[str, int] = defaultdict(int)
    for m in data.messages:
        if m["role"] == "participant":
            sent[condition[m["participant_id"]]] += 1
    likert: dict[str, dict[str, list[float]]] = {c: defaultdict(list) for c in CONDITIONS}
    for a in data.answers:
        if a["value"].isdigit():
            likert[condition[a["participant_id"]]][a["item_id"]].append(float(a["value"]))
    out: dict[str, Any] = {"conditions": {}, "topics": topics, "tests": {}}
    for c in CONDITIONS:
        people = by_condition.get(c, [])
        n = len(people)
        rows = topics[c]
        reached = sum(r["reached"] for r in rows)
        word_counts = [float(words(m["text"])) for m in answers.get(c, [])]
        quality = {part: [m[f"q_{part}"] for m in answers.get(c, []) if m[f"q_{part}"] is not None]
                   for part in QUALITY_PARTS}
        durations = [(p["chat_finished_at"] - p["consented_at"]).total_seconds() / 60
                     for p in people if p["chat_finished_at"] is not None]
        out["conditions"][c] = {
            "participants": n,
            "by_link": sum(1 for p in people if p["assignment"] == "link"),
            "chat_finished": sum(1 for p in people if p["chat_finished_at"] is not None),
            "completed": sum(1 for p in people if p["status"] == "completed"),
            "completion_rate": _rate(sum(1 for p in people if p["status"] == "completed"), n),
            "messages_per_participant": _rate(sent[c], n),
            "answers": len(word_counts),
            "words_per_answer_mean": _mean(word_counts),
            "words_per_answer_median": _median(word_counts),
            "quality_mean": {part: _mean(v) for part, v in quality.items()},
            "skip_rate": _rate(sum(r["skipped"] for r in rows), reached),
            "jump_rate": _rate(sum(r["jumped_away"] for r in rows), reached),
            "interruption_rate": _rate(sum(r["interrupted"] for r in rows), reached),
            "chat_minutes_median": _median(durations),
            "likert_mean": {item: _mean(v) for item, v in sorted(likert[c].items())},
            "_words": word_counts,
            "_quality": quality,
        }
    a, b = (out["conditions"][c] for c in CONDITIONS)
    out["tests"]["words_per_answer"] = mann_whitney(a["_words"], b["_words"])
    for part in QUALITY_PARTS:
        out["tests"][f"quality_{part}"] = mann_whitney(a["_quality"][part], b["_quality"][part])
    return out


def public(summary_: dict[str, Any]) -> dict[str, Any]:
    """The summary without the raw samples (keys starting with ``_``), for JSON."""
    conditions = {c: {k: v for k, v in d.items() if not k.startswith("_")}
                  for c, d in summary_["conditions"].items()}
    return {**summary_, "conditions": conditions}


def fmt(value: float | None, digits: int = 2, percent: bool = False) -> str:
    """A number for a table cell ("–" when undefined)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{max(0, digits - 1)}f}%" if percent else f"{value:.{digits}f}"
