"""Experiments as configuration: TOML in, validated by pydantic, resolved TOML out.

An experiment file has top-level run settings and one table per concern::

    name = "fedavg-mnist"
    seed = 0
    rounds = 30
    clients_per_round = 10

    [data]       # dataset, partition and splits
    [model]      # model name and options
    [algorithm]  # name plus the algorithm's hyperparameters
    [server]     # server optimizer name plus its arguments
    [eval]       # evaluation schedule
    [checkpoint] # checkpoint schedule

Every error names the field (``data.alpha: ...``) in one line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedtune.algorithms import ALGORITHMS
from fedtune.data import DATASETS, options_model
from fedtune.data.drift import DriftConfig
from fedtune.data.options import parse_options
from fedtune.data.partition import PARTITIONERS
from fedtune.errors import ConfigError, UnknownNameError, format_validation_error
from fedtune.models import MODELS
from fedtune.server import SERVER_OPTIMIZERS

__all__ = ["ConfigError", "DataConfig", "Experiment", "format_validation_error", "load_experiment", "validate_components"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    """Which dataset, how it is split over clients, and the per-client splits."""

    name: str = Field("mnist", description="registered dataset name, or hf:<id-or-path>")
    num_clients: int = Field(100, ge=1, description="number of clients (ignored by natural partitions)")
    partition: Annotated[str, AfterValidator(PARTITIONERS.validator())] = Field(
        "iid", description=f"how examples are assigned to clients: {', '.join(PARTITIONERS.names())}"
    )
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration α (smaller = more label skew)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of each client's examples for validation")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of each client's examples for testing")
    options: dict[str, Any] = Field(default_factory=dict, description="dataset-specific options")

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


class ModelConfig(Strict):
    name: str = Field("mlp", description="registered model name, or hf:<id-or-path>")
    options: dict[str, Any] = Field(default_factory=dict, description="model-specific options (sizes, peft, ...)")


class AlgorithmConfig(BaseModel):
    """``name`` plus the algorithm's hyperparameters, checked against its Params model."""

    model_config = ConfigDict(extra="allow")
    name: str = "fedavg"

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ServerConfig(BaseModel):
    """``name`` of the server optimizer plus its constructor arguments (lr, beta1, ...)."""

    model_config = ConfigDict(extra="allow")
    name: str = "fedavg"

    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvalConfig(Strict):
    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    batch_size: int = Field(256, ge=1, description="evaluation batch size")
    max_examples: int | None = Field(None, ge=1, description="cap on pooled test examples per evaluation")
    finetune_epochs: int = Field(0, ge=0, description="local finetuning epochs before the personalized figure (0: none)")
    finetune_lr: float = Field(0.01, gt=0, description="learning rate of that finetuning (plain SGD, same for every method)")
    personalized_clients: int = Field(20, ge=1, description="clients (seeded sample) measured for the personalized figure")
    at_start: bool = Field(False, description="also evaluate the initial model, as round 0 of metrics.jsonl and the plots")


class CheckpointConfig(Strict):
    every: int = Field(10, ge=0, description="checkpoint every N rounds (0: only at the end)")
    keep: int = Field(2, ge=1, description="how many recent checkpoints to keep")


class BackendConfig(Strict):
    """Where clients run: ``inprocess`` (default), ``vmap`` (vectorized), ``ray`` (this machine or a cluster) or ``flower``."""

    name: str = Field("inprocess", description="registered backend: inprocess (clients one after another here), vmap (a round's clients together), ray or flower")
    address: str | None = Field(
        None, description='ray: the cluster to join ("auto", "ray://host:10001" or "host:6379"); unset: start Ray on this machine'
    )
    num_actors: int | None = Field(None, ge=1, description="ray: client actors (default: as many as the CPUs hold at cpus_per_client)")
    cpus_per_client: float = Field(1.0, gt=0, description="ray: CPUs reserved per actor (also its torch threads)")
    gpus_per_client: float = Field(0.0, ge=0, description="ray: GPUs (or fractions) reserved per actor")

    @model_validator(mode="after")
    def _ray_only(self) -> BackendConfig:
        changed = [k for k, f in type(self).model_fields.items() if k != "name" and getattr(self, k) != f.default]
        if self.name != "ray" and changed:
            raise ValueError(f"{changed[0]} applies to the ray backend only; remove it or set name = \"ray\"")
        return self


class LogConfig(Strict):
    """Experiment tracking besides metrics.jsonl (``fedtune.report.tracking``)."""

    tensorboard: bool = Field(False, description="write TensorBoard event files under <run folder>/tensorboard")
    mlflow: str | None = Field(None, min_length=1, description="log an MLflow run to this tracking URI or local folder")


class FailureConfig(Strict):
    min_clients: int = Field(1, ge=1, description="a round needs at least this many successful clients")
    min_fraction: float = Field(0.5, gt=0, le=1, description="... and at least this share of the sampled ones")


class Experiment(Strict):
    """One federated experiment."""

    name: str = Field("experiment", description="name used in tables and plots")
    seed: int = Field(0, ge=0, description="run seed; every random choice derives from it")
    rounds: int = Field(10, ge=1, description="number of server rounds")
    clients_per_round: int = Field(10, ge=1, description="clients sampled each round")
    output: str | None = Field(None, description="run folder (default runs/<name>)")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description='where tensors live: "auto" (a GPU if any), "cpu", "cuda" or "cuda:N"'
    )
    backend: BackendConfig = Field(default_factory=BackendConfig, description="where clients run")
    client_state: str = Field("memory", description="stateful methods: keep client states in memory or on disk under the run folder")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    failures: FailureConfig = Field(default_factory=FailureConfig)
    drift: DriftConfig | None = Field(None, description="concept drift applied to clients' data by round (Flash)")
    log: LogConfig = Field(default_factory=LogConfig, description="experiment tracking: TensorBoard, MLflow")
    plugins: list[str] = Field(
        default_factory=list,
        description="modules (or .py files) imported before the names are checked: your own algorithms, server optimizers, datasets, models",
    )

    @model_validator(mode="after")
    def _tokenizer_of_the_model(self) -> Experiment:
        """A text dataset (one whose options model has a ``tokenizer``: ``hf:`` datasets,
        ``shakespeare_play``, ``mr``, ...) tokenizes with an ``hf:`` model's own tokenizer
        unless ``data.options.tokenizer`` names another."""
        options = options_model(self.data.name)
        takes_tokenizer = options is not None and "tokenizer" in options.model_fields
        if takes_tokenizer and self.model.name.startswith("hf:") and "tokenizer" not in self.data.options:
            self.data.options = {**self.data.options, "tokenizer": self.model.name.removeprefix("hf:")}
        return self

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # backend = "ray" is short for [backend] name = "ray"

    def run_dir(self) -> Path:
        return Path(self.output or f"runs/{self.name}")

    def resolved(self) -> dict[str, Any]:
        """Every setting as the run uses it: the tables as given, with the defaults of the
        algorithm's ``Params``, the server optimizer's ``Params`` and the model builder's
        options (PEFT settings of ``hf:`` models included) and the dataset's registered
        options model (:func:`fedtune.data.options_model`) filled in. Loading it back
        gives the same experiment; values that are None (unset) are left out, as TOML has
        no null."""
        raw = self.model_dump(mode="json", exclude_none=True)
        try:
            algorithm = ALGORITHMS.get(self.algorithm.name)
            params = algorithm.Params(**self.algorithm.hyperparameters()).model_dump(mode="json")
            raw["algorithm"] = {"name": self.algorithm.name, **_plain(params)}
        except (UnknownNameError, ValidationError):
            pass  # not validated (load_experiment refuses it): as given
        try:
            server = SERVER_OPTIMIZERS.get(self.server.name).parse_params(None, self.server.arguments())
            raw["server"] = {"name": self.server.name, **_plain(server.model_dump(mode="json"))}
        except (UnknownNameError, ConfigError):
            pass
        try:
            defaults = _builder_defaults(MODELS.get(self.model.name))
            raw["model"]["options"] = {**defaults, **raw["model"].get("options", {})}
        except (UnknownNameError, ConfigError):
            pass
        if (options := options_model(self.data.name)) is not None:
            try:
                parsed = parse_options(options, self.data.options, self.data.name)
                raw["data"]["options"] = _plain(parsed.model_dump(mode="json"))
            except ConfigError:
                pass  # refused when the dataset loads: as given
        return raw

    def to_toml(self) -> str:
        """The resolved experiment (:meth:`resolved`) as TOML: what a run folder's ``config.toml`` holds."""
        return tomli_w.dumps(self.resolved())


def _plain(value: Any) -> Any:
    """``value`` with None left out (TOML has no null) and tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    return value


def _builder_defaults(builder: Any) -> dict[str, Any]:
    """The options a model builder takes, with their defaults (TOML-writable ones only)."""
    import inspect

    out = {}
    for name, param in inspect.signature(builder).parameters.items():
        default = param.default
        if name == "info" or default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool | int | float | str) or (isinstance(default, list | tuple) and all(isinstance(v, bool | int | float | str) for v in default)):
            out[name] = list(default) if isinstance(default, tuple) else default
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"algorithm.lr=0.1"`` -> (["algorithm", "lr"], 0.1); values are TOML, else strings."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a table")
        node[path[-1]] = value
    return raw


def apply_unsets(raw: dict, keys: list[str]) -> dict:
    """Remove each dotted key (a value or a whole table, ``drift``, ``algorithm.mu``) from
    ``raw``, so its default applies; a key the experiment does not have is an error."""
    for key in keys:
        *parents, last = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ConfigError(f"--unset {key!r}: the experiment sets no such key")
        del node[last]
    return raw


def validate_components(exp: Experiment) -> None:
    """Names and hyperparameters that only the registries can check.

    Each name is looked up in its registry (which also resolves ``hf:<id-or-path>``
    without loading anything); an algorithm's ``[algorithm]`` table is validated by its
    ``Params`` model, the ``[server]`` table by the server optimizer's ``Params``, and an
    algorithm that declares ``server_optimizers`` refuses any other server optimizer.
    """
    # the engine imports this module, so its registries are looked up here, not at the top
    from fedtune.engine.backend import BACKENDS
    from fedtune.engine.client_state import CLIENT_STATE_STORES

    lookups = (("data.name", DATASETS, exp.data.name), ("model.name", MODELS, exp.model.name),
               ("algorithm.name", ALGORITHMS, exp.algorithm.name), ("server.name", SERVER_OPTIMIZERS, exp.server.name),
               ("backend.name", BACKENDS, exp.backend.name), ("client_state", CLIENT_STATE_STORES, exp.client_state))
    problems: list[str] = []  # every problem found, in one line
    unknown = set()
    for field, registry, name in lookups:
        try:
            registry.get(name)
        except UnknownNameError as err:
            problems.append(f"{field}: {err}")
            unknown.add(field)
    if "algorithm.name" not in unknown:
        algorithm = ALGORITHMS.get(exp.algorithm.name)
        try:
            algorithm.Params(**exp.algorithm.hyperparameters())
        except ValidationError as err:
            problems.append(format_validation_error(err, algorithm.Params.model_fields, prefix="algorithm."))
        allowed = getattr(algorithm, "server_optimizers", None)  # None: any server optimizer
        if allowed is not None and exp.server.name not in allowed:
            problems.append(
                f"server.name: algorithm {exp.algorithm.name!r} works only with the server optimizer "
                f"{' or '.join(map(repr, allowed))}; set server.name = \"{allowed[0]}\" (got {exp.server.name!r})"
            )
        if exp.client_state != "memory" and not algorithm.Client.stateful:
            problems.append(f"client_state: algorithm {exp.algorithm.name!r} keeps no client state; remove the setting")
        if exp.eval.finetune_epochs > 0 and algorithm.Client.personalizes:
            problems.append(f"eval.finetune_epochs: algorithm {exp.algorithm.name!r} personalizes its own models; set it to 0")
    if "server.name" not in unknown:
        try:
            SERVER_OPTIMIZERS.get(exp.server.name).parse_params(None, exp.server.arguments())
        except ConfigError as err:
            problems.append(str(err))
    if exp.clients_per_round > exp.data.num_clients and exp.data.partition != "natural":
        problems.append(f"clients_per_round: {exp.clients_per_round} exceeds data.num_clients ({exp.data.num_clients})")
    if problems:
        raise ConfigError("; ".join(problems))


def _load_plugins(raw: dict, extra: list[str], base: Path | None) -> None:
    """Import the experiment's plugins (paths relative to ``base``, its folder) and
    ``extra`` (``--plugin``, relative to the current folder) before anything is validated,
    recording each as :func:`~fedtune.plugins.resolve_plugin` resolves it."""
    from fedtune.plugins import load_plugins, resolve_plugin

    declared = raw.get("plugins", [])
    if not isinstance(declared, list) or not all(isinstance(p, str) for p in declared):
        raise ConfigError('plugins: expected a list of module names or .py paths, e.g. plugins = ["myfl"]')
    specs = [resolve_plugin(p, base) for p in declared] + [resolve_plugin(p, Path.cwd()) for p in extra]
    specs = list(dict.fromkeys(specs))  # in order, each once
    load_plugins(specs, base)
    if specs:
        raw["plugins"] = specs


def load_experiment(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    raw: dict | None = None,
    plugins: list[str] | None = None,
    unset: list[str] | None = None,
) -> Experiment:
    """Read, override and validate an experiment; raise :class:`ConfigError` with one line.

    ``unset``: dotted keys removed first (``--unset drift``), then ``overrides`` apply.
    ``plugins``: more plugins to import (``fedtune run --plugin``), added to the
    experiment's ``plugins`` list; all of them are imported before any name is checked.
    """
    if raw is None:
        path = Path(path)  # type: ignore[arg-type]
        if not path.is_file():
            raise ConfigError(f"{path}: no such experiment file")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    raw = apply_overrides(apply_unsets(raw, unset or []), overrides or [])
    _load_plugins(raw, plugins or [], Path(path).resolve().parent if path is not None else None)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    validate_components(exp)
    return exp
