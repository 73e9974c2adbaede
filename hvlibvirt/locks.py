"""Per-instance locks that hold across the processes of one node.

Ganeti's node daemon forks a child for every RPC, so two hot-plugs on one instance, or
a hot-plug and a stop, can run in two processes at once. Each reads the live XML and
our metadata and then writes: unserialised, two pick the same PCI slot or disk target,
or one's metadata write drops what the other recorded. libvirt serialises each API call
on a domain (its job lock) but has nothing that spans a read and a later write, and
``virDomainSetMetadata`` has no compare-and-swap, so the lock is ours:

* ``flock(2)`` on a file per (libvirt URI, instance, kind) in a root-only runtime
  directory: ``locks`` in the node's runtime directory (``config.run_dir``:
  ``/run/hvlibvirt/locks`` for root, i.e. noded). The kernel drops a flock when its holder dies, so a
  killed RPC never leaves an instance locked. Every process on a node must use the
  same directory and URI string for the same daemon (they read both the same way).
  The directory must be trusted (``hvlibvirt.trusted``): root writes a pid into each
  file, so nobody else may be able to swap it for a link.
* The holder unlinks the file before it lets go, so no file outlives its hold (the
  directory holds only the locks held now, with the holder's pid in each); a waiter
  that wins the lock on an unlinked file sees that its inode is no longer the path's
  and tries again.
* Within a process a thread lock is taken first (threads wait there, not on the
  file), and a thread may re-enter a lock it holds. After ``fork`` the child forgets
  its parent's holds: they are the parent's.
* A remote URI is locked on the caller's machine: callers on two machines driving one
  libvirtd are not serialised against each other. Ganeti never does that (each node's
  noded drives its own libvirtd).

Kinds: ``hotplug`` is held for a whole hot-plug (it may wait for the guest);
``meta`` only around one read-modify-write of our metadata. Order: hotplug, then meta.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hvlibvirt import config, trusted
from hvlibvirt.errors import HypervisorError

#: seconds to wait for a lock: longer than any one holder keeps it (a hot-remove waits
#: for the guest ~15 s), bounded so that a wedged holder gives an error, not a hung RPC
TIMEOUTS = {"hotplug": 300.0, "meta": 60.0}
_POLL = (0.002, 0.05)  # first and longest pause between attempts on a held file
_checked_dirs: set[str] = set()  # lock directories found trusted by this process


def lock_dir() -> str:
    """The directory of this process's lock files (see the module docstring)."""
    return os.path.join(config.run_dir(), "locks")


def lock_path(uri: str, name: str, kind: str) -> str:
    """The file of one lock: readable prefix, digest of the exact key."""
    digest = hashlib.sha256(f"{uri}\0{name}\0{kind}".encode(errors="surrogateescape"))
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:64]
    return os.path.join(lock_dir(), f"{readable}.{kind}.{digest.hexdigest()[:16]}.lock")


@dataclass
class _Entry:
    thread_lock: threading.RLock
    pid: int
    depth: int = 0
    fd: int = -1
    path: str = ""
    users: int = 0  # threads holding or waiting for it (under _guard): 0 drops the entry


_guard = threading.Lock()
_entries: dict[tuple[str, str, str], _Entry] = {}


def _after_fork_in_child() -> None:
    global _guard, _entries
    for entry in _entries.values():
        if entry.fd >= 0:
            os.close(entry.fd)  # our copy only: the parent still holds the lock
    _guard = threading.Lock()
    _entries = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def hold(uri: str, name: str, kind: str,
         error: type[HypervisorError] = HypervisorError) -> Iterator[None]:
    """Hold the ``kind`` lock of instance ``name`` at ``uri`` against every thread and
    process of this machine; ``error`` (naming the instance) if it cannot be had."""
    timeout = TIMEOUTS[kind]
    deadline = time.monotonic() + timeout
    key = (uri, str(name), kind)
    with _guard:
        entry = _entries.get(key)
        if entry is None or entry.pid != os.getpid():
            entry = _entries[key] = _Entry(threading.RLock(), os.getpid())
        entry.users += 1
    try:
        if not entry.thread_lock.acquire(timeout=timeout):
            raise error(f"Instance {name}: another operation in this process holds its "
                        f"{kind} lock for more than {timeout:.0f}s")
        try:
            if entry.depth == 0:
                entry.path = lock_path(uri, str(name), kind)
                entry.fd = _lock_file(entry.path, deadline, name, kind, error)
            entry.depth += 1
        except BaseException:
            entry.thread_lock.release()
            raise
        try:
            yield
        finally:
            entry.depth -= 1
            if entry.depth == 0 and entry.pid == os.getpid():
                _unlock_file(entry.path, entry.fd)
                entry.fd = -1
            entry.thread_lock.release()
    finally:
        _release(key, entry)


def _release(key: tuple[str, str, str], entry: _Entry) -> None:
    """One thread less for ``entry``; the last one drops it, so that a long-lived
    process keeps no entry per instance it ever locked."""
    with _guard:
        entry.users -= 1
        if entry.users == 0 and _entries.get(key) is entry:
            del _entries[key]


def _lock_file(path: str, deadline: float, name: str, kind: str,
               error: type[HypervisorError]) -> int:
    """Create-or-open ``path`` and flock it, until the locked inode is the path's."""
    pause = _POLL[0]
    _check_dir(os.path.dirname(path), name, error)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            raise error(f"Instance {name}: its lock directory {os.path.dirname(path)} "
                        "vanished") from None
        except OSError as err:
            raise error(f"Instance {name}: cannot open its lock file {path}: "
                        f"{err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise error(f"Instance {name}: cannot lock {path}: {err.strerror}") from None
            if time.monotonic() >= deadline:
                raise error(f"Instance {name}: another operation holds its {kind} lock "
                            f"({path}, {_holder(path)}) for too long") from None
            time.sleep(pause)
            pause = min(pause * 2, _POLL[1])
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked it as we waited: take the new file
            os.close(fd)
            continue
        try:  # for whoever waits: who holds it (a full disk only loses that)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        return fd


def _unlock_file(path: str, fd: int) -> None:
    # Unlink while still holding: whoever waits on this inode then retries on a new one.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _check_dir(path: str, name: str, error: type[HypervisorError]) -> None:
    """Make the lock directory if missing, and refuse one whose files another user could
    redirect (root writes a pid into each). Once per process: only root or this user
    could swap a directory that passed."""
    if path in _checked_dirs:
        return
    why = trusted.why_untrusted(path, create=True)
    if why:
        raise error(f"Instance {name}: cannot use the lock directory {path}: {why} (set "
                    f"{config.RUN_DIR_ENV} to a directory every process of this node "
                    "can write)")
    _checked_dirs.add(path)


def _holder(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            pid = f.read().strip()
    except (OSError, ValueError):
        return "holder unknown"
    return f"held by pid {pid}" if pid.isdigit() else "holder unknown"
