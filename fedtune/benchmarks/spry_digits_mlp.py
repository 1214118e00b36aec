"""Spry vs FedFGD vs backprop where forward gradients can move in few steps.

The language-model benchmark (``spry_convergence.py``) leaves every forward-gradient
method at chance within its budget. This one measures the mechanism Spry relies on —
splitting the trainable tensors among the round's clients lowers the dimension each
forward gradient is estimated over — on a small problem where both forward-gradient
methods learn: an MLP (64-64) on scikit-learn's digits, 20 clients with Dirichlet(1.0)
label skew, 10 per round, FedYogi server (η 1e-2, β1 .9, β2 .99, τ 1e-3) for every
method, AdamW clients, K = 1 Gaussian tangent. Spry's groups are the MLP's layers with
the output layer shared (``split_trainables``'s fallback for non-PEFT models).

    python benchmarks/spry_digits_mlp.py [--seeds 0 1 2] [--rounds 100]

Writes results/spry_digits_mlp.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from fedtune.config import load_experiment
from fedtune.data import load_federated
from fedtune.engine import run_experiment

RESULTS = Path(__file__).parent / "results"
METHODS = {"spry": "spry", "fedfgd": "fedfgd", "fedyogi_bp": "fedavg"}
SETTINGS = {"1 epoch, lr 1e-2": (1, 1e-2), "5 epochs, lr 3e-3": (5, 3e-3)}


def experiment(method: str, seed: int, epochs: int, lr: float, rounds: int, out: str):
    return load_experiment(
        raw={
            "name": method,
            "seed": seed,
            "rounds": rounds,
            "clients_per_round": 10,
            "output": out,
            "data": {"name": "digits", "num_clients": 20, "partition": "dirichlet", "alpha": 1.0},
            "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
            "algorithm": {"name": METHODS[method], "optimizer": "adamw", "lr": lr, "batch_size": 16, "local_epochs": epochs},
            "server": {"name": "fedyogi", "lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
            "eval": {"every": 10},
            "checkpoint": {"every": 0},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table: dict = {}
    for setting, (epochs, lr) in SETTINGS.items():
        table[setting] = {}
        for method in METHODS:
            finals, curves = [], []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    exp = experiment(method, seed, epochs, lr, args.rounds, tmp)
                    metrics = run_experiment(exp, fed=load_federated(exp.data, seed), report=False).metrics
                curve = [(m["round"], m["test_accuracy"]) for m in metrics if "test_accuracy" in m]
                curves.append(curve)
                finals.append(curve[-1][1])
                up = metrics[-1]["bytes_up"]
            table[setting][method] = {
                "final_test_accuracy_mean": round(statistics.mean(finals), 4),
                "final_test_accuracy_sd": round(statistics.stdev(finals), 4) if len(finals) > 1 else 0.0,
                "per_seed": finals,
                "bytes_up_per_round": up,
                "curves": curves,
            }
            print(f"{setting:18s} {method:11s} {statistics.mean(finals):.4f} ± {table[setting][method]['final_test_accuracy_sd']:.4f}", flush=True)
    result = {
        "benchmark": "spry_digits_mlp",
        "setting": "digits, 20 clients Dirichlet(1.0), 10 per round, MLP 64-64, FedYogi server, AdamW clients batch 16, K=1",
        "rounds": args.rounds,
        "seeds": args.seeds,
        "results": table,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spry_digits_mlp.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
