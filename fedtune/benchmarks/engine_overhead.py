"""Engine overhead: the share of wall time a FedAvg run spends outside client training
and evaluation (sampling, aggregation, bookkeeping, metrics and checkpoint writing).

Setting: FedAvg, MNIST (5,000 real images), 100 clients, 50 per round, MLP.
Target: under 5 % in-process. Writes results/engine_overhead.json and prints the figure.

``--backend ray`` runs the same setting on local Ray actors (one per CPU) and writes
results/engine_overhead_ray.json: the per-round time beyond evaluation and beyond the
clients' own seconds shared out over the actors (what dispatching, the object store and
collecting results cost), next to the in-process round time.

    python benchmarks/engine_overhead.py [--rounds 20] [--backend ray]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fedtune.config import load_experiment
from fedtune.engine import run_experiment

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        exp = load_experiment(
            raw={
                "name": "overhead",
                "rounds": args.rounds,
                "clients_per_round": 50,
                "output": tmp,
                "data": {"name": "mnist", "num_clients": 100, "partition": "dirichlet", "alpha": 0.5},
                "model": {"name": "mlp"},
                "algorithm": {"name": "fedavg", "local_epochs": 1, "batch_size": 32, "lr": 0.05},
                "eval": {"every": 5},
                "checkpoint": {"every": 5},
                "backend": {"name": args.backend} if args.backend == "inprocess" else {"name": "ray", "cpus_per_client": args.threads},
            }
        )
        start = time.perf_counter()
        metrics = run_experiment(exp, overwrite=True).metrics
        total = time.perf_counter() - start
    wall = sum(m["wall_s"] for m in metrics)
    client = sum(m["client_s"] for m in metrics)
    evaluation = sum(m["eval_s"] for m in metrics)
    # per-round overhead is what the round loop spends besides clients and evaluation;
    # the run as a whole adds set-up (data, model) and the final report.
    result = {
        "benchmark": "engine_overhead",
        "setting": "FedAvg, MNIST 5,000 images, 100 clients (Dirichlet 0.5), 50 per round, MLP, 1 local epoch, batch 32",
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "round_wall_s": round(wall, 3),
        "client_s": round(client, 3),
        "eval_s": round(evaluation, 3),
        "overhead_fraction_of_rounds": round((wall - client - evaluation) / wall, 4),
        "run_total_s": round(total, 3),
        "overhead_fraction_incl_setup_and_report": round((total - client - evaluation) / total, 4),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    if args.backend == "ray":
        import os

        actors = max(1, (os.cpu_count() or 1) // args.threads)
        rounds_wall = wall - evaluation
        result.update({
            "benchmark": "engine_overhead_ray",
            "actors": actors,
            "round_s_mean_excl_eval": round(rounds_wall / len(metrics), 4),
            "ray_overhead_s_per_round": round((rounds_wall - client / actors) / len(metrics), 4),
            "ray_overhead_fraction_of_rounds": round((rounds_wall - client / actors) / rounds_wall, 4),
        })
        del result["overhead_fraction_of_rounds"], result["overhead_fraction_incl_setup_and_report"]
    RESULTS.mkdir(exist_ok=True)
    name = "engine_overhead.json" if args.backend == "inprocess" else "engine_overhead_ray.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
