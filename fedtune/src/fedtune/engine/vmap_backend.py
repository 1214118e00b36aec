"""``backend = "vmap"``: the clients of a round train together, vectorized over clients.

Every sampled client starts from the same global trainables, so a round holds C copies of
one small model that differ only in the data they see. Here they are one stacked copy
(leading dimension C); one local step of all clients is one call of
``torch.func.vmap`` of the loss over the stack (evaluated with
``torch.func.functional_call`` on the shared module) and one backward pass, and the
optimizer's update is applied to all C slices at once. On a CPU that step moves as many
bytes as C sequential steps (each client's weights are read for a few examples and then
rewritten by the update), so it saves only Python's per-step overhead. Where the model is
a chain of linear layers trained by SGD (FedAvg's MLP), clients with few local steps
train instead as the shared global weights plus a low-rank update each
(:mod:`fedtune.engine.vmap_low_rank`): no copy per client until the last step, and one
large matrix product of all clients' rows with the global weights per layer.

Each client keeps its own batches: the same seeded shuffles as the sequential loop
(``torch_generator(seed, "batches", round, client, epoch)``), in mini-batches of
``batch_size`` whose last one may be short. Clients hold different amounts of data, so
step s of an epoch is padded to the longest client and *masked*: a padded example adds
nothing to its client's loss (the loss is the mean over the client's real examples of
that batch, as ``cross_entropy`` takes it), and a client with no batch left at step s
(or past ``max_steps``) takes no step at all: its weights, its momentum (SGD) or moment
estimates and step count (Adam) stay exactly as they were. The results therefore equal
the sequential loop's (``backend = "inprocess"``) up to float rounding: batched and
single matrix products sum in different orders.

What it cannot run it refuses in one line when the backend starts, never by falling back
to the sequential loop:

- client procedures whose local step it does not know (estimated-gradient methods such as
  Spry, FedFGD, FedMeZO, BAFFLE, FwdLLM; FedSGD; any other ``fit``): it knows FedAvg's
  client (:class:`~fedtune.algorithms.base.Client`) and FedProx's proximal objective,
  registered in :data:`OBJECTIVES`;
- stateful clients, and early stopping (Flash reads each client's validation loss
  between epochs);
- models with dropout (a vmapped dropout draws other masks than the sequential one), batch
  normalisation (running statistics are state updated in the forward pass) or recurrent
  layers;
- rounds whose stacked copies, gradients, optimizer state and padded data would need more
  than half the memory free on the device.

A client whose training loss becomes NaN or inf is a failed client, as on every backend
(its slice is independent of the others, so the rest of the round is unaffected); the
round then goes on by the experiment's failure policy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedtune.algorithms import (
    ALGORITHMS,
    Client,
    ClientResult,
    ClientState,
    ClientTask,
    LocalParams,
)
from fedtune.algorithms.fedprox import FedProxClient
from fedtune.config import Experiment
from fedtune.data.base import ClientData
from fedtune.engine.backend import Backend
from fedtune.engine.vmap_low_rank import (
    LowRankClients,
    cheaper_than_copies,
    linear_chain,
    runs_low_rank,
)
from fedtune.engine.worker import ClientFailure, ClientRun, ClientWorker, Outcome, describe_error
from fedtune.errors import ConfigError
from fedtune.models.base import State, state_bytes
from fedtune.seeding import torch_generator

Penalty = Callable[[State, State], Tensor]
"""A term added to a client's loss: ``penalty(client's trainables, global trainables)``."""

OBJECTIVES: dict[type[Client], Callable[[Client], Penalty | None]] = {}
"""Client procedures the vmap backend can vectorize (by exact class), each with the term it
adds to the cross-entropy (None: none). A subclass that overrides ``fit`` is a different
procedure and is refused until registered here."""


def register_objective(client_cls: type[Client]):
    def decorator(factory: Callable[[Client], Penalty | None]):
        OBJECTIVES[client_cls] = factory
        return factory

    return decorator


@register_objective(Client)
def _fedavg(client: Client) -> None:
    """FedAvg's client (McMahan et al. 2017, Algorithm 1): plain cross-entropy."""
    return None


@register_objective(FedProxClient)
def _fedprox(client: Client) -> Penalty:
    """FedProx (Li et al. 2020, equation 2): h_k(w; w^t) = F_k(w) + (μ/2)||w - w^t||²."""
    mu = client.params.mu  # type: ignore[attr-defined]

    def penalty(params: State, anchor: State) -> Tensor:
        return 0.5 * mu * sum(((params[n] - anchor[n]) ** 2).sum() for n in anchor)

    return penalty


# layers whose vmapped result would differ from the sequential one, or that vmap cannot run
UNSUPPORTED_LAYERS: dict[type[nn.Module], str] = {
    nn.modules.dropout._DropoutNd: "dropout",
    nn.modules.batchnorm._NormBase: "batch normalisation",
    nn.RNNBase: "a recurrent layer",
}
CPU_GROUP_BYTES = 12 * 2**20  # trainables of one group of clients on a CPU (see VmapBackend.group_size)
MEMORY_SHARE = 0.5  # refuse rounds whose estimate exceeds this share of the free memory


def vectorized_algorithms() -> list[str]:
    """The registered algorithms whose clients the vmap backend runs."""
    algorithms = {name: ALGORITHMS.get(name) for name in ALGORITHMS.names()}
    return sorted(n for n, a in algorithms.items() if a.Client in OBJECTIVES and a.Params().early_stop_gamma is None)


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _refuse(why: str) -> ConfigError:
    return ConfigError(f'backend.name: "vmap" {why}; use backend = "inprocess"')


def check_vectorizable(client: Client, model: nn.Module, algorithm: str) -> None:
    """Raise a one-line :class:`ConfigError` for what the vmap backend cannot run exactly."""
    if client.stateful:
        raise _refuse(f"cannot run {algorithm!r}: its clients keep state between rounds")
    if type(client) not in OBJECTIVES:
        raise _refuse(
            f"cannot run {algorithm!r}: its client procedure ({type(client).__name__}) is not plain local training; "
            f"it runs {', '.join(vectorized_algorithms())}"
        )
    if client.params.early_stop_gamma is not None:
        raise _refuse("cannot stop clients early (early_stop_gamma reads each client's validation loss between epochs)")
    for name, module in model.named_modules():
        for layer, what in UNSUPPORTED_LAYERS.items():
            if isinstance(module, layer) and not (what == "dropout" and module.p == 0):
                raise _refuse(f"cannot run a model with {what} ({name or 'the model'}: {type(module).__name__})")


def estimate_bytes(params: LocalParams, trainable: State, clients: int, largest: ClientData) -> int:
    """Memory of one vectorized round: per client its copy of the trainables, their
    gradient, the optimizer's slots and an update temporary, plus its padded data."""
    slots = {"sgd": 1 if params.momentum else 0}.get(params.optimizer, 2)
    example = sum(t[0].numel() * t.element_size() for t in largest.train.tensors.values()) if len(largest.train) else 0
    return clients * (state_bytes(trainable) * (3 + slots) + len(largest.train) * example)


@dataclass
class _Client:
    """One client's bookkeeping during a vectorized round."""

    task: ClientTask
    data: ClientData
    steps: int = 0
    epochs: int = 0
    loss: float = float("nan")
    failure: str | None = None


class VmapBackend(Backend):
    """The round's clients trained together by ``vmap`` over stacked trainables."""

    def __init__(self, exp: Experiment, worker: ClientWorker) -> None:
        client = worker.client
        check_vectorizable(client, worker.model, exp.algorithm.name)
        trainable = {n: p for n, p in worker.model.named_parameters() if p.requires_grad}
        largest = max(worker.federation.fed.clients, key=lambda c: len(c.train))
        need = estimate_bytes(client.params, trainable, exp.clients_per_round, largest)
        free = free_memory(worker.device)
        if need > MEMORY_SHARE * free:
            raise _refuse(
                f"needs about {need / 2**20:,.0f} MiB for {exp.clients_per_round} stacked clients, more than half "
                f"the {free / 2**20:,.0f} MiB free on {worker.device}; lower clients_per_round"
            )
        self.worker = worker
        self.trainable_bytes = state_bytes(trainable)
        self.params: LocalParams = client.params
        self.penalty = OBJECTIVES[type(client)](client)
        self._losses = vmap(self._loss, in_dims=(0, 0, 0, None))
        # SGD on a chain of linear layers: clients as the global weights plus low-rank updates
        self.chain = linear_chain(worker.model, set(trainable)) if runs_low_rank(self.params, self.penalty is None) else None

    def group_size(self, clients: int) -> int:
        """How many clients train together: all of them on a GPU; on a CPU as many as keep
        their trainables within :data:`CPU_GROUP_BYTES` (the group then stays in cache from
        step to step; one group of 100 MLPs of 0.8 MB each ran 2x slower than groups of 16)."""
        if self.worker.device.type != "cpu":
            return clients
        return max(1, min(clients, CPU_GROUP_BYTES // max(1, self.trainable_bytes)))

    # -- the loss of one client on one padded batch (vmapped over clients) ---------------------
    def _loss(self, params: State, batch: dict[str, Tensor], valid: Tensor, anchor: State) -> Tensor:
        logits = functional_call(self.worker.model, params, (batch,))
        loss = _masked_loss(logits.unsqueeze(0), batch["labels"].unsqueeze(0), valid.unsqueeze(0))[0]
        if self.penalty is not None:
            loss = loss + self.penalty(params, anchor)
        return loss

    # -- a round -------------------------------------------------------------------------------
    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        start = time.perf_counter()
        clients: list[_Client] = []
        outcomes: dict[int, Outcome] = {}
        for index, task in enumerate(tasks):
            try:
                clients.append(_Client(task, self.worker.federation.client_data(task.client_id, task.round).to(self.worker.device)))
            except Exception as err:  # as on every backend: a client that cannot load its data fails alone
                outcomes[index] = ClientFailure(task.client_id, task.round, describe_error(err))
        loaded = [i for i in range(len(tasks)) if i not in outcomes]
        for group, low_rank in self._groups(clients, global_state):
            train = self._train_low_rank if low_rank else self._train
            try:
                trained = train([clients[i] for i in group], global_state)
            except Exception as err:  # one step runs every client of the group: all of them failed
                trained = [ClientFailure(clients[i].task.client_id, clients[i].task.round, describe_error(err)) for i in group]
            for i, outcome in zip(group, trained, strict=True):
                outcomes[loaded[i]] = outcome
        seconds = (time.perf_counter() - start) / max(len(tasks), 1)  # the clients share the round's time
        return [ClientRun(outcomes[i], None, seconds) for i in range(len(tasks))]

    def _steps(self, c: _Client) -> int:
        """The local steps client ``c`` takes this round."""
        steps = math.ceil(len(c.data.train) / self.params.batch_size) * self.params.local_epochs
        return steps if self.params.max_steps is None else min(steps, self.params.max_steps)

    def _groups(self, clients: list[_Client], global_state: State) -> list[tuple[list[int], bool]]:
        """The clients that train together, and whether as low-rank updates: those with few
        enough steps (:func:`cheaper_than_copies`) by their number of steps (no padded step);
        the others as stacked copies, in groups of similar size (little padding)."""
        size, low_rank, copies = self.params.batch_size, {}, []
        chain = self.chain if self.chain is not None and set(global_state) == self.chain.names() else None
        for i, c in enumerate(clients):
            steps = self._steps(c)
            if chain is not None and cheaper_than_copies(chain, global_state, steps * size):
                low_rank.setdefault(steps, []).append(i)
            else:
                copies.append(i)
        groups = [(group, True) for _, group in sorted(low_rank.items())]
        by_size = sorted(copies, key=lambda i: len(clients[i].data.train))
        width = self.group_size(len(by_size))
        return groups + [(by_size[first : first + width], False) for first in range(0, len(by_size), width)]

    def _train_low_rank(self, clients: list[_Client], global_state: State) -> list[Outcome]:
        """SGD of a chain of linear layers (:mod:`~fedtune.engine.vmap_low_rank`): each
        client's weights are the global weights plus a low-rank update, formed at the end."""
        cfg, device, count = self.params, self.worker.device, len(clients)
        assert self.chain is not None
        anchor = {n: t.detach() for n, t in global_state.items()}
        longest = max(math.ceil(len(c.data.train) / cfg.batch_size) for c in clients)
        group = LowRankClients(self.chain, anchor, cfg, count, longest * cfg.local_epochs, device)
        for batch, mask, losses in self._local_steps(clients):
            losses.copy_(group.step(batch, mask, _masked_loss))
        weights = group.weights()
        return [self._outcome(i, c, weights) for i, c in enumerate(clients)]

    def _train(self, clients: list[_Client], global_state: State) -> list[Outcome]:
        cfg, device = self.params, self.worker.device
        count = len(clients)
        anchor = {n: t.detach() for n, t in global_state.items()}
        weights = {n: t.detach().unsqueeze(0).repeat(count, *([1] * t.dim())) for n, t in anchor.items()}
        slots = {"sgd": ("momentum",) if cfg.momentum else ()}.get(cfg.optimizer, ("exp_avg", "exp_avg_sq"))
        state = {slot: {n: torch.zeros_like(w) for n, w in weights.items()} for slot in slots}
        taken = torch.zeros(count, dtype=torch.float64, device=device)  # steps so far (Adam's bias correction)
        self.worker.model.train()
        for batch, mask, losses in self._local_steps(clients):
            grads = self._gradients(weights, batch, mask, anchor, losses)
            active = mask.any(1)
            taken += active
            self._update(weights, grads, state, active, taken)
        return [self._outcome(i, c, weights) for i, c in enumerate(clients)]

    def _gradients(self, weights: State, batch: dict[str, Tensor], valid: Tensor, anchor: State, losses: Tensor) -> State:
        """Every client's gradient of its own loss, written into ``losses``.

        The losses come from one vmapped forward pass; one backward pass of their sum
        then gives each client's gradient in its slice, since no client's loss depends on
        another client's weights (∂(Σ_c L_c)/∂w_c = ∂L_c/∂w_c). Plain autograd here, not
        ``torch.func.grad``, whose first call imports TorchDynamo (seconds of start-up).
        """
        leaves = {n: w.detach().requires_grad_() for n, w in weights.items()}
        per_client = self._losses(leaves, batch, valid, anchor)
        grads = torch.autograd.grad(per_client.sum(), list(leaves.values()))
        losses.copy_(per_client.detach())
        return dict(zip(leaves, grads, strict=True))

    def _local_steps(self, clients: list[_Client]) -> Iterator[tuple[dict[str, Tensor], Tensor, Tensor]]:
        """The group's local steps, epoch by epoch: every client's (padded) batch, which of
        its examples are real, and the row (one loss per client) the step writes its losses
        into; after each epoch, the losses are recorded (:meth:`_record_epoch`)."""
        device, count = self.worker.device, len(clients)
        data = _padded([c.data for c in clients], device)
        rows = torch.arange(count, device=device).unsqueeze(1)
        for epoch in range(self.params.local_epochs):
            started, index, valid = self._epoch_batches(clients, epoch)
            if not started:  # every client is past max_steps
                break
            losses = torch.zeros(index.shape[0], count, device=device)
            for s in range(index.shape[0]):
                yield {k: v[rows, index[s].to(device)] for k, v in data.items()}, valid[s].to(device), losses[s]
            self._record_epoch([clients[i] for i in started], losses[:, started].double().cpu())

    def _epoch_batches(self, clients: list[_Client], epoch: int) -> tuple[list[int], Tensor, Tensor]:
        """The clients that start this epoch (those not past ``max_steps``, as in
        ``Client.fit``) and, per step and client, the examples of its batch (padded to
        ``batch_size``) and which of them are real; a client with no batch left has none."""
        cfg = self.params
        size = cfg.batch_size
        started, plans = [], []
        for i, c in enumerate(clients):
            left = math.inf if cfg.max_steps is None else cfg.max_steps - c.steps
            if left <= 0:
                continue
            n = len(c.data.train)
            order = torch.randperm(n, generator=torch_generator(c.task.seed, "batches", c.task.round, c.task.client_id, epoch))
            started.append(i)
            plans.append((i, order[: int(min(math.ceil(n / size), left)) * size]))
        longest = max((math.ceil(len(used) / size) for _, used in plans), default=0)
        index = torch.zeros(longest, len(clients), size, dtype=torch.long)
        valid = torch.zeros(longest, len(clients), size, dtype=torch.bool)
        for i, used in plans:
            flat = torch.zeros(longest * size, dtype=torch.long)
            flat[: len(used)] = used
            index[:, i] = flat.view(longest, size)
            valid[:, i] = (torch.arange(longest * size) < len(used)).view(longest, size)
        return started, index, valid

    def _update(self, weights: State, grads: State, state: dict[str, State], active: Tensor, taken: Tensor) -> None:
        """One optimizer step for the active clients, as ``torch.optim`` takes it; the
        inactive clients' weights and optimizer state do not move.

        SGD runs in place, one pass per tensor: an inactive client's slice gets ``0·g``
        added (its gradient is finite: a client whose loss turned non-finite has failed
        already) and its momentum is multiplied by 1, so neither changes by a bit.
        """
        cfg = self.params
        if cfg.optimizer == "sgd" and not cfg.momentum and not cfg.weight_decay and bool(active.all()):
            # every client steps: one fused update, no masks (w <- w - lr·g as torch.optim.SGD)
            with torch.no_grad():
                for name, w in weights.items():
                    w.add_(grads[name], alpha=-cfg.lr)
            return
        with torch.no_grad():
            for name, w in weights.items():
                g = grads[name]
                shape = (-1, *([1] * (w.dim() - 1)))
                on = active.to(w.dtype).view(shape)
                if cfg.optimizer != "sgd":
                    w.copy_(torch.where(on.bool(), _adam(cfg, w, g, state["exp_avg"][name], state["exp_avg_sq"][name], on.bool(), taken), w))
                    continue
                if cfg.weight_decay:
                    g = g.add(w, alpha=cfg.weight_decay)
                if cfg.momentum:  # PyTorch's SGD: buf <- μ·buf + g (its first buf is g), w <- w - lr·buf
                    g = state["momentum"][name].mul_(torch.where(on.bool(), cfg.momentum, 1.0).to(w.dtype)).addcmul_(g, on)
                w.addcmul_(g, on, value=-cfg.lr)

    def _record_epoch(self, clients: list[_Client], losses: Tensor) -> None:
        """After an epoch the clients that ran it: its mean loss (as ``train_epoch`` reports
        it), its steps, and the first non-finite loss, which fails the client as it does in
        the sequential loop. ``losses``: (steps, clients), zero where a client took no step."""
        size = self.params.batch_size
        for i, c in enumerate(clients):
            left = math.inf if self.params.max_steps is None else self.params.max_steps - c.steps
            n = int(min(math.ceil(len(c.data.train) / size), left))
            own = losses[:n, i]
            bad = (~torch.isfinite(own)).nonzero()
            if c.failure is None and len(bad):
                s = int(bad[0])
                c.failure = f"FloatingPointError: non-finite training loss ({float(own[s])}) at local step {s} (vmap_backend.py)"
            c.loss = float(own.sum()) / max(n, 1)
            c.steps += n
            c.epochs += 1

    def _outcome(self, i: int, c: _Client, weights: State) -> Outcome:
        if c.failure is not None:
            return ClientFailure(c.task.client_id, c.task.round, c.failure)
        tensors = {n: w[i] for n, w in weights.items()}
        metrics = {"loss": c.loss, "steps": c.steps, "epochs": c.epochs}
        return ClientResult(c.task.client_id, len(c.data.train), tensors, metrics, state_bytes(tensors))


def _adam(cfg: LocalParams, w: Tensor, g: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, mask: Tensor, taken: Tensor) -> Tensor:
    """Adam (Kingma and Ba 2015, Algorithm 1) and AdamW (Loshchilov and Hutter 2019) as
    ``torch.optim`` computes them, with a step count per client; moments move where ``mask``."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim's defaults, which make_optimizer keeps
    if cfg.optimizer == "adamw":
        w = w * (1 - cfg.lr * cfg.weight_decay)
    elif cfg.weight_decay:
        g = g + cfg.weight_decay * w
    m = torch.lerp(exp_avg, g, 1 - beta1)
    v = exp_avg_sq * beta2 + (1 - beta2) * g * g
    exp_avg.copy_(torch.where(mask, m, exp_avg))
    exp_avg_sq.copy_(torch.where(mask, v, exp_avg_sq))
    shape = (-1, *([1] * (w.dim() - 1)))
    t = taken.clamp(min=1)
    step_size = (cfg.lr / (1 - beta1**t)).to(w.dtype).view(shape)
    correction = torch.sqrt(1 - beta2**t).to(w.dtype).view(shape)
    return w - step_size * m / (v.sqrt() / correction + eps)


def _masked_loss(logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    """Each client's cross-entropy (``logits`` (clients, examples, ..., classes)): the mean over
    its batch's real positions (``valid`` per example, labels not -100), as ``cross_entropy``
    takes it for the unpadded batch; 0 for a client with none."""
    per_position = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100, reduction="none")
    keep = ((labels != -100) & valid.view(valid.shape + (1,) * (labels.dim() - 2))).to(per_position.dtype)
    return (per_position.view(labels.shape) * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1)


def _padded(datas: list[ClientData], device: torch.device) -> dict[str, Tensor]:
    """Every client's training tensors in one (clients, longest, ...) tensor per key, zero-padded."""
    longest = max(1, max(len(d.train) for d in datas))
    out = {}
    for key, first in datas[0].train.tensors.items():
        stacked = torch.zeros((len(datas), longest, *first.shape[1:]), dtype=first.dtype, device=device)
        for i, d in enumerate(datas):
            stacked[i, : len(d.train)] = d.train.tensors[key]
        out[key] = stacked
    return out


__all__ = ["OBJECTIVES", "VmapBackend", "check_vectorizable", "estimate_bytes", "register_objective", "vectorized_algorithms"]
