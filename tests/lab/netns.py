"""The lab network: two network namespaces joined by a veth pair (one per daemon, so
two daemons look like two hosts for migration) and a bridge in each (``LabNetwork``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass

from .errors import LabLeakError
from .procs import _alive, _run, describe, kill_and_wait, pids_in_netns

log = logging.getLogger(__name__)

BRIDGE = "hvlbr0"
DEFAULT_SUBNET = "10.77.0"
NETNS_PREFIX = "hvl"


# ------------------------------------------------------------------------------ network

@dataclass(frozen=True)
class NetnsEnd:
    """One side of the lab network: a namespace, its veth and its address."""

    netns: str
    ip: str
    veth: str


class LabNetwork:
    """Two network namespaces joined by a veth pair, with lo up and bridge ``hvlbr0`` in each.

    Names carry the owning pid (``hvl-a-<pid>``), so concurrent sessions do not clash
    and namespaces of crashed sessions are recognisable and cleaned up by ``setup``.
    """

    def __init__(self, subnet: str = DEFAULT_SUBNET, tag: str | None = None) -> None:
        tag = tag or str(os.getpid())
        self.subnet = subnet
        self.a = NetnsEnd(f"{NETNS_PREFIX}-a-{tag}", f"{subnet}.1", "hvl-va")
        self.b = NetnsEnd(f"{NETNS_PREFIX}-b-{tag}", f"{subnet}.2", "hvl-vb")
        self.bridge = BRIDGE
        self._created: list[str] = []

    @property
    def namespaces(self) -> tuple[str, str]:
        return self.a.netns, self.b.netns

    @staticmethod
    def list_netns() -> list[str]:
        out = _run(["ip", "netns", "list"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    @classmethod
    def cleanup_stale(cls) -> list[str]:
        """Delete ``hvl-[ab]-<pid>`` namespaces whose owning process is gone (and kill their processes)."""
        removed = []
        for ns in cls.list_netns():
            m = re.fullmatch(rf"{NETNS_PREFIX}-[ab]-(\d+)", ns)
            if not m or _alive(int(m.group(1))):
                continue
            stragglers = pids_in_netns(ns)
            if stragglers:
                log.warning("stale netns %s: killing %s", ns, [describe(p) for p in stragglers])
                kill_and_wait(stragglers, 5)
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
        if removed:
            log.warning("removed stale lab namespaces %s", removed)
        return removed

    def setup(self) -> None:
        """Create both namespaces, the veth pair, addresses and bridges."""
        self.cleanup_stale()
        _LIVE_NETWORKS.add(self)
        for end in (self.a, self.b):
            _run(["ip", "netns", "add", end.netns])
            self._created.append(end.netns)
            _run(["ip", "-n", end.netns, "link", "set", "lo", "up"])
        # Both ends are created directly inside their namespaces: nothing appears on the host.
        _run(["ip", "link", "add", self.a.veth, "netns", self.a.netns, "type", "veth",
              "peer", "name", self.b.veth, "netns", self.b.netns])
        for end in (self.a, self.b):
            _run(["ip", "-n", end.netns, "addr", "add", f"{end.ip}/24", "dev", end.veth])
            _run(["ip", "-n", end.netns, "link", "set", end.veth, "up"])
            _run(["ip", "-n", end.netns, "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "-n", end.netns, "link", "set", self.bridge, "up"])

    def run(self, netns: str, argv: list[str], check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside one of the namespaces."""
        return _run(["ip", "netns", "exec", netns, *argv], check=check, timeout=timeout)

    def ping(self, from_netns: str, ip: str) -> bool:
        """One ICMP echo (busybox ping: the host may not have iputils)."""
        return self.run(from_netns, ["/bin/busybox", "ping", "-c", "1", "-W", "2", ip], check=False).returncode == 0

    def teardown(self) -> None:
        """Kill anything left in the namespaces (reported as a leak) and delete them."""
        leaks: list[str] = []
        for ns in self._created:
            stragglers = pids_in_netns(ns)
            if stragglers:
                leaks += [f"netns {ns}: {describe(p)}" for p in stragglers]
                kill_and_wait(stragglers, 5)
            _run(["ip", "netns", "del", ns], check=False)
        remaining = [ns for ns in self._created if ns in self.list_netns()]
        leaks += [f"netns {ns} still exists" for ns in remaining]
        self._created = remaining
        _LIVE_NETWORKS.discard(self)
        if leaks:
            for leak in leaks:
                log.error("LAB LEAK: %s", leak)
            raise LabLeakError("lab network teardown found leftovers:\n  " + "\n  ".join(leaks))


# Safety net for runs that never reach the fixture finalizers (e.g. a crash in a hook):
# lab.daemon's atexit handler tears down whatever is still here.
_LIVE_NETWORKS: set[LabNetwork] = set()
