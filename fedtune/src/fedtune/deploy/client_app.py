"""A Flower ``ClientApp`` that runs fedtune's client procedure (flwr 1.42 Message API).

A SuperNode holds one or more of the experiment's client partitions, named in its node
config: ``partition-id = N`` (Flower's convention; the simulation runtime sets it on each
virtual node) or ``partition-ids = "0-4,9"``. The app answers two messages:

- ``query``: which partitions this node holds (the server maps partitions to nodes with it);
- ``train``: one :class:`~fedtune.algorithms.ClientTask` with the round's global
  trainables (and the client's state, for stateful methods); it runs the task through a
  :class:`~fedtune.engine.worker.ClientWorker` exactly as the in-process backend does and
  replies with the result or the recorded failure (:mod:`fedtune.deploy.records`).

The worker (data and model) is built once per process and experiment, and a task for a
partition the node does not hold is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedtune.config import Experiment
from fedtune.deploy import records
from fedtune.engine.worker import ClientFailure, ClientRun, ClientWorker

_WORKERS: dict[str, ClientWorker] = {}  # per process: one worker per experiment


def parse_partitions(text: str) -> list[int]:
    """``"0-4,9"`` -> [0, 1, 2, 3, 4, 9]."""
    ids: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"partition-ids: {text!r} is not a list like \"0-4,9\"")
        ids.extend(range(int(low), int(high) + 1) if sep else [int(low)])
    return ids


def node_partitions(context: Context) -> list[int]:
    """The partitions a node holds, from its node config (``partition-ids`` or ``partition-id``)."""
    config = context.node_config
    if "partition-ids" in config:
        return parse_partitions(str(config["partition-ids"]))
    if "partition-id" in config:
        return [int(config["partition-id"])]
    raise ValueError("this SuperNode names no partition: start it with --node-config 'partition-id=N' (or partition-ids=\"0-4\")")


def worker_for(exp: Experiment) -> ClientWorker:
    """This process's worker for ``exp`` (loads the data and builds the model once)."""
    key = exp.to_toml()
    if key not in _WORKERS:
        _WORKERS[key] = ClientWorker.from_experiment(exp)
    return _WORKERS[key]


def partitions_content(context: Context) -> RecordDict:
    """The reply to ``query``: the partitions this node holds."""
    return RecordDict({records.PARTITIONS: ConfigRecord({"ids": node_partitions(context)})})


def train_content(load: Callable[[Context], Experiment], content: RecordDict, context: Context) -> RecordDict:
    """The reply to ``train``: the task run on this process's worker, or why it was refused."""
    task = records.records_to_task(content)
    held = node_partitions(context)
    if task.client_id not in held:
        why = f"this SuperNode holds partitions {held}, not {task.client_id}"
        return records.run_to_content(ClientRun(ClientFailure(task.client_id, task.round, why), None, 0.0))
    worker = worker_for(load(context))
    global_state = records.record_to_state(content[records.GLOBAL], worker.device)
    state = records.records_to_state(content, worker.device)
    return records.run_to_content(worker.run(task, global_state, state))


def make_client_app(load: Callable[[Context], Experiment]) -> ClientApp:
    """A ``ClientApp`` for the experiment that ``load(context)`` gives.

    ``load`` runs where the app runs: in the simulation it returns the experiment it was
    built with; on a SuperNode it reads the experiment shipped in the Flower app bundle.
    """
    app = ClientApp()

    @app.query()
    def query(message: Message, context: Context) -> Message:
        return Message(partitions_content(context), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        return Message(train_content(load, message.content, context), reply_to=message)

    return app
