"""Flow: instance-level personalization by dynamic routing (Panchal et al., NeurIPS 2023).

The model's routed layers each have a global and a local path, and a policy network
gives every instance a 2-way gate per routed layer (:mod:`fedtune.models.routed`).
A client's round (the paper's Algorithm 1):

1. its training instances are split once, by a seeded permutation that depends on the
   client alone (so the split is the same in every round), into ζ_l (a share
   ``local_fraction``) and ζ_g (the rest);
2. Phase A: E epochs on ζ_l training only the local path, in the pure local model;
3. Phase B: E epochs on ζ_g; every batch makes one *policy step*, on the task loss of
   the soft-routed model plus λ · a routing regularizer of the local-path probabilities
   (``routing_regularizer``, :data:`ROUTING_REGULARIZERS`: by default the authors'
   mean −log(p_local² + ε), which keeps the policy from collapsing onto the global path),
   then one *global-path step* on the task loss of the pure global model.

``max_steps`` caps each phase on its own (Phase A's local steps; Phase B's batches, each a
policy and a global-path step), so a cap never leaves a round without Phase B.

Each parameter group (global path with the layers that are not routed, local path,
policy) has its own optimizer, so a group that is not being trained never moves — one
momentum optimizer over all groups with ``requires_grad`` toggled would keep moving the
"frozen" ones. Clients keep nothing between rounds: the server takes the
example-weighted mean of global path, local path and policy and applies the server
optimizer, so a client sampled for the first time personalizes from the averaged local
path (``local_start = "averaged"``, the authors' choice); ``local_start = "global"``
starts the local path from the global path instead, and then the local path is neither
sent nor averaged.

Evaluation routes hard (:func:`fedtune.models.routed.hard_route`). A client's personalized
model routes between the global path as the server sent it and its own local path, after
Phase A and Phase B's policy steps (no global-path steps: those are the client's
contribution to the next global model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

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
from fedtune.data.base import ClientData, DatasetInfo
from fedtune.models.base import State, get_trainable, loss_fn, set_trainable, state_bytes
from fedtune.models.routed import Routed, route, route_fractions
from fedtune.optim import LocalOptimizer
from fedtune.seeding import torch_generator

LOG_EPS = 1e-6  # keeps −log(p²) finite where p underflows to 0


def prefer_local(p_local: Tensor) -> Tensor:
    """mean −log(p_local² + ε): a log barrier that pulls every gate toward the local path, hardest
    where the policy has all but given it up (gradient −2/p_local), so the policy cannot collapse
    onto the global path, which is trained on more data and wins early. The authors' released
    code for their feed-forward models (λ 0.001–0.01, ε 1e-6)."""
    return -torch.log(p_local.square() + LOG_EPS).mean()


def penalize_local(p_local: Tensor) -> Tensor:
    """mean p_local: a linear cost of the local path; an instance goes local only where that
    lowers the task loss by more than λ."""
    return p_local.mean()


ROUTING_REGULARIZERS: dict[str, Callable[[Tensor], Tensor]] = {"prefer_local": prefer_local, "penalize_local": penalize_local}


class FlowParams(LocalParams):
    local_fraction: float = Field(0.5, gt=0, lt=1, description="share of a client's training instances in ζ_l (Phase A); the rest is ζ_g")
    routing_lambda: float = Field(0.01, ge=0, description="λ: weight of the routing regularizer")
    routing_regularizer: Literal["prefer_local", "penalize_local"] = Field(
        "prefer_local", description="prefer_local: λ·mean −log(p_local² + 1e-6), the authors' code; penalize_local: λ·mean p_local")
    local_lr: float | None = Field(None, gt=0, description="learning rate of the local path (None: lr)")
    policy_lr: float | None = Field(None, gt=0, description="learning rate of the policy (None: lr)")
    policy_hidden: int = Field(64, ge=1, description="hidden width of the policy network")
    routed_layers: list[str] | None = Field(None, description="layers with a global and a local path (None: every layer with parameters; LoRA models: every adapter and the task head)")
    local_start: Literal["averaged", "global"] = Field("averaged", description="the local path starts each round from the server's average or from the global path")
    max_steps: int | None = Field(None, ge=1, description="cap on each phase: Phase A's local steps and Phase B's batches (a policy and a global-path step each)")

    @model_validator(mode="after")
    def _no_early_stop(self) -> FlowParams:
        if self.early_stop_gamma is not None:
            raise ValueError("early_stop_gamma: flow runs fixed Phase A and Phase B epochs; remove it")
        return self


def split_instances(n: int, fraction: float, seed: int, client_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed split of a client's n training instances into (ζ_l, ζ_g) indices.

    It depends on (seed, client) only, never on the round. Both parts are non-empty when n ≥ 2.
    """
    perm = torch.randperm(n, generator=torch_generator(seed, "flow-split", client_id))
    k = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
    return perm[:k].sort().values, perm[k:].sort().values


class FlowClient(Client):
    """Phase A (local path on ζ_l), then Phase B (policy step + global-path step per batch on ζ_g)."""

    params: FlowParams
    personalizes: ClassVar[bool] = True

    def prepare_model(self, model: nn.Module, info: DatasetInfo, seed: int) -> nn.Module:
        p = self.params
        return route(model, info, p.routed_layers, p.policy_hidden, seed)

    def _optimizer(self, model: Routed, names: list[str], lr: float | None) -> LocalOptimizer:
        params = dict(model.named_parameters())
        return make_optimizer([params[n] for n in names], self.params.model_copy(update={"lr": lr or self.params.lr}))

    def fit(
        self, model: Routed, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        return self._procedure(model, global_state, data, task, train_global=True), None

    def _procedure(self, model: Routed, global_state: State, data: ClientData, task: ClientTask, train_global: bool) -> ClientResult:
        """Phase A, then Phase B; ``train_global=False`` leaves out Phase B's global-path steps."""
        p = self.params
        set_trainable(model, global_state)
        if p.local_start == "global":
            model.copy_global_to_local()
        groups = model.groups()
        opt_local = self._optimizer(model, groups["local"], p.local_lr)
        opt_policy = self._optimizer(model, groups["policy"], p.policy_lr)
        opt_global = self._optimizer(model, groups["global"], p.lr)
        local_idx, global_idx = split_instances(len(data.train), p.local_fraction, task.seed, task.client_id)
        zeta_l, zeta_g = data.train.subset(local_idx), data.train.subset(global_idx)
        model.train()
        steps, sums = 0, {"loss_local": 0.0, "loss_policy": 0.0, "loss": 0.0, "route_local": 0.0}
        counts = {"a": 0, "b": 0}  # Phase A's steps, Phase B's batches

        regularizer = ROUTING_REGULARIZERS[p.routing_regularizer]

        def step(optimizer: LocalOptimizer, routing: str, batch, penalty: float = 0.0) -> tuple[float, float]:
            model.routing = routing
            model.zero_grad(set_to_none=True)
            task_loss = loss_fn(model, batch)
            loss = task_loss + penalty * regularizer(model.local_probs()) if penalty else task_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite {routing} loss ({loss.item()}) at local step {steps}")
            loss.backward()
            optimizer.step()
            routed_local = model.last_probs[..., 1].mean().item() if model.last_probs is not None else 0.0
            return task_loss.item(), routed_local

        def capped(phase: str) -> bool:
            return p.max_steps is not None and counts[phase] >= p.max_steps

        for epoch in range(p.local_epochs):  # Phase A
            for batch in zeta_l.batches(p.batch_size, torch_generator(task.seed, "flow-a", task.round, task.client_id, epoch)):
                if capped("a"):
                    break
                sums["loss_local"] += step(opt_local, "local", batch)[0]
                counts["a"] += 1
                steps += 1
        for epoch in range(p.local_epochs):  # Phase B
            for batch in zeta_g.batches(p.batch_size, torch_generator(task.seed, "flow-b", task.round, task.client_id, epoch)):
                if capped("b"):
                    break
                policy_loss, routed_local = step(opt_policy, "soft", batch, p.routing_lambda)
                sums["loss_policy"] += policy_loss
                sums["route_local"] += routed_local
                if train_global:
                    sums["loss"] += step(opt_global, "global", batch)[0]
                counts["b"] += 1
                steps += 2 if train_global else 1
        model.zero_grad(set_to_none=True)
        model.routing = None
        sent = groups["global"] + groups["policy"] + (groups["local"] if p.local_start == "averaged" else [])
        tensors = {k: v for k, v in get_trainable(model).items() if k in sent}
        metrics = {
            "loss": sums["loss"] / counts["b"] if counts["b"] and train_global else float("nan"),
            "loss_local": sums["loss_local"] / counts["a"] if counts["a"] else float("nan"),
            "loss_policy": sums["loss_policy"] / counts["b"] if counts["b"] else float("nan"),
            "route_local": sums["route_local"] / counts["b"] if counts["b"] else float("nan"),
            "steps": steps,
        }
        return ClientResult(task.client_id, len(data.train), tensors, metrics, state_bytes(tensors))

    def global_model(self, model: Routed, global_state: State) -> nn.Module:
        """The pure global path with the server's tensors."""
        set_trainable(model, global_state)
        model.routing = "global"
        return model

    def personalize(
        self, model: Routed, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None
    ) -> tuple[nn.Module, dict[str, float]]:
        """The client's personalized model, routed hard, and its routing on the test split.

        It routes between the global path as the server sent it and the client's local path:
        Phase A, then Phase B's policy steps only. A round's global-path steps are the client's
        contribution to the next global model, not part of its personalized model (so the policy
        learns to route against the global path it is evaluated with; the authors' evaluation of
        a client does the same)."""
        result = self._procedure(model, global_state, data, task, train_global=False)
        set_trainable(model, result.tensors)
        model.routing = None
        return model, {f"route_local.{k}": v for k, v in route_fractions(model, data.test).items()}


@ALGORITHMS.register("flow")
class Flow(Algorithm):
    """Flow's server: the example-weighted mean of every routed model tensor, then the server optimizer."""

    name = "flow"
    Params = FlowParams
    Client = FlowClient

    def setup(self, model: nn.Module, info) -> None:
        groups = model.groups()
        self.sent: tuple[str, ...] | None = None
        if self.params.local_start == "global":  # the local path is neither sent nor averaged
            self.sent = tuple(groups["global"] + groups["policy"])

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        return {cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=self.sent) for cid in sampled_client_ids}


__all__ = ["Flow", "FlowClient", "FlowParams", "split_instances"]
