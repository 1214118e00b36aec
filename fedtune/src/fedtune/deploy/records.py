"""fedtune's client messages as Flower records (flwr Message API, ``flwr.app``).

What crosses between a ``ServerApp`` and a ``ClientApp`` is a ``RecordDict``:

- tensors (the round's global trainables, a result's updated tensors, tensors of a
  client state) as ``ArrayRecord``s, byte for byte (dtype and shape kept; bfloat16,
  which NumPy lacks, travels as raw bytes);
- a :class:`~fedtune.algorithms.ClientTask` and the scalar fields of a
  :class:`~fedtune.algorithms.ClientResult` as ``ConfigRecord``s, the result's metrics as
  a ``MetricRecord`` (ints stay ints, so the metrics file reads the same);
- Spry's per-iteration jvps (one list of K scalars per local step) as one flat float
  list plus the count of each step, in the result's ``ConfigRecord``.

Every decoder is the exact inverse of its encoder, so a round through Flower aggregates
the same numbers as an in-process round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedtune.algorithms import ClientResult, ClientState, ClientTask
from fedtune.engine.worker import ClientFailure, ClientRun
from fedtune.models.base import State

TASK = "fedtune.task"
GUIDE = "fedtune.task.guide"  # a task's guide tensors (FwdLLM's previous global update)
GLOBAL = "fedtune.global"
RESULT = "fedtune.result"
TENSORS = "fedtune.tensors"
METRICS = "fedtune.metrics"
FAILURE = "fedtune.failure"
STATE_TENSORS = "fedtune.state.tensors"
STATE_VALUES = "fedtune.state.values"
PARTITIONS = "fedtune.partitions"

_RAW = "torch.raw"  # stype of tensors NumPy cannot hold (bfloat16): raw bytes, torch dtype


def tensor_to_array(tensor: torch.Tensor) -> Array:
    """One tensor as a Flower ``Array`` (NumPy serialization; raw bytes for bfloat16)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        data = tensor.view(torch.int16).numpy().tobytes()
        return Array(dtype="bfloat16", shape=tuple(tensor.shape), stype=_RAW, data=data)
    return Array(tensor)


def array_to_tensor(array: Array, device: torch.device | str = "cpu") -> torch.Tensor:
    """The tensor an ``Array`` from :func:`tensor_to_array` holds."""
    if array.stype == _RAW:
        raw = torch.frombuffer(bytearray(array.data), dtype=torch.int16).view(torch.bfloat16)
        return raw.reshape(array.shape).to(device)
    return torch.from_numpy(np.array(array.numpy(), copy=True)).to(device)


def state_to_record(state: State) -> ArrayRecord:
    """Named tensors as an ``ArrayRecord`` (insertion order kept)."""
    return ArrayRecord({name: tensor_to_array(t) for name, t in state.items()})


def record_to_state(record: ArrayRecord, device: torch.device | str = "cpu") -> State:
    return {name: array_to_tensor(array, device) for name, array in record.items()}


def task_to_record(task: ClientTask) -> ConfigRecord:
    fields: dict[str, Any] = {"client_id": task.client_id, "round": task.round, "seed": task.seed}
    if task.tensor_names is not None:
        fields["tensor_names"] = list(task.tensor_names)
        fields["no_tensors"] = not task.tensor_names  # an empty list and None must stay apart
    return ConfigRecord(fields)


def record_to_task(record: ConfigRecord, guide: State | None = None) -> ClientTask:
    names = None
    if "no_tensors" in record:
        names = () if record["no_tensors"] else tuple(record["tensor_names"])
    return ClientTask(
        client_id=int(record["client_id"]), round=int(record["round"]), seed=int(record["seed"]), tensor_names=names, guide=guide
    )


def task_to_records(task: ClientTask) -> dict[str, ConfigRecord | ArrayRecord]:
    """A whole task: its fields, and its guide tensors when it has any."""
    out: dict[str, ConfigRecord | ArrayRecord] = {TASK: task_to_record(task)}
    if task.guide is not None:
        out[GUIDE] = state_to_record(task.guide)
    return out


def records_to_task(content: RecordDict, device: torch.device | str = "cpu") -> ClientTask:
    guide = record_to_state(content[GUIDE], device) if GUIDE in content else None
    return record_to_task(content[TASK], guide)


def _metric_value(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"client metric {name!r} is a {type(value).__name__}; a Flower MetricRecord holds ints and floats only")
    return value


def state_to_records(state: ClientState | None) -> dict[str, ArrayRecord | ConfigRecord]:
    """A stateful client's state: its tensors as an ``ArrayRecord``, other values as a ``ConfigRecord``."""
    if state is None:
        return {}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    try:
        config = ConfigRecord(values)
    except (TypeError, ValueError) as err:
        raise TypeError(f"a client state crosses Flower as tensors and ConfigRecord values (numbers, strings, bytes, lists): {err}") from None
    return {STATE_TENSORS: state_to_record(tensors), STATE_VALUES: config}


def records_to_state(content: RecordDict, device: torch.device | str = "cpu") -> ClientState | None:
    if STATE_VALUES not in content:
        return None
    state: ClientState = dict(content[STATE_VALUES])
    state.update(record_to_state(content[STATE_TENSORS], device))
    return state


def run_to_content(run: ClientRun) -> RecordDict:
    """A client's run (result or failure, new state, seconds) as the reply's content."""
    content = RecordDict()
    outcome = run.outcome
    if isinstance(outcome, ClientFailure):
        content[FAILURE] = ConfigRecord({"client_id": outcome.client_id, "round": outcome.round, "error": outcome.error, "seconds": run.seconds})
        return content
    fields: dict[str, Any] = {
        "client_id": outcome.client_id,
        "num_examples": outcome.num_examples,
        "bytes_up": outcome.bytes_up,
        "seconds": run.seconds,
        "has_jvps": outcome.jvps is not None,
    }
    if outcome.jvps is not None:
        fields["jvps"] = [float(x) for step in outcome.jvps for x in step]
        fields["jvp_counts"] = [len(step) for step in outcome.jvps]
    content[RESULT] = ConfigRecord(fields)
    content[TENSORS] = state_to_record(outcome.tensors)
    content[METRICS] = MetricRecord({k: _metric_value(k, v) for k, v in outcome.metrics.items()})
    for key, record in state_to_records(run.state).items():
        content[key] = record
    return content


def content_to_run(content: RecordDict, device: torch.device | str = "cpu") -> ClientRun:
    """The inverse of :func:`run_to_content`."""
    if FAILURE in content:
        failure = content[FAILURE]
        outcome = ClientFailure(int(failure["client_id"]), int(failure["round"]), str(failure["error"]))
        return ClientRun(outcome, None, float(failure["seconds"]))
    fields = content[RESULT]
    jvps = None
    if fields["has_jvps"]:
        flat, counts, jvps, at = list(fields["jvps"]), list(fields["jvp_counts"]), [], 0
        for count in counts:
            jvps.append(flat[at : at + count])
            at += count
    result = ClientResult(
        client_id=int(fields["client_id"]),
        num_examples=int(fields["num_examples"]),
        tensors=record_to_state(content[TENSORS], device),
        metrics=dict(content[METRICS]),
        bytes_up=int(fields["bytes_up"]),
        jvps=jvps,
    )
    return ClientRun(result, records_to_state(content, device), float(fields["seconds"]))
