"""Memory of one client step: Spry vs FedFGD vs backpropagation vs inference (issue 3).

Each method's step runs in a fresh subprocess (``fedtune.measure.memory``); the figure
compared is the peak of bytes held by tensors above the loaded model, counted with a
``TorchDispatchMode``; the process peak RSS is recorded beside it. Settings:

- all-MiniLM-L6-v2, LoRA r=8 on query/value plus the classification head, batch 16,
  sequence 128. Targets: Spry <= 0.4x backprop and <= 2.5x inference.
- SmolLM2-135M, LoRA r=8 on q_proj/v_proj, causal LM, batch 8, sequence 128; the
  forward-gradient methods compute the loss 16 positions at a time. Target: Spry <=
  0.15x backprop. Recorded too: Spry without chunking, and backprop with the same
  chunking (autograd keeps every chunk's softmax for the backward pass, so it helps less).

Spry's step differentiates one client's share (round-robin 1/10 of the LoRA groups, plus
the head); FedFGD's all trainables; both with K = 1 tangent and AdamW.

    python benchmarks/memory.py [--models minilm,smollm2]

CPU contention changes the time of a run, not the bytes measured; the time of one
more untracked pass per method is recorded as a ratio to backprop's, indicative only.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from fedtune.measure.memory import measure_memory, ratios

RESULTS = Path(__file__).parent / "results"

SETTINGS = {
    "minilm": {"batch": 16, "seq": 128, "targets": {"spry/backprop": 0.4, "spry/inference": 2.5}},
    "smollm2": {"batch": 8, "seq": 128, "loss_chunk_size": 16, "targets": {"spry/backprop": 0.15}},
}


def run(model: str) -> dict:
    s = SETTINGS[model]
    common = {"batch": s["batch"], "seq": s["seq"], "clients": 10, "num_tangents": 1,
              "model_options": {"peft": "lora", "r": 8}}
    results = measure_memory(model, ["inference", "backprop", "fedfgd", "spry"],
                             loss_chunk_size=s.get("loss_chunk_size"), **common)
    out = {
        "model": model,
        "settings": {k: v for k, v in s.items() if k != "targets"} | {"clients": 10, "num_tangents": 1, "peft": "lora", "r": 8},
        "results": results,
        "ratios": ratios(results),
        "targets": s["targets"],
    }
    out["met"] = {k: out["ratios"].get(k, float("inf")) <= v for k, v in s["targets"].items()}
    seconds = {r["method"]: r["pass_seconds"] for r in results}
    out["pass_seconds"] = seconds  # one more pass per method, untracked; compare as ratios only
    out["time_ratios"] = {f"{m}/backprop": round(seconds[m] / seconds["backprop"], 3) for m in seconds if m != "backprop"}
    if s.get("loss_chunk_size"):
        (unchunked,) = measure_memory(model, ["spry"], loss_chunk_size=None, **common)
        out["spry_without_loss_chunking"] = unchunked
        (chunked_backprop,) = measure_memory(model, ["backprop"], loss_chunk_size=s["loss_chunk_size"],
                                             chunk_methods=["backprop"], **common)
        out["backprop_with_loss_chunking"] = chunked_backprop
        peak = {r["method"]: r["peak_above_model"] for r in results}
        out["ratios"]["spry_unchunked/backprop"] = round(unchunked["peak_above_model"] / peak["backprop"], 4)
        out["ratios"]["spry/backprop_chunked"] = round(peak["spry"] / chunked_backprop["peak_above_model"], 4)
    out["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,smollm2")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        out = run(model)
        path = RESULTS / f"memory_{model}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"{model}: " + ", ".join(f"{r['method']} {r['peak_above_model'] / 2**20:.1f} MiB" for r in out["results"]))
        print(f"  ratios {out['ratios']}  targets met {out['met']}  -> {path}")
        print(f"  time per pass relative to backprop {out['time_ratios']}")


if __name__ == "__main__":
    main()
