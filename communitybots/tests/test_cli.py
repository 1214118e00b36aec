"""Command line: validate, scripted chat as JSON lines, single-agent, bad script bytes."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from communitybots.cli import app, read_script

ROOT = Path(__file__).parents[1]
SURVEY = ROOT / "src/communitybots/surveys/covid_daily_life.yaml"
FULL = Path(__file__).parent / "data/full_conversation.txt"

runner = CliRunner()


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_validate_ok_and_error(tmp_path):
    res = runner.invoke(app, ["validate", str(SURVEY)])
    assert res.exit_code == 0, res.output
    assert "3 agents, 11 topics" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SURVEY.read_text(encoding="utf-8").replace('colour: "#e76f51"', "colour: orange"),
                   encoding="utf-8")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 1
    assert "agents[1].colour: colour must be a hex colour" in res.output


def test_scripted_full_conversation_prints_transcript_and_events_as_jsonl():
    res = runner.invoke(app, ["chat", str(SURVEY), "--script", str(FULL), "--relevance", "tfidf"])
    assert res.exit_code == 0, res.output
    rows = jsonl(res.output)
    assert {r["type"] for r in rows} == {"reply", "message", "event", "summary"}
    summary = rows[-1]
    assert summary == {**summary, "type": "summary", "finished": True, "end_reason": "complete",
                       "topics_done": 11, "topics_total": 11, "relevance_backend": "tfidf"}
    speakers = {r["agent_name"] for r in rows if r["type"] == "reply"}
    assert speakers == {"Hanna", "Walter", "Helen"}
    handovers = [r for r in rows if r["type"] == "event" and r["kind"] == "handover"]
    assert len(handovers) == 2
    # every message is followed by its message_analyzed event
    for i, r in enumerate(rows):
        if r["type"] == "message":
            assert rows[i + 1]["kind"] == "message_analyzed"
            assert rows[i + 1]["data"]["text"] == r["text"]


def test_script_with_bad_bytes_and_markup(tmp_path):
    script = tmp_path / "answers.txt"
    script.write_bytes(b"<b>[red]bold[/red]</b>\n\n\xff\xfe\x00 binary\r\n\xf0\x9f\x98\x80\nstop\nnever read\n")
    assert read_script(script) == ["<b>[red]bold[/red]</b>", "", "\ufffd\ufffd\x00 binary",
                                   "\U0001F600", "stop", "never read"]
    res = runner.invoke(app, ["chat", str(SURVEY), "--script", str(script), "--relevance", "tfidf"])
    assert res.exit_code == 0, res.output
    rows = jsonl(res.output)
    messages = [r["text"] for r in rows if r["type"] == "message"]
    assert messages == ["<b>[red]bold[/red]</b>", "", "\ufffd\ufffd\x00 binary", "\U0001F600", "stop"]
    assert rows[-1]["end_reason"] == "stopped"
    # text format prints markup-looking input literally
    res = runner.invoke(app, ["chat", str(SURVEY), "--script", str(script), "--relevance", "tfidf",
                              "--format", "text"])
    assert res.exit_code == 0, res.output
    assert "[red]bold[/red]" in res.output


def test_single_agent_flag(tmp_path):
    script = tmp_path / "a.txt"
    script.write_text("skip\nskip\nskip\nskip\nstop\n", encoding="utf-8")
    res = runner.invoke(app, ["chat", str(SURVEY), "--script", str(script), "--single-agent",
                              "--relevance", "tfidf"])
    assert res.exit_code == 0, res.output
    rows = jsonl(res.output)
    assert {r["agent_id"] for r in rows if r["type"] == "reply"} == {"single"}
    assert not [r for r in rows if r["type"] == "event" and r["kind"] == "handover"]


@pytest.mark.parametrize("args", [["chat", "missing.yaml"], ["chat", str(SURVEY), "--script", "nope.txt"]])
def test_missing_files_fail_cleanly(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "error:" in res.output


def test_interactive_chat_reads_stdin():
    res = runner.invoke(app, ["chat", str(SURVEY), "--relevance", "tfidf"],
                        input="We mostly stayed in the kitchen.\nstop\n")
    assert res.exit_code == 0, res.output
    assert "Hanna" in res.output and "Ended (stopped)" in res.output
