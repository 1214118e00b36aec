"""Plugins: the user's own algorithms, server optimizers, datasets and models.

A plugin is a Python module that registers objects in fedtune's registries when it is
imported (``@ALGORITHMS.register("mine")``, ``@SERVER_OPTIMIZERS.register(...)``,
``@DATASETS.register(...)``, ``@MODELS.register(...)``). fedtune imports plugins from
three places:

- the experiment's ``plugins = ["myfl", "extra/mine.py"]``: a module name, or a ``.py``
  file (relative to the experiment file's folder). A module name is also looked for in
  the experiment file's folder and the current folder, so ``myfl.py`` beside the
  experiment works without installing anything (the run folder records its path);
- ``fedtune run --plugin myfl`` (added to the experiment's list, so the run folder's
  ``config.toml`` records it and ``--resume`` loads it again);
- Python entry points of the group :data:`ENTRY_POINT_GROUP` (``fedtune.plugins``): an
  installed package declares, in its ``pyproject.toml``::

      [project.entry-points."fedtune.plugins"]
      myfl = "myfl"                 # a module: importing it registers
      # myfl = "myfl:register"      # or a function, called once with no arguments

  and its names are known to every ``fedtune`` command, without configuration. Entry
  points load the first time a registry is asked about a name it does not hold (see
  :meth:`fedtune.registry.Registry.get`), so a package that is not used costs nothing.

Importing a plugin twice does nothing the second time (Python caches modules; a ``.py``
file is loaded once per resolved path), so every process of a run (Ray actors, Flower
ClientApps) may load the same list.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from fedtune.errors import ConfigError

ENTRY_POINT_GROUP = "fedtune.plugins"

_files: dict[Path, ModuleType] = {}


def resolve_plugin(spec: str, base: Path | None = None) -> str:
    """``spec`` as the run folder's ``config.toml`` records it, so the run resumes from any
    folder: a ``.py`` file as an absolute path (relative to ``base``, the experiment file's
    folder); a module name that Python cannot import but ``base`` holds as ``<name>.py``
    as that file's absolute path; any other module name unchanged."""
    if not spec.endswith(".py"):
        beside = base / f"{spec}.py" if base is not None and "." not in spec else None
        if beside is None or not beside.is_file() or importlib.util.find_spec(spec) is not None:
            return spec
        spec = str(beside)
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return str(path.resolve())


def _import_file(path: Path) -> ModuleType:
    if path in _files:
        return _files[path]
    if not path.is_file():
        raise ConfigError(f"plugins: {path}: no such file; give a module name or an existing .py file")
    name = f"fedtune_plugin_{path.stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ConfigError(f"plugins: {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ConfigError(f"plugins: {path} failed on import: {type(err).__name__}: {err}") from err
    _files[path] = module
    return module


def pickle_file_plugins_by_value(cloudpickle: ModuleType) -> None:
    """Have ``cloudpickle`` (Ray's ``ray.cloudpickle``) send the classes of ``.py``-file
    plugins by value: their modules have names of our making, which a worker process could
    not import by reference. Module-name plugins travel by reference as usual (the worker
    imports them)."""
    for module in _files.values():
        cloudpickle.register_pickle_by_value(module)


def _import_module(name: str, search: Iterable[Path]) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name.split(".")[0]:  # the plugin exists but one of its imports does not
            raise ConfigError(f"plugins: {name} failed on import: {err}") from err
    for folder in search:  # a module beside the experiment, or in the current folder
        if (folder / f"{name.split('.')[0]}.py").is_file() or (folder / name.split(".")[0]).is_dir():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return importlib.import_module(name)
    raise ConfigError(
        f"plugins: no module named {name!r}; install its package, put {name}.py beside the experiment, "
        "or give the path of a .py file"
    )


def load_plugins(specs: Iterable[str], base: Path | None = None) -> list[ModuleType]:
    """Import each plugin of ``specs`` (module names or ``.py`` paths); returns the modules.

    ``base``: the folder a relative ``.py`` path and a bare module name are looked for in
    (the experiment file's folder). A plugin that cannot be imported is a one-line
    :class:`~fedtune.errors.ConfigError` naming it; an error raised while it imports is
    reported with its type and message.
    """
    search = [p for p in (base, Path.cwd()) if p is not None]
    modules = []
    for spec in specs:
        if spec.endswith(".py"):
            modules.append(_import_file(Path(resolve_plugin(spec, base))))
            continue
        try:
            modules.append(_import_module(spec, search))
        except ConfigError:
            raise
        except Exception as err:
            raise ConfigError(f"plugins: {spec} failed on import: {type(err).__name__}: {err}") from err
    return modules


_entry_points_loaded = False


def load_entry_point_plugins() -> list[str]:
    """Load every installed plugin of the ``fedtune.plugins`` group, once per process.

    Returns the names of the entry points loaded by this call (empty after the first).
    A plugin that fails to load is a one-line :class:`~fedtune.errors.ConfigError`
    naming its package, so a broken install does not pass unnoticed.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True  # set first: a plugin's own registry lookups must not recurse
    loaded = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as err:
            where = f" (package {ep.dist.name})" if ep.dist is not None else ""
            raise ConfigError(f"plugins: entry point {ep.name} = {ep.value!r}{where} failed: {type(err).__name__}: {err}") from err
        loaded.append(ep.name)
    return loaded


def reset_entry_points() -> None:
    """Forget that entry points were loaded, so the next lookup loads them again (tests)."""
    global _entry_points_loaded
    _entry_points_loaded = False


__all__ = [
    "ENTRY_POINT_GROUP",
    "load_entry_point_plugins",
    "load_plugins",
    "pickle_file_plugins_by_value",
    "reset_entry_points",
    "resolve_plugin",
]
