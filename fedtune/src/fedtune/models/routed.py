"""Routed models: Flow's global and local path per routed layer, chosen per instance.

Flow (Panchal et al., NeurIPS 2023, "Flow: Per-instance Personalized Federated Learning
Through Dynamic Routing") keeps two copies of each routed layer: a *global* path,
averaged across all clients, and a *local* path. A small policy network outputs a 2-way
softmax per routed layer per instance, ``p = (p_global, p_local)``:

- ``soft`` routing (training): the layer's output is ``p_global · g(h) + p_local · l(h)``;
- ``hard`` routing (evaluation): each instance takes the path of the larger probability,
  the global path on a tie (a deterministic tie-break);
- ``global`` / ``local``: every instance takes that path (the pure models compared with).

``routing = None`` (the default) means soft while ``model.training`` and hard otherwise.
Feed-forward models (MLP, CNN) get the policy on the raw, flattened input; the character
LSTM is unrolled step by step and its policy reads the hidden state of the step before
(the layers' concatenated ``h``), giving the gates of that step's LSTM layers; the gate
of the output layer comes from the last hidden state. A Hugging Face model with LoRA
(:class:`RoutedLoRA`) routes adapters: each routed LoRA layer keeps a global and a local
adapter over the shared frozen weights, and the policy reads the mean input embedding;
its trainable task head (a classifier's ``classifier`` / ``score``) is routable too, as
a whole layer twice.

Tensor names: a routed layer ``net.0`` becomes ``net.0.global_path.*`` and
``net.0.local_path.*``; the policy's tensors start with ``policy.``; every other
trainable tensor (layers that are not routed) belongs to the global group.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from fedtune.data.base import Batch, DatasetInfo, Examples
from fedtune.errors import ConfigError
from fedtune.models.hf import HFModel
from fedtune.models.layers import parameterized_layers
from fedtune.models.small import CharLSTM
from fedtune.seeding import derive_seed

Routing = Literal["soft", "hard", "global", "local"]
GLOBAL, LOCAL = 0, 1  # the path's index in a gate


def hard_route(probs: Tensor) -> Tensor:
    """One-hot gates from probabilities (..., 2): local only where p_local > p_global (ties: global)."""
    local = (probs[..., LOCAL] > probs[..., GLOBAL]).to(probs.dtype)
    return torch.stack([1.0 - local, local], dim=-1)


def _mix(gate: Tensor, global_out, local_out):
    """``gate[:, 0] · global_out + gate[:, 1] · local_out`` per instance (tuples element-wise)."""
    if isinstance(global_out, tuple):
        return tuple(_mix(gate, g, lo) for g, lo in zip(global_out, local_out, strict=True))
    shape = (-1,) + (1,) * (global_out.dim() - 1)
    return gate[:, GLOBAL].reshape(shape) * global_out + gate[:, LOCAL].reshape(shape) * local_out


class RoutedBlock(nn.Module):
    """A layer twice: ``global_path`` and ``local_path`` (a copy), mixed by a per-instance gate."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.global_path = layer
        self.local_path = copy.deepcopy(layer)
        self.routing: Routing = "global"
        self.gate: Tensor | None = None  # (B, 2), set by the routed model before each forward

    def forward(self, *inputs):
        if self.routing == "global":
            return self.global_path(*inputs)
        if self.routing == "local":
            return self.local_path(*inputs)
        return _mix(self.gate, self.global_path(*inputs), self.local_path(*inputs))


class Routed(nn.Module):
    """What every routed model shares: its blocks, the routing mode, the last gates."""

    blocks: dict[str, RoutedBlock]

    def __init__(self) -> None:
        super().__init__()
        self.routing: Routing | None = None
        self.last_probs: Tensor | None = None  # (B, K, 2) policy probabilities of the last forward
        self.last_gates: Tensor | None = None  # (B, K, 2) the gates used (soft: = probs; hard: one-hot)

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks)

    def mode(self) -> Routing:
        if self.routing is not None:
            return self.routing
        return "soft" if self.training else "hard"

    def _gates(self, logits: Tensor) -> Tensor:
        """(B, K, 2) gates from the policy's (B, 2K) logits, per the mode; records them."""
        probs = torch.softmax(logits.reshape(logits.shape[0], len(self.blocks), 2), dim=-1)
        gates = probs if self.mode() == "soft" else hard_route(probs)
        return probs, gates

    def _set_blocks(self, gates: Tensor | None) -> None:
        mode = self.mode()
        for k, block in enumerate(self.blocks.values()):
            block.routing = mode
            block.gate = None if gates is None else gates[:, k]

    def groups(self) -> dict[str, list[str]]:
        """Trainable tensor names per group: ``global``, ``local`` and ``policy``."""
        out: dict[str, list[str]] = {"global": [], "local": [], "policy": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            group = "policy" if name.startswith("policy.") else "local" if ".local_path." in name else "global"
            out[group].append(name)
        return out

    def local_probs(self) -> Tensor:
        """The local-path probability of every gate of the last forward (instances, steps, blocks)."""
        if self.last_probs is None:
            raise RuntimeError("local_probs needs a soft or hard forward first")
        return self.last_probs[..., LOCAL]

    def copy_global_to_local(self) -> None:
        """Start the local path from the global path (Flow's option ``local_start = "global"``)."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, p in params.items():
                if ".local_path." in name:
                    p.copy_(params[name.replace(".local_path.", ".global_path.")])


class RoutedFeedForward(Routed):
    """An MLP or CNN with chosen layers routed; the policy reads the flattened raw input."""

    def __init__(self, base: nn.Module, layers: Sequence[str], in_features: int, policy_hidden: int) -> None:
        super().__init__()
        self.base = base
        blocks = {}
        for name in layers:
            parent_name, _, child = name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            block = RoutedBlock(getattr(parent, child))
            setattr(parent, child, block)
            blocks[name] = block
        self.blocks = blocks  # plain dict: the blocks are registered under base already
        self.policy = nn.Sequential(nn.Linear(in_features, policy_hidden), nn.ReLU(), nn.Linear(policy_hidden, 2 * len(blocks)))

    def forward(self, batch: Batch) -> Tensor:
        if self.mode() in ("soft", "hard"):
            self.last_probs, self.last_gates = self._gates(self.policy(batch["x"].flatten(1).float()))
            self._set_blocks(self.last_gates)
        else:
            self.last_probs = self.last_gates = None
            self._set_blocks(None)
        return self.base(batch)


def _lstm_cells(lstm: nn.LSTM) -> list[nn.LSTMCell]:
    """One ``LSTMCell`` per layer of ``lstm``, holding the same weights (same gate order)."""
    cells = []
    for layer in range(lstm.num_layers):
        width = lstm.input_size if layer == 0 else lstm.hidden_size
        cell = nn.LSTMCell(width, lstm.hidden_size)
        with torch.no_grad():
            for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, part).copy_(getattr(lstm, f"{part}_l{layer}"))
        cells.append(cell)
    return cells


class RoutedCharLSTM(Routed):
    """The character LSTM unrolled per step; the policy reads the previous step's hidden state.

    Routable layers: ``lstm.0`` ... ``lstm.{L-1}`` (gated at every step) and ``out``
    (gated once, from the last hidden state). The embedding is shared (global group).
    """

    def __init__(self, base: CharLSTM, layers: Sequence[str], policy_hidden: int) -> None:
        super().__init__()
        self.embedding = base.embedding
        hidden, num_layers = base.lstm.hidden_size, base.lstm.num_layers
        cells: list[nn.Module] = _lstm_cells(base.lstm)
        names = [f"lstm.{i}" for i in range(num_layers)]
        blocks = {}
        for i, name in enumerate(names):
            if name in layers:
                cells[i] = blocks[name] = RoutedBlock(cells[i])
        self.cells = nn.ModuleList(cells)
        self.out = RoutedBlock(base.out) if "out" in layers else base.out
        if "out" in layers:
            blocks["out"] = self.out
        self.blocks = blocks
        self.hidden_size = hidden
        self.policy = nn.Sequential(nn.Linear(hidden * num_layers, policy_hidden), nn.ReLU(), nn.Linear(policy_hidden, 2 * len(blocks)))

    def forward(self, batch: Batch) -> Tensor:
        x = self.embedding(batch["x"].long())
        b, steps = x.shape[0], x.shape[1]
        h = [x.new_zeros(b, self.hidden_size) for _ in self.cells]
        c = [x.new_zeros(b, self.hidden_size) for _ in self.cells]
        routed = self.mode() in ("soft", "hard")
        probs_per_step, gates_per_step = [], []
        if not routed:
            self._set_blocks(None)
        for t in range(steps + 1):
            if routed:  # gates of this step from the hidden state before it
                probs, gates = self._gates(self.policy(torch.cat(h, dim=-1)))
                probs_per_step.append(probs)
                gates_per_step.append(gates)
                self._set_blocks(gates)
            if t == steps:
                break
            inp = x[:, t]
            for i, cell in enumerate(self.cells):
                h[i], c[i] = cell(inp, (h[i], c[i]))
                inp = h[i]
        if routed:  # lstm blocks: gates of every step; out: the gate after the last step
            probs = torch.stack(probs_per_step[:-1], dim=1)  # (B, T, K, 2)
            gates = torch.stack(gates_per_step[:-1], dim=1)
            if "out" in self.blocks:
                k = len(self.blocks) - 1
                probs = torch.cat([probs[:, :, :k], probs_per_step[-1][:, None, k:].expand(-1, steps, -1, -1)], dim=2)
                gates = torch.cat([gates[:, :, :k], gates_per_step[-1][:, None, k:].expand(-1, steps, -1, -1)], dim=2)
            self.last_probs, self.last_gates = probs.reshape(b * steps, -1, 2), gates.reshape(b * steps, -1, 2)
        else:
            self.last_probs = self.last_gates = None
        return self.out(h[-1])


class _AdapterIn(nn.Module):
    """LoRA's A twice: returns [A_global x, A_local x] (the rank axis doubled) for :class:`_AdapterOut`."""

    def __init__(self, lora_a: nn.Linear) -> None:
        super().__init__()
        self.global_path = lora_a
        self.local_path = copy.deepcopy(lora_a)

    @property
    def weight(self) -> Tensor:  # peft reads the adapter's dtype from lora_A.weight
        return self.global_path.weight

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.global_path(x), self.local_path(x)], dim=-1)


class _AdapterOut(RoutedBlock):
    """LoRA's B twice: mixes the two adapters, p_global · B_g A_g x + p_local · B_l A_l x, per instance."""

    def __init__(self, lora_b: nn.Linear) -> None:
        super().__init__(lora_b)
        self.rank = lora_b.in_features

    def forward(self, h: Tensor) -> Tensor:
        g, lo = h[..., : self.rank], h[..., self.rank :]
        if self.routing == "global":
            return self.global_path(g)
        if self.routing == "local":
            return self.local_path(lo)
        return _mix(self.gate, self.global_path(g), self.local_path(lo))


class RoutedLoRA(Routed):
    """A Hugging Face model with LoRA (:mod:`fedtune.models.hf`) whose routed blocks are adapters.

    Each routed LoRA layer keeps a global and a local adapter (A and B); the frozen base
    weights are shared. The policy reads the raw input: the mean of the (frozen) input
    embeddings over the attended tokens. Routable layers: the modules LoRA wraps, and the
    trainable task-head layers (:func:`_head_layers`), by name.
    """

    def __init__(self, base: nn.Module, layers: Sequence[str], policy_hidden: int) -> None:
        super().__init__()
        self.base = base
        blocks: dict[str, RoutedBlock] = {}
        heads = set(_head_layers(base))
        for name in layers:
            if name in heads:  # a whole layer twice, put in its parent's place
                parent, _, child = name.rpartition(".")
                blocks[name] = RoutedBlock(base.get_submodule(name))
                setattr(base.get_submodule(parent), child, blocks[name])
                continue
            lora = base.get_submodule(name)
            adapter = next(iter(lora.lora_A))  # peft's adapter name ("default")
            lora.lora_A[adapter] = _AdapterIn(lora.lora_A[adapter])
            lora.lora_B[adapter] = blocks[name] = _AdapterOut(lora.lora_B[adapter])
        self.blocks = blocks
        if heads & set(layers):  # the head's tensor names now hold .global_path / .local_path
            base.head_names = [n for n, p in base.named_parameters() if p.requires_grad and n.startswith(tuple(f"{h}." for h in heads))]
        width = base._base().get_input_embeddings().embedding_dim
        self.policy = nn.Sequential(nn.Linear(width, policy_hidden), nn.ReLU(), nn.Linear(policy_hidden, 2 * len(blocks)))

    def _pooled_input(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            emb = self.base._base().get_input_embeddings()(batch["input_ids"]).float()
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).unsqueeze(-1).float()
        return (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, batch: Batch) -> Tensor:
        if self.mode() in ("soft", "hard"):
            self.last_probs, self.last_gates = self._gates(self.policy(self._pooled_input(batch)))
            self._set_blocks(self.last_gates)
        else:
            self.last_probs = self.last_gates = None
            self._set_blocks(None)
        return self.base(batch)


def _lora_layers(model: nn.Module) -> list[str]:
    """Names of the modules LoRA wraps (they hold ``lora_A``)."""
    return [name for name, module in model.named_modules() if isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and len(module.lora_A)]


def _head_layers(model: HFModel) -> list[str]:
    """Names of the trainable task-head layers (the leaf modules owning ``model.head_names``)."""
    return [name for name in parameterized_layers(model) if any(h.startswith(f"{name}.") for h in model.head_names)]


def route(model: nn.Module, info: DatasetInfo, layers: Sequence[str] | None, policy_hidden: int, seed: int) -> Routed:
    """``model`` with ``layers`` routed (None: every layer with parameters) and a new seeded policy.

    The local path starts as a copy of the global path; the policy's initialisation
    derives from ``seed``.
    """
    is_lstm, is_lora = isinstance(model, CharLSTM), isinstance(model, HFModel)
    if is_lora and model.peft_method != "lora":
        raise ConfigError(f"model.options.peft: Flow routes LoRA adapters of Hugging Face models; got peft {model.peft_method!r}")
    if not (is_lstm or is_lora) and not info.input_shape:
        raise ConfigError(
            f"model.name: Flow routes the small models (mlp, cnn, logreg, char_lstm), whose policy reads the input 'x', "
            f"and LoRA models; {type(model).__name__} on {info.name!r} has no such input"
        )
    if is_lstm:
        available = [f"lstm.{i}" for i in range(model.lstm.num_layers)] + ["out"]
    else:
        available = _lora_layers(model) + _head_layers(model) if is_lora else parameterized_layers(model)
    chosen = list(available if layers is None else layers)
    unknown = [name for name in chosen if name not in available]
    if unknown or not chosen:
        raise ConfigError(f"algorithm.routed_layers: {unknown or 'none'} not routable; choose among {available}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "flow-policy"))
        if is_lstm:
            routed: Routed = RoutedCharLSTM(model, chosen, policy_hidden)
        elif is_lora:
            routed = RoutedLoRA(model, chosen, policy_hidden)
        else:
            routed = RoutedFeedForward(model, chosen, math.prod(info.input_shape), policy_hidden)
    return routed.to(next(model.parameters()).device)


@torch.no_grad()
def route_fractions(model: Routed, examples: Examples, batch_size: int = 256) -> dict[str, float]:
    """Per routed layer, the fraction of instances (per step, for the LSTM) routed local under hard routing."""
    was_training, routing = model.training, model.routing
    model.eval()
    model.routing = "hard"
    local = torch.zeros(len(model.blocks))
    count = 0
    for batch in examples.batches(batch_size):
        model(batch)
        local += model.last_gates[..., LOCAL].sum(0).cpu()
        count += model.last_gates.shape[0]
    model.train(was_training)
    model.routing = routing
    return {name: float(local[k]) / count for k, name in enumerate(model.blocks)} if count else {}
