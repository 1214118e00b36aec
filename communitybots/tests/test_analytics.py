"""The study's measures on a hand-made record whose answers are known, and the plots."""

from __future__ import annotations

import datetime as dt

import pytest

from communitybots import analytics
from communitybots.web import plots

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)
ORDER = ["dwelling", "family", "commute", "job"]


def _p(pid: int, condition: str, finished: bool, completed: bool) -> dict:
    return {"id": pid, "public_id": f"p{pid}", "condition": condition, "assignment": "random",
            "status": "completed" if completed else "chatting", "consented_at": T0,
            "chat_finished_at": T0 + dt.timedelta(minutes=10 * pid) if finished else None,
            "completed_at": None}


def _m(pid: int, seq: int, topic: str, text: str, role: str = "participant",
       intent: str | None = "answer", overall: float | None = 0.5) -> dict:
    q = {f"q_{part}": (overall if role == "participant" else None) for part in analytics.QUALITY_PARTS}
    return {"participant_id": pid, "seq": seq, "turn": seq, "role": role, "agent_id": "a",
            "topic_id": topic, "kind": "message", "text": text,
            "intent": intent if role == "participant" else None, "confidence": None,
            "created_at": T0, **q}


def _e(pid: int, seq: int, kind: str, topic: str) -> dict:
    return {"participant_id": pid, "seq": seq, "turn": seq, "kind": kind, "reason": "",
            "agent_id": "a", "topic_id": topic, "data": {}}


@pytest.fixture
def data() -> analytics.StudyData:
    # multi: p1 answers everything; p2 skips dwelling and drops out in family
    # single: p3 is switched away from dwelling (low quality), then finishes the rest
    messages = [
        _m(1, 0, "dwelling", "one two three four"), _m(1, 1, "family", "one two"),
        _m(1, 2, "commute", "one two three four five six"), _m(1, 3, "job", "one two three four"),
        _m(2, 0, "dwelling", "skip", intent="skip", overall=None),
        _m(2, 1, "family", "one two three four five six seven eight", overall=0.9),
        _m(3, 0, "dwelling", "no", overall=0.1), _m(3, 1, "dwelling", "meh", overall=0.1),
        _m(3, 2, "family", "one two three", overall=0.3), _m(3, 3, "commute", "a b", overall=0.2),
        _m(3, 4, "job", "a b c d e", overall=0.4),
        _m(3, 5, "job", "hello?", intent="question_to_bot", overall=None),
    ]
    events = [
        _e(1, 10, "topic_finished", "dwelling"), _e(1, 11, "topic_finished", "family"),
        _e(1, 12, "topic_finished", "commute"), _e(1, 13, "topic_finished", "job"),
        _e(2, 10, "topic_skipped", "dwelling"),
        _e(3, 10, "topic_switched_low_quality", "dwelling"), _e(3, 11, "topic_finished", "family"),
        _e(3, 12, "domain_jump", "commute"), _e(3, 13, "topic_finished", "job"),
    ]
    return analytics.StudyData(
        participants=[_p(1, "multi", True, True), _p(2, "multi", False, False),
                      _p(3, "single", True, True)],
        messages=messages, events=events,
        answers=[{"participant_id": 1, "item_id": "enjoyed", "value": "5"},
                 {"participant_id": 3, "item_id": "enjoyed", "value": "2"},
                 {"participant_id": 3, "item_id": "comment", "value": "fine"}])


def test_measures_per_condition(data: analytics.StudyData) -> None:
    s = analytics.summary(data, ORDER)
    multi, single = s["conditions"]["multi"], s["conditions"]["single"]
    assert (multi["participants"], multi["completed"], multi["completion_rate"]) == (2, 1, 0.5)
    assert (single["participants"], single["completion_rate"]) == (1, 1.0)
    assert multi["answers"] == 5  # the "skip" message is not an answer
    assert multi["words_per_answer_mean"] == pytest.approx((4 + 2 + 6 + 4 + 8) / 5)
    assert single["words_per_answer_median"] == 2  # 1, 1, 3, 2, 5 words; question excluded
    assert single["quality_mean"]["overall"] == pytest.approx((0.1 + 0.1 + 0.3 + 0.2 + 0.4) / 5)
    # multi reached 4 + 2 topics, one skip; single reached 4 topics, one switch, one jump
    assert multi["skip_rate"] == pytest.approx(1 / 6) and multi["interruption_rate"] == 0
    assert single["interruption_rate"] == pytest.approx(1 / 4)
    assert single["jump_rate"] == pytest.approx(1 / 4) and single["skip_rate"] == 0
    assert multi["messages_per_participant"] == 3.0
    assert multi["likert_mean"] == {"enjoyed": 5.0} and single["likert_mean"] == {"enjoyed": 2.0}
    assert multi["chat_minutes_median"] == 10.0
    # one single-agent participant: nothing is tested, whatever the number of answers
    test = s["comparisons"]["words_per_answer"]
    assert test["n"] == [2, 1] and test["testable"] is False and test["p"] is None


def test_topic_table_and_drop_off(data: analytics.StudyData) -> None:
    table = analytics.topic_table(data, ORDER)
    multi = {r["topic_id"]: r for r in table["multi"]}
    assert [multi[t]["reached"] for t in ORDER] == [2, 2, 1, 1]
    assert multi["family"]["dropped"] == 1 and multi["family"]["drop_rate"] == 0.5
    assert multi["dwelling"]["skipped"] == 1 and multi["dwelling"]["finished"] == 1
    single = {r["topic_id"]: r for r in table["single"]}
    assert single["dwelling"]["interrupted"] == 1 and single["commute"]["jumped_away"] == 1
    assert sum(r["dropped"] for r in table["single"]) == 0


def test_empty_study_and_formatting() -> None:
    s = analytics.summary(analytics.StudyData(), ORDER)
    assert s["conditions"]["multi"]["completion_rate"] is None
    assert s["comparisons"]["words_per_answer"]["n"] == [0, 0]
    assert s["comparisons"]["words_per_answer"]["note"].startswith("too few to test")
    assert analytics.fmt(None) == "–" and analytics.fmt(0.256, 2, True) == "25.6%"
    public = analytics.public(s)
    assert not any(k.startswith("_") for k in public["conditions"]["multi"])


@pytest.mark.parametrize("name", sorted(plots.PLOTS))
def test_plots_render_png(data: analytics.StudyData, name: str) -> None:
    s = analytics.summary(data, ORDER)
    png = plots.render(name, s, {t: t.title() for t in ORDER})
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    empty = plots.render(name, analytics.summary(analytics.StudyData(), ORDER), {})
    assert empty.startswith(b"\x89PNG")
