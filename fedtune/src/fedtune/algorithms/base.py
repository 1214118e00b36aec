"""An algorithm is a server side and a client procedure, in the style of Flower's strategies.

Server side (:class:`Algorithm`, one object in the server process):

- ``configure_round(round, sampled_client_ids, global_state, seed)``: a typed
  :class:`ClientTask` per client (what it trains, its seeds);
- ``aggregate(round, global_state, results)``: the new global trainable state, through
  a :class:`~fedtune.server.base.ServerOptimizer`;
- ``state_dict()`` / ``load_state_dict()``: the server state a checkpoint holds.

Client procedure (:class:`Client`, built from the algorithm's hyperparameters alone):
``fit(model, global_state, data, task, state) -> (ClientResult, new state)``. It is a
function of what the client is sent (the global trainables, its data, its task and, for
methods that keep one, its own :data:`ClientState`), so a backend can run it in another
process (a Ray actor, a Flower ClientApp); nothing passes between the two sides except
these plain, picklable messages.

Hyperparameters are a pydantic model (``Params``) validated from the experiment's
``[algorithm]`` table; every algorithm's params extend :class:`LocalParams`.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from fedtune.data.base import Batch, ClientData, Examples
from fedtune.models.base import State, evaluate, get_trainable, loss_fn, set_trainable, state_bytes
from fedtune.optim import SGD, LocalOptimizer
from fedtune.registry import Registry
from fedtune.seeding import torch_generator
from fedtune.server.base import ServerOptimizer

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


class LocalParams(BaseModel):
    """Local training settings shared by all algorithms."""

    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(1, ge=1, description="passes over the client's training split per round")
    batch_size: int = Field(32, ge=1, description="client mini-batch size")
    lr: float = Field(0.05, gt=0, description="client learning rate")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="client optimizer")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="client weight decay")
    max_steps: int | None = Field(None, ge=1, description="cap on local steps per round")
    early_stop_gamma: float | None = Field(
        None, ge=0, description="stop after epoch e when the validation loss fell by less than γ/e (Flash); None: never"
    )


ClientState = dict[str, Any]
"""What a stateful client keeps between rounds (tensors and numbers; picklable)."""


@dataclass(frozen=True)
class ClientTask:
    """What the server asks one client to do in one round (a plain, picklable message)."""

    client_id: int
    round: int
    seed: int  # the run seed; clients derive (seed, purpose, round, client, ...) from it
    tensor_names: tuple[str, ...] | None = None  # the tensors to train; None: every trainable tensor
    # a direction the server sends with the task (FwdLLM: the previous global update); None: none
    guide: State | None = field(default=None, compare=False)


@dataclass
class ClientResult:
    """What one client sends back (a plain, picklable message).

    ``tensors`` holds the updated tensors the client trained; a client in Spry's
    per-iteration mode sends none and ``jvps`` instead: the K directional derivatives of
    each local step, from which the server rebuilds its update. ``bytes_up`` is what the
    message would cost on the wire.
    """

    client_id: int
    num_examples: int
    tensors: State
    metrics: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    jvps: list[list[float]] | None = None


def make_optimizer(params: list[Tensor], cfg: LocalParams) -> LocalOptimizer:
    if cfg.optimizer == "sgd":  # fedtune's own: the same bits as torch.optim.SGD, no TorchDynamo import (fedtune.optim)
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


LossFn = Callable[[nn.Module, Batch], Tensor]


def train_epoch(
    model: nn.Module,
    examples: Examples,
    optimizer: LocalOptimizer,
    cfg: LocalParams,
    generator: torch.Generator,
    loss: LossFn = loss_fn,
    steps_left: int | None = None,
) -> tuple[float, int]:
    """One shuffled pass of SGD-style training; returns (mean loss, steps taken)."""
    model.train()
    total, steps = 0.0, 0
    for batch in examples.batches(cfg.batch_size, generator):
        if steps_left is not None and steps >= steps_left:
            break
        optimizer.zero_grad(set_to_none=True)
        value = loss(model, batch)
        if not torch.isfinite(value):
            raise FloatingPointError(f"non-finite training loss ({value.item()}) at local step {steps}")
        value.backward()
        optimizer.step()
        total += value.item()
        steps += 1
    return total / max(steps, 1), steps


def weighted_mean_delta(global_state: State, results: list[ClientResult]) -> State:
    """Per tensor, the example-weighted mean over the clients that sent it, minus global."""
    sums: State = {}
    weights: dict[str, float] = {}
    for r in results:
        w = float(r.num_examples)
        for k, t in r.tensors.items():
            if k in sums:
                sums[k].add_(t, alpha=w)
            else:
                sums[k] = t.to(global_state[k].dtype) * w
            weights[k] = weights.get(k, 0.0) + w
    return {k: sums[k] / weights[k] - global_state[k] for k in sums if weights[k] > 0}


class EarlyStopping:
    """Flash's client rule: after epoch e stop when L_{e-1} - L_e < γ / e (L_0 = +inf).

    ``should_stop(L_e)`` is called once after every local epoch with the validation loss.
    """

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.epoch = 0
        self.previous = math.inf
        self.stopped = False

    def should_stop(self, val_loss: float) -> bool:
        self.epoch += 1
        self.stopped = self.previous - val_loss < self.gamma / self.epoch
        self.previous = val_loss
        return self.stopped


class Client:
    """A client procedure: local training as a function of what the client is sent.

    Built from the algorithm's hyperparameters alone (plain data), so a backend can build
    it in any process. ``fit`` must not keep anything between calls: what a stateful
    method needs next round it returns as the new client state, which the engine stores.
    The base class is FedAvg's client: E epochs of local SGD-style training.
    """

    stateful: ClassVar[bool] = False  # True: fit reads and returns a ClientState
    personalizes: ClassVar[bool] = False  # True: ``personalize`` gives the client's own model for evaluation

    def __init__(self, params: LocalParams) -> None:
        self.params = params

    def prepare_model(self, model: nn.Module, info, seed: int) -> nn.Module:
        """The model this method trains, built from the registry's ``model`` (Flow routes it)."""
        return model

    def global_model(self, model: nn.Module, global_state: State) -> nn.Module:
        """The global model with the server's tensors (what the generalized figure measures)."""
        set_trainable(model, global_state)
        return model

    def personalize(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None
    ) -> tuple[nn.Module, dict[str, float]]:
        """Methods that personalize: the client's own model and per-client figures (e.g. Flow's routing).

        The model the client would hold after taking part in the round evaluated (its
        procedure from ``global_state`` and its stored ``state``); the store is never
        changed. Called only when ``personalizes``.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no personalized model")

    def local_loss(self, global_state: State) -> LossFn:
        """The client's training objective; FedProx adds its proximal term here."""
        return loss_fn

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        """Train from ``global_state`` on ``data`` as ``task`` asks; return the result and the new state."""
        set_trainable(model, global_state)
        cfg = self.params
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, cfg)
        loss = self.local_loss(global_state)
        losses, steps = [], 0
        stopper = EarlyStopping(cfg.early_stop_gamma) if cfg.early_stop_gamma is not None and len(data.val) else None
        for epoch in range(cfg.local_epochs):
            gen = torch_generator(task.seed, "batches", task.round, task.client_id, epoch)
            left = None if cfg.max_steps is None else cfg.max_steps - steps
            if left is not None and left <= 0:
                break
            mean, taken = train_epoch(model, data.train, optimizer, cfg, gen, loss, left)
            losses.append(mean)
            steps += taken
            last = epoch + 1 == cfg.local_epochs
            if stopper is not None and not last and stopper.should_stop(evaluate(model, data.val).get("loss", math.inf)):
                break
        tensors = get_trainable(model)
        metrics = {"loss": losses[-1] if losses else float("nan"), "steps": steps, "epochs": len(losses)}
        if stopper is not None:
            metrics["early_stopped"] = float(stopper.stopped)
        result = ClientResult(task.client_id, len(data.train), tensors, metrics, state_bytes(tensors))
        return result, None


class Algorithm(ABC):
    """The server side of an algorithm; FedAvg's behaviour unless a subclass overrides a part.

    Class attributes: ``name``; ``Params``, its hyperparameters; ``Client``, its client
    procedure; ``server_optimizers``, the server optimizers it can work with (None: any).
    """

    name: ClassVar[str]
    Params: ClassVar[type[LocalParams]] = LocalParams
    Client: ClassVar[type[Client]] = Client
    server_optimizers: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, params: LocalParams, server_optimizer: ServerOptimizer) -> None:
        self.params = params
        self.server_optimizer = server_optimizer

    def client(self) -> Client:
        """The client procedure, built from the hyperparameters (what a backend ships to workers)."""
        return self.Client(self.params)

    def setup(self, model: nn.Module, info) -> None:
        """Called once before round 1 with the global model (e.g. Spry reads its layer groups)."""

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        return {cid: ClientTask(client_id=cid, round=round, seed=seed) for cid in sampled_client_ids}

    def bytes_down(self, task: ClientTask, global_state: State) -> int:
        names = task.tensor_names if task.tensor_names is not None else list(global_state)
        return state_bytes({k: global_state[k] for k in names})

    def aggregate(self, round: int, global_state: State, results: list[ClientResult]) -> State:
        delta = weighted_mean_delta(global_state, results)
        new = self.server_optimizer.step(global_state, delta)
        return {**global_state, **new}

    def round_metrics(self, results: list[ClientResult]) -> dict[str, float]:
        """Server-side diagnostics of the round just aggregated from ``results``."""
        return self.server_optimizer.round_metrics()

    def state_dict(self) -> dict:
        return {"server_optimizer": self.server_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.server_optimizer.load_state_dict(state["server_optimizer"])
