"""Ditto (Li et al., ICML 2021, https://arxiv.org/abs/2012.04221).

Each client keeps a personal model v_k and, every round it takes part, runs
``personal_epochs`` of training on h_k(v; w^t) = F_k(v) + (λ/2)||v − w^t||² (equation 2
of the paper, w^t the global model it received), then FedAvg's local update of the
global model from w^t, which it sends (Algorithm 1). v_k starts at w^t the first time. ``max_steps`` caps each of the two trainings.
The personalized model is v_k, the client state (tensors by name).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from fedtune.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    ClientResult,
    ClientState,
    ClientTask,
    LossFn,
)
from fedtune.algorithms.personal import PersonalClient, PersonalParams, train_group
from fedtune.data.base import ClientData
from fedtune.models.base import State, get_trainable, loss_fn, set_trainable


class DittoParams(PersonalParams):
    ditto_lambda: float = Field(0.1, ge=0, description="λ: pull of the personal model towards the global one")
    personal_epochs: int = Field(1, ge=1, description="epochs of personal-model training per round")
    personal_lr: float | None = Field(None, gt=0, description="learning rate of the personal model (None: lr)")


def proximal_loss(anchor: State, lam: float) -> LossFn:
    """F_k(v) + (λ/2)||v − anchor||² over the tensors of ``anchor``."""
    anchor = {k: v.detach().clone() for k, v in anchor.items()}

    def loss(model: nn.Module, batch) -> object:
        prox = sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters() if n in anchor)
        return loss_fn(model, batch) + 0.5 * lam * prox

    return loss


class DittoClient(PersonalClient):
    params: DittoParams

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        p = self.params
        set_trainable(model, global_state if state is None else state)
        names = list(global_state)
        personal_loss, personal_steps = train_group(
            model, names, data.train, p, p.personal_epochs, (task.seed, "ditto-personal", task.round, task.client_id),
            proximal_loss(global_state, p.ditto_lambda), p.personal_lr, p.max_steps,
        )
        personal = get_trainable(model)
        result, _ = super().fit(model, global_state, data, task)  # FedAvg's local update of w from w^t
        result.metrics.update({"personal_loss": personal_loss, "personal_steps": personal_steps})
        return result, personal

    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        set_trainable(model, state)
        return model


@ALGORITHMS.register("ditto")
class Ditto(Algorithm):
    """FedAvg's server over the global models; personal models stay on the clients."""

    name = "ditto"
    Params = DittoParams
    Client = DittoClient
