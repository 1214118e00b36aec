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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after a finished round: its metrics, checkpoint and report are
    written and ``fedtune run --resume run_dir`` continues it."""

    def __init__(self, run_dir, round: int, rounds: int, metrics: list | None = None) -> None:
        super().__init__(f"interrupted after round {round} of {rounds}")
        self.run_dir, self.round, self.rounds, self.metrics = run_dir, round, rounds, list(metrics or [])


def format_validation_error(err: ValidationError, accepted: Iterable[str] | None = None, prefix: str = "") -> str:
    """Every problem of a pydantic error as ``prefix + field.path: message``, joined by
    ``; `` (one line, all of them: a user fixes everything in one go).

    ``accepted``: the keys the model takes, named in the message for an unknown key;
    ``prefix``: the table the model validates (``"algorithm."``).
    """
    return "; ".join(prefix + _problem(e, accepted) for e in err.errors())


def _problem(error, accepted: Iterable[str] | None) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "experiment"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = list(accepted or [])
        msg = f"unknown key; it takes: {', '.join(known)}" if known else "unknown key; remove it or check its spelling"
    return f"{loc}: {msg}"


__all__ = ["ConfigError", "RunError", "RunInterrupted", "UnknownNameError", "format_validation_error"]
