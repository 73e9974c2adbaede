"""Where a run's time goes: seconds per test module (setup, call and teardown summed,
so a module-scoped lab counts with its module), printed at the end of every run that
took long enough to matter. CI's budget (DESIGN.md) is managed from these lines."""

from __future__ import annotations

from collections import defaultdict

import pytest

SHOWN = 20
WORTH_SHOWING_S = 120.0

_by_module: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _by_module[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    total = sum(_by_module.values())
    if total < WORTH_SHOWING_S:
        return
    terminalreporter.write_sep("-", f"time by module ({total:.0f}s in tests)")
    for module, seconds in sorted(_by_module.items(), key=lambda kv: -kv[1])[:SHOWN]:
        terminalreporter.write_line(f"{seconds:8.1f}s  {module}")
