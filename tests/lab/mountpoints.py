"""Host mount points: the ones visible now (``host_mountpoints``) and the missing
mount-point directories the lab creates on the host and removes again when the last
harness session is done with them (``HostMountpoints``; ``_MOUNTPOINTS`` for the
libvirt directories in ``LIBVIRT_DIRS``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# work-dir subdirectory -> host path it is bind-mounted over inside the daemon's namespace
LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}


def host_mountpoints() -> set[str]:
    """Mount points visible in our (the host's) mount namespace."""
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        return {line.split()[1].replace("\\040", " ") for line in f if line.strip()}


# ------------------------------------------------------------------------------ host mount points

class HostMountpoints:
    """Create missing mount points (by default /run/libvirt, /var/lib/libvirt, ...), and remove them later.

    They exist on the host filesystem, so concurrent harness sessions share them: each
    session holds a shared flock while it uses them, and the last one out removes the
    ones a harness created (recorded in the state dir). ``rmdir`` of a directory that is
    a mount point in another session's namespace would detach that session's mounts,
    hence the locking.
    """

    def __init__(self, targets: Iterable[str] = tuple(LIBVIRT_DIRS.values()), name: str = "mountpoints") -> None:
        self.targets = tuple(targets)
        self.name = name  # prefix of the lock and record files in the state dir
        self._guard = threading.Lock()
        self._users = 0
        self._held: int | None = None  # fd holding LOCK_SH on the "users" file
        self._state_dir: Path | None = None

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        assert self._state_dir is not None
        fd = os.open(self._state_dir / f"{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _record(self) -> Path:
        assert self._state_dir is not None
        return self._state_dir / f"created-{self.name}.json"

    def acquire(self, state_dir: Path) -> None:
        with self._guard:
            self._users += 1
            if self._users > 1:
                return
            state_dir.mkdir(parents=True, exist_ok=True)
            self._state_dir = state_dir
            with self._mutex():
                # Take the shared lock before creating anything so a finishing session
                # (which checks for users under the same mutex) cannot remove them under us.
                self._held = os.open(state_dir / f"{self.name}.users", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._held, fcntl.LOCK_SH)
                record = self._record()
                created = set(json.loads(record.read_text())) if record.exists() else set()
                for target in self.targets:
                    if not os.path.isdir(target):
                        os.makedirs(target)
                        created.add(target)
                        log.info("created host mount point %s (removed at teardown)", target)
                record.write_text(json.dumps(sorted(created)))

    def release(self) -> None:
        with self._guard:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0 or self._held is None:
                return
            os.close(self._held)  # drops our LOCK_SH
            self._held = None
            with self._mutex():
                probe = os.open(self._state_dir / f"{self.name}.users", os.O_RDWR | os.O_CREAT, 0o644)  # type: ignore[operator]
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("another harness session still uses the libvirt mount points; leaving them")
                    return
                finally:
                    os.close(probe)
                record = self._record()
                created = json.loads(record.read_text()) if record.exists() else []
                # deepest first, in case one is nested in another
                for target in sorted(created, key=len, reverse=True):
                    try:
                        os.rmdir(target)
                        log.info("removed host mount point %s", target)
                    except FileNotFoundError:
                        pass
                    except OSError as e:  # not empty: someone else (e.g. a libvirt install) uses it now
                        log.warning("left %s in place: %s", target, e)
                record.unlink(missing_ok=True)

    def created_and_present(self, state_dir: Path) -> list[str]:
        """Recorded mount points that still exist (for the leak check)."""
        record = state_dir / f"created-{self.name}.json"
        if not record.exists():
            return []
        return [p for p in json.loads(record.read_text()) if os.path.isdir(p)]


_MOUNTPOINTS = HostMountpoints()
