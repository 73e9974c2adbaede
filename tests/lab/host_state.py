"""What the cluster lab checks on the host, and the lock that keeps it alone there: the
host files a leaking node would write (snapshots before and after), mounts and loop
devices naming a lab's work directory, and the machine-wide lab lock."""

from __future__ import annotations

import glob
import logging
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

from .errors import LabError
from .procs import describe

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# Host paths a leaking node would write (the installed Ganeti's hypervisor map: 3.0 on
# Debian 12, 3.1 on 13); the leak check compares them before and after.
WATCHED_PATHS = ("/etc/ganeti", "/etc/hvlibvirt", "/etc/ssh", "/etc/hosts", "/etc/passwd", "/etc/group",
                 "/var/lib/ganeti", "/var/log/ganeti", "/srv", "/root/.ssh", "/run/ganeti", "/run/sshd.pid",
                 "/var/lib/dpkg/diversions",
                 *sorted(glob.glob("/usr/share/ganeti/[0-9]*/ganeti/hypervisor")),
                 "/usr/lib/python3/dist-packages/hvlibvirt", "/usr/bin/hvlibvirt", "/var/log/hvlibvirt")

# One cluster lab per machine at a time. Two would meet: their node and instance names
# are fixed, a test finds an instance's QEMU by its command line and pkill sees every
# process of the machine (a trixie root has no PID namespace of its own), and /dev/disk
# is the host's directory (a trixie root binds the host's /dev) while each side keeps its
# own record of who created it, so one lab's teardown removes the other's adoption links.
# The lock is an abstract unix socket: the host and a trixie root (another mount
# namespace, the same network namespace) see one name, and it goes with its holder.
MACHINE_LOCK = "\0hvlibvirt-ganeti-cluster-lab"
MACHINE_LOCK_WAIT_S = 1800.0  # a whole other cluster tier (~8 min) and its teardown, with margin


def host_snapshot(paths: tuple[str, ...] = WATCHED_PATHS) -> dict[str, tuple[int, int, int] | None]:
    """(file type, size, mtime) of each watched path and of everything under it."""
    snap = {top: _stat_sig(top) for top in paths}
    for top in paths:
        if os.path.isdir(top) and not os.path.islink(top):
            for dirpath, dirnames, filenames in os.walk(top):
                # Not the checkout (in /srv in the trixie root): the run writes caches there.
                dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != str(REPO)]
                for name in dirnames + filenames:
                    full = os.path.join(dirpath, name)
                    snap[full] = _stat_sig(full)
    return snap


def snapshot_changes(before: dict[str, tuple[int, int, int] | None],
                     now: dict[str, tuple[int, int, int] | None], what: str) -> list[str]:
    """``what PATH created|removed|changed`` for each path two ``host_snapshot``s differ on."""
    changes = []
    for path in sorted(set(now) | set(before)):
        old, new = before.get(path), now.get(path)
        if old != new:
            changes.append(f"{what} {path} "
                           + ("created" if old is None else "removed" if new is None else "changed"))
    return changes


def _stat_sig(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    is_dir = (st.st_mode >> 12) == 4
    return st.st_mode >> 12, 0 if is_dir else st.st_size, st.st_mtime_ns


def mounts_referencing(workdir: Path) -> list[str]:
    """Mounts, in any process's mount namespace, whose source or options name ``workdir``
    (a node's overlays and binds live as long as any process holds its namespace)."""
    found = set()
    needle = str(workdir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/mountinfo", encoding="utf-8", errors="replace") as f:
                found.update(f"{line.split()[4]} (seen by pid {entry})" for line in f if needle in line)
        except OSError:
            continue
    return sorted(found)


def loop_devices_of(workdir: Path) -> list[str]:
    """Loop devices whose backing file is under ``workdir``, each marked when it is
    detached but still open (auto-clear: its last user has not closed it yet)."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output",
                          "NAME,AUTOCLEAR,BACK-FILE"], capture_output=True, text=True,
                         timeout=30, check=False).stdout
    return [parts[0] + (" (detached, still open)" if parts[1] == "1" else "")
            for parts in (line.split(None, 2) for line in out.splitlines())
            if len(parts) == 3 and parts[2].strip().startswith(str(workdir))]


class MachineLock:
    """The machine-wide cluster-lab lock (``MACHINE_LOCK``): ``acquire`` waits for a lab
    that holds it to end, naming it in the log."""

    def __init__(self, name: str = MACHINE_LOCK) -> None:
        self.name = name
        self._sock: socket.socket | None = None

    def acquire(self, timeout: float = MACHINE_LOCK_WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(self.name)
                sock.listen(16)  # lets a waiting lab read the holder's pid (SO_PEERCRED)
                self._sock = sock
                return
            except OSError:
                sock.close()
            holder = self.holder()
            if time.monotonic() > deadline:
                raise LabError(f"another Ganeti cluster lab ({holder}) has run on this machine for "
                               f"over {timeout:.0f}s; its names, /dev/disk and QEMU command lines "
                               "are this lab's too")
            if not logged:
                log.warning("waiting for another Ganeti cluster lab to end: %s", holder)
                logged = True
            time.sleep(2.0)

    def holder(self) -> str:
        """The holding process, as well as the socket can say."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.name)
                pid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           struct.calcsize("3i")))[0]
            except OSError:
                return "its process unknown"
        return describe(pid)

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
