"""CPU per message in-process, without HTTP: the parts of a stored turn.

Times, with ``time.process_time`` (CPU of this process, so less sensitive to other work
on the machine than wall time), best of ``--repeats``:

- ``nlu_analyze``: ``NLU.analyze`` of one answer (intent and quality parts);
- ``ctm_step``: the pure ``CTM.step`` (the NLU included);
- ``state_copy``: ``State.from_json(state.to_json())``, as the database round trip does;
- ``take_turn``: ``conversation.take_turn`` on a SQLite file (a fresh session each call,
  so the participant is read from the database), ``--participants`` x ``--turns``;
- ``app_message``: ``POST /api/messages`` through the whole ASGI app (middleware,
  routing, CSRF check, body validation, the pool thread, the participant by cookie, the
  turn, the JSON answer), called in-process without sockets, one message at a time,
  ``--participants`` x ``--turns`` on a second SQLite file: what the server does per
  message besides uvicorn's HTTP parsing and the socket.

The answers are ``load.py``'s, the survey the imported package's. Run it against another checkout with
``PYTHONPATH=<checkout>/communitybots/src python benchmarks/turn_cpu.py``.

    python benchmarks/turn_cpu.py --out benchmarks/results/turn_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

from load import ANSWERS

import communitybots
from communitybots.ctm import State
from communitybots.spec import load_survey
from communitybots.store import make_engine, migrate, session_factory
from communitybots.web import conversation
from communitybots.web.settings import Settings
from communitybots.web.study import Study, register_survey


def best_ms(fn, n: int, repeats: int) -> float:
    """Least CPU milliseconds per call of ``fn(i)`` for i < n, over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t0) / n)
    return round(1000 * best, 3)


def app_message_ms(texts: list[str], args: argparse.Namespace) -> float:
    """Least CPU ms per ``POST /api/messages`` through the ASGI app (see the docstring)."""
    from communitybots.web.app import create_app

    url = f"sqlite:///{tempfile.mkdtemp(prefix='cb-app-')}/app.sqlite3"
    app = create_app(Path(communitybots.__file__).parent / "surveys" / "covid_daily_life.yaml",
                     Settings(database_url=url, relevance="tfidf", rate_limit_messages=10_000))
    with app.state.sessions() as db:
        tokens = [conversation.start(db, app.state.study, "multi", "random")[1]
                  for _ in range(args.participants)]
    runs = iter(range(10**9))

    async def post(token: str, text: str) -> None:
        body = json.dumps({"client_id": f"m{next(runs)}", "text": text}).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/api/messages",
                 "raw_path": b"/api/messages", "query_string": b"", "root_path": "",
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                 "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode()),
                             (b"x-csrf-token", b"benchmark"),
                             (b"cookie", f"cb_csrf=benchmark; cb_session={token}".encode())]}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"POST /api/messages answered {sent[0]['status']}: {sent[1:]}")

    calls = [token for _ in range(args.turns) for token in tokens]

    async def run() -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.process_time()
            for i, token in enumerate(calls):
                await post(token, texts[i % len(texts)])
            best = min(best, (time.process_time() - t0) / len(calls))
        return best

    best = asyncio.run(run())
    app.state.engine.dispose()
    return round(1000 * best, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages for the pure parts")
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--turns", type=int, default=3, help="turns per participant and run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    rng = random.Random(0)
    # the checkout's own survey (the one its load.py serves)
    survey = load_survey(Path(communitybots.__file__).parent / "surveys" / "covid_daily_life.yaml")
    url = f"sqlite:///{tempfile.mkdtemp(prefix='cb-turn-')}/turn.sqlite3"
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as db:
        survey_pk = register_survey(db, survey)
    study = Study(survey, survey_pk, relevance="tfidf")
    settings = Settings(database_url=url, rate_limit_messages=10_000)
    _, ctm = study.engine(survey_pk, "multi", None)
    start, _, _ = ctm.start(now=0.0)
    texts = [rng.choice(ANSWERS) for _ in range(args.messages)]
    topic = ctm.survey.topic(start.topic_id)[1]
    states = [start]
    for i, text in enumerate(texts[:-1]):  # a conversation's states, restarted at its end
        state = ctm.step(states[-1], text, now=float(i))[0]
        states.append(start if state.finished else state)

    result = {
        "nlu_analyze_ms": best_ms(lambda i: ctm.nlu.analyze(texts[i], start.pending_text, topic),
                                  args.messages, args.repeats),
        "ctm_step_ms": best_ms(lambda i: ctm.step(states[i], texts[i], now=float(i)),
                               args.messages, args.repeats),
        "state_copy_ms": best_ms(lambda i: State.from_json(states[i].to_json()),
                                 args.messages, args.repeats),
    }
    with sessions() as db:
        ids = [conversation.start(db, study, "multi", "random")[0].id
               for _ in range(args.participants)]
    calls = [(pid, k) for k in range(args.turns) for pid in ids]
    runs = iter(range(10**9))

    def turn(i: int) -> None:
        pid, _k = calls[i % len(calls)]
        with sessions() as db:
            conversation.take_turn(db, study, settings, pid, f"m{next(runs)}", texts[i % len(texts)])

    result["take_turn_ms"] = best_ms(turn, len(calls), args.repeats)
    result["app_message_ms"] = app_message_ms(texts, args)
    result.update({"messages": args.messages, "participants": args.participants,
                   "turns": args.turns, "repeats": args.repeats,
                   "load_avg_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
