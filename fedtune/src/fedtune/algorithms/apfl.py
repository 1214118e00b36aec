"""APFL: adaptive personalized federated learning (Deng et al., 2020, https://arxiv.org/abs/2003.13461).

Each client keeps a local model v and a mixing weight α; its personalized model is the
mixture v̄ = α v + (1 − α) w (equation 3 of the paper). Every local step on a batch
(Algorithm 1, with the adaptive α of section 3.2), all from the values before the step:

    w ← w − η ∇f(w)
    v ← v − η ∇_v f(v̄) = v − η α ∇f(v̄)
    α ← clip_[0,1](α − η_α ∇_α f(v̄)),   ∇_α f(v̄) = ⟨v − w, ∇f(v̄)⟩

The client sends w; the server averages it as FedAvg does. v starts at the global model
w^t and α at ``alpha`` the first time; the client state is v (tensors by name) and α. Plain SGD, as in the paper: the ``optimizer``,
``momentum`` and ``weight_decay`` settings are refused.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, ClientState, ClientTask
from fedtune.algorithms.personal import PersonalClient, PersonalParams
from fedtune.data.base import ClientData
from fedtune.grad.backprop import backprop_gradient
from fedtune.grad.functional import model_loss
from fedtune.models.base import State, set_trainable, state_bytes
from fedtune.seeding import torch_generator


class APFLParams(PersonalParams):
    alpha: float = Field(0.25, ge=0, le=1, description="initial mixing weight α of the local model")
    alpha_lr: float = Field(0.01, ge=0, description="η_α: learning rate of α (0: α stays fixed)")

    @model_validator(mode="after")
    def _plain_sgd(self) -> APFLParams:
        if self.optimizer != "sgd" or self.momentum or self.weight_decay:
            raise ValueError("optimizer: apfl runs plain SGD (its update rule); remove optimizer, momentum and weight_decay")
        return self


def mixture(v: State, w: State, alpha: float) -> State:
    """v̄ = α v + (1 − α) w, per tensor."""
    return {k: alpha * v[k] + (1.0 - alpha) * w[k] for k in w}


class APFLClient(PersonalClient):
    params: APFLParams

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        p = self.params
        w = {k: t.detach().clone() for k, t in global_state.items()}
        v = {k: (global_state if state is None else state)[k].detach().clone() for k in global_state}
        alpha = p.alpha if state is None else float(state["alpha"])
        model.train()
        steps, total = 0, 0.0
        for epoch in range(p.local_epochs):
            for batch in data.train.batches(p.batch_size, torch_generator(task.seed, "batches", task.round, task.client_id, epoch)):
                if p.max_steps is not None and steps >= p.max_steps:
                    break
                closure = model_loss(model, batch)
                loss, grad_w = backprop_gradient(closure, w)
                _, grad_mix = backprop_gradient(closure, mixture(v, w, alpha))
                grad_alpha = float(sum(((v[k] - w[k]) * grad_mix[k]).sum() for k in w))
                for k in w:
                    v[k] = v[k] - p.lr * alpha * grad_mix[k]
                    w[k] = w[k] - p.lr * grad_w[k]
                alpha = min(max(alpha - p.alpha_lr * grad_alpha, 0.0), 1.0)
                total += float(loss)
                steps += 1
        metrics = {"loss": total / steps if steps else float("nan"), "steps": steps, "alpha": alpha}
        result = ClientResult(task.client_id, len(data.train), w, metrics, state_bytes(w))
        return result, {**v, "alpha": alpha}

    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        set_trainable(model, mixture(state, global_state, float(state["alpha"])))
        return model


@ALGORITHMS.register("apfl")
class APFL(Algorithm):
    """FedAvg's server over the clients' w; v and α stay on the clients."""

    name = "apfl"
    Params = APFLParams
    Client = APFLClient
