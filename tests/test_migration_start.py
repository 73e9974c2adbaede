"""When MigrateInstance returns: ``migration.start`` and its detached helper.

A real helper process (a stand-in script) and a domain whose job statistics are
scripted: libvirt reports the job before it has reached the target, so a refusal by
the target must still be raised, with its reason, rather than left to the node's log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest

from hvlibvirt import migration
from hvlibvirt.errors import HypervisorError

RUNNING = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "time_elapsed": 5}
MOVING = dict(RUNNING, memory_processed=4096)


class ScriptedJob:
    """A domain whose jobStats answers from a list (the last answer repeats)."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.polls = 0

    def jobStats(self, _flags: int) -> dict[str, Any]:  # noqa: N802
        self.polls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Make the migration helper a Python snippet; its processes are killed after."""
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)

    def use(code: str) -> None:
        monkeypatch.setattr(migration, "helper_command",
                            lambda *_args: [sys.executable, "-c", code])
    yield use
    for process in started:
        process.kill()
        process.wait()


def start(dom: ScriptedJob) -> float:
    began = time.monotonic()
    migration.start("test:///default", "inst1", "qemu+ssh://target/system", 0, {}, dom)
    return time.monotonic() - began


def test_a_refusal_after_the_job_showed_is_raised_with_its_reason(
        helper: Callable[[str], None]) -> None:
    helper("import sys, time; time.sleep(0.4); "
           "print('Failed to connect socket to /nonexistent/sock'); sys.exit(1)")
    with pytest.raises(HypervisorError, match="Migration of inst1 to .* failed: "
                                              "Failed to connect socket to /nonexistent/sock"):
        start(ScriptedJob(RUNNING))


def test_returns_once_data_moves(helper: Callable[[str], None]) -> None:
    helper("import time; time.sleep(30)")
    dom = ScriptedJob({}, RUNNING, RUNNING, MOVING)
    start(dom)
    assert dom.polls == 4  # returned at the first answer with data moved


def test_returns_after_the_grace_when_the_driver_reports_no_figures(
        helper: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> None:
    helper("import time; time.sleep(30)")
    monkeypatch.setattr(migration, "START_GRACE", 0.3)
    took = start(ScriptedJob(RUNNING))  # libxl: type and time only
    assert took >= 0.3


def test_a_helper_that_already_succeeded_returns(helper: Callable[[str], None]) -> None:
    helper("pass")
    start(ScriptedJob({}))  # no job seen: the helper's exit code 0 says done


def test_a_job_that_never_shows_times_out(helper: Callable[[str], None],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    helper("import time; time.sleep(30)")
    monkeypatch.setattr(migration, "START_TIMEOUT", 0.3)
    with pytest.raises(HypervisorError, match="did not start within"):
        start(ScriptedJob({}))
