"""The round loop: sampling, client training, aggregation, evaluation, checkpoints, metrics.

The engine owns all I/O of a run; algorithms own none. A run folder holds::

    config.toml      the resolved experiment
    metrics.jsonl    one JSON object per round
    checkpoints/     round_NNNNN.pt (global state + server optimizer state)
    report.md        plots and a summary, written at the end
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from fedtune.algorithms import ALGORITHMS, Algorithm, ClientResult, ClientTask
from fedtune.config import Experiment, load_experiment, parse_override
from fedtune.data import FederatedDataset
from fedtune.engine import evaluate as evaluation
from fedtune.engine.backend import (
    BACKENDS,
    Backend,
    ClientFailure,
    first_nonfinite,
    nan_metric,
    nonfinite_tensor,
)
from fedtune.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fedtune.engine.client_state import CLIENT_STATE_STORES
from fedtune.engine.devices import resolve_device
from fedtune.engine.federation import Federation
from fedtune.engine.sampling import sample_clients
from fedtune.engine.worker import ClientWorker
from fedtune.errors import ConfigError, RunError, RunInterrupted
from fedtune.models import build_model
from fedtune.models.base import State, get_trainable, set_trainable
from fedtune.records import export_model, run_header
from fedtune.seeding import seed_global_rng
from fedtune.server import new_optimizer

METRICS_FILE = "metrics.jsonl"
EVALUATION_PREFIXES = ("test_", "personalized_")  # metrics that only evaluation rounds carry
CONFIG_FILE = "config.toml"


@dataclass
class RunResult:
    run_dir: Path
    metrics: list[dict] = field(default_factory=list)
    experiment: Experiment | None = None


def _round_floats(obj, digits: int = 8):
    """Fixed precision so metrics files compare byte for byte across runs."""
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v, digits) for v in obj]
    return obj


class Run:
    """One experiment's state between rounds; ``run_experiment`` drives it.

    The server side lives here (the algorithm's server object, the global state, the
    client-state store); clients run on the configured backend, each through a
    :class:`~fedtune.engine.worker.ClientWorker`.
    """

    def __init__(self, exp: Experiment, fed: FederatedDataset | None = None) -> None:
        self.exp = exp
        self.device = resolve_device(exp.device)
        self.federation = Federation(exp, fed)
        if exp.clients_per_round > self.federation.num_clients:
            raise ConfigError(
                f"clients_per_round: {exp.clients_per_round} exceeds the {self.federation.num_clients} clients of the partition"
            )
        algo_cls = ALGORITHMS.get(exp.algorithm.name)
        params = algo_cls.Params(**exp.algorithm.hyperparameters())
        self.algorithm: Algorithm = algo_cls(params, new_optimizer(exp.server.name, **exp.server.arguments()))
        client = self.algorithm.client()
        model = build_model(exp.model.name, self.federation.info, exp.model.options, exp.seed)
        self.model = client.prepare_model(model, self.federation.info, exp.seed).to(self.device)
        self.algorithm.setup(self.model, self.federation.info)
        self.global_state: State = get_trainable(self.model)
        self.client_states = CLIENT_STATE_STORES.get(exp.client_state)(exp.run_dir())
        self.stateful = algo_cls.Client.stateful
        self.worker = ClientWorker(client, self.model, self.federation, self.device)
        self.backend: Backend | None = None  # started by start(), after the run folder exists

    def start(self) -> None:
        """Start the backend (a Ray backend starts or joins Ray here)."""
        if self.backend is None:
            self.backend = BACKENDS.get(self.exp.backend.name)(self.exp, self.worker)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    # -- one round ---------------------------------------------------------------------
    def round(self, rnd: int) -> dict:
        exp = self.exp
        start = time.perf_counter()
        self.start()
        sampled = sample_clients(exp.seed, rnd, self.federation.num_clients, exp.clients_per_round)
        tasks = self.algorithm.configure_round(rnd, sampled, self.global_state, exp.seed)
        down = {str(t.client_id): self.algorithm.bytes_down(t, self.global_state) for t in tasks.values()}
        states = self.client_states.load(list(tasks)) if self.stateful else {}
        runs = self.backend.run(list(tasks.values()), self.global_state, states)
        results = [r.outcome for r in runs if isinstance(r.outcome, ClientResult)]
        failures = [r.outcome for r in runs if isinstance(r.outcome, ClientFailure)]
        nan_metrics = {r.client_id: p for r in results if (p := nan_metric(r))}
        failures += [ClientFailure(cid, rnd, p) for cid, p in nan_metrics.items()]
        results = [r for r in results if r.client_id not in nan_metrics]
        self._require_enough(rnd, sampled, results, failures)
        results, failures = self._aggregate(rnd, sampled, results, failures)
        if self.stateful:  # only the clients whose update was accepted move on to their new state
            accepted = {r.client_id for r in results}
            self.client_states.save(rnd, {r.outcome.client_id: r.state for r in runs if r.outcome.client_id in accepted and r.state is not None})
        n = sum(r.num_examples for r in results)
        record: dict = {
            "round": rnd,
            "sampled": sampled,
            "failures": [f.to_json() for f in failures],
            "train_loss": sum(r.metrics.get("loss", 0.0) * r.num_examples for r in results) / max(n, 1),
            "bytes_up": sum(r.bytes_up for r in results),
            "bytes_down": sum(down.values()),
        }
        record["client_bytes_up"] = {str(r.client_id): r.bytes_up for r in results}
        record["client_bytes_down"] = down
        record.update(self._client_summaries(results))
        record.update(self.algorithm.round_metrics(results))
        eval_start = time.perf_counter()
        if rnd % exp.eval.every == 0 or rnd == exp.rounds:
            record.update(self.evaluate(rnd))
        end = time.perf_counter()
        record["client_s"] = sum(r.seconds for r in runs)
        record["eval_s"] = end - eval_start
        record["wall_s"] = end - start
        return record

    def _require_enough(self, rnd: int, sampled: list[int], results: list, failures: list[ClientFailure]) -> None:
        needed = max(self.exp.failures.min_clients, math.ceil(self.exp.failures.min_fraction * len(sampled)))
        if len(results) < needed:
            detail = "; ".join(f"client {f.client_id}: {f.error}" for f in failures[:3])
            raise RunError(f"round {rnd}: only {len(results)} of {len(sampled)} clients succeeded (need {needed}); {detail}")

    def _try_aggregate(self, rnd: int, results: list[ClientResult]) -> tuple[State | None, str | None]:
        """The new global state, or None and what went wrong."""
        try:
            state = self.algorithm.aggregate(rnd, self.global_state, results)
        except FloatingPointError as err:  # server optimizers that refuse non-finite input (Flash)
            return None, f"the server step failed: {err}"
        bad = first_nonfinite(state)
        return (None, f"the aggregated global tensor {bad!r} holds NaN or inf") if bad else (state, None)

    def _aggregate(self, rnd: int, sampled: list[int], results: list[ClientResult], failures: list[ClientFailure]):
        """Aggregate, then check the new global model once.

        NaN and inf propagate through the weighted mean, so a finite result means every
        client's update was finite, and a round reads no client tensor twice. Otherwise
        the clients with non-finite tensors are recorded as failed, the server state is
        restored and the round is aggregated again without them.
        """
        before = self.algorithm.state_dict()
        state, problem = self._try_aggregate(rnd, results)
        if problem is not None:
            culprits = {r.client_id: p for r in results if (p := nonfinite_tensor(r))}
            if culprits:
                failures = failures + [ClientFailure(cid, rnd, p) for cid, p in culprits.items()]
                results = [r for r in results if r.client_id not in culprits]
                self._require_enough(rnd, sampled, results, failures)
                self.algorithm.load_state_dict(before)
                state, problem = self._try_aggregate(rnd, results)
        if problem is not None:
            raise RunError(f"round {rnd}: {problem}; lower server.lr or check the clients' updates")
        self.global_state = state
        return results, failures

    @staticmethod
    def _client_summaries(results: list[ClientResult]) -> dict:
        """Per-client metrics the algorithm reports besides the loss (e.g. epochs run)."""
        keys = sorted({k for r in results for k in r.metrics if k != "loss"})
        return {f"client_{k}": {str(r.client_id): r.metrics[k] for r in results if k in r.metrics} for k in keys}

    def final_model(self) -> nn.Module:
        """The model holding the global trainable state (what :func:`export_model` writes)."""
        set_trainable(self.model, self.global_state)
        return self.model

    def evaluate(self, rnd: int) -> dict[str, float]:
        client = self.worker.client
        model = client.global_model(self.model, self.global_state)
        out = evaluation.generalized(model, self.global_state, self.federation.test_examples(rnd).to(self.device), self.exp.eval)
        if self.exp.eval.finetune_epochs > 0 or client.personalizes:
            out.update(
                evaluation.personalized(
                    model,
                    self.global_state,
                    self.federation.num_clients,
                    lambda cid: self.federation.client_data(cid, rnd).to(self.device),
                    self.exp.eval,
                    self.algorithm.params.batch_size,
                    self.exp.seed,
                    rnd,
                    self._personalize(rnd) if client.personalizes else None,
                    client.global_model,
                )
            )
        return out

    def _personalize(self, rnd: int) -> evaluation.Personalize:
        """A client's personalized model for evaluation: its procedure from the current global model and its stored state (never changed)."""
        client = self.worker.client

        def personalize(cid: int, data):
            state = self.client_states.load([cid])[cid] if self.stateful else None
            task = ClientTask(client_id=cid, round=rnd, seed=self.exp.seed)
            seed_global_rng(self.exp.seed, "client-rng", rnd, cid)
            return client.personalize(self.model, self.global_state, data, task, state)

        return personalize

    # -- persistence ---------------------------------------------------------------------
    def checkpoint(self, run_dir: Path, rnd: int) -> None:
        server = {"algorithm": self.algorithm.state_dict(), "client_states": self.client_states.checkpoint(rnd)}
        save_checkpoint(run_dir, rnd, self.global_state, server, self.exp.checkpoint.keep)

    def restore(self, path: Path) -> int:
        state = load_checkpoint(path)
        rnd = int(state["round"])
        self.global_state = {k: v.to(self.device) for k, v in state["global_state"].items()}
        self.algorithm.load_state_dict(state["server"]["algorithm"])
        self.client_states.restore(state["server"]["client_states"], rnd)
        return rnd


ProgressFn = Callable[[int, dict], None]


class StopRequest:
    """Ctrl-C during the rounds asks the loop to stop after the current round (its metrics,
    a checkpoint and the report are written); a second Ctrl-C stops at once. Outside the
    main thread (where Python delivers no signal) it changes nothing."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C raises KeyboardInterrupt
        print("\nstopping after this round (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)  # the handler from before the rounds


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_experiment(
    exp: Experiment,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | ProgressFn = False,
    fed: FederatedDataset | None = None,
    report: bool = True,
    extended_from: int | None = None,
) -> RunResult:
    """Run (or resume) an experiment and write its run folder; returns its metrics.

    ``progress=True`` shows a rich progress bar; a callable gets ``(round, record)``.
    A resumed run continues from the newest checkpoint and its metrics equal those of an
    uninterrupted run (wall times aside), because every random choice derives from
    (seed, round, client, ...) and all state carried between rounds (global model,
    server optimizer, client states) is in the checkpoint. ``extended_from``: the run
    had that many rounds and now continues to ``exp.rounds``; the evaluation every run
    makes after its last round is dropped from that round where the schedule would
    not have made it, so the extended run equals one that ran ``exp.rounds`` straight.
    """
    run_dir = exp.run_dir()
    metrics_path = run_dir / METRICS_FILE
    if not resume and metrics_path.exists() and not overwrite:
        raise ConfigError(f"output: {run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    # report/ imports matplotlib: not at engine import
    from fedtune.report.tracking import open_trackers

    run = Run(exp, fed)  # builds everything, and starts the backend, before a single file is written
    run.start()
    trackers = []
    metrics: list[dict] = []
    interrupted: RunInterrupted | None = None
    try:
        trackers = open_trackers(exp)  # [log]: a missing package is one line here
        metrics = _run_rounds(run, exp, resume, overwrite, progress, extended_from, trackers)
        export_model(run.final_model(), run_dir)
    except RunInterrupted as stop:  # Ctrl-C: the rounds that ran are saved; report them too
        metrics, interrupted = stop.metrics, stop
    finally:
        run.close()
        for tracker in trackers:
            tracker.close()
    if report:
        from fedtune.report import write_run_report

        write_run_report(run_dir, exp, metrics)
    if interrupted is not None:
        raise interrupted
    return RunResult(run_dir, metrics, exp)


def _run_rounds(run: Run, exp: Experiment, resume: bool, overwrite: bool, progress, extended_from: int | None, trackers=()) -> list[dict]:
    """Prepare the run folder (restoring a checkpoint when resuming), then run the rounds."""
    run_dir = exp.run_dir()
    metrics_path = run_dir / METRICS_FILE
    first, metrics = 1, []
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            done = run.restore(ckpt)
            metrics = [m for m in _read_metrics(metrics_path) if m["round"] <= done]
            first = done + 1
        else:  # no round finished: drop client states a crashed first round may have written
            run.client_states.restore(run.client_states.checkpoint(0), 0)
        if extended_from is not None and extended_from % exp.eval.every != 0:
            metrics = [_without_evaluation(m) if m["round"] == extended_from else m for m in metrics]
    elif run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / CONFIG_FILE
    previous = config.read_text() if resume and config.exists() else None
    config.write_text(run_header(exp.model.name, previous) + exp.to_toml())
    with metrics_path.open("w") as fh:  # rewrite: drops rounds after the checkpoint we resumed from
        for m in metrics:
            fh.write(json.dumps(m) + "\n")

    if first == 1 and exp.eval.at_start:  # the initial model, as round 0
        start = time.perf_counter()
        record = {"round": 0, **run.evaluate(0)}
        record = _round_floats(record | {"eval_s": time.perf_counter() - start})
        metrics.append(record)
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        for tracker in trackers:
            tracker.log_round(0, record)
    bar = _ProgressBar(exp, first) if progress is True else None
    try:
        with StopRequest() as stop:
            for rnd in range(first, exp.rounds + 1):
                record = _round_floats(run.round(rnd))
                metrics.append(record)
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                for tracker in trackers:
                    tracker.log_round(rnd, record)
                every = exp.checkpoint.every
                if rnd == exp.rounds or (every and rnd % every == 0) or stop.requested:
                    run.checkpoint(run_dir, rnd)
                if bar is not None:
                    bar.update(rnd, record)
                elif callable(progress):
                    progress(rnd, record)
                if stop.requested and rnd < exp.rounds:
                    raise RunInterrupted(run_dir, rnd, exp.rounds, metrics)
    finally:
        if bar is not None:
            bar.close()
    return metrics


def _without_evaluation(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(EVALUATION_PREFIXES)}


def resume_experiment(run_dir: Path, progress: bool | ProgressFn = False, overrides: list[str] | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its newest checkpoint, with its saved config.

    ``overrides`` may only extend the run (``["rounds=N"]``, N at least its rounds so
    far): the result equals a run of N rounds made straight. Anything else the saved
    config fixes, and is refused.
    """
    config = run_dir / CONFIG_FILE
    if not config.is_file():
        raise ConfigError(f"--resume: {run_dir} holds no {CONFIG_FILE}; is it a fedtune run folder?")
    exp = load_experiment(config)
    exp.output = str(run_dir)
    previous = exp.rounds
    for text in overrides or []:
        path, value = parse_override(text)
        if path != ["rounds"]:
            raise ConfigError(f"--set {text!r}: a resumed run keeps its config.toml; only --set rounds=N (to extend it) applies")
        if not isinstance(value, int) or value < previous:
            raise ConfigError(f"--set {text!r}: rounds must be an integer of at least the run's {previous} rounds")
        exp.rounds = value
    extended = previous if exp.rounds > previous else None
    return run_experiment(exp, resume=True, progress=progress, extended_from=extended)


class _ProgressBar:
    """A rich progress bar over rounds showing the latest loss and accuracy."""

    def __init__(self, exp: Experiment, first: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[latest]}"),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(exp.name, total=exp.rounds, completed=first - 1, latest="")
        self.latest: dict[str, float] = {}

    def update(self, rnd: int, record: dict) -> None:
        self.latest["loss"] = record["train_loss"]
        if "test_accuracy" in record:
            self.latest["acc"] = record["test_accuracy"]
        text = "  ".join(f"{k} {v:.4f}" for k, v in self.latest.items())
        self.progress.update(self.task, completed=rnd, latest=text)

    def close(self) -> None:
        self.progress.stop()
