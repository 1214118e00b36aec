"""Shared fixtures: the web platform's database and app fixtures (``web_support.py``).

Under ``CI=true`` no test may be skipped: a missing service fails its tests
(``services.missing``), and any other skip fails the run here, so a green CI means
every test ran.
"""

import pytest
from services import strict
from web_support import database_url, make_client

__all__ = ["database_url", "make_client"]

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if strict() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:  # noqa: ANN001
    if strict() and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} test(s) skipped, which fails the run: "
            + ", ".join(_skipped[:5]) + (" ..." if len(_skipped) > 5 else ""), red=True)
