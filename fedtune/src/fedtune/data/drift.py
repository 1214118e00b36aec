"""Concept drift: clients' data change with the round, as in Flash's experiments.

Panchal et al., "Flash: Concept Drift Adaptation in Federated Learning", ICML 2023.

A drift is a *schedule* (which concept a client sees in a round) and a *kind* (what a
concept does to examples). Concept 0 is the data as loaded; concept 1 is the drifted
data. Schedules (``SCHEDULES``):

- ``sudden``: every client switches to concept 1 at round ``start``;
- ``incremental``: clients fall into ``groups`` groups (client id mod groups); group g
  switches at round ``start + g * interval``;
- ``recurrent``: from ``start`` all clients alternate between concept 1 and concept 0
  every ``period`` rounds (the old concept returns).

Kinds (``DRIFT_KINDS``):

- ``label_swap``: ``pairs`` seeded pairs of classes exchange their labels (or ``swap``);
- ``label_shift``: class priors change: each client keeps an example of class c with
  probability w_c / max(w), w ~ Dirichlet(``shift_alpha``) seeded, the same subset
  every round;
- ``feature``: a fixed seeded permutation of the input features (``feature = "permute"``)
  or a rotation of images by ``angle`` degrees (``feature = "rotate"``).

The engine calls ``DriftSimulator.apply(client_id, round, data)`` for the data a client
trains on and ``apply_examples(client_id, round, test)`` for evaluation, so the test
data drift with the training data and accuracy measures the current concept.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from fedtune.data.base import ClientData, DatasetInfo, Examples
from fedtune.registry import Registry
from fedtune.seeding import numpy_rng

# Declared before DriftConfig, which accepts exactly the names registered below.
SCHEDULES: Registry[type[Schedule]] = Registry("drift schedule")
DRIFT_KINDS: Registry[type[DriftKind]] = Registry("drift kind")


class DriftConfig(BaseModel):
    """The ``[drift]`` table of an experiment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: Annotated[str, AfterValidator(DRIFT_KINDS.validator())] = Field(
        "label_swap", description="what the new concept changes (a registered drift kind)"
    )
    schedule: Annotated[str, AfterValidator(SCHEDULES.validator())] = Field(
        "sudden", description="when clients switch concept (a registered drift schedule)"
    )
    start: int = Field(20, ge=1, description="first round on the drifted concept")
    groups: int = Field(4, ge=1, description="incremental: number of client groups drifting one after another")
    interval: int = Field(5, ge=1, description="incremental: rounds between two groups' drifts")
    period: int = Field(20, ge=1, description="recurrent: rounds spent in a concept before switching back")
    pairs: int = Field(3, ge=1, description="label_swap: number of seeded class pairs that exchange labels")
    swap: list[tuple[int, int]] | None = Field(None, description="label_swap: explicit class pairs (overrides pairs)")
    shift_alpha: float = Field(0.5, gt=0, description="label_shift: Dirichlet concentration of the new class priors")
    feature: Literal["permute", "rotate"] = Field("permute", description="feature: pixel permutation or image rotation")
    angle: float = Field(90.0, description="feature = rotate: rotation in degrees")

    @model_validator(mode="after")
    def _swap_pairs(self) -> DriftConfig:
        if self.swap is not None:
            flat = [c for pair in self.swap for c in pair]
            if len(set(flat)) != len(flat) or min(flat, default=0) < 0:
                raise ValueError("swap: pairs must use distinct non-negative class ids")
        return self


# -- schedules ---------------------------------------------------------------------------


class Schedule(ABC):
    """Which concept (0 or 1) a client sees in a round."""

    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def concept(self, client_id: int, round: int) -> int: ...

    @abstractmethod
    def drift_rounds(self, rounds: int) -> list[int]:
        """Rounds ≤ ``rounds`` at which some client's concept changes."""


@SCHEDULES.register("sudden")
class Sudden(Schedule):
    def concept(self, client_id: int, round: int) -> int:
        return int(round >= self.cfg.start)

    def drift_rounds(self, rounds: int) -> list[int]:
        return [self.cfg.start] if self.cfg.start <= rounds else []


@SCHEDULES.register("incremental")
class Incremental(Schedule):
    def concept(self, client_id: int, round: int) -> int:
        return int(round >= self.cfg.start + (client_id % self.cfg.groups) * self.cfg.interval)

    def drift_rounds(self, rounds: int) -> list[int]:
        return [r for g in range(self.cfg.groups) if (r := self.cfg.start + g * self.cfg.interval) <= rounds]


@SCHEDULES.register("recurrent")
class Recurrent(Schedule):
    def concept(self, client_id: int, round: int) -> int:
        if round < self.cfg.start:
            return 0
        return 1 - ((round - self.cfg.start) // self.cfg.period) % 2

    def drift_rounds(self, rounds: int) -> list[int]:
        return list(range(self.cfg.start, rounds + 1, self.cfg.period))


# -- kinds -------------------------------------------------------------------------------


class DriftKind(ABC):
    """What concept 1 does to a client's examples (a pure function of the tensors)."""

    def __init__(self, cfg: DriftConfig, info: DatasetInfo, seed: int) -> None:
        self.cfg, self.info, self.seed = cfg, info, seed

    @abstractmethod
    def __call__(self, tensors: dict[str, Tensor], client_id: int, split: str) -> dict[str, Tensor]: ...


def _need_classes(info: DatasetInfo, kind: str) -> None:
    if info.task != "classification":
        raise ValueError(f"drift.kind: {kind} needs a classification dataset; {info.name} is {info.task}")


@DRIFT_KINDS.register("label_swap")
class LabelSwap(DriftKind):
    def __init__(self, cfg: DriftConfig, info: DatasetInfo, seed: int) -> None:
        super().__init__(cfg, info, seed)
        _need_classes(info, "label_swap")
        c = info.num_classes
        if cfg.swap is not None:
            pairs = [tuple(p) for p in cfg.swap]
            if max(max(p) for p in pairs) >= c:
                raise ValueError(f"drift.swap: class ids must be below {c}")
        else:
            if 2 * cfg.pairs > c:
                raise ValueError(f"drift.pairs: {cfg.pairs} pairs need {2 * cfg.pairs} classes; {info.name} has {c}")
            order = numpy_rng(seed, "drift-swap").permutation(c)
            pairs = [(int(order[2 * i]), int(order[2 * i + 1])) for i in range(cfg.pairs)]
        self.pairs = pairs
        self.mapping = torch.arange(c)
        for a, b in pairs:
            self.mapping[a], self.mapping[b] = b, a

    def __call__(self, tensors: dict[str, Tensor], client_id: int, split: str) -> dict[str, Tensor]:
        labels = tensors["labels"]
        keep = labels < 0  # -100: ignored positions stay ignored
        tensors["labels"] = torch.where(keep, labels, self.mapping[labels.clamp_min(0)])
        return tensors


@DRIFT_KINDS.register("label_shift")
class LabelShift(DriftKind):
    def __init__(self, cfg: DriftConfig, info: DatasetInfo, seed: int) -> None:
        super().__init__(cfg, info, seed)
        _need_classes(info, "label_shift")
        w = numpy_rng(seed, "drift-priors").dirichlet(np.full(info.num_classes, cfg.shift_alpha))
        self.keep_prob = torch.from_numpy(w / w.max())

    def __call__(self, tensors: dict[str, Tensor], client_id: int, split: str) -> dict[str, Tensor]:
        labels = tensors["labels"]
        if len(labels) == 0:
            return tensors
        u = torch.from_numpy(numpy_rng(self.seed, "drift-shift", client_id, split).random(len(labels)))
        keep = u < self.keep_prob[labels.clamp_min(0)]
        if not bool(keep.any()):  # keep the example of the most likely class rather than none
            keep[int(self.keep_prob[labels.clamp_min(0)].argmax())] = True
        return {k: v[keep] for k, v in tensors.items()}


@DRIFT_KINDS.register("feature")
class FeatureDrift(DriftKind):
    def __init__(self, cfg: DriftConfig, info: DatasetInfo, seed: int) -> None:
        super().__init__(cfg, info, seed)
        shape = tuple(info.input_shape)
        if not shape:
            raise ValueError(f"drift.kind: feature drift needs inputs 'x' of known shape; {info.name} has none")
        if cfg.feature == "rotate" and len(shape) < 2:
            raise ValueError(f"drift.feature: rotate needs image inputs; {info.name} has shape {shape}")
        self.perm = torch.from_numpy(numpy_rng(seed, "drift-permute").permutation(math.prod(shape)))
        self.theta = None
        if cfg.feature == "rotate" and cfg.angle % 90 != 0:
            a = math.radians(cfg.angle)
            self.theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])

    def __call__(self, tensors: dict[str, Tensor], client_id: int, split: str) -> dict[str, Tensor]:
        x = tensors["x"]
        if len(x) == 0:
            return tensors
        if self.cfg.feature == "permute":
            tensors["x"] = x.flatten(1)[:, self.perm].reshape(x.shape)
        elif self.theta is None:
            tensors["x"] = torch.rot90(x, k=int(self.cfg.angle // 90) % 4, dims=(-2, -1))
        else:
            images = x.reshape(-1, 1, *x.shape[-2:]).float()
            grid = F.affine_grid(self.theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
            background = images.amin(dim=(-2, -1), keepdim=True)  # fill the corners with the image's background
            rotated = F.grid_sample(images - background, grid, align_corners=False) + background
            tensors["x"] = rotated.reshape(x.shape).to(x.dtype)
        return tensors


# -- the simulator the engine calls ------------------------------------------------------


class DriftSimulator:
    """Applies a schedule and a kind to clients' data; results are cached per concept.

    Parameters
    ----------
    cfg : DriftConfig
        The ``[drift]`` table.
    info : DatasetInfo
        The dataset's description (classes, input shape).
    seed : int
        The run seed; swap pairs, priors and permutations derive from it.
    """

    def __init__(self, cfg: DriftConfig, info: DatasetInfo, seed: int) -> None:
        self.cfg = cfg
        self.schedule = SCHEDULES.get(cfg.schedule)(cfg)
        self.kind = DRIFT_KINDS.get(cfg.kind)(cfg, info, seed)
        self._cache: dict[tuple, tuple[Examples, Examples]] = {}

    @classmethod
    def from_config(cls, cfg: DriftConfig, info: DatasetInfo, seed: int) -> DriftSimulator:
        return cls(cfg, info, seed)

    def concept(self, client_id: int, round: int) -> int:
        return self.schedule.concept(client_id, round)

    def drift_rounds(self, rounds: int) -> list[int]:
        """Rounds ≤ ``rounds`` at which some client's concept changes (for reports)."""
        return self.schedule.drift_rounds(rounds)

    def _transform(self, client_id: int, split: str, concept: int, examples: Examples) -> Examples:
        if concept == 0:
            return examples
        key = (client_id, split, concept)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is examples:
            return hit[1]
        out = examples.map(lambda t: self.kind(t, client_id, split))
        self._cache[key] = (examples, out)
        return out

    def apply(self, client_id: int, round: int, data: ClientData) -> ClientData:
        """The client's train / validation / test splits as they are in ``round``."""
        c = self.concept(client_id, round)
        if c == 0:
            return data
        return ClientData(
            train=self._transform(client_id, "train", c, data.train),
            val=self._transform(client_id, "val", c, data.val),
            test=self._transform(client_id, "test", c, data.test),
        )

    def apply_examples(self, client_id: int, round: int, examples: Examples) -> Examples:
        """One set of the client's examples (its test split, for evaluation) in ``round``."""
        return self._transform(client_id, "test", self.concept(client_id, round), examples)
