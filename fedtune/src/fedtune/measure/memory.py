"""Memory of one client step, measured per method in a fresh process.

Two figures per method (DESIGN, Measuring):

- **tensor bytes above the model**: a :class:`TensorMemoryTracker`
  (``TorchDispatchMode``) sees every tensor an operator returns, counts each storage
  once while it is alive and keeps the peak; the loaded model's weights exist before it
  starts, so the peak is what the step adds on top of them (activations, gradients,
  tangents, optimizer state, temporaries);
- **process peak RSS** (``VmHWM``), reset after the model is loaded by writing 5 to
  ``/proc/self/clear_refs`` so the load does not mask the step.

Methods: ``inference`` (a forward pass under ``no_grad``), ``backprop`` (reverse-mode
gradient of every trainable tensor, then AdamW), ``fedfgd`` (forward gradient over every
trainable tensor, then AdamW) and ``spry`` (forward gradient over one client's share of
the layer groups plus the head, then AdamW; Panchal et al., NeurIPS 2024,
arXiv 2405.15551) and ``spry_exact`` (the same share, the head's gradient exact from the
same pass: :func:`fedtune.grad.exact_head_gradient`). Each runs in its own subprocess so no allocator state carries over.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

METHODS = ("inference", "backprop", "fedfgd", "spry", "spry_exact")


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active.

    Each storage an operator allocates is counted once (outputs that alias an input,
    views and in-place results, are not new) and released when its last reference dies; ``phase(name)`` records the peak reached inside a
    block relative to the bytes live when it began.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}
        self._phase_peak: list[int] = []
        self.phases: dict[str, dict[str, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        if any(r.alias_info is not None for r in returns):
            # views and in-place ops return (part of) an input's storage: no new bytes,
            # and the input may predate the tracker (a weight seen through .t()).
            fresh = [o for o, r in zip(out if len(returns) > 1 else (out,), returns, strict=False) if r.alias_info is None]
        else:
            fresh = [out]
        for t in tree_flatten(fresh)[0]:
            # ZeroTensors (forward AD's lazy zero tangents) report a size but hold no memory.
            if isinstance(t, Tensor) and t.device.type != "meta" and not t._is_zerotensor():
                self._track(t)
        return out

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        nbytes = storage.nbytes()
        self._sizes[key] = nbytes
        self.live += nbytes
        if self.live > self.peak:
            self.peak = self.live
        if self._phase_peak and self.live > self._phase_peak[-1]:
            self._phase_peak[-1] = self.live
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        gc.collect()
        start = self.live
        self._phase_peak.append(start)
        try:
            yield
        finally:
            gc.collect()
            peak = self._phase_peak.pop()
            self.phases[name] = {"start": start, "peak_above_start": peak - start, "end": self.live}


def _proc_status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class MemoryResult:
    """One method's one-step memory; every size in bytes."""

    model: str
    method: str
    batch: int
    seq: int
    weights: int
    trainable: int
    differentiated: int  # tensors this method computes a gradient for
    peak_above_model: int
    breakdown: dict[str, int]
    rss_after_load: int | None
    rss_peak: int | None
    rss_peak_above_load: int | None
    rss_peak_reset: bool
    loss: float | None
    pass_seconds: float | None = None  # least wall time of 3 more gradient passes, untracked
    settings: dict = field(default_factory=dict)


def _time_pass(model: nn.Module, data: dict[str, Tensor], method: str, params: dict[str, Tensor],
               chunk: int | None, seed: int, num_tangents: int, repeats: int = 3) -> float:
    """Least wall seconds of ``repeats`` gradient (or inference) passes outside the tracker; CPU contention
    makes absolute times drift, so compare methods of the same run as ratios."""
    from fedtune.grad import backprop_gradient, exact_head_gradient, forward_gradient, model_loss
    from fedtune.models.hf import head_names

    loss_fn = model_loss(model, data, loss_chunk_size=chunk)
    best = math.inf
    for _ in range(repeats):  # the minimum of a few passes is the least disturbed by other load
        start = time.perf_counter()
        if method == "inference":
            with torch.no_grad():
                loss_fn({})
        elif method == "backprop":
            backprop_gradient(loss_fn, params)
        elif method == "spry_exact":
            exact_head_gradient(loss_fn, params, head_names(model), seed=seed, keys=(0, 0, 1), num_tangents=num_tangents)
        else:
            forward_gradient(loss_fn, params, seed=seed, keys=(0, 0, 1), num_tangents=num_tangents)
        best = min(best, time.perf_counter() - start)
    return best


def _batch(task: str, vocab: int, num_classes: int, batch: int, seq: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "classification":
        out["labels"] = torch.randint(0, num_classes, (batch,), generator=g)
    else:
        out["labels"] = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
    return out


def client_share(model: nn.Module, clients: int, client: int = 0) -> list[str]:
    """Spry's share of client ``client`` among ``clients``: round-robin layer groups plus the head."""
    from fedtune.models.hf import head_names, layer_groups

    groups = layer_groups(model, include_head=False)
    if not groups:
        raise ValueError("the model has no trainable layer groups")
    mine = groups[client % len(groups) :: clients] if clients <= len(groups) else [groups[client % len(groups)]]
    return [n for g in mine for n in g] + head_names(model)


def measure_step(
    model_name: str,
    method: str,
    batch: int = 16,
    seq: int = 128,
    task: str | None = None,
    num_classes: int = 2,
    model_options: dict | None = None,
    clients: int = 10,
    num_tangents: int = 1,
    loss_chunk_size: int | None = None,
    chunk_methods: Sequence[str] = ("spry", "fedfgd"),
    time_step: bool = True,
    seed: int = 0,
) -> MemoryResult:
    """Load ``model_name`` and measure one ``method`` step in *this* process.

    Prefer :func:`measure_memory`, which runs each method in a fresh subprocess.
    ``loss_chunk_size`` applies to causal LMs and to the methods in ``chunk_methods``
    (by default the forward-gradient ones, where it matters most). ``time_step`` also
    times one more pass outside the tracker (``pass_seconds``).
    """
    from fedtune.data.base import DatasetInfo
    from fedtune.grad import backprop_gradient, exact_head_gradient, forward_gradient, model_loss
    from fedtune.models.hf import build_hf_model, head_names

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    task = task or ("causal_lm" if model_name == "smollm2" else "classification")
    info = DatasetInfo(name="bench", task=task, num_classes=num_classes)
    torch.manual_seed(seed)
    model = build_hf_model(model_name, info, **(model_options or {}))
    vocab = model.model.config.vocab_size
    data = _batch(task, vocab, num_classes, batch, seq, seed)
    trainables = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if method in ("spry", "spry_exact"):
        names = client_share(model, clients)
    elif method in ("backprop", "fedfgd"):
        names = list(trainables)
    else:
        names = []
    params = {n: trainables[n] for n in names}
    weights = _bytes(model.parameters()) + _bytes(model.buffers())
    chunk = loss_chunk_size if (task == "causal_lm" and method in chunk_methods and method != "inference") else None

    gc.collect()
    rss_after_load = _proc_status("VmRSS")
    reset = _reset_peak_rss()
    tracker = TensorMemoryTracker()
    loss_value = None
    breakdown: dict[str, int] = {}
    with tracker:
        if method == "inference":
            model.eval()
            with tracker.phase("pass"), torch.no_grad():
                loss_value = float(model_loss(model, data)(params))
            breakdown["activations"] = tracker.phases["pass"]["peak_above_start"]
        else:
            optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4)
            loss_fn = model_loss(model, data, loss_chunk_size=chunk)
            with tracker.phase("pass"):
                if method == "backprop":
                    loss, grads = backprop_gradient(loss_fn, params)
                elif method == "spry_exact":
                    est = exact_head_gradient(loss_fn, params, head_names(model), seed=seed, keys=(0, 0, 0),
                                              num_tangents=num_tangents)
                    loss, grads = est.loss, est.grads
                else:
                    est = forward_gradient(loss_fn, params, seed=seed, keys=(0, 0, 0), num_tangents=num_tangents)
                    loss, grads = est.loss, est.grads
            loss_value = float(loss)
            for n, p in params.items():
                p.grad = grads[n]
            del grads
            with tracker.phase("optimizer"):
                optimizer.step()
            grad_bytes = _bytes(params.values())
            head_bytes = _bytes(params[n] for n in head_names(model)) if method == "spry_exact" else 0
            tangent_bytes = grad_bytes - head_bytes if method != "backprop" else 0
            opt_bytes = _bytes(t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor))
            pass_peak = tracker.phases["pass"]["peak_above_start"]
            breakdown = {
                "activations": max(pass_peak - grad_bytes - tangent_bytes, 0),
                "gradients": grad_bytes,
                "tangents": tangent_bytes,
                "optimizer_state": opt_bytes,
            }
    breakdown = {"weights": weights, **breakdown}
    rss_peak = _proc_status("VmHWM")
    seconds = _time_pass(model, data, method, params, chunk, seed, num_tangents) if time_step else None
    return MemoryResult(
        model=model_name, method=method, batch=batch, seq=seq, weights=weights,
        trainable=_bytes(trainables.values()), differentiated=_bytes(params.values()),
        peak_above_model=tracker.peak, breakdown=breakdown, rss_after_load=rss_after_load, rss_peak=rss_peak,
        rss_peak_above_load=(rss_peak - rss_after_load) if reset and rss_peak and rss_after_load else None,
        rss_peak_reset=reset, loss=loss_value, pass_seconds=seconds,
        settings={"task": task, "clients": clients, "num_tangents": num_tangents, "loss_chunk_size": chunk,
                  "model_options": model_options or {}, "differentiated_tensors": len(params)},
    )


def measure_memory(
    model_name: str,
    methods: Sequence[str] = METHODS,
    batch: int = 16,
    seq: int = 128,
    timeout: float = 1800,
    **options,
) -> list[dict]:
    """Measure each method's one client step in a fresh subprocess; one dict per method.

    ``options`` are :func:`measure_step`'s keyword arguments (task, num_classes,
    model_options, clients, num_tangents, loss_chunk_size, chunk_methods, time_step, seed).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    results = []
    for method in methods:
        spec = json.dumps({"model_name": model_name, "method": method, "batch": batch, "seq": seq, **options})
        proc = subprocess.run([sys.executable, "-m", "fedtune.measure.memory", spec],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"memory worker for {method} failed: {tail[0]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def ratios(results: Sequence[dict]) -> dict[str, float]:
    """Peak-above-model ratios of each method to backprop's and inference's."""
    by = {r["method"]: r["peak_above_model"] for r in results}
    out = {}
    for m, v in by.items():
        for ref in ("backprop", "inference"):
            if ref in by and m not in (ref, "inference") and by[ref] > 0:
                out[f"{m}/{ref}"] = v / by[ref]
    return {k: round(v, 4) if math.isfinite(v) else v for k, v in out.items()}


def _worker(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="measure one method's step (internal; use fedtune bench memory)")
    parser.add_argument("spec", help="JSON of measure_step's arguments")
    spec = json.loads(parser.parse_args(argv).spec)
    result = measure_step(**spec)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
