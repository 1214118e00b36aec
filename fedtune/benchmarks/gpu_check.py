"""One round of every registered algorithm on a GPU, for whoever has one.

The test suite runs on CPU machines; this script checks that nothing in the round loop,
the client procedures, the server optimizers or evaluation assumes the CPU: every
algorithm runs one round with ``device = "cuda"`` (digits, MLP), and the metrics must be
finite. Writes results/gpu_check.json and prints a table.

    python benchmarks/gpu_check.py [--device cuda:0]   (--device cpu: the same checks here)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from fedtune.algorithms import ALGORITHMS
from fedtune.config import load_experiment
from fedtune.engine import run_experiment

RESULTS = Path(__file__).parent / "results"
SERVER = {"flash": {"name": "flash", "lr": 0.05}, "spry": {"name": "fedyogi", "lr": 0.01}, "fedfgd": {"name": "fedyogi", "lr": 0.01}}
LOCAL = {"spry": {"lr": 1e-3, "max_steps": 3}, "fedfgd": {"lr": 1e-3, "max_steps": 3}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: this machine has no CUDA GPU; run it where torch.cuda.is_available() is True")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ALGORITHMS.names():
            exp = load_experiment(raw={
                "name": name, "rounds": 1, "clients_per_round": 4, "device": args.device, "output": f"{tmp}/{name}",
                "data": {"name": "digits", "num_clients": 8},
                "model": {"name": "mlp", "options": {"hidden": [64]}},
                "algorithm": {"name": name, "batch_size": 16, **LOCAL.get(name, {})},
                "server": SERVER.get(name, {"name": "fedavg"}),
                "eval": {"finetune_epochs": 1, "personalized_clients": 2},
            })
            start = time.perf_counter()
            m = run_experiment(exp, report=False).metrics[-1]
            ok = all(math.isfinite(m[k]) for k in ("train_loss", "test_loss", "test_accuracy")) and not m["failures"]
            rows.append({"algorithm": name, "ok": ok, "test_accuracy": m["test_accuracy"], "failures": m["failures"],
                         "seconds": round(time.perf_counter() - start, 2)})
            print(f"{name:10s} {'ok' if ok else 'FAILED':6s} acc {m['test_accuracy']:.3f}  {rows[-1]['seconds']:.1f} s")
    RESULTS.mkdir(exist_ok=True)
    if args.device.startswith("cuda"):
        out = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(torch.device(args.device)), "rows": rows}
        (RESULTS / "gpu_check.json").write_text(json.dumps(out, indent=1) + "\n")
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
