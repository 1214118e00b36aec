"""Spry (Panchal et al., NeurIPS 2024, https://arxiv.org/abs/2405.15551).

Federated finetuning of language models with forward-mode automatic differentiation.
The trainable weights (PEFT adapters plus the task head) are split among the clients
of a round, so that each client's forward gradient is estimated over few dimensions.

Algorithm (the paper's Algorithm 1, per round t)::

    Server:  sample M clients; deal the L layer groups round-robin to them
             (M ≤ L: client j trains groups j, j+M, ...; M > L: client j trains group
             j mod L); the head goes to every client when shared, else it is a group.
    Client m, with θ_S its assigned tensors and θ the rest (fixed at the global values):
        for each epoch e, each batch b (local step s):
            for k = 1..K:  v_k ~ N(0, I) over θ_S, seeded by (seed, round, m, s, k, tensor)
                           (L, d_k) = jvp(θ_S ↦ L(θ_S, θ; b), θ_S, v_k)   # one forward pass
            g_s = (1/K) Σ_k d_k v_k                                      # forward gradient
            θ_S ← LocalOptimizer(θ_S, g_s)                               # AdamW by default
        per_epoch:      send θ_S
        per_iteration:  send the scalars d_{s,k}; the server regenerates every v_k from
                        the shared seed schedule, rebuilds g_s and replays the steps
    Server:  θ_i ← example-weighted mean over the clients that trained tensor i
             then θ ← ServerOptimizer(θ, mean − θ)                        # FedYogi in the paper

The jvps run over detached primals without a backward graph (``fedtune.grad``), with
dropout off so that the K passes of a step differentiate the same function, unless
``jvp_dropout`` asks for the authors' setting (dropout on, masks seeded per step).

Variant (not in the paper), ``head_gradient = "exact"``: the task head is taken out of the
tangents and its gradient computed exactly in the same forward pass
(:func:`fedtune.grad.exact_head.exact_head_gradient`); a random head otherwise holds
nearly all the gradient norm and drowns the adapters' estimates.

The pieces compose: the client procedure (:class:`EstimatedGradientClient`) takes its
gradient estimator by name from ``fedtune.grad.ESTIMATORS`` (``forward`` for Spry), and
the server deals tensors to clients with a grouping policy (:func:`deal_groups` for
Spry; FedFGD gives every client everything).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from fedtune.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    Client,
    ClientResult,
    ClientState,
    ClientTask,
    LocalParams,
    make_optimizer,
)
from fedtune.data.base import ClientData
from fedtune.grad import ESTIMATORS, LossClosure, model_loss, rebuild_gradient
from fedtune.grad.estimators import EstimateFn
from fedtune.grad.exact_head import exact_head_gradient
from fedtune.models.base import State, set_trainable, state_bytes, trainable_names
from fedtune.seeding import derive_seed, torch_generator

JVP_BYTES = 4  # one float32 scalar per tangent per step


class ForwardGradParams(LocalParams):
    """Local training with estimated gradients (Spry's client; FedFGD's too)."""

    lr: float = Field(1e-4, gt=0, description="client learning rate (the paper uses AdamW 1e-4)")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="client optimizer")
    estimator: str = Field("forward", description="gradient estimator, a name of fedtune.grad.ESTIMATORS (forward, spsa, mezo, baffle, fwdllm, backprop)")
    num_tangents: int = Field(1, ge=1, description="K: tangents (jvp passes, or perturbations) per local step")
    tangent_distribution: Literal["gaussian", "rademacher"] = Field("gaussian", description="distribution of the tangents v_k")
    communication: Literal["per_epoch", "per_iteration"] = Field(
        "per_epoch", description="send updated tensors once per round, or the K jvp scalars of every step"
    )
    loss_chunk_size: int | None = Field(
        None, ge=1, description="causal LMs: loss over this many positions at a time (logit tangents never all exist)"
    )
    head_gradient: Literal["forward", "exact"] = Field(
        "forward", description="the task head's gradient: a forward gradient like the rest, or exact from the same pass"
    )
    jvp_dropout: bool = Field(
        False, description="dropout on during the jvps (the authors' runs; masks seeded per step), else off"
    )

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, name: str) -> str:
        if name not in ESTIMATORS:
            raise ValueError(f"unknown gradient estimator {name!r}; choose one of: {', '.join(ESTIMATORS.names())}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> ForwardGradParams:
        if self.early_stop_gamma is not None:
            raise ValueError("early_stop_gamma: estimated-gradient clients do not stop early; remove it")
        if self.communication == "per_iteration" and not ESTIMATORS.get(self.estimator).replayable:
            raise ValueError(f"communication: per_iteration needs a seeded estimator; {self.estimator!r} cannot be rebuilt from scalars")
        if self.estimator == "backprop" and (self.num_tangents != 1 or self.tangent_distribution != "gaussian"):
            raise ValueError("num_tangents / tangent_distribution: the backprop estimator draws no tangents; remove them")
        if self.jvp_dropout and self.estimator not in ("forward", "fwdllm", "backprop"):
            raise ValueError(f"jvp_dropout: {self.estimator!r} compares two loss evaluations, which must see the same dropout masks; remove it")
        if self.head_gradient == "exact" and self.estimator != "forward":
            raise ValueError(f"head_gradient: 'exact' works with the forward estimator, not {self.estimator!r}")
        if self.head_gradient == "exact" and self.communication == "per_iteration":
            raise ValueError("head_gradient: an exact head gradient cannot be rebuilt from jvp scalars; use communication = 'per_epoch'")
        return self


class SpryParams(ForwardGradParams):
    """Spry's settings: forward-gradient local training plus the weight split."""

    share_head: bool = Field(True, description="every client trains the task head (else it is one more group)")


# -- grouping policies: which tensors each of the round's clients trains -----------------
Grouping = Callable[[list[list[str]], list[str], int], list[list[str]]]


def assign_groups(num_groups: int, num_clients: int) -> list[list[int]]:
    """Round-robin: the group indices each of ``num_clients`` clients trains.

    With M ≤ L clients, client j trains groups j, j+M, j+2M, ... (each group exactly
    once); with M > L, client j trains group j mod L (several clients share a group).
    """
    if num_groups < 1 or num_clients < 1:
        raise ValueError(f"need at least one group and one client, got {num_groups} groups and {num_clients} clients")
    if num_clients <= num_groups:
        return [list(range(j, num_groups, num_clients)) for j in range(num_clients)]
    return [[j % num_groups] for j in range(num_clients)]


def deal_groups(groups: list[list[str]], head: list[str], num_clients: int) -> list[list[str]]:
    """Spry's policy: layer groups dealt round-robin (:func:`assign_groups`), the shared head to all."""
    if not groups:
        return [list(head) for _ in range(num_clients)]
    return [[n for i in idx for n in groups[i]] + list(head) for idx in assign_groups(len(groups), num_clients)]


def everything(groups: list[list[str]], head: list[str], num_clients: int) -> list[list[str]]:
    """FedFGD's policy: every client trains every trainable tensor."""
    names = [n for g in groups for n in g] + list(head)
    return [list(names) for _ in range(num_clients)]


def module_groups(names: list[str]) -> tuple[list[list[str]], list[str]]:
    """Fallback for models without PEFT adapters: one group per module, the last one the head."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[0], []).append(name)
    *body, head = groups.values()
    return body, head


def split_trainables(model: nn.Module) -> tuple[list[list[str]], list[str]]:
    """(layer groups, head tensor names) of ``model``'s trainable tensors.

    Hugging Face models (:mod:`fedtune.models.hf`): one group per adapted layer (its LoRA
    A and B), per BitFit bias or IA3 vector; other models: one group per module.
    """
    names = trainable_names(model)
    if not names:
        raise ValueError("the model has no trainable tensors for Spry to split")
    if hasattr(model, "head_names"):
        from fedtune.models.hf import head_names, layer_groups

        groups, head = layer_groups(model, include_head=False), head_names(model)
    else:
        groups, head = module_groups(names)
    return [list(g) for g in groups if g], list(head)


# -- shared by client and server (the per-iteration replay must match bit for bit) ------
def local_step(optimizer: torch.optim.Optimizer, theta: State, grads: State) -> None:
    """θ_S ← LocalOptimizer(θ_S, g): one step of the local optimizer on a gradient estimate."""
    for name, p in theta.items():
        p.grad = grads[name]
    optimizer.step()
    for p in theta.values():
        p.grad = None


def tangent_keys(task: ClientTask, step: int) -> tuple[int, int, int]:
    """The seed path of a local step's tangents: (round, client, step)."""
    return (task.round, task.client_id, step)


def trained_names(task: ClientTask, state: State) -> list[str]:
    names = list(state) if task.tensor_names is None else list(task.tensor_names)
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"client {task.client_id} was asked to train unknown tensors: {missing[:3]}")
    return names


def replay(params: ForwardGradParams, global_state: State, task: ClientTask, jvps: list[list[float]]) -> State:
    """Per-iteration mode, server side: rebuild each local step from its K scalars and replay it."""
    theta = {n: global_state[n].detach().clone() for n in trained_names(task, global_state)}
    optimizer = make_optimizer(list(theta.values()), params)
    for step, scalars in enumerate(jvps):
        grads = rebuild_gradient(scalars, theta, task.seed, tangent_keys(task, step), params.tangent_distribution)
        local_step(optimizer, theta, grads)
    return theta


def _exact_head(head: list[str], loss_fn, params, seed, keys, num_samples, distribution):
    return exact_head_gradient(loss_fn, params, head, seed, keys, num_samples, distribution)


@contextlib.contextmanager
def dropout_masks(model: nn.Module, task: ClientTask, step: int, enabled: bool) -> Iterator[None]:
    """With ``enabled``, the step's dropout masks drawn from (seed, "dropout", round, client, step).

    The global RNG is forked, so a run stays reproducible and resumable; without
    ``enabled`` nothing happens (dropout is off in the closure).
    """
    if not enabled:
        yield
        return
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(task.seed, "dropout", task.round, task.client_id, step))
        yield


class EstimatedGradientClient(Client):
    """Local training of the task's tensors with an estimated gradient (``params.estimator``).

    Every other trainable tensor stays at its global value. Sends the trained tensors
    (per_epoch) or the K scalars of every step (per_iteration).
    """

    params: ForwardGradParams

    def estimator(self, task: ClientTask) -> EstimateFn:
        """The gradient estimator of this task's steps (``params.estimator``; FwdLLM binds its guide)."""
        return ESTIMATORS.get(self.params.estimator).estimate

    def step_loss(self, model: nn.Module, batch) -> LossClosure:
        """The loss closure of one local step (dropout on only with ``jvp_dropout``)."""
        return model_loss(model, batch, dropout=self.params.jvp_dropout, loss_chunk_size=self.params.loss_chunk_size)

    def train_step(
        self, estimate: EstimateFn, loss: LossClosure, theta: State, optimizer: torch.optim.Optimizer, task: ClientTask, step: int
    ) -> tuple[float, list[float]]:
        """One local step on ``theta``: estimate the gradient, step the local optimizer.

        Returns the step's loss and the scalars per-iteration mode sends (FedMeZO overrides
        this with MeZO's in-place update).
        """
        cfg = self.params
        est = estimate(loss, theta, task.seed, tangent_keys(task, step), cfg.num_tangents, cfg.tangent_distribution)
        local_step(optimizer, theta, est.grads)
        return float(est.loss), est.jvps.tolist()

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, None]:
        set_trainable(model, global_state)
        cfg = self.params
        estimate = self.estimator(task)
        names = set(trained_names(task, global_state))
        theta = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
        if cfg.head_gradient == "exact":
            head = [n for n in split_trainables(model)[1] if n in names]
            estimate = functools.partial(_exact_head, head)
        if cfg.jvp_dropout:
            model.train()
        optimizer = make_optimizer(list(theta.values()), cfg)
        losses: list[float] = []
        sent: list[list[float]] = []
        step = 0
        for epoch in range(cfg.local_epochs):
            for batch in data.train.batches(cfg.batch_size, torch_generator(task.seed, "batches", task.round, task.client_id, epoch)):
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                loss = self.step_loss(model, batch)
                with dropout_masks(model, task, step, cfg.jvp_dropout):
                    value, scalars = self.train_step(estimate, loss, theta, optimizer, task, step)
                losses.append(value)
                sent.append(scalars)
                step += 1
        metrics = {"loss": sum(losses) / max(len(losses), 1), "steps": step, "tensors_trained": len(theta),
                   "tangents": sum(len(scalars) for scalars in sent) / max(step, 1)}
        if cfg.communication == "per_iteration":
            bytes_up = JVP_BYTES * sum(len(scalars) for scalars in sent)
            return ClientResult(task.client_id, len(data.train), {}, metrics, bytes_up, jvps=sent), None
        return ClientResult(task.client_id, len(data.train), theta, metrics, state_bytes(theta)), None


@ALGORITHMS.register("spry")
class Spry(Algorithm):
    """Spry: split the trainable weights among the round's clients, train with forward gradients.

    Parameters (``[algorithm]`` table, :class:`SpryParams`)
    -------------------------------------------------------
    num_tangents : int, default 1
        K, tangents per local step (each one jvp pass).
    tangent_distribution : "gaussian" | "rademacher", default "gaussian"
        Distribution of the tangents.
    estimator : str, default "forward"
        The clients' gradient estimator (``fedtune.grad.ESTIMATORS``).
    communication : "per_epoch" | "per_iteration", default "per_epoch"
        What a client sends: its trained tensors, or the K jvp scalars of each step.
    share_head : bool, default True
        Every client trains the task head; otherwise the head is one more layer group.
    head_gradient : "forward" | "exact", default "forward"
        The head's gradient: estimated like the rest, or exact from the same pass (a variant).
    jvp_dropout : bool, default False
        Dropout on during the jvps, as in the authors' runs.
    optimizer, lr, weight_decay : default "adamw", 1e-4, 0.0
        Local optimizer (the server replays it exactly in per-iteration mode).
    local_epochs, batch_size, max_steps : default 1, 32, None
        Local training length.
    """

    name = "spry"
    Params: ClassVar[type[LocalParams]] = SpryParams
    Client = EstimatedGradientClient
    grouping: ClassVar[Grouping] = staticmethod(deal_groups)
    params: ForwardGradParams

    def __init__(self, params: LocalParams, server_optimizer) -> None:
        super().__init__(params, server_optimizer)
        self.groups: list[list[str]] = []
        self.head: list[str] = []
        self._issued: dict[int, ClientTask] = {}  # this round's tasks, for the per-iteration replay

    def setup(self, model: nn.Module, info) -> None:
        groups, head = split_trainables(model)
        if not getattr(self.params, "share_head", True) and head:
            groups, head = [*groups, head], []
        self.groups, self.head = groups, head

    def assignments(self, num_clients: int) -> list[list[str]]:
        """Tensor names trained by each of ``num_clients`` clients, in sampling order."""
        if not self.groups and not self.head:
            raise RuntimeError(f"{type(self).__name__}.setup(model, info) must run before the first round")
        return type(self).grouping(self.groups, self.head, num_clients)

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        names = self.assignments(len(sampled_client_ids))
        self._issued = {
            cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=tuple(names[j]))
            for j, cid in enumerate(sampled_client_ids)
        }
        return dict(self._issued)

    def bytes_down(self, task: ClientTask, global_state: State) -> int:
        # the forward pass needs the current value of every trainable tensor
        return state_bytes(global_state)

    def aggregate(self, round: int, global_state: State, results: list[ClientResult]) -> State:
        return super().aggregate(round, global_state, [self.rebuild(global_state, r) for r in results])

    def replay(self, global_state: State, task: ClientTask, jvps: list[list[float]]) -> State:
        """The tensors a per-iteration client's scalars stand for (:func:`replay`, the module function)."""
        return replay(self.params, global_state, task, jvps)

    def rebuild(self, global_state: State, result: ClientResult) -> ClientResult:
        """A per-iteration result as the tensors it stands for (others pass through)."""
        if result.jvps is None:
            return result
        task = self._issued.get(result.client_id)
        if task is None:
            raise RuntimeError(f"client {result.client_id} sent jvps but was given no task this round")
        theta = self.replay(global_state, task, result.jvps)
        return ClientResult(result.client_id, result.num_examples, theta, result.metrics, result.bytes_up)


__all__ = [
    "EstimatedGradientClient",
    "ForwardGradParams",
    "Spry",
    "SpryParams",
    "assign_groups",
    "deal_groups",
    "everything",
    "replay",
    "split_trainables",
]
