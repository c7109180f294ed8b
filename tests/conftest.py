"""pytest configuration only; shared helpers live in tests/helpers.py."""

from __future__ import annotations

import pytest

# A run in which every test was skipped or deselected proves nothing: it
# fails as pytest's own "no tests collected" does (exit 5).
_ran = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _ran
    if report.when == "call":
        _ran += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.OK and _ran == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
