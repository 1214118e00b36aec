"""FedProx (Li et al., MLSys 2020, https://arxiv.org/abs/1812.06127).

Clients minimise h_k(w; w^t) = F_k(w) + (μ/2) ||w - w^t||² (equation 2 of the paper),
the proximal term keeping local models near the global one under heterogeneity.
"""

from __future__ import annotations

from pydantic import Field

from fedtune.algorithms.base import ALGORITHMS, Algorithm, Client, LocalParams, LossFn
from fedtune.models.base import State, loss_fn


class FedProxParams(LocalParams):
    mu: float = Field(0.01, ge=0, description="proximal coefficient μ")


class FedProxClient(Client):
    """Local training on h_k(w; w^t) = F_k(w) + (μ/2)||w - w^t||², w^t the global weights."""

    params: FedProxParams

    def local_loss(self, global_state: State) -> LossFn:
        mu = self.params.mu
        anchor = {k: v.detach().clone() for k, v in global_state.items()}

        def loss(model, batch):
            prox = sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters() if n in anchor)
            return loss_fn(model, batch) + 0.5 * mu * prox

        return loss


@ALGORITHMS.register("fedprox")
class FedProx(Algorithm):
    """FedAvg's server with :class:`FedProxClient` clients."""

    name = "fedprox"
    Params = FedProxParams
    Client = FedProxClient
