"""Child-subreaper launcher for the lab's private libvirt daemons.

Usage: ``python subreaper.py SPEC.json`` where SPEC is
``{"pidfile": str, "hostname": str | null, "commands": [[argv, ...], ...],
"restart": [[argv, ...], ...]}`` ("restart" optional).

It marks itself PR_SET_CHILD_SUBREAPER, writes its pid, runs the commands one after
the other (bind mounts, then ``virtlogd -d``, then ``libvirtd -d``) and then reaps
forever. libvirtd, virtlogd and QEMU daemonize by double fork, so without a subreaper
their orphans go to PID 1, which in this sandbox reaps late: libvirt's destroy polls
``kill(pid, 0)`` every 200 ms and a zombie QEMU made every destroy take 2 s.

On SIGTERM it terminates whatever is still its child, so killing this one process
is a complete (if blunt) teardown. On SIGUSR1 it runs the "restart" commands (the fault
tests start a killed libvirtd again this way, so that it stays under this subreaper, in
these namespaces). Standard library only: it runs inside the
daemon's namespaces with ``sys.executable`` and must not import the project.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TERM_GRACE_S = 5.0

log = logging.getLogger("hvl-subreaper")


def children() -> list[int]:
    """Pids whose parent is this process (daemons re-parented to us included)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                # comm may contain spaces and parentheses: fields start after the last ')'
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry))
    return found


def reap() -> None:
    """Collect every exited child without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def terminate_children() -> None:
    """SIGTERM all children, then SIGKILL the ones that outlive the grace period."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 2.0)):
        pids = children()
        if not pids:
            return
        log.info("sending %s to %s", sig.name, pids)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap()
            if not children():
                return
            time.sleep(0.05)


def on_sigterm(_signum: int, _frame: object) -> None:
    terminate_children()
    reap()
    sys.exit(0)


def run_restart(spec: dict[str, list[list[str]]]) -> None:
    """Run the spec's "restart" commands (on SIGUSR1)."""
    for cmd in spec.get("restart", []):
        log.info("restart: running %s", cmd)
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode
        if rc != 0:
            log.error("restart command %s failed with exit code %d", cmd, rc)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s subreaper[%(process)d] %(message)s")
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.error("prctl(PR_SET_CHILD_SUBREAPER) failed: %s", os.strerror(ctypes.get_errno()))
        return 1
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGUSR1, lambda _s, _f: run_restart(spec))
    with open(spec["pidfile"], "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])  # we are in our own UTS namespace
    for cmd in spec["commands"]:
        log.info("running %s", cmd)
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode
        if rc != 0:
            log.error("command %s failed with exit code %d", cmd, rc)
            terminate_children()
            return 2
    log.info("all commands started; reaping")
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)  # nothing to reap right now; daemons may still re-parent to us


if __name__ == "__main__":
    sys.exit(main(sys.argv))
