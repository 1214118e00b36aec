"""Survey specification: the shipped survey, one-line errors with YAML paths, single agent."""

from pathlib import Path

import pytest
import yaml

from communitybots.spec import Policy, SpecError, Survey, load_survey, parse_survey, single_agent

SURVEY = Path(__file__).parents[1] / "src/communitybots/surveys/covid_daily_life.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(SURVEY.read_text(encoding="utf-8"))


def test_shipped_survey_has_three_agents_over_eleven_topics():
    s = load_survey(SURVEY)
    assert isinstance(s, Survey)
    assert [a.domain for a in s.agents] == ["household", "work", "healthcare"]
    titles = {a.domain: [t.title for t in a.topics] for a in s.agents}
    assert titles == {
        "household": ["Dwelling", "Family and home life", "Virtual connection", "Delivery"],
        "work": ["Commute", "Work", "Education", "Screens"],
        "healthcare": ["Healthcare", "Leisure", "Hobbies"],
    }
    assert len(s.topics()) == 11
    for agent, topic in s.topics():
        assert agent.colour.startswith("#") and agent.avatar and agent.introduction
        assert topic.questions and topic.probes and topic.closing and topic.keywords
    assert {i.kind for i in s.post_survey} == {"likert", "text"}
    assert s.policy.low_quality_k == 2


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["agents"][1]["topics"][0].update(probes=[]),
         "agents[1].topics[0].probes: List should have at least 1 item"),
        (lambda d: d["agents"][0].update(colour="red"), "agents[0].colour: colour must be a hex colour"),
        (lambda d: d["agents"][2]["topics"][1].update(id="dwelling"),
         "agents[2].topics[1].id: duplicate topic id 'dwelling'"),
        (lambda d: d["agents"][1].update(id="household"), "agents[1].id: duplicate agent id"),
        (lambda d: d["policy"].update(low_quality_k=0), "policy.low_quality_k: Input should be greater than or equal to 1"),
        (lambda d: d["policy"].update(typo=1), "policy.typo: unknown field"),
        (lambda d: d["agents"][0]["topics"][2].pop("questions"), "agents[0].topics[2].questions: Field required"),
        (lambda d: d["agents"][0]["topics"][0].update(questions=["ok", ""]),
         "agents[0].topics[0].questions: item 1 is empty"),
        (lambda d: d["post_survey"][0].update(kind="slider"), "post_survey[0].kind: Input should be 'likert', 'choice', 'text' or 'number'"),
        (lambda d: d.update(agents=[]), "agents: List should have at least 1 item"),
    ],
)
def test_errors_name_the_yaml_path_in_one_line(raw, edit, expected):
    import copy

    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(SpecError) as err:
        parse_survey(data)
    msg = str(err.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: [unclosed\nagents: 3\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"^line \d+: YAML syntax error"):
        load_survey(bad)
    with pytest.raises(SpecError, match="cannot read file"):
        load_survey(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SpecError, match="a survey must be a mapping, got list"):
        load_survey(listy)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00id")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_survey(binary)


def test_single_agent_asks_the_same_topics_with_one_persona():
    s = load_survey(SURVEY)
    one = single_agent(s)
    assert len(one.agents) == 1 and one.agents[0].id == "single"
    assert [t.id for _, t in one.topics()] == [t.id for _, t in s.topics()]
    assert [t.questions for _, t in one.topics()] == [t.questions for _, t in s.topics()]
    assert one.domains() == s.domains()  # topics keep their domain for jump requests
    assert one.domain_of("commute") == "work"
    assert one.welcome == "" and one.policy == s.policy
    assert "11 topics" in one.agents[0].introduction


def test_policy_defaults_and_lookup():
    p = Policy()
    assert p.low_quality_k == 2 and 0 < p.quality_threshold < p.rich_threshold <= 1
    s = load_survey(SURVEY)
    agent, topic = s.topic("screens")
    assert agent.id == "work" and topic.title == "Screens"
    assert s.agent("healthcare").name == "Helen"
    with pytest.raises(KeyError):
        s.topic("nope")
