"""What the personalized baselines share: a client state holding the personal part, and
local training of a chosen group of tensors.

A :class:`PersonalClient` is stateful (the engine's client-state store keeps its state
between rounds and in checkpoints) and personalizes: its personalized model for
evaluation is the one it would hold after taking part in the round evaluated — its
procedure run from the current global model and its stored state (none for a client
that never took part), then :meth:`PersonalClient.personal_model` of the new state. So
every method personalizes from the same global model (FedAvg + finetuning and Flow do
too), and a client sampled long ago is not judged on a stale model. An evaluation never
changes the store.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from pydantic import model_validator
from torch import nn

from fedtune.algorithms.base import (
    Client,
    ClientState,
    ClientTask,
    LocalParams,
    LossFn,
    make_optimizer,
    train_epoch,
)
from fedtune.data.base import ClientData, Examples
from fedtune.models.base import State, loss_fn
from fedtune.seeding import torch_generator


class PersonalParams(LocalParams):
    """Local settings of the personalized baselines; they run fixed epochs (no early stopping)."""

    @model_validator(mode="after")
    def _no_early_stop(self) -> PersonalParams:
        if self.early_stop_gamma is not None:
            raise ValueError("early_stop_gamma: the personalized baselines run fixed epochs; remove it")
        return self


def train_group(
    model: nn.Module,
    names: list[str],
    examples: Examples,
    cfg: LocalParams,
    epochs: int,
    keys: tuple,
    loss: LossFn = loss_fn,
    lr: float | None = None,
    steps_left: int | None = None,
) -> tuple[float, int]:
    """``epochs`` of training of the tensors ``names`` only (their own optimizer); (mean loss, steps).

    ``keys`` (seed, purpose, round, client) seed each epoch's shuffle; the other tensors
    get gradients but never move.
    """
    params = dict(model.named_parameters())
    optimizer = make_optimizer([params[n] for n in names], cfg.model_copy(update={"lr": lr or cfg.lr}))
    total, steps = 0.0, 0
    for epoch in range(epochs):
        left = None if steps_left is None else steps_left - steps
        if left is not None and left <= 0:
            break
        mean, taken = train_epoch(model, examples, optimizer, cfg, torch_generator(*keys, epoch), loss, left)
        total += mean * taken
        steps += taken
    model.zero_grad(set_to_none=True)
    return (total / steps if steps else float("nan")), steps


class PersonalClient(Client):
    """A stateful client whose personalized model comes from its state."""

    stateful: ClassVar[bool] = True
    personalizes: ClassVar[bool] = True

    @abstractmethod
    def personal_model(self, model: nn.Module, global_state: State, state: ClientState) -> nn.Module:
        """``model`` holding the client's personalized tensors."""

    def personalize(
        self, model: nn.Module, global_state: State, data: ClientData, task: ClientTask, state: ClientState | None
    ) -> tuple[nn.Module, dict[str, float]]:
        _, new_state = self.fit(model, global_state, data, task, state)
        return self.personal_model(model, global_state, new_state), {}
