"""The errors fedtune raises on purpose, each phrased as one line for the command line.

This module imports nothing of the package, so any module (configuration, data, models,
server, engine) can raise these without an import loop. The ``fedtune`` command prints
a :class:`ConfigError` or :class:`UnknownNameError` as one line and exits with status 2
(bad input, nothing written), a :class:`RunError` as one line with status 1.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError


class ConfigError(ValueError):
    """A problem with an experiment's configuration, phrased as one line naming the field."""


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; its message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class RunError(RuntimeError):
    """A run cannot go on (too many failed clients, a non-finite global model)."""


def format_validation_error(err: ValidationError, accepted: Iterable[str] | None = None) -> str:
    """The first problem of a pydantic error as ``field.path: message`` (one line).

    ``accepted``: the keys the model takes, named in the message for an unknown key.
    """
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "experiment"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = list(accepted or [])
        msg = f"unknown key; it takes: {', '.join(known)}" if known else "unknown key; remove it or check its spelling"
    more = f" (and {len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{more}"


__all__ = ["ConfigError", "RunError", "UnknownNameError", "format_validation_error"]
