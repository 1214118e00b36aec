"""What a run folder records besides its metrics, so that it stands on its own.

- :func:`run_header`: the comment lines at the top of ``config.toml``: the fedtune,
  torch and Python versions (and transformers/peft for Hugging Face models), the git
  commit of the current folder's checkout (and of fedtune's own source when that is a
  different checkout), with a mark when it has uncommitted changes, the command line
  and the time. TOML ignores comments, so ``config.toml`` still loads as an experiment
  (``--resume``, ``compare RUN_FOLDER``). A resumed run keeps the lines of the first
  run and adds a ``resumed:`` line.
- :func:`export_model`: the final global model: a PEFT model's adapter in peft's own
  format (``adapter/``, written by ``save_pretrained``, with a trained classification
  head as peft's ``modules_to_save``, so ``PeftModel.from_pretrained`` on the base model
  restores the whole trained model without fedtune), and for a model of at most :data:`SMALL_MODEL_PARAMETERS`
  parameters its full ``state_dict`` (``model.pt``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import fedtune

SMALL_MODEL_PARAMETERS = 50_000_000  # model.pt for models up to this many parameters (200 MB in float32)
RECORD_PREFIX = "# "


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path) -> str | None:
    """``<commit> in <checkout>`` (plus ``, with uncommitted changes``) for the git checkout
    holding ``folder``; None outside a checkout or without git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} in {top}" + (", with uncommitted changes" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``fedtune run ...`` (the program by its name, not its path)."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_header(model_name: str = "", previous: str | None = None) -> str:
    """The comment lines that open a run's ``config.toml``.

    ``previous``: the ``config.toml`` a resumed run had; its record lines are kept and a
    ``resumed:`` line is added.
    """
    if previous is not None:
        kept = [line for line in previous.splitlines() if line.startswith(RECORD_PREFIX)]
        if kept:
            return "\n".join([*kept, f"{RECORD_PREFIX}resumed: {command_line()} at {_now()}"]) + "\n\n"
    versions = [f"fedtune {fedtune.__version__}", f"torch {torch.__version__}", f"python {platform.python_version()}"]
    if model_name.startswith("hf:"):
        versions += [f"{p} {v}" for p in ("transformers", "peft") if (v := _version(p))]
    lines = [f"written by {', '.join(versions)}", f"command: {command_line()}", f"at: {_now()}"]
    here = git_commit(Path.cwd())
    if here:
        lines.append(f"git: {here}")
    source = git_commit(Path(fedtune.__file__).parent)
    if source and source != here:
        lines.append(f"fedtune source: git {source}")
    return "\n".join(RECORD_PREFIX + line for line in lines) + "\n\n"


def read_header(text: str) -> dict[str, str]:
    """The record lines of a ``config.toml`` as ``{"written by": ..., "command": ..., ...}``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith(RECORD_PREFIX):
            break
        key, sep, value = line.removeprefix(RECORD_PREFIX).partition(": ")
        if not sep and key.startswith("written by "):
            key, value = "written by", key.removeprefix("written by ")
        out[key] = value
    return out


def export_model(model: nn.Module, run_dir: Path) -> list[Path]:
    """Write the final global model (already loaded into ``model``) into ``run_dir``.

    A PEFT model (LoRA, IA³, ...) writes ``adapter/`` with peft's ``save_pretrained``;
    a model of at most :data:`SMALL_MODEL_PARAMETERS` parameters writes ``model.pt``
    (its ``state_dict``, loadable with ``torch.load(weights_only=True)``). Returns the
    paths written.
    """
    written = []
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "peft_config") and hasattr(inner, "save_pretrained"):
        path = run_dir / "adapter"
        inner.save_pretrained(str(path))
        _add_trained_modules(inner, path)
        written.append(path)
    if sum(p.numel() for p in model.parameters()) <= SMALL_MODEL_PARAMETERS:
        path = run_dir / "model.pt"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        written.append(path)
    return written


ADAPTER_TENSORS = ("lora_", "ia3_")  # peft's own tensors, which save_pretrained writes


def _add_trained_modules(peft_model: nn.Module, path: Path) -> None:
    """Add the tensors fedtune trains besides the adapter (a classification head) to the
    saved adapter as peft's ``modules_to_save``, so ``PeftModel.from_pretrained`` restores
    them too: key ``base_model.model.<module>.<tensor>``, module listed in the config."""
    import json

    from safetensors.torch import load_file, save_file

    extra = {n: p.detach().cpu().contiguous() for n, p in peft_model.named_parameters()
             if p.requires_grad and not any(t in n for t in ADAPTER_TENSORS)}
    if not extra:
        return
    weights = path / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors.update(extra)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config_path = path / "adapter_config.json"
    config = json.loads(config_path.read_text())
    modules = {n.removeprefix("base_model.model.").rsplit(".", 1)[0] for n in extra}
    config["modules_to_save"] = sorted(set(config.get("modules_to_save") or []) | modules)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = ["SMALL_MODEL_PARAMETERS", "command_line", "export_model", "git_commit", "read_header", "run_header"]
