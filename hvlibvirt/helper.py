"""How hvlibvirt runs itself: the console command Ganeti runs over ssh, and the
detached helpers (migration, handover relay): started, reaped, and found again by
their command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping

from hvlibvirt.errors import HypervisorError


def helper_command(*args: str) -> list[str]:
    """argv running ``hvlibvirt ARGS`` with this interpreter and this installed copy of
    the package, by absolute paths: neither command may depend on the caller's
    ``sys.path`` or PYTHONPATH."""
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "__main__.py"), *args]


def spawn(subcommand: str, spec: Mapping[str, object], failure: str,
          stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start ``hvlibvirt SUBCOMMAND SPEC`` detached, ``spec`` as JSON on its command
    line (where ``helper_pids`` finds it): in a session of its own, so that it leads a
    process group (killing the group takes what it started) and outlives the caller;
    its output and errors on one pipe, ``stdout``. ``stdin`` as Popen takes it.
    HypervisorError ``FAILURE: reason`` if it cannot start."""
    try:
        return subprocess.Popen(helper_command(subcommand, json.dumps(spec)), stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as err:
        raise HypervisorError(f"{failure}: {err}") from err


def reap_later(subcommand: str, helper: subprocess.Popen[bytes]) -> None:
    """Reap a helper that runs on once its starter has returned, the moment it ends,
    so that a long-lived caller collects no zombies."""
    threading.Thread(target=helper.wait, name=f"reap-{subcommand}-{helper.pid}",
                     daemon=True).start()


def helper_pids(subcommand: str, spec: Mapping[str, object]) -> list[int]:
    """Pids of this user's running ``hvlibvirt SUBCOMMAND SPEC`` helpers whose JSON
    spec has ``spec``'s values.

    The command line is the record: it names the instance and the URI exactly, so a
    reused pid is never mistaken for a helper, nothing needs writing when a helper
    starts (no runtime files), and a helper whose starter died is found too. Ended
    helpers (zombies) have no command line."""
    found, me, own = [], os.geteuid(), os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if entry.stat().st_uid != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            theirs = json.loads(argv[argv.index(subcommand.encode()) + 1])
        except (OSError, ValueError, IndexError):
            continue
        if isinstance(theirs, dict) and all(theirs.get(k) == v for k, v in spec.items()):
            found.append(int(entry.name))
    return found
