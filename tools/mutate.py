#!/usr/bin/env python3
"""Mutation testing of the modules that carry the science and the data (``make mutate``).

For each target below, mutmut (3.x) plants small bugs in the target's module, one at a
time, and runs only the target's own test files against each; a mutant the tests do not
fail on "survives". Each target runs in its own folder under ``runs/mutate/<target>``
(a copy of the package's ``src``, ``tests`` and ``pyproject.toml`` as committed at HEAD,
or as in the working tree with ``--worktree``, plus a generated ``setup.cfg``), so the
shared working tree is never modified. A rerun re-tests the functions that changed since
the last one, and runs the last run's survivors again against the current tests.

Usage::

    python tools/mutate.py                 # every target
    python tools/mutate.py ctm store       # some of them
    python tools/mutate.py --list          # the targets

It prints a table of the score per target (killed / (killed + survived + timeouts)),
writes it to ``runs/mutate/summary.md`` and each target's surviving mutants to
``runs/mutate/<target>/survivors.txt`` (``mutmut show NAME`` in that folder prints a
mutant's diff). The recorded scores and the survivors judged equivalent are in
``docs/mutation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "mutate"
MUTMUT = Path(sys.executable).with_name("mutmut")


@dataclass(frozen=True)
class Target:
    name: str
    package: str  # folder of the package (holds src/, tests/, pyproject.toml)
    mutate: tuple[str, ...]  # glob patterns, relative to the package folder
    tests: tuple[str, ...]  # the test files run against each mutant
    extra: tuple[str, ...] = ()  # more pytest arguments of the selection (e.g. --deselect)


TARGETS = [
    Target("ctm", "communitybots", ("src/communitybots/ctm.py",),
           ("tests/test_ctm.py", "tests/test_ctm_decisions.py")),
    Target("store", "communitybots", ("src/communitybots/store.py",),
           ("tests/test_store.py", "tests/test_store_engine.py", "tests/test_turn_replay.py")),
    Target("analytics", "communitybots", ("src/communitybots/analytics.py",),
           ("tests/test_analytics.py", "tests/test_analytics_values.py")),
    Target("server", "fedtune", ("src/fedtune/server/*.py",),
           ("tests/test_server_optimizers.py", "tests/test_server_behaviour.py", "tests/test_flash.py")),
    # the estimators (forward, zeroth-order, backprop); functional.py (loss closures over
    # models) and estimators.py (the registry the algorithms pick from) are left out
    Target("grad", "fedtune", ("src/fedtune/grad/forward.py", "src/fedtune/grad/zeroth.py",
                               "src/fedtune/grad/backprop.py"),
           ("tests/test_grad_exact.py", "tests/test_grad.py")),
    # the MNIST loading test is an integration test of 14 s; the partition tests pin the rest.
    # test_seed_processes is left out: its child processes import the unmutated package.
    Target("partition", "fedtune", ("src/fedtune/data/partition.py",),
           ("tests/test_partition.py", "tests/test_partition_values.py"),
           ("--deselect", "tests/test_partition.py::test_load_federated_mnist_dirichlet")),
    Target("seeding", "fedtune", ("src/fedtune/seeding.py",),
           ("tests/test_seeding.py", "tests/test_seeding_values.py")),
]

STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "not checked",
            "segfault", "caught by type check")


def checkout(package: str, worktree: bool, dest: Path) -> Path:
    """The package as committed (HEAD, extracted under ``dest``), or as in the working tree."""
    if worktree:
        return ROOT / package
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", package], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / package


def prepare(target: Target, worktree: bool = False) -> Path:
    """A fresh copy of the package's sources and tests beside the kept mutmut state."""
    work = OUT / target.name
    work.mkdir(parents=True, exist_ok=True)
    pkg = checkout(target.package, worktree, work / "_head")
    for sub in ("src", "tests"):
        if (work / sub).exists():
            shutil.rmtree(work / sub)
        shutil.copytree(pkg / sub, work / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts"))
    shutil.copy2(pkg / "pyproject.toml", work / "pyproject.toml")
    tests = [t for t in target.tests if (work / t).exists()]
    lines = ["[mutmut]", "source_paths = src", "also_copy = src",
             "only_mutate =", *(f"    {p}" for p in target.mutate),
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests + list(target.extra)),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider",
             "timeout_multiplier = 10", "timeout_constant = 5"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")
    return work


def _results(work: Path, env: dict) -> list[tuple[str, str]]:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work, env=env, check=False,
                         capture_output=True, text=True).stdout
    return [tuple(line.strip().rsplit(": ", 1)) for line in out.splitlines() if ": " in line]


def run(target: Target, max_children: int, worktree: bool = False) -> dict:
    work = prepare(target, worktree)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # the mutation run never needs the CI services
    start = time.time()
    with open(work / "run.log", "w") as log:
        proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children)], cwd=work, check=False,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
        # mutmut keeps the verdicts of unchanged mutants; a test added since the last run
        # can only kill a survivor, so the survivors are run again against the current tests
        again = [name for name, status in _results(work, env) if status in ("survived", "timeout")]
        if again and proc.returncode == 0:
            proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children), *again],
                                  cwd=work, check=False, env=env, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.time() - start
    counts = dict.fromkeys(STATUSES, 0)
    survivors = []
    for name, status in _results(work, env):
        if status in counts:
            counts[status] += 1
            if status in ("survived", "timeout", "suspicious"):
                survivors.append(f"{name}: {status}")
    (work / "survivors.txt").write_text("\n".join(survivors) + ("\n" if survivors else ""))
    tested = counts["killed"] + counts["survived"] + counts["timeout"] + counts["suspicious"]
    score = counts["killed"] / tested if tested else None
    return {"target": target.name, "files": list(target.mutate), "tests": list(target.tests),
            "exit_code": proc.returncode, "seconds": round(elapsed), "score": score,
            "tested": tested, **counts}


def table(rows: list[dict]) -> str:
    out = ["| target | mutants tested | killed | survived | timeout | no tests | score | time |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        score = "–" if r["score"] is None else f"{100 * r['score']:.1f} %"
        out.append(f"| {r['target']} | {r['tested']} | {r['killed']} | {r['survived']} | "
                   f"{r['timeout']} | {r['no tests']} | {score} | {r['seconds']} s |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--worktree", action="store_true",
                        help="mutate the working tree as it is (default: the committed HEAD)")
    args = parser.parse_args()
    if args.list:
        for t in TARGETS:
            print(f"{t.name:10} {t.package}/{{{', '.join(t.mutate)}}}  tests: {', '.join(t.tests)}")
        return 0
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    unknown = set(args.targets) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; see --list")
    rows = []
    for t in chosen:
        print(f"mutate: {t.name} ({', '.join(t.mutate)}) ...", flush=True)
        row = run(t, args.max_children, args.worktree)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        (OUT / t.name / "result.json").write_text(json.dumps(row, indent=2) + "\n")
    text = table(rows)
    print(text)
    (OUT / "summary.md").write_text(text + "\n")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
