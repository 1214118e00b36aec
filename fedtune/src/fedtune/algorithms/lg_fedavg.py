"""LG-FedAvg (Liang et al., 2020, https://arxiv.org/abs/2001.01523).

Local representations, a global head: each client keeps its own lower layers (the
body) and shares the last ``global_layers`` layers. A round: the client trains body and
head jointly for ``local_epochs`` from its own body (the global model's the first time)
and the received head, sends the head and keeps the body as its state; the server
averages the heads. The personalized model is the client's body with the global head.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, ClientState, ClientTask
from fedtune.algorithms.personal import PersonalClient, PersonalParams, train_group
from fedtune.data.base import ClientData
from fedtune.models.base import State, get_trainable, set_trainable, state_bytes
from fedtune.models.layers import head_tensors


class LGFedAvgParams(PersonalParams):
    global_layers: int = Field(1, ge=1, description="last layers shared and averaged (the rest stays local)")


class LGFedAvgClient(PersonalClient):
    params: LGFedAvgParams

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        p = self.params
        shared = head_tensors(model, p.global_layers, "algorithm.global_layers")
        set_trainable(model, global_state)
        if state is not None:
            set_trainable(model, state)
        loss, steps = train_group(model, list(global_state), data.train, p, p.local_epochs,
                                  (task.seed, "batches", task.round, task.client_id), steps_left=p.max_steps)
        trained = get_trainable(model)
        tensors = {n: trained[n] for n in shared}
        body = {n: t for n, t in trained.items() if n not in tensors}
        return ClientResult(task.client_id, len(data.train), tensors, {"loss": loss, "steps": steps}, state_bytes(tensors)), body

    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        set_trainable(model, global_state)
        set_trainable(model, state)
        return model


@ALGORITHMS.register("lg_fedavg")
class LGFedAvg(Algorithm):
    """The server averages the shared head; only the head travels."""

    name = "lg_fedavg"
    Params = LGFedAvgParams
    Client = LGFedAvgClient

    def setup(self, model: nn.Module, info) -> None:
        self.shared = tuple(head_tensors(model, self.params.global_layers, "algorithm.global_layers"))

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        return {cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=self.shared) for cid in sampled_client_ids}
