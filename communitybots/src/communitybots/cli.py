"""Command-line interface: ``communitybots validate``, ``communitybots chat``.

``chat SURVEY.yaml`` talks with the survey's chatbots in the terminal (agent names in
their colours). ``chat SURVEY.yaml --script answers.txt`` replays scripted participant
messages, one per line (every line is a message, an empty line is an empty message; the
file is read as UTF-8 and undecodable bytes become U+FFFD), and prints the transcript and
the CTM events as JSON lines: ``{"type": "reply" | "message" | "event" | "summary", ...}``.
Participant text is printed as data, never interpreted as markup.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from communitybots.spec import AVATAR_ICONS, SpecError, Survey, load_survey, single_agent

app = typer.Typer(help="CommunityBots: survey chatbots with conversation and topic management.",
                  no_args_is_help=True, add_completion=False)


class Relevance(StrEnum):
    auto = "auto"
    tfidf = "tfidf"
    embeddings = "embeddings"


class OutputFormat(StrEnum):
    jsonl = "jsonl"
    text = "text"


def _load(path: Path, single: bool = False) -> Survey:
    try:
        survey = load_survey(path)
    except SpecError as err:
        typer.echo(f"error: {path}: {err}", err=True)
        raise typer.Exit(1) from None
    return single_agent(survey) if single else survey


@app.callback()
def _main() -> None:
    """CommunityBots command-line tool."""


@app.command()
def validate(survey: Annotated[Path, typer.Argument(help="survey YAML file")]) -> None:
    """Check a survey file; print a summary, or the YAML path and reason of the first error."""
    s = _load(survey)
    topics = s.topics()
    typer.echo(f"ok: {s.id} ({s.title!r}): {len(s.agents)} agents, {len(topics)} topics, "
               f"{sum(len(t.questions) for _, t in topics)} questions, "
               f"{len(s.pre_survey)} pre-chat questions, {len(s.post_survey)} post-survey items")


def read_script(path: Path) -> list[str]:
    """Scripted messages: one per line, verbatim (a final newline ends the last line)."""
    data = path.read_bytes().decode("utf-8", errors="replace")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _jsonl(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")


def _styled_reply(survey: Survey, reply) -> Text:
    colour = survey.agent(reply.agent_id).colour
    avatar = survey.agent(reply.agent_id).avatar
    t = Text()
    # a built-in icon is drawn by the web page; the terminal shows characters only
    shown = "" if avatar in AVATAR_ICONS else f"{avatar} "
    t.append(f"{shown}{reply.agent_name}", style=f"bold {colour}")
    if reply.topic_id:
        t.append(f" [{survey.topic(reply.topic_id)[1].title}]", style="dim")
    t.append(": ")
    t.append(reply.text)
    return t


@app.command()
def chat(
    survey: Annotated[Path, typer.Argument(help="survey YAML file")],
    script: Annotated[Path | None, typer.Option(help="replay messages from this file (one per line)")] = None,
    single_agent_: Annotated[bool, typer.Option("--single-agent", help="one persona asks all topics (baseline condition)")] = False,
    relevance: Annotated[Relevance, typer.Option(help="relevance backend (auto: embeddings if installed)")] = Relevance.auto,
    output: Annotated[OutputFormat, typer.Option("--format", help="script output: JSON lines or coloured text")] = OutputFormat.jsonl,
    seconds_per_message: Annotated[float, typer.Option(help="simulated seconds between scripted messages")] = 30.0,
    show_events: Annotated[bool, typer.Option("--events", help="interactive: also print CTM events")] = False,
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint that phrases probes (off by default)")] = None,
    llm_model: Annotated[str, typer.Option(help="model name for --llm-url")] = "default",
) -> None:
    """Chat with a survey's chatbots, interactively or from a script."""
    from communitybots.ctm import CTM
    from communitybots.llm import LLMPhraser, phrase_replies

    s = _load(survey, single_agent_)
    if script is not None and not script.is_file():
        typer.echo(f"error: {script}: no such file", err=True)
        raise typer.Exit(1)
    ctm = CTM(s, relevance=str(relevance))
    url = llm_url or s.nlu.llm_url
    phraser = LLMPhraser(url, llm_model if llm_url else s.nlu.llm_model) if url else None
    console = Console(highlight=False)

    if script is not None:
        messages = read_script(script)
        as_text = output is OutputFormat.text

        def emit(replies, events, message: str | None = None, turn: int = 0) -> None:
            if message is not None:
                if as_text:
                    console.print(Text(f"you: {message}", style="bold"))
                else:
                    _jsonl({"type": "message", "turn": turn, "text": message})
            for e in events:
                _jsonl({"type": "event", **dataclasses.asdict(e)})
            for r in replies:
                if as_text:
                    console.print(_styled_reply(s, r))
                else:
                    _jsonl({"type": "reply", **dataclasses.asdict(r)})

        state, replies, events = ctm.start(now=0.0)
        emit(replies, events)
        for i, message in enumerate(messages, 1):
            if state.finished:
                break
            state, replies, events = ctm.step(state, message, now=i * seconds_per_message)
            emit(phrase_replies(replies, events, phraser), events, message, i)
        done, total = state.progress
        _jsonl({"type": "summary", "finished": state.finished, "end_reason": state.end_reason,
                "topics_done": done, "topics_total": total, "turns": state.turns,
                "relevance_backend": ctm.nlu.relevance_backend})
        return

    t0 = time.monotonic()
    state, replies, events = ctm.start(now=0.0)
    console.print(Text(f"{s.title} — type 'skip' to change topic, 'stop' to end.", style="dim"))
    while True:
        for r in replies:
            console.print(_styled_reply(s, r))
        if show_events:
            for e in events:
                console.print(Text(json.dumps(dataclasses.asdict(e), ensure_ascii=False), style="dim"))
        if state.finished:
            break
        try:
            message = console.input("[bold]you> [/bold]")
        except (EOFError, KeyboardInterrupt):
            console.print()
            message = "stop"
        state, replies, events = ctm.step(state, message, now=time.monotonic() - t0)
        replies = phrase_replies(replies, events, phraser)
    done, total = state.progress
    console.print(Text(f"Ended ({state.end_reason}); {done} of {total} topics covered.", style="dim"))


# the web platform's commands (communitybots/web/commands.py): serve, admin create
from communitybots.web.commands import admin_app, purge, serve  # noqa: E402

app.command()(serve)
app.command()(purge)
app.add_typer(admin_app, name="admin")


if __name__ == "__main__":  # pragma: no cover
    app()
