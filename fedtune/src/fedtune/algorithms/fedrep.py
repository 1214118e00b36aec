"""FedRep (Collins et al., ICML 2021, https://arxiv.org/abs/2102.07078).

A shared representation (the body) and a personal head (the last ``head_layers``
layers). Each round a client trains its own head for ``head_epochs`` with the body
fixed, then the body for ``local_epochs`` with its head fixed (Algorithm 1), and sends
the body; the server averages the bodies. The head is the client's state (it starts from
the model's initial head); the personalized model is the global body with that head.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, ClientState, ClientTask
from fedtune.algorithms.personal import PersonalClient, PersonalParams, train_group
from fedtune.data.base import ClientData
from fedtune.models.base import State, get_trainable, set_trainable, state_bytes
from fedtune.models.layers import head_tensors


class FedRepParams(PersonalParams):
    head_layers: int = Field(1, ge=1, description="last layers that form the personal head")
    head_epochs: int = Field(1, ge=1, description="epochs of head training per round, before the body's local_epochs")


class FedRepClient(PersonalClient):
    params: FedRepParams

    def fit(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None = None
    ) -> tuple[ClientResult, ClientState | None]:
        p = self.params
        head = head_tensors(model, p.head_layers, "algorithm.head_layers")
        body = [n for n in global_state if n not in head]
        set_trainable(model, global_state)
        if state is not None:
            set_trainable(model, state)
        keys = (task.seed, "fedrep", task.round, task.client_id)
        head_loss, head_steps = train_group(model, head, data.train, p, p.head_epochs, (*keys, "head"), steps_left=p.max_steps)
        left = None if p.max_steps is None else p.max_steps - head_steps  # max_steps caps both phases together
        body_loss, body_steps = train_group(model, body, data.train, p, p.local_epochs, (*keys, "body"), steps_left=left)
        trained = get_trainable(model)
        tensors = {n: trained[n] for n in body}
        metrics = {"loss": body_loss, "head_loss": head_loss, "steps": head_steps + body_steps}
        return ClientResult(task.client_id, len(data.train), tensors, metrics, state_bytes(tensors)), {n: trained[n] for n in head}

    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        set_trainable(model, global_state)
        set_trainable(model, state)
        return model


@ALGORITHMS.register("fedrep")
class FedRep(Algorithm):
    """The server averages the bodies; only the body travels."""

    name = "fedrep"
    Params = FedRepParams
    Client = FedRepClient

    def setup(self, model: nn.Module, info) -> None:
        head = set(head_tensors(model, self.params.head_layers, "algorithm.head_layers"))
        self.body = tuple(n for n, p in model.named_parameters() if p.requires_grad and n not in head)

    def configure_round(self, round: int, sampled_client_ids: list[int], global_state: State, seed: int) -> dict[int, ClientTask]:
        return {cid: ClientTask(client_id=cid, round=round, seed=seed, tensor_names=self.body) for cid in sampled_client_ids}
