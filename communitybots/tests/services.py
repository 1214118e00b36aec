"""What a test does when a service it needs (PostgreSQL, Chromium, an installed extra)
is missing: locally it is skipped with the reason; under ``CI=true`` it fails, so CI
cannot go green by turning tests into skips (``ci/services.sh`` installs and starts the
services in CI; if that failed, the run must say so).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

TRUE = {"1", "true", "yes", "on"}


def strict() -> bool:
    """True under CI (``CI=true``, as CI runs ``.ci/run``)."""
    return os.environ.get("CI", "").strip().lower() in TRUE


def missing(reason: str) -> NoReturn:
    """Skip the calling test with ``reason`` locally; fail it under CI."""
    if strict():
        pytest.fail(f"CI=true and a service the test needs is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require(available: bool, reason: str) -> None:
    """``missing(reason)`` unless ``available``."""
    if not available:
        missing(reason)
