"""The Debian 13 side of the upgrade tier, run inside the trixie root (tests/lab/upgrade.py
starts it): a private libvirtd of the root's libvirt 11 in the caller's network namespace,
held until stdin closes.

``python -m lab.trixie_node SHARED HOST_UUID IP`` (the daemon's work directory is
SHARED/deb13: were it on the command line, the daemon's leak check, which looks for
processes naming it, would take this process's parents for leftovers) prints one JSON line once the daemon
answers (``{"pid", "uri", "libvirt", "qemu", "python"}``: the host runs each hypervisor call in this
process's namespaces by its pid), then waits for EOF on stdin, stops the daemon and
prints ``{"leaks": [...]}``; the exit status is 0 only when nothing was left behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import libvirt

from .daemon import LibvirtDaemon
from .errors import LabLeakError

NAME = "deb13"


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def main(argv: list[str]) -> int:
    shared, host_uuid, ip = argv
    daemon = LibvirtDaemon(NAME, Path(shared) / NAME, host_uuid, None, ip)
    leaks: list[str] = []
    try:
        daemon.start()
        conn = daemon.connect()
        try:
            facts = {"pid": os.getpid(), "uri": daemon.uri,
                     "libvirt": _version(conn.getLibVersion()),
                     "qemu": _version(conn.getVersion()),
                     "python": ".".join(map(str, sys.version_info[:3]))}
        finally:
            conn.close()
        print(json.dumps(facts), flush=True)
        sys.stdin.read()  # until the host is done
    except libvirt.libvirtError as err:
        print(json.dumps({"error": str(err)}), flush=True)
    finally:
        try:
            daemon.stop()
        except LabLeakError as err:
            leaks.append(str(err))
        print(json.dumps({"leaks": leaks}), flush=True)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
