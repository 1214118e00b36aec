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
- off-topic redirects (answers the engine steered back to the question) and sensitive
  disclosures (a death, illness, job loss, ... answered with care);
- post-survey answers (Likert means per item);
- the comparison of the conditions on participant-level values: each measure is first
  reduced to one value per participant (the mean of their answers' words or quality, their
  skip or interruption rate, their Likert answer), so a talkative participant counts once
  like everyone else. Per measure: n participants per condition, the means, the difference
  of the means with its 95 % Welch confidence interval, the rank-biserial correlation
  (effect size in [-1, 1]), and a two-sided Mann-Whitney U test. With fewer than
  ``MIN_PER_CONDITION`` participants in a condition the comparison says "too few to test"
  instead of giving a p-value.

``load(db)`` reads the tables; everything else is a pure function of ``StudyData``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from communitybots.store import QUALITY_PARTS, Answer, EventRow, Message, Participant

CONDITIONS: tuple[str, ...] = ("multi", "single")
#: participants with a value that each condition needs before two conditions are tested
MIN_PER_CONDITION = 2

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
         include_excluded: bool = False, include_link: bool = False) -> StudyData:
    """Read the study's tables (optionally one survey version) into ``StudyData``;
    participants a researcher excluded (e.g. a flood from one address) are left out
    unless ``include_excluded``, and so are participants whose condition was forced by
    the link (``/?condition=single``: not randomized) unless ``include_link``.
    Wizard-of-Oz participants (condition ``wizard``) are never loaded: a researcher, not
    the CTM, answered them."""
    pq = select(Participant)
    if not include_excluded:
        pq = pq.where(Participant.excluded_at.is_(None))
    if not include_link:
        pq = pq.where(Participant.assignment != "link")
    # the wizard condition (a researcher answering) is not part of the comparison
    pq = pq.where(Participant.condition.in_(CONDITIONS))
    if survey_pk is not None:
        pq = pq.where(Participant.survey_pk == survey_pk)
    participants = db.scalars(pq.order_by(Participant.id)).all()
    ids = [p.id for p in participants]
    if not ids:
        return StudyData()
    pcols = ["id", "public_id", "condition", "assignment", "status", "consented_at",
             "chat_finished_at", "completed_at"]
    mcols = ["participant_id", "seq", "turn", "role", "agent_id", "topic_id", "kind", "text",
             "intent", "confidence", "created_at", "words"] + [f"q_{p}" for p in QUALITY_PARTS]
    ecols = ["participant_id", "seq", "turn", "kind", "reason", "agent_id", "topic_id", "data"]
    acols = ["participant_id", "phase", "item_id", "value"]
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


def message_words(m: dict[str, Any]) -> int:
    """Words of a stored message: its text's, or the count kept when the retention
    period purged the text (``records.purge``)."""
    return m["words"] if m.get("words") is not None else words(m["text"])


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


def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    """Two conditions compared on participant-level values ``a`` (multi) and ``b`` (single).

    Always ``n`` and ``mean`` per sample; when both have at least ``MIN_PER_CONDITION``
    values also ``difference`` (mean of a − mean of b), ``ci95`` (Welch's 95 % interval of
    the difference; None when both samples have no spread), ``rank_biserial``
    (2 U / (n_a n_b) − 1: +1 when every value of a is above every value of b), and the
    Mann-Whitney ``u`` (of a) and two-sided ``p``. Otherwise ``testable`` is False and
    ``note`` says why.
    """
    from scipy import stats

    out: dict[str, Any] = {"n": [len(a), len(b)], "mean": [_mean(a), _mean(b)],
                           "testable": False, "note": None, "difference": None,
                           "ci95": None, "rank_biserial": None, "u": None, "p": None}
    if min(len(a), len(b)) < MIN_PER_CONDITION:
        out["note"] = (f"too few to test (n = {len(a)} and {len(b)} participants; "
                       f"at least {MIN_PER_CONDITION} per condition needed)")
        return out
    test = mann_whitney(a, b)
    assert test is not None
    n_a, n_b = len(a), len(b)
    out.update(testable=True, difference=statistics.fmean(a) - statistics.fmean(b),
               u=test["u"], p=test["p"], rank_biserial=2 * test["u"] / (n_a * n_b) - 1)
    spread = statistics.variance(a) + statistics.variance(b)
    if spread > 1e-12 * (1.0 + max(abs(x) for x in a + b)) ** 2:  # else no interval
        with warnings.catch_warnings():
            # one sample almost constant: scipy warns of lost precision in its variance,
            # which then adds (almost) nothing to the standard error; the interval stands
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        out["ci95"] = [float(ci.low), float(ci.high)]
    return out


def participant_values(data: StudyData) -> dict[str, dict[str, list[float]]]:
    """Per measure, per condition: one value per participant who has one.

    ``words_per_answer`` and ``quality_<part>``: the mean over the participant's answers;
    ``skip_rate`` / ``interruption_rate``: their skipped / interrupted topics over the
    topics they reached; ``off_topic_rate``: answers the bot steered back to the question
    over their answers; ``messages``: messages they sent; ``sensitive_disclosures``: how
    many they made; ``likert_<item>``: their answer.
    """
    condition = {p["id"]: p["condition"] for p in data.participants}
    per: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    sent: dict[int, float] = {p["id"]: 0.0 for p in data.participants}
    reached: dict[int, set[str]] = defaultdict(set)
    for m in data.messages:
        if m["role"] != "participant":
            continue
        pid = m["participant_id"]
        sent[pid] += 1
        if m["topic_id"] is not None:
            reached[pid].add(m["topic_id"])
        if m["intent"] in ANSWER_INTENTS or m["intent"] is None:
            per["words_per_answer"][pid].append(float(message_words(m)))
            for part in QUALITY_PARTS:
                if m[f"q_{part}"] is not None:
                    per[f"quality_{part}"][pid].append(m[f"q_{part}"])
    left: dict[str, dict[int, int]] = {"skip_rate": defaultdict(int),
                                       "interruption_rate": defaultdict(int)}
    for e in data.events:
        outcome = OUTCOMES.get(e["kind"])
        if outcome == "skipped":
            left["skip_rate"][e["participant_id"]] += 1
        elif outcome == "interrupted":
            left["interruption_rate"][e["participant_id"]] += 1
    for a in data.answers:
        if a.get("phase", "post") == "post" and a["value"].isdigit():
            per[f"likert_{a['item_id']}"][a["participant_id"]].append(float(a["value"]))
    off_topic, sensitive = _count_events(data, "off_topic"), _count_events(data, "sensitive_disclosure")
    for pid, answers in per["words_per_answer"].items():
        per["off_topic_rate"][pid].append(off_topic[pid] / len(answers))
    out: dict[str, dict[str, list[float]]] = {}
    for measure, values in per.items():
        out[measure] = {c: [] for c in CONDITIONS}
        for pid, xs in values.items():
            out[measure].setdefault(condition[pid], []).append(statistics.fmean(xs))
    for measure, counts in left.items():
        out[measure] = {c: [] for c in CONDITIONS}
        for pid, topics in reached.items():
            out[measure].setdefault(condition[pid], []).append(counts[pid] / len(topics))
    out["messages"] = {c: [] for c in CONDITIONS}
    out["sensitive_disclosures"] = {c: [] for c in CONDITIONS}
    for pid, n in sent.items():
        out["messages"].setdefault(condition[pid], []).append(n)
        out["sensitive_disclosures"].setdefault(condition[pid], []).append(float(sensitive[pid]))
    return out


def _count_events(data: StudyData, kind: str) -> dict[int, int]:
    """Events of ``kind`` per participant id."""
    counts: dict[int, int] = defaultdict(int)
    for e in data.events:
        if e["kind"] == kind:
            counts[e["participant_id"]] += 1
    return counts


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


#: measures compared between the conditions, in the dashboard's order (then Likert items)
COMPARED: list[str] = (["words_per_answer"] + [f"quality_{p}" for p in QUALITY_PARTS]
                       + ["skip_rate", "interruption_rate", "off_topic_rate", "messages"])


def summary(data: StudyData, topic_order: list[str]) -> dict[str, Any]:
    """All measures, per condition (descriptive, over all answers), plus ``comparisons``:
    each measure of ``COMPARED`` and each Likert item compared on participant-level
    values (see ``compare``)."""
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
        if a.get("phase", "post") == "post" and a["value"].isdigit():
            likert[condition[a["participant_id"]]][a["item_id"]].append(float(a["value"]))
    off_topic = _count_events(data, "off_topic")
    sensitive = _count_events(data, "sensitive_disclosure")
    out: dict[str, Any] = {"conditions": {}, "topics": topics, "comparisons": {}}
    for c in CONDITIONS:
        people = by_condition.get(c, [])
        n = len(people)
        rows = topics[c]
        reached = sum(r["reached"] for r in rows)
        word_counts = [float(message_words(m)) for m in answers.get(c, [])]
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
            "off_topic_redirects": sum(n for pid, n in off_topic.items() if condition[pid] == c),
            "sensitive_disclosures": sum(n for pid, n in sensitive.items()
                                         if condition[pid] == c),
            "likert_mean": {item: _mean(v) for item, v in sorted(likert[c].items())},
            "_words": word_counts,
            "_quality": quality,
        }
    values = participant_values(data)
    first, second = CONDITIONS
    for measure in COMPARED + sorted(m for m in values if m.startswith("likert_")):
        by = values.get(measure, {})
        out["comparisons"][measure] = compare(by.get(first, []), by.get(second, []))
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
