"""A tiny name -> object registry, so no module dispatches on names with if/elif.

Besides plain names, a registry can resolve a *prefix*: ``hf:<id-or-path>`` names a
Hugging Face dataset or model, so the dataset and model registries hold a factory for
the prefix and ``get("hf:bert-base-uncased")`` returns that factory's object for the
rest of the name. Callers never look at the prefix themselves.

Installed plugins (entry points of the ``fedtune.plugins`` group, :mod:`fedtune.plugins`)
are imported the first time any registry is asked about a name it does not hold, so
their names work everywhere a built-in name does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedtune.errors import UnknownNameError
from fedtune.plugins import load_entry_point_plugins

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class Registry(Generic[T]):
    """Maps names to objects (classes or factories) of one kind, e.g. datasets."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._prefixes: dict[str, tuple[Callable[[str], T], str]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def register_prefix(self, prefix: str, usage: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
        """Register ``factory(rest) -> object`` for names ``<prefix><rest>``.

        ``usage`` is how error messages list it (``"hf:<id-or-path>"``). The factory may
        raise :class:`UnknownNameError` for a ``rest`` it cannot serve.
        """

        def decorator(factory: Callable[[str], T]) -> Callable[[str], T]:
            if prefix in self._prefixes:
                raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
            self._prefixes[prefix] = (factory, usage)
            return factory

        return decorator

    def get(self, name: str) -> T:
        """The object registered as ``name``, or made by the factory of its prefix."""
        if name not in self._items and load_entry_point_plugins():
            return self.get(name)  # an installed plugin may have registered it
        if name in self._items:
            return self._items[name]
        for prefix, (factory, _) in self._prefixes.items():
            if name.startswith(prefix):
                return factory(name.removeprefix(prefix))
        raise UnknownNameError(self.unknown(name))

    def unknown(self, name: str) -> str:
        """The one-line message for an unregistered ``name``: what to choose instead."""
        choices = ", ".join([*self.names(), *(usage for _, usage in self._prefixes.values())])
        return f"unknown {self.kind} {name!r}; choose one of: {choices}"

    def validator(self) -> Callable[[str], str]:
        """A check for pydantic's ``AfterValidator``: a registered name passes, another
        raises ``ValueError`` with :meth:`unknown`'s message, so a configuration field
        accepts exactly what is registered and the list lives in one place."""

        def check(name: str) -> str:
            if name not in self:
                raise ValueError(self.unknown(name))
            return name

        return check

    def __contains__(self, name: object) -> bool:
        """A registered name, or a registered prefix followed by something (which
        :meth:`get` may still refuse, e.g. ``hf:`` and a path that does not exist)."""
        if not isinstance(name, str):
            return False
        if name not in self._items:
            load_entry_point_plugins()
        return name in self._items or any(name.startswith(p) and len(name) > len(p) for p in self._prefixes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        """The plain registered names (prefixes aside), sorted; installed plugins are among
        them once any lookup has loaded them (:func:`fedtune.plugins.load_entry_point_plugins`)."""
        return sorted(self._items)
