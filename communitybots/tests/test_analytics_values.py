"""The dashboard's numbers against hand-computed values: the Mann-Whitney U statistic and
its p-value (not only that p lies in [0, 1]), and the measures whose edge cases a slip in
a filter or a denominator would change without any other test noticing."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from test_analytics import ORDER, T0, _e, _m, _p, data  # noqa: F401  (``data`` is a fixture)

from communitybots import analytics


def _normal_p(u: float, n1: int, n2: int, ties: list[int]) -> float:
    """Two-sided p of U by the normal approximation with tie and continuity corrections:
    σ² = n1 n2 / 12 · ((n + 1) − Σ(t³ − t) / (n (n − 1))), z = (|U − n1 n2 / 2| − ½) / σ."""
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - sum(t ** 3 - t for t in ties) / (n * (n - 1)))
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(var)
    return math.erfc(z / math.sqrt(2))


def test_mann_whitney_exact_case_by_hand() -> None:
    # every value of a is below every value of b: U_a = 0; no ties and small samples, so the
    # exact null distribution: 2 · P(U ≤ 0) = 2 / C(5, 2) = 0.2
    assert analytics.mann_whitney([1, 2, 3], [4, 5]) == pytest.approx({"u": 0.0, "p": 0.2})
    # U is the statistic of the first sample (multi), so swapping the samples gives n1 n2 − U
    assert analytics.mann_whitney([4, 5], [1, 2, 3]) == pytest.approx({"u": 6.0, "p": 0.2})
    one = analytics.mann_whitney([1.0], [2.0, 3.0])
    assert one == pytest.approx({"u": 0.0, "p": 2 / 3})  # 2 · 1/3


def test_mann_whitney_with_ties_by_hand() -> None:
    a, b = [4, 2, 6, 4, 8], [1, 1, 3, 2, 5]
    # pairs (x in a, y in b) with x > y, ties counting ½: 4 + 2.5 + 5 + 4 + 5
    result = analytics.mann_whitney(a, b)
    assert result["u"] == 20.5
    assert result["p"] == pytest.approx(_normal_p(20.5, 5, 5, [2, 2, 2]), rel=1e-9)
    assert result["p"] == pytest.approx(0.113846298, rel=1e-6)


def test_mann_whitney_degenerate_cases() -> None:
    assert analytics.mann_whitney([], [1.0]) is None
    assert analytics.mann_whitney([1.0], []) is None
    # one value everywhere: no evidence of a difference, U at its null mean
    assert analytics.mann_whitney([3.0, 3.0], [3.0, 3.0, 3.0]) == {"u": 3.0, "p": 1.0}


def test_comparison_on_the_hand_made_study_is_per_participant(data: analytics.StudyData) -> None:  # noqa: F811
    s = analytics.summary(data, ORDER)
    values = analytics.participant_values(data)
    # words per answer: p1 answered 4, 2, 6, 4 words (mean 4); p2 8 (the "skip" is not an
    # answer); p3 1, 1, 3, 2, 5 (mean 2.4): one value per participant
    assert values["words_per_answer"] == {"multi": [4.0, 8.0], "single": [2.4]}
    assert values["quality_overall"]["multi"] == pytest.approx([0.5, 0.9])
    # p1 reached 4 topics, skipped none; p2 reached 2 and skipped 1; p3: 1 interruption of 4
    assert values["skip_rate"] == {"multi": [0.0, 0.5], "single": [0.0]}
    assert values["interruption_rate"] == {"multi": [0.0, 0.0], "single": [0.25]}
    assert values["messages"] == {"multi": [4.0, 2.0], "single": [6.0]}
    assert values["likert_enjoyed"] == {"multi": [5.0], "single": [2.0]}
    assert set(s["comparisons"]) == set(analytics.COMPARED) | {"likert_enjoyed"}
    for measure, result in s["comparisons"].items():
        assert result["testable"] is False and result["p"] is None, measure
    assert s["comparisons"]["words_per_answer"]["mean"] == [6.0, 2.4]


def test_one_participant_per_condition_is_too_few_to_test() -> None:
    # one talkative participant per condition: the pooled answers (20 against 20, every
    # multi answer longer) gave p < 0.001 before; per participant there is nothing to test
    messages = [_m(1, i, "dwelling", "a b c d e f") for i in range(20)]
    messages += [_m(2, i, "dwelling", "a", overall=0.1) for i in range(20)]
    study = analytics.StudyData(participants=[_p(1, "multi", True, True),
                                              _p(2, "single", True, True)], messages=messages)
    result = analytics.summary(study, ORDER)["comparisons"]["words_per_answer"]
    assert result["n"] == [1, 1] and result["mean"] == [6.0, 1.0]
    assert result["testable"] is False
    assert result["p"] is None and result["u"] is None and result["ci95"] is None
    assert result["note"] == ("too few to test (n = 1 and 1 participants; "
                              "at least 2 per condition needed)")


def test_comparison_statistics_by_hand() -> None:
    from scipy.stats import t

    result = analytics.compare([1.0, 2.0, 3.0], [4.0, 5.0])
    assert result["n"] == [3, 2] and result["mean"] == [2.0, 4.5]
    assert result["difference"] == -2.5
    # Mann-Whitney: every a below every b, U = 0, exact p = 2 / C(5, 2) = 0.2;
    # rank-biserial 2 U / (n_a n_b) − 1 = −1
    assert (result["u"], result["p"], result["rank_biserial"]) == (0.0, pytest.approx(0.2), -1.0)
    # Welch: s²_a = 1, s²_b = 0.5, se² = 1/3 + 0.5/2 = 7/12,
    # df = (7/12)² / ((1/3)² / 2 + (1/4)² / 1) = 49/17
    half = t.ppf(0.975, 49 / 17) * math.sqrt(7 / 12)
    assert result["ci95"] == pytest.approx([-2.5 - half, -2.5 + half], rel=1e-9)
    assert result["ci95"] == pytest.approx([-4.98773, -0.01227], abs=1e-4)
    # ties across samples: U counts ½; a = 1, 2, 2 against b = 2, 3: pairs a > b: 0,
    # ties (2, 2) twice: U = 1, r = 2 · 1 / 6 − 1
    tied = analytics.compare([1.0, 2.0, 2.0], [2.0, 3.0])
    assert tied["u"] == 1.0 and tied["rank_biserial"] == pytest.approx(-2 / 3)
    # no spread in either sample: the interval is undefined, the rest is not
    flat = analytics.compare([2.0, 2.0], [3.0, 3.0])
    assert flat["ci95"] is None and flat["difference"] == -1.0 and flat["testable"]


def test_link_assigned_participants_are_left_out_unless_included(tmp_path) -> None:
    from sqlalchemy.orm import Session

    from communitybots import store

    engine = store.make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.migrate(engine)
    with Session(engine) as db:
        survey = store.SurveyRow(spec_id="s", title="t", spec_hash="h" * 64, spec_json={})
        db.add(survey)
        db.flush()
        for i, (condition, how) in enumerate([("multi", "random"), ("single", "random"),
                                              ("single", "link")]):
            db.add(store.Participant(public_id=f"p{i}", token_hash=f"{i}" * 64,
                                     survey_pk=survey.id, condition=condition,
                                     assignment=how, state_json={}))
        db.commit()
        assert [p["public_id"] for p in analytics.load(db).participants] == ["p0", "p1"]
        assert len(analytics.load(db, include_link=True).participants) == 3


def test_answers_and_rates_edge_cases() -> None:
    study = analytics.StudyData(
        participants=[_p(1, "multi", True, False), _p(2, "multi", False, False)]
        + [{**_p(3, "single", False, False), "assignment": "link"}],
        messages=[
            _m(1, 0, "dwelling", "one two three", intent=None),  # unanalysed: counts as an answer
            _m(1, 1, "dwelling", "what do you mean", intent="clarify"),  # not an answer
            _m(1, 2, "dwelling", "Thanks.", role="bot"),  # the bot's words never count
            _m(2, 0, "dwelling", "a b", overall=None),  # an answer without a quality score
            _m(3, 0, "commute", "x y z w"),
        ],
        events=[_e(1, 5, "budget_reached", "dwelling"), _e(1, 6, "survey_end", "dwelling"),
                _e(3, 1, "domain_jump", "commute")],
        answers=[{"participant_id": 1, "item_id": "enjoyed", "value": "3"},
                 {"participant_id": 2, "item_id": "enjoyed", "value": "4"},
                 {"participant_id": 2, "item_id": "comment", "value": "5 stars"}],
    )
    answers = analytics.answers_of(study)
    assert [m["text"] for m in answers["multi"]] == ["one two three", "a b"]
    s = analytics.summary(study, ORDER)
    multi, single = s["conditions"]["multi"], s["conditions"]["single"]
    assert (multi["answers"], multi["words_per_answer_mean"]) == (2, 2.5)
    assert multi["quality_mean"]["overall"] == 0.5  # the unscored answer is left out, not 0
    assert multi["messages_per_participant"] == 1.5  # 3 participant messages / 2 people
    assert (multi["chat_finished"], multi["completed"], multi["completion_rate"]) == (1, 0, 0.0)
    assert (multi["by_link"], single["by_link"]) == (0, 1)
    assert multi["interruption_rate"] == 1 / 2  # the budget ended p1's topic; 2 topics reached
    assert multi["skip_rate"] == 0 and multi["jump_rate"] == 0
    assert single["jump_rate"] == 1.0 and single["interruption_rate"] == 0
    assert multi["likert_mean"] == {"enjoyed": 3.5}  # "5 stars" is not a Likert answer
    assert multi["chat_minutes_median"] == 10.0 and single["chat_minutes_median"] is None
    table = {r["topic_id"]: r for r in s["topics"]["multi"]}
    assert table["dwelling"]["reached"] == 2 and table["dwelling"]["dropped"] == 1
    assert table["dwelling"]["drop_rate"] == 0.5
    assert table["family"]["reached"] == 0 and table["family"]["drop_rate"] is None
    single_rows = {r["topic_id"]: r for r in s["topics"]["single"]}
    assert single_rows["commute"]["dropped"] == 1 and single_rows["commute"]["drop_rate"] == 1.0
    # words per participant: p1 3, p2 2 against p3 4; the single condition has one person
    assert analytics.participant_values(study)["words_per_answer"] == {
        "multi": [3.0, 2.0], "single": [4.0]}
    assert s["comparisons"]["words_per_answer"]["testable"] is False


def test_chat_minutes_median_and_formatting() -> None:
    people = [{**_p(i, "multi", True, True),
               "chat_finished_at": T0 + dt.timedelta(minutes=m)} for i, m in ((1, 3), (2, 9), (3, 4), (4, 20))]
    s = analytics.summary(analytics.StudyData(participants=people), ORDER)
    assert s["conditions"]["multi"]["chat_minutes_median"] == 6.5
    assert analytics.fmt(0.5) == "0.50" and analytics.fmt(2.0, 1) == "2.0"
    assert analytics.fmt(0.5, 1, percent=True) == "50%" and analytics.fmt(1.0, 3, True) == "100.00%"
    assert analytics.fmt(float("nan")) == "–"
    assert analytics.words("  two   words ") == 2
