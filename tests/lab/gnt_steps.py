"""What an operator does on the lab cluster (tests/lab/cluster.py) through gnt-*
commands, shared by the tier-5 modules: add, state, start, wait, switch hypervisors,
and what the guest says on its console (its boot, uptime and devices)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lab.cluster import Cluster
from lab.serial import SerialLog

log = logging.getLogger(__name__)

BOOT_S = 120.0  # TCG on two busy cores; a boot is ~3 s when the machine is idle
HOTPLUG_S = 30.0
# Ganeti 3.0 hotplugs only on --hotplug; 3.1 hotplugs by default and has no such option.
# The nodes run this machine's Ganeti (share/default leads to its version).
HOTPLUG = (["--hotplug"] if os.path.basename(os.path.realpath("/usr/share/ganeti/default"))
           == "3.0" else [])
# For guests that migrate: the lab guest's device poll (fork+exec every 0.1 s) off.
# Under TCG a busy guest sometimes comes out of a live migration with corrupted memory
# (general protection faults in page-table code, then a soft lockup); Ganeti's hv_kvm
# and plain virsh migrate show it too. With the poll off: 28 of 28 hops clean here, with
# it on: a hang within 7 hops.
QUIET_GUEST = {"kernel_args": "quiet panic=-1 hvlpoll=0"}
# Ganeti 3.1's hv_kvm opens /dev/vhost-net while vhost_net is on (3.1's default), TCG or
# not; this machine's kernel has none.
NO_VHOST = {"vhost_net": "false"} if not os.path.exists("/dev/vhost-net") else {}
# The guest's answer to FACTS: its boot id, then /proc/uptime.
FACTS = "cat /proc/sys/kernel/random/boot_id /proc/uptime"
FACTS_RE = r"([0-9a-f]{8}-[0-9a-f-]{27})\s+(\d+\.\d+) \d+\.\d+"


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log how long one operator step took (figures for the report, never asserted)."""
    t0 = time.monotonic()
    yield
    log.info("STEP %-55s %6.2fs", what, time.monotonic() - t0)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a state until it holds (a deadline for failure, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.5)


def add_instance(cluster: Cluster, name: str, template: str, disk: str, node: str = "gnta",
                 **hvparams: str) -> SerialLog:
    """``gnt-instance add`` (started) on ``node``; return its serial log once it is READY."""
    console = cluster.serial_log(node, name)
    with step(f"gnt-instance add -t {template} {name}"):
        cluster.gnt("gnt-instance", "add", "-t", template, "-o", "noop", "--disk", disk, "-B", "memory=128M",
                    "-H", cluster.hvparams(**hvparams), "-n", cluster.fqdn(node), "--no-name-check",
                    "--no-ip-check", cluster.fqdn(name))
    with step(f"{name}: guest ready"):
        console.wait("HVL-READY", BOOT_S)
    return console


def remove_instance(cluster: Cluster, name: str) -> None:
    cluster.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", cluster.fqdn(name), check=False)


def state(cluster: Cluster, name: str) -> tuple[str, str, str]:
    """(primary node, admin/oper status, running Y/N) as gnt-instance list says."""
    pnode, status, running = cluster.instance_fields(name, "pnode", "status", "oper_state")
    return pnode, status, running


def ensure_running(cluster: Cluster, name: str) -> None:
    """Start the instance (and wait for its guest) unless Ganeti reports it running."""
    if state(cluster, name)[2] != "Y":
        node = state(cluster, name)[0]
        mark = cluster.serial_log(node, name).mark()
        cluster.gnt("gnt-instance", "start", cluster.fqdn(name))
        cluster.serial_log(node, name).wait("HVL-READY", BOOT_S, since=mark)


def domains(cluster: Cluster, node: str) -> list[str]:
    """Running libvirt domains of a node's own libvirtd."""
    return cluster.virsh(node, "list", "--name").stdout.split()


def set_hvlibvirt(cluster: Cluster, action: str) -> None:
    """``hvlibvirt ganeti enable|disable`` on every node (job processes on the master and
    noded everywhere load the hypervisor). ``--force``: these steps switch with the
    other module instances running, and switch back before anything touches them."""
    for node in cluster.nodes:
        cluster.hvlibvirt_ganeti(node, action, "--force")


SYSRQ = "/proc/sysrq-trigger"  # this kernel has none: one environmental verify ERROR per node


def verify_problems(cluster: Cluster) -> tuple[int, list[str]]:
    """``gnt-cluster verify``: its exit code and the ERROR/WARNING lines but the sysrq ones."""
    done = cluster.gnt("gnt-cluster", "verify", check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if re.search(r"ERROR|WARNING|failed", line) and SYSRQ not in line]
    return done.returncode, lines


@dataclass(frozen=True)
class Guest:
    """Who the guest is: a reboot changes its boot id, a pause never lowers its uptime."""

    boot_id: str
    uptime: float


def guest(cluster: Cluster, name: str, timeout: float = 60.0) -> Guest:
    """What the guest itself says on ``gnt-instance console`` (run on gnta, the master)."""
    found = re.search(FACTS_RE, cluster.console("gnta", name, FACTS, FACTS_RE, timeout=timeout))
    assert found
    return Guest(found.group(1), float(found.group(2)))


def devices(cluster: Cluster, name: str) -> set[str]:
    """Block devices and network interfaces the guest sees."""
    out = cluster.console("gnta", name, "ls /sys/block /sys/class/net", r"\blo\b")
    return {word for word in out.split() if not word.startswith("/")}
