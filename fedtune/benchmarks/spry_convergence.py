"""Spry's convergence on sentence polarity, from a shared warm head (issue 10).

Setting (Spry, Panchal et al., NeurIPS 2024, arXiv 2405.15551): sentence polarity
(``mr``, Pang & Lee, the SST-2 source) and Rotten Tomatoes snippets
(``rotten_tomatoes``), all-MiniLM-L6-v2 with LoRA (r 1, α 1, dropout 0.1 on query/value)
and a classification head, clients with Dirichlet(α) label skew, 10 a round.

Warm head: every (task, α, seed) starts with a federated linear probe (``warm_head``
phase, :func:`fedtune.models.probe.federated_linear_probe`: FedAvg on the head alone by
backprop, over the features of the frozen model, LoRA B = 0 so it is the pretrained one;
every client every round, which a head-only phase affords and label skew needs);
the head file it writes is given to every method as ``model.options.head_init``, so all
methods start from the same model and round r of a method means r rounds after the probe.

Methods (client AdamW, weight decay 0.01, the same local budget; FedYogi server with the
paper's settings η 1e-2, β1 .9, β2 .99, τ 1e-3 unless named otherwise):

- ``spry_paper``: the authors' configuration (``run_job.sh``): the head as its own group
  (``share_head = false``), dropout on during the jvp, K = 1;
- ``spry_exact``: Spry with the head shared and its gradient exact from the same pass
  (``head_gradient = "exact"``), forward gradients for the adapters;
- ``fedfgd``: forward gradients over every trainable tensor (no split), dropout on;
- ``fedavg_bp`` / ``fedyogi_bp``: backprop LoRA with the FedAvg (lr 1) / FedYogi server.

Client learning rates: with ``--tune`` each method's is the grid point (``TUNE_GRID``)
with the best final accuracy on a separate seed (``--tune-seed``) at α 1.0; without it,
``DEFAULT_LR`` (the reduced mode's runs used those; see the README).

Scales (``--scale``):

- ``reduced`` (default): ``mr`` at 32 tokens, 20 clients, 2 local steps of batch 8 a
  round, 20 rounds after a 60-round probe, evaluation every 5 rounds on the pooled test
  split (20 % of each client: about 800 sentences).
- ``cpu60``: 60 rounds on one CPU core: ``mr`` at 32 tokens, 20 clients, 2 local steps of
  batch 4, 60 % of each client's sentences as the test split (2,400 pooled: a standard error
  of 0.97 points at 65 % accuracy), no validation split, evaluation every 20 rounds, a
  300-round probe (its rounds run on cached features: seconds; with 80 training sentences a
  client, 60 rounds left the head at 0.523 on seed 0); ``--tune`` runs 30 rounds per grid
  point, evaluated at round 30 (10 rounds could not rank the
  forward-gradient methods: none had moved off the warm head).
- ``paper``: the authors' scale: 64 tokens, 100 clients, one full local epoch of batch 8,
  1,500 rounds, evaluation every 50 (hours on a CPU; for a GPU machine).

Plan (``plan``): at α 1.0 seed 0 for every method, then seeds 1 and 2 for ``fedyogi_bp`` and
the better Spry variant on seed 0 (``best_spry``); at α 0.1 seed 0 for each; then seed 0 of
each on ``rotten_tomatoes``; runs in that order, so an interrupted run has the most
important ones.

Resumable: each finished run (probe and tuning runs too) is saved under
``results/spry_convergence/<scale>/`` with its experiment, and skipped when restarted with
the same experiment (``--force`` reruns). The summary goes to
``results/spry_convergence_<scale>.json``, a plot beside it and the table between the
``spry_convergence:<scale>`` markers of ``benchmarks/README.md``.

    nice -n 5 python benchmarks/spry_convergence.py [--scale reduced|cpu60|paper] [--tune] [--only mr@1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"
WORK = HERE.parent.parent / "runs" / "bench" / "spry_convergence"  # run folders (checkpoints), not committed

YOGI = {"name": "fedyogi", "lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
FEDAVG = {"name": "fedavg", "lr": 1.0}
LORA = {"peft": "lora", "r": 1, "lora_alpha": 1, "lora_dropout": 0.1}
CLIENT = {"optimizer": "adamw", "weight_decay": 0.01}
# name -> ([algorithm] table without lr, [server] table)
METHODS: dict[str, tuple[dict, dict]] = {
    "spry_paper": ({"name": "spry", "share_head": False, "jvp_dropout": True}, YOGI),
    "spry_exact": ({"name": "spry", "share_head": True, "head_gradient": "exact", "jvp_dropout": True}, YOGI),
    "fedfgd": ({"name": "fedfgd", "jvp_dropout": True}, YOGI),
    "fedavg_bp": ({"name": "fedavg"}, FEDAVG),
    "fedyogi_bp": ({"name": "fedavg"}, YOGI),
}
SPRY = ("spry_paper", "spry_exact")
DEFAULT_LR = {"spry_paper": 1e-4, "spry_exact": 1e-4, "fedfgd": 1e-4, "fedavg_bp": 1e-3, "fedyogi_bp": 1e-3}
# forward-gradient methods: nothing moves below 1e-4 (cpu60, spry_paper at 3e-5 and 1e-4 ended level
# with the warm head), so their grid goes up from the authors' 1e-4
TUNE_GRID = {"spry_paper": [1e-4, 3e-4, 1e-3], "spry_exact": [1e-4, 3e-4, 1e-3], "fedfgd": [1e-4, 3e-4, 1e-3],
             "fedavg_bp": [3e-4, 1e-3, 3e-3], "fedyogi_bp": [3e-4, 1e-3, 3e-3]}
# the warm-head phase (fedtune.models.probe): FedAvg on the head alone over the frozen model's
# features, one local epoch of AdamW a round, every client every round. MiniLM's pooled features are
# small (mean |x| 0.05) and a linear probe on them tops out near 0.62-0.65 (centrally, logistic
# regression on 800 sentences). Measured on mr at alpha 1.0, seed 0: through the engine with 2 local
# steps a round, 10 rounds left the head at chance (lr 1e-2: 0.504, 5e-2: 0.497, 0.2: 0.496); on
# cached features with 10 of the 20 label-skewed clients a round the aggregate flips between the two
# classes from round to round (lr 1e-2, 3e-3: between 0.496 and 0.65); with all 20 a round, lr 3e-3
# climbs steadily to 0.646 at round 60 (lr 1e-2: 0.564, 3e-2: 0.554).
PROBE = {"lr": 3e-3, "local_epochs": 1, "batch_size": 8}


@dataclass(frozen=True)
class Scale:
    max_length: int
    num_clients: int
    rounds: int
    probe_rounds: int
    max_steps: int | None  # None: one full local epoch
    batch_size: int
    eval_every: int
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    tune_rounds: int | None = None  # --tune's runs: this many rounds (None: ``rounds``), evaluated at the last


SCALES = {
    "reduced": Scale(max_length=32, num_clients=20, rounds=20, probe_rounds=60, max_steps=2, batch_size=8, eval_every=5),
    # 60 rounds on one CPU core: 2 local steps of batch 4, and 60 % of mr as the test split (2,400
    # sentences: a standard error of 0.97 points at 65 % accuracy), evaluated every 20 rounds; the
    # probe's rounds are cheap (cached features) and 40 % of mr leaves it slow: 300 of them
    "cpu60": Scale(max_length=32, num_clients=20, rounds=60, probe_rounds=300, max_steps=2, batch_size=4, eval_every=20,
                   test_fraction=0.6, val_fraction=0.0, tune_rounds=30),
    "paper": Scale(max_length=64, num_clients=100, rounds=1500, probe_rounds=100, max_steps=None, batch_size=8, eval_every=50),
}


def plan(best_spry: str = "spry_exact") -> list[tuple[str, str, float, int]]:
    """(method, task, α, seed) in the order they run: α 1.0 seed 0 for every method, seeds 1
    and 2 for ``best_spry`` and ``fedyogi_bp``, α 0.1, then ``rotten_tomatoes``."""
    order = ("fedyogi_bp", "spry_exact", "spry_paper", "fedfgd", "fedavg_bp")  # the targets' runs first
    runs = [(m, "mr", 1.0, 0) for m in order]
    runs += [(m, "mr", 1.0, s) for s in (1, 2) for m in ("fedyogi_bp", best_spry)]
    runs += [(m, "mr", 0.1, 0) for m in order]
    runs += [(m, "rotten_tomatoes", 1.0, 0) for m in order]
    return runs


# seconds per token of one MiniLM forward at 32 tokens on one thread of this machine (measured:
# 128 x 32 tokens in 1.8-3.9 s at load 1-5); a training step (jvp or backprop) costs about 3 forwards
FORWARD_S_PER_TOKEN = 5e-4


def estimate_s(sc: Scale, runs: int, tune_runs: int, test_examples: int) -> float:
    """The plan's estimated seconds (compute only; the warm-head probes add about a minute each)."""
    steps = sc.max_steps if sc.max_steps is not None else 1
    round_s = 10 * steps * sc.batch_size * sc.max_length * 3 * FORWARD_S_PER_TOKEN
    eval_s = test_examples * sc.max_length * FORWARD_S_PER_TOKEN
    tune_rounds = sc.tune_rounds or sc.rounds
    return runs * (sc.rounds * round_s + sc.rounds // sc.eval_every * eval_s) + tune_runs * (tune_rounds * round_s + eval_s)


def data_table(task: str, alpha: float, sc: Scale) -> dict:
    return {
        "name": task,
        "num_clients": sc.num_clients,
        "partition": "dirichlet",
        "alpha": alpha,
        "val_fraction": sc.val_fraction,
        "test_fraction": sc.test_fraction,
        "options": {"tokenizer": "minilm", "max_length": sc.max_length},
    }


def local(sc: Scale) -> dict:
    return {"local_epochs": 1, "batch_size": sc.batch_size, "max_steps": sc.max_steps}


def probe_spec(task: str, alpha: float, seed: int, sc: Scale) -> dict:
    """The warm-head phase: a federated linear probe (head by backprop on the frozen model's features)."""
    return {"seed": seed, "rounds": sc.probe_rounds, "clients_per_round": sc.num_clients, "data": data_table(task, alpha, sc),
            "model": {"name": "hf:minilm", "options": LORA}, "probe": PROBE}


def method_experiment(method: str, task: str, alpha: float, seed: int, sc: Scale, lr: float, head: str, out: str) -> dict:
    algorithm, server = METHODS[method]
    return {
        "name": f"{method}-{task}-a{alpha}-s{seed}",
        "seed": seed,
        "rounds": sc.rounds,
        "clients_per_round": 10,
        "output": out,
        "data": data_table(task, alpha, sc),
        "model": {"name": "hf:minilm", "options": {**LORA, "head_init": head}},
        "algorithm": {**algorithm, **CLIENT, "lr": lr, **local(sc)},
        "server": server,
        "eval": {"every": sc.eval_every, "batch_size": 128},
        "checkpoint": {"every": 0, "keep": 1},
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def execute(raw: dict) -> dict:
    """Run one experiment; its accuracy curve, costs and the machine's load."""
    from fedtune.config import load_experiment
    from fedtune.engine import run_experiment

    load_before = load_average()
    start = time.perf_counter()
    metrics = run_experiment(load_experiment(raw=raw), overwrite=True, report=False).metrics
    curve = [{"round": m["round"], "test_accuracy": m["test_accuracy"], "test_loss": m["test_loss"]}
             for m in metrics if "test_accuracy" in m]
    return {
        "experiment": {k: v for k, v in raw.items() if k != "output"},
        "curve": curve,
        "final_test_accuracy": final(curve),
        "train_loss": [round(m["train_loss"], 5) for m in metrics],
        "bytes_up_per_round": sum(m["bytes_up"] for m in metrics) / len(metrics),
        "run_s": round(time.perf_counter() - start, 1),
        "eval_s": round(sum(m["eval_s"] for m in metrics), 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def final(curve: list[dict], last: int = 2) -> float:
    """Mean test accuracy of the last ``last`` evaluations (less noisy than the last one)."""
    tail = curve[-last:]
    return round(sum(p["test_accuracy"] for p in tail) / len(tail), 4)


def reusable(path: Path, experiment: dict, force: bool = False) -> dict | None:
    """The run saved at ``path`` if it was made with ``experiment`` (its ``output`` folder aside)
    and ``force`` is off, else None."""
    if force or not path.exists():
        return None
    saved = json.loads(path.read_text())
    return saved if saved["experiment"] == {k: v for k, v in experiment.items() if k != "output"} else None


def cached(path: Path, raw: dict, force: bool) -> dict:
    """The saved run at ``path`` if it was made with the same experiment, else a new one (saved)."""
    saved = reusable(path, raw, force)
    if saved is not None:
        print(f"{path.stem}: done before ({saved['final_test_accuracy']:.3f}), skipped", flush=True)
        return saved
    result = execute(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{path.stem}: {result['final_test_accuracy']:.3f} in {result['run_s']:.0f} s (load {result['load_average_before']})", flush=True)
    return result


def warm_head(task: str, alpha: float, seed: int, sc: Scale, scale: str, force: bool) -> tuple[str, dict]:
    """The probe's head file (made once per task, α and seed) and its record."""
    from fedtune.config import DataConfig
    from fedtune.data import load_federated
    from fedtune.models import build_model
    from fedtune.models.probe import federated_linear_probe, save_head

    stem = f"warm_head-{task}-a{alpha}-s{seed}"
    head = WORK / scale / f"{stem}.pt"
    path = RESULTS / "spry_convergence" / scale / f"{stem}.json"
    spec = probe_spec(task, alpha, seed, sc)
    saved = reusable(path, spec, force) if head.exists() else None
    if saved is not None:
        return str(head), saved
    start = time.perf_counter()
    fed = load_federated(DataConfig(**spec["data"]), seed)
    model = build_model(spec["model"]["name"], fed.info, spec["model"]["options"], seed)
    result = federated_linear_probe(model, fed, rounds=sc.probe_rounds, clients_per_round=sc.num_clients, seed=seed, **PROBE)
    save_head(result, head)
    curve = [{"round": r + 1, "test_accuracy": round(a, 6)} for r, a in enumerate(result.test_accuracy)]
    record = {"experiment": spec, "curve": curve, "final_test_accuracy": final(curve), "run_s": round(time.perf_counter() - start, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{stem}: {record['final_test_accuracy']:.3f} in {record['run_s']:.0f} s", flush=True)
    return str(head), record


def tune(methods: list[str], sc: Scale, scale: str, seed: int, force: bool, run: bool = True) -> tuple[dict[str, float], dict]:
    """Each method's client lr: the grid point with the best final accuracy on ``seed`` (mr, α 1.0),
    ties to the smaller lr. ``run=False`` only reads the tuning runs saved before with the same
    experiments (methods with a grid point missing are left out)."""
    head = str(WORK / scale / f"warm_head-mr-a1.0-s{seed}.pt")
    if run:
        head, _ = warm_head("mr", 1.0, seed, sc, scale, force)
    rounds = sc.tune_rounds or sc.rounds
    sc = Scale(**{**asdict(sc), "rounds": rounds, "eval_every": rounds if sc.tune_rounds else sc.eval_every})
    chosen, trials = {}, {}
    for method in methods:
        finals = {}
        for lr in TUNE_GRID[method]:
            path = RESULTS / "spry_convergence" / scale / f"tune-{method}-lr{lr:g}-s{seed}.json"
            raw = method_experiment(method, "mr", 1.0, seed, sc, lr, head, str(WORK / scale / "tune"))
            saved = cached(path, raw, force) if run else reusable(path, raw)
            if saved is not None:
                finals[lr] = saved["final_test_accuracy"]
        if len(finals) == len(TUNE_GRID[method]):
            chosen[method] = max(finals, key=lambda lr: (finals[lr], -lr))
            trials[method] = {f"{lr:g}": acc for lr, acc in finals.items()}
    return chosen, trials


def summarize(records: dict[tuple[str, str, float, int], dict], probes: dict[tuple[str, float, int], dict]) -> dict:
    """Per (task, α): each method's final accuracy (mean, sd over seeds), gaps at each budget, targets."""
    out: dict[str, dict] = {}
    for task, alpha in dict.fromkeys((t, a) for _, t, a, _ in records):
        rows: dict[str, dict] = {}
        for method in METHODS:
            runs = [r for (m, t, a, _), r in records.items() if (m, t, a) == (method, task, alpha)]
            if not runs:
                continue
            finals = [r["final_test_accuracy"] for r in runs]
            rounds = [p["round"] for p in runs[0]["curve"]]
            mean_curve = [statistics.mean(r["curve"][i]["test_accuracy"] for r in runs) for i in range(len(rounds))]
            losses = [statistics.mean(p["test_loss"] for p in r["curve"][-2:]) for r in runs]
            used = sorted({r["experiment"]["algorithm"]["lr"] for r in runs})
            rows[method] = {"seeds": len(runs), "client_lr": used, "final_mean": round(statistics.mean(finals), 4),
                            "final_test_loss": round(statistics.mean(losses), 4),
                            "final_sd": round(statistics.stdev(finals), 4) if len(finals) > 1 else None,
                            "rounds": rounds, "mean_curve": [round(x, 4) for x in mean_curve]}
        start = [p["final_test_accuracy"] for (t, a, _), p in probes.items() if (t, a) == (task, alpha)]
        entry: dict = {"warm_head_accuracy": round(statistics.mean(start), 4) if start else None, "methods": rows}
        spry = [m for m in SPRY if m in rows]
        if spry and "fedyogi_bp" in rows:
            best = max(spry, key=lambda m: rows[m]["final_mean"])
            ref = rows["fedyogi_bp"]
            entry["best_spry"] = best
            entry["gap_to_fedyogi_bp_points_by_round"] = {
                str(r): round(100 * (a - b), 1) for r, a, b in zip(rows[best]["rounds"], rows[best]["mean_curve"], ref["mean_curve"], strict=False)}
            gap = 100 * (rows[best]["final_mean"] - ref["final_mean"])
            entry["target_within_3_points_of_fedyogi_bp"] = {"gap_points": round(gap, 1), "met": gap >= -3.0}
            if "fedfgd" in rows:
                spread = 100 * max(rows[m]["final_sd"] or 0.0 for m in (best, "fedfgd", "fedyogi_bp"))
                margin = 100 * (rows[best]["final_mean"] - rows["fedfgd"]["final_mean"])
                entry["target_above_fedfgd_by_more_than_seed_spread"] = {
                    "margin_points": round(margin, 1), "seed_spread_points": round(spread, 1),
                    "met": margin > spread and (rows[best]["seeds"] > 1)}
        out[f"{task}@{alpha}"] = entry
    return out


def table(summary: dict, meta: dict) -> str:
    lines = [f"Measured {meta['date']} on {meta['machine']} (scale `{meta['scale']}`: {meta['setting']}); "
             f"final = mean test accuracy (and test loss) of the last 2 evaluations; mean ± sd over seeds where there are "
             f"several, (n) seeds; lr: the client learning rate the runs used.", "",
             "| task @ α | warm head | " + " | ".join(METHODS) + " | best Spry − FedYogi-bp |",
             "|---" * (len(METHODS) + 3) + "|"]
    for key, entry in summary.items():
        cells = []
        for m in METHODS:
            row = entry["methods"].get(m)
            if row is None:
                cells.append("–")
            else:
                sd = f" ± {row['final_sd']:.3f}" if row["final_sd"] is not None else ""
                lr = "/".join(f"{x:g}" for x in row["client_lr"])
                cells.append(f"{row['final_mean']:.3f}{sd} ({row['seeds']}), loss {row['final_test_loss']:.3f}, lr {lr}")
        target = entry.get("target_within_3_points_of_fedyogi_bp")
        gap = f"{target['gap_points']:+.1f} pts ({'met' if target['met'] else 'missed'})" if target else "–"
        head = f"{entry['warm_head_accuracy']:.3f}" if entry["warm_head_accuracy"] is not None else "–"
        lines.append(f"| {key} | {head} | " + " | ".join(cells) + f" | {gap} |")
    return "\n".join(lines)


def write_readme_block(marker: str, text: str) -> None:
    """Replace what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` in benchmarks/README.md."""
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    readme = README.read_text()
    if begin not in readme or end not in readme:
        print(f"README has no {begin} block; table not written there", flush=True)
        return
    head, rest = readme.split(begin, 1)
    README.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def plot(records: dict, probes: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((t, a) for _, t, a, _ in records))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (task, alpha) in zip(axes[0], panels, strict=True):
        for (method, t, a, seed), run in records.items():
            if (t, a) != (task, alpha):
                continue
            start = probes[(t, a, seed)]["final_test_accuracy"]
            xs = [0] + [p["round"] for p in run["curve"]]
            ys = [start] + [p["test_accuracy"] for p in run["curve"]]
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{method} s{seed}", alpha=0.9 if seed == 0 else 0.5)
        ax.set_title(f"{task}, MiniLM + LoRA r1, Dirichlet α = {alpha}")
        ax.set_xlabel("round after the warm-head probe")
        ax.set_ylabel("test accuracy (global model)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default="reduced", help="reduced (default), cpu60 (60 rounds on one core) or the authors' scale")
    parser.add_argument("--rounds", type=int, default=None, help="override the scale's rounds")
    parser.add_argument("--only", nargs="+", default=None, help="restrict the plan to these task@alpha, e.g. mr@1.0")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="restrict the plan to these seeds (e.g. a second process for seeds 1 2)")
    parser.add_argument("--tune", action="store_true", help="tune each method's client lr on --tune-seed first")
    parser.add_argument("--tune-seed", type=int, default=100)
    parser.add_argument("--lr", nargs="+", default=[], metavar="METHOD=LR",
                        help="client lr for a method instead of DEFAULT_LR or its tuned value, e.g. fedfgd=1e-3")
    parser.add_argument("--force", action="store_true", help="rerun saved runs")
    parser.add_argument("--readme", action="store_true", help="also write the table into benchmarks/README.md")
    parser.add_argument("--report", action="store_true", help="only summarize the runs saved so far (runs nothing)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    sc = SCALES[args.scale]
    if args.rounds is not None:
        sc = Scale(**{**asdict(sc), "rounds": args.rounds})
    folder = RESULTS / "spry_convergence" / args.scale
    lrs, trials = dict(DEFAULT_LR), {}
    overrides = {}
    for item in args.lr:
        method, _, value = item.partition("=")
        if method not in METHODS or not value:
            parser.error(f"--lr {item}: expected METHOD=LR with METHOD one of {', '.join(METHODS)}")
        try:
            overrides[method] = float(value)
        except ValueError:
            parser.error(f"--lr {item}: {value!r} is not a number")
    if args.report and args.tune:  # the grid's choices, from the saved tuning runs
        tuned, trials = tune(args.methods, sc, args.scale, args.tune_seed, force=False, run=False)
        lrs.update(tuned)
    if not args.report:
        n_tune = len(set(args.methods) - set(overrides)) * 3 if args.tune else 0
        n_runs = sum(1 for m, t, a, s in plan() if m in args.methods and (not args.only or f"{t}@{a}" in args.only)
                     and (args.seeds is None or s in args.seeds))
        cost = estimate_s(sc, n_runs, n_tune, test_examples=round(4000 * sc.test_fraction))
        print(f"plan: {n_tune} tuning runs, {n_runs} runs; estimated {cost / 3600:.1f} h of one core (mr-sized test split)", flush=True)
    if args.tune and not args.report:
        tuned, trials = tune([m for m in args.methods if m not in overrides], sc, args.scale, args.tune_seed, args.force)
        lrs.update(tuned)
    lrs.update(overrides)
    records: dict[tuple[str, str, float, int], dict] = {}
    probes: dict[tuple[str, float, int], dict] = {}
    first = plan()[:len(METHODS)]  # mr, α 1.0, seed 0: every method; it picks the best Spry variant
    for phase in (0, 1):
        runs = first if phase == 0 else plan(best_spry(folder))[len(METHODS):]
        for method, task, alpha, seed in runs:
            if method not in args.methods or (args.only and f"{task}@{alpha}" not in args.only):
                continue
            if args.seeds is not None and seed not in args.seeds:
                continue
            path = folder / f"{method}-{task}-a{alpha}-s{seed}.json"
            if args.report:
                saved = saved_run(path, folder / f"warm_head-{task}-a{alpha}-s{seed}.json")
                if saved is not None:
                    probes[(task, alpha, seed)], records[(method, task, alpha, seed)] = saved
                continue
            head, probes[(task, alpha, seed)] = warm_head(task, alpha, seed, sc, args.scale, args.force)
            name = f"{method}-{task}-a{alpha}-s{seed}"
            raw = method_experiment(method, task, alpha, seed, sc, lrs[method], head, str(WORK / args.scale / "runs" / name))
            records[(method, task, alpha, seed)] = cached(path, raw, args.force)
            write_summary(args.scale, sc, records, probes, lrs, trials, args.readme)
    if args.report and records:
        write_summary(args.scale, sc, records, probes, lrs, trials, args.readme)


def best_spry(folder: Path) -> str:
    """The Spry variant with the higher saved final accuracy on mr, α 1.0, seed 0 (``spry_exact`` without both)."""
    paths = {m: folder / f"{m}-mr-a1.0-s0.json" for m in SPRY}
    finals = {m: json.loads(p.read_text())["final_test_accuracy"] for m, p in paths.items() if p.exists()}
    return max(finals, key=finals.get) if len(finals) == len(SPRY) else "spry_exact"


def saved_run(path: Path, probe: Path) -> tuple[dict, dict] | None:
    """(probe record, run record) saved by an earlier invocation, or None."""
    if not (path.exists() and probe.exists()):
        return None
    return json.loads(probe.read_text()), json.loads(path.read_text())


def write_summary(scale: str, sc: Scale, records: dict, probes: dict, lrs: dict, trials: dict, readme: bool) -> None:
    summary = summarize(records, probes)
    meta = {
        "scale": scale,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU, 1 torch thread",
        "setting": (f"{sc.num_clients} clients, 10 a round, {sc.rounds} rounds after a {sc.probe_rounds}-round probe, "
                    f"{sc.max_length} tokens, {'a full local epoch' if sc.max_steps is None else f'{sc.max_steps} local steps'} "
                    f"of batch {sc.batch_size}, evaluation every {sc.eval_every} rounds"),
    }
    out = {"benchmark": "spry_convergence", **meta, "client_lr": lrs, "tuning": trials, "summary": summary,
           "runs": {f"{m}@{t}@{a}@s{s}": {k: r[k] for k in ("curve", "final_test_accuracy", "run_s", "load_average_before")}
                    for (m, t, a, s), r in records.items()},
           "warm_heads": {f"{t}@{a}@s{s}": p["final_test_accuracy"] for (t, a, s), p in probes.items()},
           "run_s_total": round(sum(r["run_s"] for r in records.values()) + sum(p["run_s"] for p in probes.values()), 1)}
    path = RESULTS / f"spry_convergence_{scale}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    plot(records, probes, path.with_suffix(".png"))
    if readme:
        write_readme_block(f"spry_convergence:{scale}", table(summary, meta))


if __name__ == "__main__":
    main()
