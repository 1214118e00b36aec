"""Local-only training: each client trains its own model and shares nothing.

The reference every personalized method should beat on clients with enough data. A
client's model starts from the seeded initial model (the same for all clients) and is
its state; each round it takes part it trains ``local_epochs`` more. Nothing is sent
either way, and the global model stays the initial model.
"""

from __future__ import annotations

from torch import nn

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, ClientState, ClientTask
from fedtune.algorithms.personal import PersonalClient, PersonalParams
from fedtune.data.base import ClientData
from fedtune.models.base import State, set_trainable


class LocalClient(PersonalClient):
    params: PersonalParams

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        result, _ = super().fit(model, global_state if state is None else state, data, task)
        own = result.tensors
        return ClientResult(task.client_id, result.num_examples, {}, result.metrics, 0), own

    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        set_trainable(model, state)
        return model


@ALGORITHMS.register("local")
class Local(Algorithm):
    """No aggregation: the global model is the initial model throughout."""

    name = "local"
    Params = PersonalParams
    Client = LocalClient
    server_optimizers = ("fedavg",)

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        return {cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=()) for cid in sampled_client_ids}

    def aggregate(self, round: int, global_state: State, results: list[ClientResult]) -> State:
        return global_state
