"""``hf:<id-or-path>`` names: Hugging Face hub ids and local folders, in one place.

The dataset and model registries resolve the ``hf:`` prefix (:data:`PREFIX`) through
:func:`source`, which refuses a name that is neither an existing file or folder nor
shaped like a hub id, before anything is loaded. Loaders wrap their
``from_pretrained`` / ``load_dataset`` call in :func:`loading`, which

- checks once per process whether the hub can be reached; when it cannot (no network,
  or ``HF_HUB_OFFLINE=1``) it switches the Hugging Face libraries to their local cache
  for that call, instead of letting them retry for most of a minute;
- turns a failed load into one :class:`~fedtune.errors.ConfigError` line that says
  the id cannot be downloaded and how to give a local folder instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from fedtune.errors import ConfigError, UnknownNameError

PREFIX = "hf:"
USAGE = "hf:<id-or-path>"

# A hub repository id: "name" or "namespace/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
# Names ending like a data or weights file are local paths, never hub ids.
_FILE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".gguf", ".safetensors", ".bin"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_TRUE = {"1", "true", "yes", "on"}
_PROBE_SECONDS = 3.0

RepoType = Literal["model", "dataset"]


def is_local(source: str) -> bool:
    """Whether ``source`` names an existing file or folder on this machine."""
    return Path(source).expanduser().exists()


def source(rest: str) -> str:
    """The id-or-path after ``hf:``; raises :class:`UnknownNameError` for one that is
    neither an existing file or folder nor shaped like a hub id (``name`` or
    ``namespace/name``), such as a mistyped absolute path."""
    if not rest:
        raise UnknownNameError(f"{PREFIX} needs a Hugging Face hub id or a local path after it")
    if is_local(rest) or (_HUB_ID.fullmatch(rest) and Path(rest).suffix.lower() not in _FILE_SUFFIXES):
        return rest
    raise UnknownNameError(f"{PREFIX}{rest}: no such file or folder (and not a hub id of the form namespace/name)")


def _offline_requested() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


@lru_cache(maxsize=1)
def _endpoint_resolves() -> bool:
    """Whether the hub's host name resolves within a few seconds (a daemon thread, so a
    resolver that hangs neither blocks the load nor the interpreter's exit)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    resolved: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            resolved.append(True)
        except OSError:
            resolved.append(False)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(_PROBE_SECONDS)
    return bool(resolved and resolved[0])


def reachable() -> bool:
    """Whether loaders may try the hub: not when offline mode is set, nor when its host
    name does not resolve (checked once per process). Behind a proxy the name may only
    resolve at the proxy, so there we let the libraries try."""
    if _offline_requested():
        return False
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    return _endpoint_resolves()


def _download_hint(source: str, field: str, repo_type: RepoType) -> str:
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    return f'on a machine with network run `hf download {source}{flag} --local-dir DIR`, copy DIR here and set {field} = "{PREFIX}DIR"'


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Hide huggingface_hub's per-retry warnings; the failure is reported once, by us."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# Modules whose HF_HUB_OFFLINE global the libraries consult on every request. They copy
# the environment variable once, at import, so setting the variable later reaches none.
_OFFLINE_SWITCHES = ("huggingface_hub.constants", "datasets.config")


@contextlib.contextmanager
def _cache_only() -> Iterator[None]:
    """Put huggingface_hub, transformers and datasets in offline mode for one load.

    ``local_files_only=True`` is not enough: transformers still asks the hub whether a
    model id has a PEFT adapter, and retries that for half a minute without network.
    """
    modules = []
    for name in _OFFLINE_SWITCHES:
        with contextlib.suppress(ModuleNotFoundError):
            modules.append(importlib.import_module(name))
    saved = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, value in zip(modules, saved, strict=True):
            m.HF_HUB_OFFLINE = value


@contextlib.contextmanager
def loading(source: str, field: str, repo_type: RepoType = "model") -> Iterator[None]:
    """Wrap one load of ``source`` (a hub id or a local path) for the config ``field``.

    When ``source`` is a hub id and the hub cannot be reached, the load uses the local
    cache only. A failed load (``OSError``, ``ValueError``) becomes one
    :class:`ConfigError` line: for a hub id, that it cannot be downloaded and how to give
    a local folder instead.
    """
    local = is_local(source)
    local_only = not local and not reachable()
    try:
        with _quiet_hub(), (_cache_only() if local_only else contextlib.nullcontext()):
            yield
    except (OSError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        if local:
            raise ConfigError(f"{field}: cannot load {PREFIX}{source}: {_first_line(err)}") from None
        if local_only:
            raise ConfigError(
                f"{field}: cannot download {source!r} from the Hugging Face hub (no network here, and it is not in "
                f"the local cache); {_download_hint(source, field, repo_type)}"
            ) from None
        raise ConfigError(
            f"{field}: cannot load {source!r} from the Hugging Face hub ({_first_line(err)}); "
            f"check the id, or {_download_hint(source, field, repo_type)}"
        ) from None


__all__ = ["PREFIX", "USAGE", "is_local", "loading", "reachable", "source"]
