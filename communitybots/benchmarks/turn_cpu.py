"""CPU per message in-process, without HTTP: the parts of a stored turn.

Times, with ``time.process_time`` (CPU of this process, so less sensitive to other work
on the machine than wall time), best of ``--repeats``:

- ``nlu_analyze``: ``NLU.analyze`` of one answer (intent and quality parts);
- ``ctm_step``: the pure ``CTM.step`` (the NLU included);
- ``state_copy``: ``State.from_json(state.to_json())``, as the database round trip does;
- ``take_turn``: ``conversation.take_turn`` on a SQLite file (a fresh session each call,
  so the participant is read from the database), ``--participants`` x ``--turns``.

The answers are ``load.py``'s, the survey the imported package's. Run it against another checkout with
``PYTHONPATH=<checkout>/communitybots/src python benchmarks/turn_cpu.py``.

    python benchmarks/turn_cpu.py --out benchmarks/results/turn_cpu.json
"""

from __future__ import annotations

import argparse
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
    result.update({"messages": args.messages, "participants": args.participants,
                   "turns": args.turns, "repeats": args.repeats,
                   "load_avg_1min": round(os.getloadavg()[0], 2)})
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
