"""Why Flash does (not) recover faster here: an ablation on the sudden drift of flash_drift.py.

Same setting as ``flash_drift.py`` (sudden label swap at round 30, 70 rounds, seeds
0 1 2, server lr 0.03 for every variant, the lr tuned for Flash and FedAdam there):

- flash:             early-stopping clients + Flash server;
- flash-server-only: clients run all 5 epochs + Flash server;
- fedadam+es:        early-stopping clients + FedAdam server;
- fedadam:           clients run all 5 epochs + FedAdam server.

It also records, around the drift, Flash's median effective lr, the mean of d, the
coordinates the guard caught, and FedAdam's median effective lr for comparison.

    python benchmarks/flash_drift_ablation.py        # about 3 minutes here

Writes results/flash_drift_ablation.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import flash_drift
import torch
from flash_drift import ADAPTIVE, DRIFTS, RESULTS, summarize

from fedtune.config import load_experiment
from fedtune.data import load_federated
from fedtune.engine import run_experiment

VARIANTS = {
    "flash": ({"name": "flash", "early_stop_gamma": 0.01}, "flash"),
    "flash-server-only": ({"name": "fedavg"}, "flash"),
    "fedadam+es": ({"name": "fedavg", "early_stop_gamma": 0.01}, "fedadam"),
    "fedadam": ({"name": "fedavg"}, "fedadam"),
}
TRACE = ("test_accuracy", "eff_lr_q50", "eff_lr_q95", "flash_d_mean", "flash_guarded", "epochs_mean")


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    out: dict = {"variants": {}, "trace_seed0": {}}
    feds = {}
    for name, (algorithm, server) in VARIANTS.items():
        per_seed = []
        for seed in (0, 1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                exp = load_experiment(
                    raw={
                        "name": name,
                        "seed": seed,
                        "rounds": 70,
                        "clients_per_round": 10,
                        "output": tmp,
                        "data": {"name": "mnist", "num_clients": 100, "partition": "dirichlet", "alpha": 0.5},
                        "model": {"name": "mlp", "options": {"hidden": [64]}},
                        "algorithm": algorithm | {"local_epochs": 5, "batch_size": 10, "lr": 0.05},
                        "server": {"name": server, "lr": 0.03} | ADAPTIVE,
                        "drift": DRIFTS["sudden"],
                        "eval": {"every": 1},
                        "checkpoint": {"every": 0},
                    }
                )
                feds.setdefault(seed, load_federated(exp.data, seed))
                per_seed.append(run_experiment(exp, fed=feds[seed], report=False).metrics)
        flash_drift._FED.update(feds)  # summarize() reads the dataset info from here
        row = summarize(per_seed, "sudden", 70)
        epochs = [m["client_epochs"] for run in per_seed for m in run if "client_epochs" in m]
        row["mean_local_epochs"] = statistics.fmean(e for rec in epochs for e in rec.values())
        out["variants"][name] = row
        out["trace_seed0"][name] = [
            {k: m[k] for k in ("round", *TRACE) if k in m} for m in per_seed[0] if 26 <= m["round"] <= 40
        ]
        print(
            f"{name:18s} pre {row['pre_drift_accuracy']:.4f} low {row['lowest_accuracy']:.4f} "
            f"recover {row['recovery_rounds']:.1f} auc {row['post_drift_auc']:.4f} epochs {row['mean_local_epochs']:.2f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    out["wall_s"] = time.perf_counter() - start
    path = Path(RESULTS) / "flash_drift_ablation.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
