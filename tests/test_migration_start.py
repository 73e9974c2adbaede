"""When MigrateInstance returns: ``migration.start`` and its detached helper.

A real helper process (a stand-in script) and a domain whose job statistics are
scripted: libvirt reports the job before it has reached the target, so a refusal by
the target must still be raised, with its reason, rather than left to the node's log.
The helper never outlives a failure (it would still migrate after Ganeti gave up), and
a long-lived caller collects no zombies.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest

from hvlibvirt import constants as C, migration, migrator
from hvlibvirt import helper as helpers
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance

pytestmark = pytest.mark.tier2

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
        # The helper's own arguments follow (they name the instance in its command line).
        monkeypatch.setattr(helpers, "helper_command",
                            lambda *args: [sys.executable, "-c", code, *args])
    yield use
    for process in started:
        process.kill()
        process.wait()


def start(dom: ScriptedJob, follow: float = 0.0) -> float:
    began = time.monotonic()
    migration.start("test:///default", "inst1", "qemu+ssh://target/system", 0, {}, dom,
                    follow)
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


def test_a_migration_that_ends_while_followed_returns_as_it_ends(
        helper: Callable[[str], None]) -> None:
    """Ganeti's first poll then sees the end, not one a second later."""
    helper("import time; time.sleep(0.5)")
    took = start(ScriptedJob(MOVING), follow=20)
    assert 0.3 < took < 10


def test_a_migration_that_fails_while_followed_is_raised_with_its_reason(
        helper: Callable[[str], None]) -> None:
    helper("import sys, time; time.sleep(0.5); print('migration job: aborted'); sys.exit(1)")
    with pytest.raises(HypervisorError, match="failed: migration job: aborted"):
        start(ScriptedJob(MOVING), follow=20)
    assert _zombie_children() == []


def test_a_longer_migration_is_left_to_the_polls_after_the_follow(
        helper: Callable[[str], None]) -> None:
    helper(SLEEPER)
    took = start(ScriptedJob(MOVING), follow=0.5)
    assert took >= 0.5
    assert migration.helper_pids(URI, "inst1")  # still migrating, for Ganeti's polls


@pytest.mark.parametrize("caps,follows", [("", True), ("xbzrle", True),
                                          ("postcopy-ram", False)])
def test_kvm_follows_unless_the_polls_must_switch_to_post_copy(caps: str, follows: bool
                                                               ) -> None:
    follow = migrator.KvmMigrator.follow({C.HV_KVM_MIGRATION_CAPS: caps})
    assert follow == (migration.FOLLOW if follows else 0.0)


def test_a_helper_that_already_succeeded_returns(helper: Callable[[str], None]) -> None:
    helper("pass")
    start(ScriptedJob({}))  # no job seen: the helper's exit code 0 says done


def test_a_job_that_never_shows_times_out(helper: Callable[[str], None],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    helper("import time; time.sleep(30)")
    monkeypatch.setattr(migration, "START_TIMEOUT", 0.3)
    with pytest.raises(HypervisorError, match="did not start within"):
        start(ScriptedJob({}))


URI = "test:///default"
SLEEPER = "import time; time.sleep(30)"


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (Z: a zombie), None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _zombie_children() -> list[int]:
    mine = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            mine.append(int(entry))
    return mine


def _helper_seen(name: str) -> int:
    """The pid of the one helper of ``name``. The kernel sets a new program's command
    line just after Popen has seen its exec succeed (a real job moves data long after
    that), hence the wait."""
    deadline = time.monotonic() + 5
    while not migration.helper_pids(URI, name) and time.monotonic() < deadline:
        time.sleep(0.01)
    (pid,) = migration.helper_pids(URI, name)
    return pid


def test_the_timeout_leaves_no_helper(helper: Callable[[str], None],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real(*args, **kwargs)
        started.append(process.pid)
        return process

    helper(SLEEPER)
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(migration, "START_TIMEOUT", 0.3)
    with pytest.raises(HypervisorError, match="did not start within"):
        start(ScriptedJob({}))
    assert _state(started[0]) is None  # killed and reaped
    assert migration.helper_pids(URI, "inst1") == []


def test_a_failed_helper_is_reaped(helper: Callable[[str], None]) -> None:
    helper("import sys; print('refused'); sys.exit(1)")
    with pytest.raises(HypervisorError, match="refused"):
        start(ScriptedJob({}))
    assert _zombie_children() == []


def test_finalize_after_a_failure_kills_a_lingering_helper(
        helper: Callable[[str], None]) -> None:
    """A helper still running once MigrateInstance returned (its job moving data), then
    Ganeti aborts: FinalizeMigrationSource(success=False) ends it."""
    helper(SLEEPER)
    start(ScriptedJob(MOVING))  # at once: the job is scripted
    pid = _helper_seen("inst1")
    hv = KVMHypervisor(uri=URI)
    hv.FinalizeMigrationSource(Instance(name="inst1"), False, True)  # no such domain here
    assert migration.helper_pids(URI, "inst1") == []
    deadline = time.monotonic() + 5
    while _state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the reaper thread collects it
    assert _state(pid) is None


def test_finalize_kills_a_helper_another_process_started() -> None:
    """Ganeti finalizes from another process than the one that migrated (noded forks a
    child per call): the helper is not this process's child, and still found."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36  # orphans come to us, so that the test can reap them
    starter = ("import json, subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
               f"{SLEEPER!r}, 'migration-helper', json.dumps({{'source': {URI!r}, "
               "'name': 'inst2', 'dest': 'x'})], start_new_session=True, "
               "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    try:
        out = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        pid = int(out)
        assert _helper_seen("inst2") == pid
        assert migration.helper_pids(URI, "inst1") == []  # another instance's: untouched
        KVMHypervisor(uri=URI).FinalizeMigrationSource(Instance(name="inst2"), False, True)
        assert migration.helper_pids(URI, "inst2") == []
        os.waitpid(pid, 0)
    finally:
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def test_no_zombies_after_many_migrations(helper: Callable[[str], None]) -> None:
    """Helpers that end after MigrateInstance returned are reaped as they end."""
    helper("import time; time.sleep(0.1)")
    for _ in range(8):
        start(ScriptedJob(MOVING))
    deadline = time.monotonic() + 10
    while (migration.helper_pids(URI, "inst1") or _zombie_children()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert migration.helper_pids(URI, "inst1") == []  # they all ended ...
    assert _zombie_children() == []  # ... and were reaped


def test_a_helper_that_cannot_start_is_our_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "helper_command",
                        lambda *args: ["/nonexistent/python3", *args])
    with pytest.raises(HypervisorError, match="inst1: cannot start its helper"):
        start(ScriptedJob({}))


def test_a_job_without_its_ram_total_reports_no_ram_figures() -> None:
    """At a job's start libvirt may not know the total yet: Ganeti divides the
    transferred RAM by the total for its progress, so neither is reported then."""
    class Dom:
        def __init__(self, stats: dict) -> None:
            self.stats = stats

        def jobStats(self, flags: int) -> dict:  # noqa: N802
            return self.stats

        def state(self) -> list[int]:
            return [libvirt.VIR_DOMAIN_RUNNING, 1]

        def name(self) -> str:
            return "x"

    early = migration.read_status(Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
                                  "memory_processed": 0, "memory_total": 0}))[0]
    assert early.status == C.HV_MIGRATION_ACTIVE
    assert (early.transferred_ram, early.total_ram) == (None, None)
    later = migration.read_status(Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
                                  "memory_processed": 5, "memory_total": 10}))[0]
    assert (later.transferred_ram, later.total_ram) == (5, 10)


class ScriptedState:
    """A domain whose state() answers from a list; None stands for "no such domain"."""

    def __init__(self, *answers: tuple[int, int] | None) -> None:
        self.answers = list(answers)

    def state(self) -> tuple[int, int]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is None:
            err = libvirt.libvirtError("Domain not found")
            err.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 0, "", "", "", 0, 0)
            raise err
        return answer


SHUTTING_DOWN = (libvirt.VIR_DOMAIN_SHUTDOWN, 0)


def test_a_target_killing_its_half_received_guest_is_waited_for() -> None:
    """A restarted target libvirtd destroys the incoming QEMU itself: "shutting down"
    until QEMU exits, then gone. That is not a guest running on the target."""
    dom = ScriptedState(SHUTTING_DOWN, SHUTTING_DOWN, None)
    assert migrator._settled_state(dom, seconds=5) is None  # noqa: SLF001
    dom = ScriptedState(SHUTTING_DOWN, (libvirt.VIR_DOMAIN_SHUTOFF, 1))
    assert migrator._settled_state(dom, seconds=5) == (libvirt.VIR_DOMAIN_SHUTOFF, 1)  # noqa: SLF001


def test_a_domain_that_stays_shutting_down_is_reported_as_it_is() -> None:
    dom = ScriptedState(SHUTTING_DOWN)
    assert migrator._settled_state(dom, seconds=0.3) == SHUTTING_DOWN  # noqa: SLF001
