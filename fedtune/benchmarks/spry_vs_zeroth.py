"""Spry's head-to-head with the zeroth-order baselines: speed to accuracy, and cost (issue 15).

Spry (Panchal et al., NeurIPS 2024, arXiv 2405.15551) claims to reach a target accuracy
1.2–20.3x sooner than zeroth-order methods and to end 5.2–13.5 points higher. Methods,
one run each per seed, every one evaluated the same way (the global model on the pooled
held-out test data of all clients):

- ``spry_k1``, ``spry_k4``: Spry with K = 1 and K = 4 tangents a step;
- ``fedfgd``: forward gradients over every trainable tensor (no split);
- ``fedmezo``: MeZO's SPSA, ε 1e-3, in-place seeded perturbation (Malladi et al. 2023);
- ``baffle``: K = 20 central differences, σ 1e-4, one step a round (Feng et al. 2023);
- ``fwdllm``: forward gradients on tangents chosen from a pool of 32 by |cos| with the
  previous global update, K paced between 1 and 8 (Xu et al. 2024);
- ``fedsgd``: one full-data backprop gradient step a round (FedAvg server);
- ``fedyogi_bp``: backprop local training with the FedYogi server.

For each: accuracy against rounds and against training seconds, rounds and seconds to a
common target (the best zeroth-order method's final accuracy), bytes up and down per
round and client, and the peak tensor bytes one client's round adds above the loaded model
(``fedtune.measure.memory.TensorMemoryTracker``, each method in a fresh process).

Modes:

- ``reduced`` (default; runs here in minutes): scikit-learn's digits, 20 clients with
  Dirichlet(1.0) label skew, 10 a round, MLP 64-64 (Spry's groups: its two hidden layers,
  the output layer shared), FedYogi server (η 1e-2, β1 .9, β2 .99, τ 1e-3) for every
  estimated-gradient method (FedSGD: FedAvg's, lr 1), one seed. Each method's client
  learning rate is the best of a small grid (``TUNE_GRID``) by final accuracy on a
  separate seed (``--tune-seed``, default 1); Spry K = 4 takes Spry K = 1's and FwdLLM
  takes FedFGD's (same client optimizer) so that the two slowest runs are not tuned.
- ``full``: sentence polarity (``mr``) at α 1.0 with the Spry convergence benchmark's
  setting (``spry_convergence.py``, its ``--scale``: reduced by default): MiniLM + LoRA
  r 1 with the same warm head for every method (that benchmark's federated linear probe,
  per seed), client AdamW with weight decay 0.01 for the backprop and forward-gradient
  methods, dropout on during the jvps, and ``spry_exact`` (the exact head gradient) besides;
  client learning rates from ``FULL_TUNE_GRID`` on the tuning seed. Hours on this CPU:
  give ``--seeds 0 1 2 --methods ...`` for the three-seed runs.

Resumable: each finished run (tuning runs too) is saved under ``results/spry_vs_zeroth/<mode>/``
and skipped next time if its experiment is the same (``--force`` reruns). The summary goes to
``results/spry_vs_zeroth_<mode>.json``, a plot beside it, and the table between the
``spry_vs_zeroth:<mode>`` markers of ``benchmarks/README.md``.

    python benchmarks/spry_vs_zeroth.py [--mode reduced] [--rounds 60] [--methods ...] [--seeds 0] [--no-tune]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE / "README.md"

YOGI = {"name": "fedyogi", "lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
FORWARD = {"optimizer": "adamw", "lr": 1e-2}
# name -> ([algorithm] table, [server] table); the reduced mode's settings
METHODS: dict[str, tuple[dict, dict]] = {
    "spry_k1": ({"name": "spry", **FORWARD}, YOGI),
    "spry_k4": ({"name": "spry", "num_tangents": 4, **FORWARD}, YOGI),
    "fedfgd": ({"name": "fedfgd", **FORWARD}, YOGI),
    "fedmezo": ({"name": "fedmezo", "lr": 1e-3}, YOGI),
    "baffle": ({"name": "baffle", "num_tangents": 20, "lr": 1e-2, "batch_size": 64}, YOGI),
    "fwdllm": ({"name": "fwdllm", "max_tangents": 8, "num_candidates": 32, **FORWARD}, YOGI),
    "fedsgd": ({"name": "fedsgd", "lr": 0.5, "batch_size": 64}, {"name": "fedavg", "lr": 1.0}),
    "fedyogi_bp": ({"name": "fedavg", **FORWARD}, YOGI),
}
ZEROTH = ("fedmezo", "baffle", "fwdllm")
# client learning rates tried on the tuning seed (best final accuracy wins); a method
# listed in SHARES takes the learning rate tuned for another (same client optimizer)
TUNE_GRID: dict[str, list[float]] = {
    "spry_k1": [3e-3, 1e-2, 3e-2, 1e-1],
    "fedfgd": [3e-3, 1e-2, 3e-2, 1e-1],
    "fedmezo": [1e-3, 3e-3, 1e-2, 3e-2],
    "baffle": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    "fedsgd": [0.1, 0.3, 1.0, 3.0],
    "fedyogi_bp": [3e-3, 1e-2, 3e-2],
}
SHARES = {"spry_k4": "spry_k1", "fwdllm": "fedfgd"}
# the full mode (mr, MiniLM + LoRA r 1 from the warm head): the Spry convergence benchmark's client settings
ADAMW = {"optimizer": "adamw", "weight_decay": 0.01}
FULL_METHODS: dict[str, tuple[dict, dict]] = {
    "spry_k1": ({"name": "spry", "share_head": False, "jvp_dropout": True, **ADAMW, "lr": 1e-4}, YOGI),
    "spry_k4": ({"name": "spry", "share_head": False, "jvp_dropout": True, "num_tangents": 4, **ADAMW, "lr": 1e-4}, YOGI),
    "spry_exact": ({"name": "spry", "head_gradient": "exact", "jvp_dropout": True, **ADAMW, "lr": 1e-4}, YOGI),
    "fedfgd": ({"name": "fedfgd", "jvp_dropout": True, **ADAMW, "lr": 1e-4}, YOGI),
    "fedmezo": ({"name": "fedmezo", "lr": 1e-4}, YOGI),
    "baffle": ({"name": "baffle", "num_tangents": 20, "lr": 1e-4}, YOGI),
    "fwdllm": ({"name": "fwdllm", "max_tangents": 8, "num_candidates": 32, **ADAMW, "lr": 1e-4}, YOGI),
    "fedsgd": ({"name": "fedsgd", "lr": 0.1, "batch_size": 64}, {"name": "fedavg", "lr": 1.0}),
    "fedyogi_bp": ({"name": "fedavg", **ADAMW, "lr": 1e-3}, YOGI),
}
FULL_TUNE_GRID: dict[str, list[float]] = {
    "spry_k1": [3e-5, 1e-4, 3e-4],
    "spry_exact": [3e-5, 1e-4, 3e-4],
    "fedfgd": [3e-5, 1e-4, 3e-4],
    "fedmezo": [1e-5, 1e-4, 1e-3],
    "baffle": [1e-5, 1e-4, 1e-3],
    "fedsgd": [0.03, 0.1, 0.3],
    "fedyogi_bp": [3e-4, 1e-3, 3e-3],
}
MODES = {"reduced": (METHODS, TUNE_GRID), "full": (FULL_METHODS, FULL_TUNE_GRID)}


def full_experiment(method: str, seed: int, rounds: int, out: str, lr: float | None = None, scale: str = "reduced") -> dict:
    """The full mode's experiment: ``spry_convergence``'s mr setting, from its warm head for ``seed``."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import spry_convergence as conv

    sc = conv.SCALES[scale]
    head, _ = conv.warm_head("mr", 1.0, seed, sc, scale, force=False)
    algorithm, server = FULL_METHODS[method]
    return {
        "name": method,
        "seed": seed,
        "rounds": rounds,
        "clients_per_round": 10,
        "output": out,
        "data": conv.data_table("mr", 1.0, sc),
        "model": {"name": "hf:minilm", "options": {**conv.LORA, "head_init": head}},
        "algorithm": {**conv.local(sc), **algorithm, **({"lr": lr} if lr is not None else {})},
        "server": server,
        "eval": {"every": sc.eval_every, "batch_size": 128},
        "checkpoint": {"every": 0},
    }


def experiment(method: str, seed: int, rounds: int, out: str, lr: float | None = None, mode: str = "reduced") -> dict:
    if mode == "full":
        return full_experiment(method, seed, rounds, out, lr)
    algorithm, server = METHODS[method]
    if lr is not None:
        algorithm = {**algorithm, "lr": lr}
    return {
        "name": method,
        "seed": seed,
        "rounds": rounds,
        "clients_per_round": 10,
        "output": out,
        "data": {"name": "digits", "num_clients": 20, "partition": "dirichlet", "alpha": 1.0},
        "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
        "algorithm": {"batch_size": 16, "local_epochs": 1, **algorithm},
        "server": server,
        "eval": {"every": 5},
        "checkpoint": {"every": 0},
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_one(method: str, seed: int, rounds: int, lr: float | None = None, mode: str = "reduced") -> dict:
    """Train ``method`` once; curves, bytes and seconds from the run's metrics."""
    import torch

    from fedtune.config import load_experiment
    from fedtune.engine import run_experiment

    torch.set_num_threads(1)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        exp = load_experiment(raw=experiment(method, seed, rounds, f"{tmp}/run", lr, mode))
        start = time.perf_counter()
        metrics = run_experiment(exp, report=False).metrics
        total = time.perf_counter() - start
    train_s, curve = 0.0, []
    for m in metrics:
        train_s += m["wall_s"] - m["eval_s"]  # the round without its evaluation
        if "test_accuracy" in m:
            curve.append({"round": m["round"], "train_s": round(train_s, 3), "test_accuracy": m["test_accuracy"]})
    clients = sum(len(m["client_bytes_up"]) for m in metrics)
    tangents = [v for m in metrics for v in m.get("client_tangents", {}).values()]
    return {
        "method": method,
        "seed": seed,
        "rounds": rounds,
        "experiment": experiment(method, seed, rounds, "-", lr, mode),
        "curve": curve,
        "final_test_accuracy": curve[-1]["test_accuracy"],
        "train_s": round(train_s, 2),
        "run_s": round(total, 2),
        "bytes_up_per_client_round": sum(m["bytes_up"] for m in metrics) / clients,
        "bytes_down_per_client_round": sum(m["bytes_down"] for m in metrics) / clients,
        "mean_tangents_per_step": round(sum(tangents) / len(tangents), 3) if tangents else None,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def cached_run(path: Path, method: str, seed: int, rounds: int, lr: float | None, force: bool, mode: str = "reduced") -> dict:
    """The saved run at ``path`` if it was made with the same experiment, else a new one (saved)."""
    if path.exists() and not force:
        saved = json.loads(path.read_text())
        if saved["experiment"] == experiment(method, seed, rounds, "-", lr, mode):
            print(f"{path.stem}: done before ({saved['final_test_accuracy']:.3f}), skipped", flush=True)
            return saved
    result = run_one(method, seed, rounds, lr, mode)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{path.stem}: {result['final_test_accuracy']:.3f} in {result['train_s']:.1f} s "
          f"(load {result['load_average_before']})", flush=True)
    return result


def tune(methods: list[str], seed: int, rounds: int, folder: Path, force: bool, mode: str = "reduced") -> tuple[dict[str, float], dict]:
    """Each method's client learning rate: the grid point with the best final accuracy on ``seed``."""
    chosen, trials = {}, {}
    grid = MODES[mode][1]
    for method in dict.fromkeys(SHARES.get(m, m) for m in methods):
        if method not in grid:
            continue
        finals = {}
        for lr in grid[method]:
            path = folder / f"tune-{method}-lr{lr:g}-s{seed}.json"
            finals[lr] = cached_run(path, method, seed, rounds, lr, force, mode)["final_test_accuracy"]
        chosen[method] = max(finals, key=lambda lr: (finals[lr], -lr))
        trials[method] = {f"{lr:g}": acc for lr, acc in finals.items()}
    return {m: chosen[SHARES.get(m, m)] for m in methods if SHARES.get(m, m) in chosen}, trials


def measure_client(method: str, seed: int, lr: float | None = None, mode: str = "reduced") -> dict:
    """Peak tensor bytes one client's round adds above the loaded model (this process)."""
    import gc

    import torch

    from fedtune.config import load_experiment
    from fedtune.engine.loop import Run
    from fedtune.engine.sampling import sample_clients
    from fedtune.measure.memory import TensorMemoryTracker

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        exp = load_experiment(raw=experiment(method, seed, 1, f"{tmp}/run", lr, mode))
        run = Run(exp)
        # round 1 as the engine deals it (Spry splits the groups over all the round's clients)
        sampled = sample_clients(seed, 1, run.federation.num_clients, exp.clients_per_round)
        client_id = sampled[0]
        task = run.algorithm.configure_round(1, sampled, run.global_state, seed)[client_id]
        data = run.federation.client_data(client_id, 1)
        client = run.worker.client
        gc.collect()
        with TensorMemoryTracker() as tracker, tracker.phase("client"):
            result, _ = client.fit(run.model, run.global_state, data, task)
        weights = sum(p.numel() * p.element_size() for p in run.model.parameters())
        return {"peak_above_model": tracker.phases["client"]["peak_above_start"], "model_bytes": weights,
                "steps": result.metrics.get("steps"), "tensors_trained": len(task.tensor_names or run.global_state)}


def client_memory(method: str, seed: int, lr: float | None = None, mode: str = "reduced") -> dict:
    """:func:`measure_client` in a fresh subprocess (no allocator state carried over)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import spry_vs_zeroth as b; "
            "print(json.dumps(b.measure_client(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5])))")
    proc = subprocess.run([sys.executable, "-c", code, str(HERE), method, str(seed), json.dumps(lr), mode],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory of {method}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def to_target(curve: list[dict], target: float) -> tuple[int | None, float | None]:
    """Round and training seconds of the first evaluation at or above ``target``."""
    for point in curve:
        if point["test_accuracy"] >= target - 1e-12:
            return point["round"], point["train_s"]
    return None, None


def summarize(runs: list[dict], memory: dict[str, dict]) -> dict:
    by_method: dict[str, list[dict]] = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    finals = {m: sum(r["final_test_accuracy"] for r in rs) / len(rs) for m, rs in by_method.items()}
    zeroth = {m: finals[m] for m in ZEROTH if m in finals}
    best_zeroth = max(zeroth, key=zeroth.get) if zeroth else None
    target = zeroth[best_zeroth] if best_zeroth else None
    rows = {}
    for method, rs in by_method.items():
        first = rs[0]
        rounds_s = [to_target(r["curve"], target) if target is not None else (None, None) for r in rs]
        reached = [x for x in rounds_s if x[0] is not None]
        rows[method] = {
            "client_lr": first["experiment"]["algorithm"].get("lr"),
            "final_test_accuracy": round(finals[method], 4),
            "seeds": [r["seed"] for r in rs],
            "rounds_to_target": (sum(x[0] for x in reached) / len(reached)) if reached else None,
            "seconds_to_target": round(sum(x[1] for x in reached) / len(reached), 2) if reached else None,
            "reached_target": f"{len(reached)}/{len(rs)}",
            "train_s": round(sum(r["train_s"] for r in rs) / len(rs), 2),
            "bytes_up_per_client_round": first["bytes_up_per_client_round"],
            "bytes_down_per_client_round": first["bytes_down_per_client_round"],
            "mean_tangents_per_step": first["mean_tangents_per_step"],
            "client_peak_above_model": memory.get(method, {}).get("peak_above_model"),
            "curve": first["curve"],
        }
    return {"best_zeroth_order": best_zeroth, "target_accuracy": target, "methods": rows}


def _kb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1024:,.1f}"


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def table(summary: dict, meta: dict) -> str:
    target = summary["target_accuracy"]
    lines = [
        f"Common target: {target:.3f} test accuracy, the final accuracy of the best zeroth-order "
        f"method ({summary['best_zeroth_order']})." if target is not None else "No zeroth-order method ran.",
        "",
        "| method | client lr | final acc | rounds to target | train s to target | train s, all rounds "
        "| KiB up / client·round | KiB down / client·round | tangents / step | client peak above model (KiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary["methods"].items():
        cells = [
            method,
            _num(row.get("client_lr"), "g"),
            f"{row['final_test_accuracy']:.3f}",
            f"{_num(row['rounds_to_target'], '.0f')} ({row['reached_target']})",
            _num(row["seconds_to_target"], ".1f"),
            f"{row['train_s']:.1f}",
            _kb(row["bytes_up_per_client_round"]),
            _kb(row["bytes_down_per_client_round"]),
            _num(row["mean_tangents_per_step"], "g"),
            _kb(row["client_peak_above_model"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if meta["tuning"]["seed"] is not None:
        tried = "; ".join(f"{m}: " + ", ".join(f"{lr} → {acc:.3f}" for lr, acc in accs.items())
                          for m, accs in meta["tuning"]["final_accuracy_by_lr"].items())
        shares = ", ".join(f"{a} takes {b}'s" for a, b in meta["tuning"]["shares"].items())
        lines += ["", f"Client learning rates chosen on seed {meta['tuning']['seed']} (final accuracy by lr: {tried}; {shares})."]
    lines += ["", f"Measured {meta['date']} ({meta['rounds']} rounds, seeds {meta['seeds']}); load average "
              f"{meta['load_average_start']} at the start, {meta['load_average_end']} at the end; "
              f"`{meta['command']}`."]
    return "\n".join(lines)


def write_readme_block(mode: str, text: str) -> None:
    begin, end = f"<!-- spry_vs_zeroth:{mode}:begin -->", f"<!-- spry_vs_zeroth:{mode}:end -->"
    readme = README.read_text()
    if begin not in readme or end not in readme:
        print(f"(no {begin} ... {end} block in {README.name}; table not written there)")
        return
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_round, by_time) = plt.subplots(1, 2, figsize=(12, 4))
    for method, row in summary["methods"].items():
        xs = [p["round"] for p in row["curve"]]
        ts = [p["train_s"] for p in row["curve"]]
        ys = [p["test_accuracy"] for p in row["curve"]]
        by_round.plot(xs, ys, marker="o", markersize=3, label=method)
        by_time.plot(ts, ys, marker="o", markersize=3, label=method)
    for ax, label in ((by_round, "round"), (by_time, "training seconds (2 shared cores)")):
        if summary["target_accuracy"] is not None:
            ax.axhline(summary["target_accuracy"], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
    by_round.set_title(title)
    by_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["reduced", "full"], default="reduced")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=None, choices=list(dict.fromkeys([*METHODS, *FULL_METHODS])),
                        help="default: every method of the mode")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method client memory measurement")
    parser.add_argument("--force", action="store_true", help="rerun runs whose results exist")
    parser.add_argument("--tune-seed", type=int, default=1, help="seed of the learning-rate grid (kept apart from --seeds)")
    parser.add_argument("--no-tune", action="store_true", help="use the hand-set learning rates of METHODS")
    args = parser.parse_args()
    table_of_mode = MODES[args.mode][0]
    args.methods = args.methods or list(table_of_mode)
    unknown = [m for m in args.methods if m not in table_of_mode]
    if unknown:
        print(f"spry_vs_zeroth: --methods {' '.join(unknown)}: not in the {args.mode} mode; it has {', '.join(table_of_mode)}",
              file=sys.stderr)
        return 2
    folder = RESULTS / "spry_vs_zeroth" / args.mode
    folder.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    lrs, trials = ({}, {}) if args.no_tune else tune(args.methods, args.tune_seed, args.rounds, folder, args.force, args.mode)
    runs = [cached_run(folder / f"{method}-s{seed}.json", method, seed, args.rounds, lrs.get(method), args.force, args.mode)
            for method in args.methods for seed in args.seeds]
    memory: dict[str, dict] = {}
    if not args.no_memory:
        for method in args.methods:
            path = folder / f"{method}-memory.json"
            if path.exists() and not args.force:
                memory[method] = json.loads(path.read_text())
                continue
            memory[method] = client_memory(method, args.seeds[0], lrs.get(method), args.mode)
            path.write_text(json.dumps(memory[method], indent=1) + "\n")
            print(f"{method}: client peak {memory[method]['peak_above_model'] / 1024:.1f} KiB above the model", flush=True)
    summary = summarize(runs, memory)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "seeds": args.seeds,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": "python benchmarks/spry_vs_zeroth.py " + " ".join(sys.argv[1:]),
        "tuning": {"seed": None if args.no_tune else args.tune_seed, "final_accuracy_by_lr": trials, "shares": SHARES},
    }
    out = {"benchmark": "spry_vs_zeroth", "mode": args.mode, "meta": meta, **summary}
    (RESULTS / f"spry_vs_zeroth_{args.mode}.json").write_text(json.dumps(out, indent=1) + "\n")
    titles = {"reduced": "digits, MLP 64-64, 20 clients Dirichlet(1.0)",
              "full": "mr, MiniLM + LoRA r1 from the warm head, 20 clients Dirichlet(1.0)"}
    plot(summary, RESULTS / f"spry_vs_zeroth_{args.mode}.png", titles[args.mode])
    text = table(summary, meta)
    write_readme_block(args.mode, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
