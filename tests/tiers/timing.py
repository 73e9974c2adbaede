"""Where a run's time goes: seconds per test module and for the slowest tests (setup,
call and teardown summed, so a module-scoped lab counts with the test that made it),
printed at the end of every run that took long enough to matter. CI's budget
(DESIGN.md) is managed from these lines.

Also the host's stalls: a thread sleeps a quarter second in a loop and notes when a sleep
took seconds. A stall of the whole machine (or of this process) longer than libvirt's
keepalive (30 s) fails any live migration running then; the summary names when it was."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

SHOWN = 20
WORTH_SHOWING_S = 120.0
TICK_S = 0.25
STALL_S = 3.0

_by_test: defaultdict[str, float] = defaultdict(float)
_stalls: list[tuple[str, float]] = []  # (wall clock when it ended, seconds)


def _watch_stalls() -> None:
    last = time.monotonic()
    while True:
        time.sleep(TICK_S)
        now = time.monotonic()
        if now - last > STALL_S:
            _stalls.append((time.strftime("%H:%M:%S"), now - last))
        last = now


def pytest_sessionstart(session: pytest.Session) -> None:
    threading.Thread(target=_watch_stalls, name="stall-watch", daemon=True).start()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _by_test[report.nodeid] += report.duration


def _slowest(times: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(times.items(), key=lambda kv: -kv[1])[:SHOWN]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    total = sum(_by_test.values())
    if total < WORTH_SHOWING_S:
        return
    terminalreporter.write_sep("-", f"host stalls over {STALL_S:.0f}s: {len(_stalls)}")
    for ended, seconds in _stalls[-SHOWN:]:
        terminalreporter.write_line(f"{seconds:8.1f}s  ending {ended}")
    by_module: defaultdict[str, float] = defaultdict(float)
    for nodeid, seconds in _by_test.items():
        by_module[nodeid.split("::", 1)[0]] += seconds
    terminalreporter.write_sep("-", f"time by module ({total:.0f}s in tests)")
    for module, seconds in _slowest(by_module):
        terminalreporter.write_line(f"{seconds:8.1f}s  {module}")
    terminalreporter.write_sep("-", "slowest tests")
    for nodeid, seconds in _slowest(_by_test):
        terminalreporter.write_line(f"{seconds:8.1f}s  {nodeid}")
