"""Spry's convergence against FedFGD and backprop LoRA (FedAvg, FedYogi) on MiniLM.

Setting (issue 3; Spry, Panchal et al., NeurIPS 2024, arXiv 2405.15551): which play a
Shakespeare speech comes from (``shakespeare_play``), all-MiniLM-L6-v2 with LoRA r 8 on
query/value plus the classification head, 20 clients with Dirichlet(α) label skew for
α = 1.0 and 0.1, 10 clients per round, the same rounds, client optimizer (AdamW) and
evaluation for every method (global model on the pooled held-out test data of all clients):

- ``spry``: weights split over the round's clients, forward gradients (K = 1), FedYogi server
  (β1 .9, β2 .99, τ 1e-3, η 1e-2: the paper's);
- ``fedfgd``: forward gradients over all trainables, same server;
- ``fedavg_bp``: backprop LoRA, FedAvg server;  ``fedyogi_bp``: backprop LoRA, FedYogi server;
- ``spry_binit``: Spry with LoRA B initialized N(0, 0.01²) instead of zeros (DESIGN asks
  whether it speeds convergence: with B = 0 the true gradient of A is zero at the start);
  at the first α only;
- ``spry_head_group`` (``--methods spry_head_group --merge``): Spry with the head as one
  more layer group instead of trained by every client.

Targets: Spry within 5 points of FedYogi-backprop at equal rounds, clearly above FedFGD.
Each α (and the B-init variant) runs in its own process with one torch thread (these shared 2-core machines are
oversubscribed; two threads per process were 3-10x slower). Writes
``results/spry_convergence.json`` and accuracy-against-rounds plots beside it.

    python benchmarks/spry_convergence.py [--rounds 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

METHODS: dict[str, dict] = {
    "spry": {"algorithm": {"name": "spry"}, "server": "fedyogi"},
    "fedfgd": {"algorithm": {"name": "fedfgd"}, "server": "fedyogi"},
    "fedavg_bp": {"algorithm": {"name": "fedavg"}, "server": "fedavg"},
    "fedyogi_bp": {"algorithm": {"name": "fedavg"}, "server": "fedyogi"},
    "spry_binit": {"algorithm": {"name": "spry"}, "server": "fedyogi", "lora_b_init_std": 1e-2},
    "spry_head_group": {"algorithm": {"name": "spry", "share_head": False}, "server": "fedyogi"},
}
DEFAULT_METHODS = ["spry", "fedfgd", "fedavg_bp", "fedyogi_bp", "spry_binit"]
YOGI = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}


def experiment(method: str, alpha: float, args: argparse.Namespace, out: str) -> dict:
    spec = METHODS[method]
    model_options = {"peft": "lora", "r": 8, "lora_alpha": 16}
    if "lora_b_init_std" in spec:
        model_options["lora_b_init_std"] = spec["lora_b_init_std"]
    return {
        "name": f"{method}-a{alpha}",
        "seed": args.seed,
        "rounds": args.rounds,
        "clients_per_round": 10,
        "output": out,
        "data": {
            "name": "shakespeare_play",
            "num_clients": 20,
            "partition": "dirichlet",
            "alpha": alpha,
            "val_fraction": 0.1,
            "test_fraction": 0.2,
            "options": {"tokenizer": "minilm", "num_plays": args.plays, "max_per_play": args.per_play, "max_length": args.seq},
        },
        "model": {"name": "hf:minilm", "options": model_options},
        "algorithm": {
            **spec["algorithm"],
            "optimizer": "adamw",
            "lr": args.lr,
            "local_epochs": 1,
            "batch_size": args.batch,
            "max_steps": args.steps,
        },
        "server": {"name": spec["server"], **(YOGI if spec["server"] == "fedyogi" else {"lr": 1.0})},
        "eval": {"every": args.eval_every, "batch_size": 64},
        "checkpoint": {"every": 0},
    }


def run_alpha(alpha: float, methods: list[str], args: argparse.Namespace) -> dict[str, dict]:
    import torch

    from fedtune.config import load_experiment
    from fedtune.data import load_federated
    from fedtune.engine import run_experiment

    torch.set_num_threads(1)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fed = None
        for method in methods:
            exp = load_experiment(raw=experiment(method, alpha, args, f"{tmp}/{method}"))
            fed = fed or load_federated(exp.data, exp.seed)  # one partition for every method
            start = time.perf_counter()
            metrics = run_experiment(exp, overwrite=True, fed=fed, report=False).metrics
            acc = [(m["round"], m["test_accuracy"]) for m in metrics if "test_accuracy" in m]
            runs[method] = {
                "alpha": alpha,
                "rounds": [r for r, _ in acc],
                "test_accuracy": [a for _, a in acc],
                "test_loss": [m["test_loss"] for m in metrics if "test_loss" in m],
                "train_loss": [m["train_loss"] for m in metrics],
                "bytes_up_per_round": sum(m["bytes_up"] for m in metrics) / len(metrics),
                "bytes_down_per_round": sum(m["bytes_down"] for m in metrics) / len(metrics),
                "client_s": sum(m["client_s"] for m in metrics),
                "wall_s": round(time.perf_counter() - start, 1),
            }
            print(f"alpha={alpha} {method}: acc {runs[method]['test_accuracy']} ({runs[method]['wall_s']} s)", flush=True)
    return runs


def _job(job: tuple[float, list[str], argparse.Namespace]) -> tuple[float, dict]:
    alpha, methods, args = job
    return alpha, run_alpha(alpha, methods, args)


def final(run: dict, last: int = 2) -> float:
    """Mean test accuracy of the last ``last`` evaluations (less noisy than the last one)."""
    return sum(run["test_accuracy"][-last:]) / len(run["test_accuracy"][-last:])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted(results, reverse=True)
    fig, axes = plt.subplots(1, len(alphas), figsize=(6 * len(alphas), 4), squeeze=False)
    for ax, alpha in zip(axes[0], alphas, strict=True):
        for method, run in results[alpha].items():
            ax.plot(run["rounds"], run["test_accuracy"], marker="o", markersize=3, label=method)
        ax.set_title(f"shakespeare_play, MiniLM + LoRA, Dirichlet α = {alpha}")
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (global model)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cosine(a: dict, b: dict) -> float:
    import torch

    x = torch.cat([a[n].flatten() for n in a])
    y = torch.cat([b[n].flatten() for n in a])
    return float(x @ y / (x.norm() * y.norm()))


def gradient_alignment(args: argparse.Namespace, repeats: int = 6) -> dict:
    """Cosine between one round's forward-gradient estimate and the true gradient.

    On one batch of the α = 1.0 data and the initial model (LoRA B initialized N(0, 0.01²)
    so that A's gradient is not zero): the true gradient of every trainable tensor by
    backprop; one round of Spry (each of 10 clients one jvp over its share, each tensor
    averaged over the clients that trained it, as the server does), the same with the
    head as one more group instead of shared, and one round of FedFGD (10 clients each
    one jvp over all tensors, averaged), each with ``repeats`` different seeds.
    """
    import statistics

    import torch

    from fedtune.algorithms.spry import Spry, SpryParams
    from fedtune.config import load_experiment
    from fedtune.data import load_federated
    from fedtune.grad import backprop_gradient, forward_gradient, model_loss
    from fedtune.models import build_model
    from fedtune.server import new_optimizer

    torch.set_num_threads(1)
    raw = experiment("spry_binit", 1.0, args, "/tmp/unused")
    exp = load_experiment(raw=raw)
    fed = load_federated(exp.data, exp.seed)
    model = build_model(exp.model.name, fed.info, exp.model.options, exp.seed)
    batch = next(fed.clients[0].train.batches(args.batch))
    theta = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = model_loss(model, batch, dropout=False)
    _, true = backprop_gradient(loss, theta)
    splits = {}
    for key, share_head in (("spry", True), ("spry_head_as_group", False)):
        algo = Spry(SpryParams(share_head=share_head), new_optimizer("fedavg"))
        algo.setup(model, fed.info)
        splits[key] = algo.assignments(10)
    splits["fedfgd"] = [list(theta)] * 10
    out: dict[str, list[float]] = {}
    for key, shares in splits.items():
        for r in range(repeats):
            sums = {n: torch.zeros_like(t) for n, t in theta.items()}
            counts = dict.fromkeys(theta, 0)
            for c, share in enumerate(shares):
                est = forward_gradient(loss, {n: theta[n] for n in share}, args.seed, (r, c, 0)).grads
                out.setdefault(f"{key}_client", []).append(_cosine(est, true))
                for n, g in est.items():
                    sums[n] += g
                    counts[n] += 1
            out.setdefault(f"{key}_round", []).append(_cosine({n: sums[n] / max(counts[n], 1) for n in theta}, true))
    head = set.intersection(*(set(s) for s in splits["spry"]))
    share_of_head = float(sum(true[n].square().sum() for n in head) / sum(t.square().sum() for t in true.values()))
    dims = {"all_trainables": sum(t.numel() for t in theta.values()),
            "spry_client_mean": sum(sum(theta[n].numel() for n in s) for s in splits["spry"]) / 10,
            "head_share_of_squared_gradient_norm": round(share_of_head, 4)}
    return {
        "what": "cosine(estimate, backprop gradient); *_client: one jvp on one client's share "
                "(against the true gradient of that share); *_round: 10 clients' jvps aggregated as the server does",
        "dimensions": dims,
        **{k: {"mean": round(statistics.mean(v), 4), "sd": round(statistics.stdev(v), 4), "n": len(v)} for k, v in out.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--plays", type=int, default=4, help="classes")
    parser.add_argument("--per-play", type=int, default=150, help="speeches per play")
    parser.add_argument("--seq", type=int, default=32, help="tokens per speech")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="local steps per client per round")
    parser.add_argument("--lr", type=float, default=1e-3, help="client AdamW learning rate (every method)")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 methods: a smoke run, results not saved")
    parser.add_argument("--name", default="spry_convergence", help="stem of the results files")
    parser.add_argument("--process-per-method", action="store_true", help="one process per (α, method) instead of per α")
    parser.add_argument("--merge", action="store_true", help="add these runs to the saved results instead of replacing them")
    parser.add_argument("--alignment", action="store_true", help="only measure gradient alignment and add it to the results")
    args = parser.parse_args()
    if args.alignment:
        path = RESULTS / "spry_convergence.json"
        data = json.loads(path.read_text()) if path.exists() else {"benchmark": "spry_convergence"}
        data["gradient_alignment"] = gradient_alignment(args)
        print(json.dumps(data["gradient_alignment"], indent=2))
        path.write_text(json.dumps(data, indent=2) + "\n")
        return
    if args.quick:
        args.rounds, args.methods, args.alphas, args.eval_every = 2, ["spry", "fedavg_bp"], [1.0], 1
    # the B-init variant runs at the first α only, in a process of its own
    main_methods = [m for m in args.methods if m != "spry_binit"]
    if args.process_per_method:
        jobs = [(alpha, [m], args) for alpha in args.alphas for m in main_methods]
    else:
        jobs = [(alpha, main_methods, args) for alpha in args.alphas]
    if "spry_binit" in args.methods:
        jobs.append((args.alphas[0], ["spry_binit"], args))
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        results: dict[float, dict] = {}
        for alpha, runs in pool.map(_job, jobs):
            results.setdefault(alpha, {}).update(runs)
    total = time.perf_counter() - start
    path = RESULTS / f"{args.name}.json"
    previous = json.loads(path.read_text()) if args.merge and path.exists() else {}
    for key, run in previous.get("runs", {}).items():
        method, alpha = key.rsplit("@", 1)
        results.setdefault(float(alpha), {}).setdefault(method, run)
    summary = {}
    for alpha, runs in results.items():
        row = {m: round(final(r), 4) for m, r in runs.items()}
        if "spry" in runs and "fedyogi_bp" in runs:
            row["spry_minus_fedyogi_bp_points"] = round(100 * (final(runs["spry"]) - final(runs["fedyogi_bp"])), 1)
        if "spry" in runs and "fedfgd" in runs:
            row["spry_minus_fedfgd_points"] = round(100 * (final(runs["spry"]) - final(runs["fedfgd"])), 1)
        if "spry" in runs and "spry_head_group" in runs:
            row["head_group_minus_spry_points"] = round(100 * (final(runs["spry_head_group"]) - final(runs["spry"])), 1)
        if "spry" in runs and "spry_binit" in runs:
            row["binit_minus_spry_points"] = round(100 * (final(runs["spry_binit"]) - final(runs["spry"])), 1)
        summary[str(alpha)] = row
    out = {
        **{k: v for k, v in previous.items() if k == "gradient_alignment"},
        "benchmark": args.name,
        "setting": (
            f"shakespeare_play ({args.plays} plays, {args.per_play} speeches each, {args.seq} tokens), "
            f"all-MiniLM-L6-v2 + LoRA r8 query/value + head, 20 clients Dirichlet(alpha), 10 per round, "
            f"{args.rounds} rounds, {args.steps} local AdamW steps of batch {args.batch} (lr {args.lr}) per client per round, "
            "K=1 Gaussian tangent, FedYogi server eta 1e-2 beta1 .9 beta2 .99 tau 1e-3 (FedAvg server lr 1 for fedavg_bp); "
            f"accuracy of the global model on the pooled test split (20% of each client), every {args.eval_every} rounds"
        ),
        "final_is": "mean test accuracy of the last 2 evaluations",
        "summary": summary,
        "runs": {f"{m}@{a}": r for a, runs in results.items() for m, r in runs.items()},
        "total_wall_s": round(total + previous.get("total_wall_s", 0.0), 1),
        "torch_threads_per_process": 1,
        "processes": len(jobs),
        "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU",
    }
    print(json.dumps(summary, indent=2))
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    plot(results, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name} ({total:.0f} s)")


if __name__ == "__main__":
    main()
