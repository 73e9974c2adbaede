"""hvlibvirt.locks: per-instance locks across threads and forked processes (pure tier)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hvlibvirt import config, locks
from hvlibvirt.errors import HotplugError, HypervisorError
from marks import FORK_WITH_THREADS


pytestmark = pytest.mark.tier1

URI = "qemu:///system"
_FORK = multiprocessing.get_context("fork")


def _counter_worker(path: str, rounds: int) -> None:
    """Read-modify-write a counter file under the lock (a lost update shows as a short
    count)."""
    for _ in range(rounds):
        with locks.hold(URI, "inst1", "meta"):
            value = int(Path(path).read_text() or 0)
            time.sleep(0.0005)  # widen the window a missing lock would lose updates in
            Path(path).write_text(str(value + 1))


@FORK_WITH_THREADS
def test_processes_and_threads_exclude_each_other(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = [_FORK.Process(target=_counter_worker, args=(str(counter), 25)) for _ in range(4)]
    threads = [threading.Thread(target=_counter_worker, args=(str(counter), 25))
               for _ in range(2)]
    for worker in (*procs, *threads):
        worker.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for thread in threads:
        thread.join(60)
    assert counter.read_text() == str(6 * 25)
    assert not os.listdir(locks.lock_dir())  # no file outlives its hold


def test_reentrant_within_a_thread_and_keyed_by_kind_and_uri() -> None:
    with locks.hold(URI, "inst1", "hotplug"):
        with locks.hold(URI, "inst1", "hotplug"), locks.hold(URI, "inst1", "meta"):
            with locks.hold("qemu+ssh://other/system", "inst1", "hotplug"):
                assert len(os.listdir(locks.lock_dir())) == 3
        assert len(os.listdir(locks.lock_dir())) == 1
    assert not os.listdir(locks.lock_dir())


def _hold_forever(ready: object) -> None:
    with locks.hold(URI, "inst2", "hotplug"):
        ready.set()  # type: ignore[attr-defined]
        time.sleep(600)


@FORK_WITH_THREADS
def test_a_killed_holder_releases_and_a_waiter_times_out_cleanly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ready = _FORK.Event()
    holder = _FORK.Process(target=_hold_forever, args=(ready,))
    holder.start()
    try:
        assert ready.wait(30)
        path = locks.lock_path(URI, "inst2", "hotplug")
        assert Path(path).read_text().strip() == str(holder.pid)
        monkeypatch.setitem(locks.TIMEOUTS, "hotplug", 0.2)
        with pytest.raises(HotplugError, match=f"held by pid {holder.pid}"):
            with locks.hold(URI, "inst2", "hotplug", HotplugError):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    monkeypatch.setitem(locks.TIMEOUTS, "hotplug", 30.0)
    with locks.hold(URI, "inst2", "hotplug"):  # the kernel dropped the dead holder's lock
        pass
    assert not os.listdir(locks.lock_dir())  # its file is reused, then unlinked


@FORK_WITH_THREADS
def test_a_forked_child_does_not_inherit_the_parents_hold() -> None:
    with locks.hold(URI, "inst3", "meta"):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                locks.TIMEOUTS["meta"] = 0.2
                with locks.hold(URI, "inst3", "meta"):
                    os._exit(1)  # it must not get the lock its parent holds
            except HypervisorError:
                os._exit(0)
            os._exit(2)
        _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_hostile_names_make_safe_file_names() -> None:
    for name in ("../../etc/passwd", "a/b", "x" * 300, "nul\0byte", None, "é"):
        path = locks.lock_path(URI, name, "hotplug")  # type: ignore[arg-type]
        assert os.path.dirname(path) == locks.lock_dir()
        assert len(os.path.basename(path)) < 128 and "\0" not in path
        with locks.hold(URI, name, "hotplug"):  # type: ignore[arg-type]
            pass
    assert not os.listdir(locks.lock_dir())


def test_lock_dir_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.RUN_DIR_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert locks.lock_dir() == "/run/hvlibvirt/locks"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert locks.lock_dir() == "/run/user/1000/hvlibvirt/locks"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert locks.lock_dir() == "/home/u/.cache/hvlibvirt/locks"


def test_an_unusable_lock_dir_is_a_hypervisor_error(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(config.RUN_DIR_ENV, str(blocker))
    with pytest.raises(HotplugError, match="lock"):
        with locks.hold(URI, "inst4", "hotplug", HotplugError):
            pass


def test_a_long_lived_process_keeps_no_entry_per_instance() -> None:
    """Many instances locked in turn, from two threads, re-entered: nothing stays."""
    def worker(start: int) -> None:
        for index in range(start, start + 200):
            with locks.hold(URI, f"inst{index}", "meta"), locks.hold(URI, f"inst{index}", "meta"):
                pass

    threads = [threading.Thread(target=worker, args=(n * 200,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert locks._entries == {}
    assert not os.listdir(locks.lock_dir())
