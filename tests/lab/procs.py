"""Host process helpers for the lab: finding processes through /proc (by network
namespace or by a path in their command line), describing them for leak reports,
killing them, and running host commands (``_run``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import LabError


# ------------------------------------------------------------------------------ /proc helpers

def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _ns_id(pid: int, kind: str) -> tuple[int, int] | None:
    """Identity of a process's namespace of ``kind`` (net, mnt, ...), None if it is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie no longer holds anything)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def describe(pid: int) -> str:
    """'pid: cmdline' for leak reports."""
    return f"{pid}: {_cmdline(pid)[:300]}"


def pids_in_netns(netns: str) -> list[int]:
    """Live processes whose network namespace is the named one."""
    try:
        st = os.stat(f"/run/netns/{netns}")
    except OSError:
        return []
    target = (st.st_dev, st.st_ino)
    return [p for p in _all_pids() if _ns_id(p, "net") == target and _alive(p)]


def pids_referencing(path: Path | str) -> list[int]:
    """Live processes (other than us) whose command line mentions ``path``."""
    needle, me = str(path), os.getpid()
    return [p for p in _all_pids() if p != me and needle in _cmdline(p) and _alive(p)]


def kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``timeout``; return the pids still alive after that."""
    pending = [p for p in pids if _alive(p)]
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 3.0)):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = [p for p in pending if _alive(p)]
        if not pending:
            return []
    return pending


def _run(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{argv!r} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc

