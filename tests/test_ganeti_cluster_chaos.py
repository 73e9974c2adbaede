"""Tier 5: ganeti-noded's RPC process killed in the middle of hvlibvirt's work.

noded forks a process per RPC; a SIGKILL there (the OOM killer, an operator's kill)
ends the hypervisor call wherever it is. A killer inside the node watches for the
moment the call is inside hvlibvirt (libvirt starting the domain's QEMU; the per-
instance hotplug lock held; the migration under way on the target) and kills every
RPC child of noded at once. Ganeti then reports a failure; whatever step was cut, the
next ordinary operator steps must bring the instance back to one consistent state: one
QEMU, Ganeti and libvirt agreeing on where it runs and which devices it has, the guest
seeing those devices.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator

import pytest

from lab.cluster import Cluster
from lab.gnt_steps import (BOOT_S, HOTPLUG, HOTPLUG_S, QUIET_GUEST, add_instance, domains,
                           ensure_running, remove_instance, state, step, verify_problems,
                           wait_for)

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.tier5, pytest.mark.real]

# Runs in the node (its python3, its /run): argv is MODE TEXT SECONDS. MODE "path":
# kill once the file TEXT exists; "fd": once a noded child has a file open whose path
# contains TEXT. Prints what it killed; exits 1 if the moment never came.
KILLER = r"""
import os, signal, sys, time
mode, text, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
noded = int(open("/var/run/ganeti/ganeti-noded.pid").read())
def children():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == noded:
                    yield int(pid)
        except (OSError, ValueError):
            pass
def holds(pid):
    try:
        return any(text in os.readlink(f"/proc/{pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    if mode == "path":
        victims = list(children()) if os.path.exists(text) else []
    else:
        victims = [pid for pid in children() if holds(pid)]
    if victims:
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        print("killed", victims, flush=True)
        sys.exit(0)
    time.sleep(0.002)
sys.exit(1)
"""


class Killer:
    """The killer running in ``node`` until the moment comes (see KILLER)."""

    def __init__(self, cluster: Cluster, node: str, mode: str, text: str, seconds: float = 60.0
                 ) -> None:
        argv = cluster.node(node).run_argv(["python3", "-c", KILLER, mode, text, str(seconds)])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)

    def result(self) -> str:
        """What it killed ('' if nothing): the step under test may have been too quick."""
        out, _ = self.proc.communicate(timeout=90)
        log.info("killer: %s", out.strip() or "killed nothing")
        return out if self.proc.returncode == 0 else ""


def qemu_count(cluster: Cluster, name: str) -> int:
    """QEMU processes running the instance, on any node (they share a process table)."""
    out = cluster.run("gnta", ["ps", "-eo", "args"]).stdout
    return sum(1 for line in out.splitlines()
               if line.startswith("/usr/bin/qemu") and f"guest={name}," in line)


def libvirt_disks(cluster: Cluster, node: str, name: str) -> int:
    xml = cluster.virsh(node, "dumpxml", name).stdout
    return len(re.findall(r"<disk type=", xml))


def ganeti_disks(cluster: Cluster, name: str) -> int:
    return int(cluster.instance_fields(name, "disk.count")[0])


INST = "chaos1"
INST2 = "chaos2"


@pytest.fixture(scope="module")
def chaos1(ganeti_cluster: Cluster) -> Iterator[str]:
    """chaos1 (``-t file``, on gnta), booted."""
    add_instance(ganeti_cluster, INST, "file", "0:size=64M")
    yield INST
    remove_instance(ganeti_cluster, INST)


def test_noded_killed_while_libvirt_starts_the_instance(ganeti_cluster: Cluster,
                                                        chaos1: str) -> None:
    """Killed once libvirt has begun starting QEMU: the failed start leaves either
    nothing or the instance running; ``gnt-instance start`` then runs it, once."""
    name = ganeti_cluster.fqdn(chaos1)
    ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    console = ganeti_cluster.serial_log("gnta", chaos1)
    mark = console.mark()
    killer = Killer(ganeti_cluster, "gnta", "path", f"/run/libvirt/qemu/{name}.xml")
    with step("gnt-instance start (noded child killed)"):
        first = ganeti_cluster.gnt("gnt-instance", "start", name, check=False)
    killed = killer.result()
    log.info("start with a kill: exit %d (%s)", first.returncode, "killed" if killed else "no kill")
    assert qemu_count(ganeti_cluster, name) <= 1
    with step("gnt-instance start again"):
        ganeti_cluster.gnt("gnt-instance", "start", name, check=False)
    ensure_running(ganeti_cluster, chaos1)
    console.wait("HVL-READY", BOOT_S, since=mark)
    assert state(ganeti_cluster, chaos1) == ("gnta.gnt.test", "running", "Y")
    assert qemu_count(ganeti_cluster, name) == 1
    assert domains(ganeti_cluster, "gnta") == [name]
    ganeti_cluster.console("gnta", chaos1, "ls /sys/block", "vda")


def test_noded_killed_during_a_hot_add(ganeti_cluster: Cluster, chaos1: str) -> None:
    """Killed while hvlibvirt holds the instance's hotplug lock: Ganeti has the new disk
    in its configuration whatever happened live. The next hotplug settles what the cut
    one left (hotplug/flow.py), a reboot brings the configuration's disks, and then
    Ganeti, libvirt and the guest agree; the disk hot-removes cleanly."""
    name = ganeti_cluster.fqdn(chaos1)
    ensure_running(ganeti_cluster, chaos1)
    killer = Killer(ganeti_cluster, "gnta", "fd", f"{name}.hotplug.")
    with step("hot-add disk (noded child killed)"):
        done = ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--disk", "add:size=16M",
                                  name, check=False)
    killer.result()
    log.info("hot-add with a kill: exit %d\n%s", done.returncode, done.stdout + done.stderr)
    assert ganeti_disks(ganeti_cluster, chaos1) == 2
    with step("hot-add NIC (settles the cut hot-add)"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "add", name)
    console = ganeti_cluster.serial_log("gnta", chaos1)
    mark = console.mark()
    with step("gnt-instance reboot"):
        ganeti_cluster.gnt("gnt-instance", "reboot", name)
    console.wait("HVL-READY", BOOT_S, since=mark)
    dev = console.wait_dev(lambda d: "vdb" in d["blk"], HOTPLUG_S, since=mark)
    assert dev["blk"] == ["vda", "vdb"] and "eth1" in dev["net"], dev
    assert libvirt_disks(ganeti_cluster, "gnta", name) == 2
    with step("hot-remove disk and NIC"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--disk", "1:remove", name)
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "1:remove", name)
    assert libvirt_disks(ganeti_cluster, "gnta", name) == ganeti_disks(ganeti_cluster, chaos1) == 1
    wait_for(lambda: (console.last_dev() or {}).get("blk") == ["vda"], HOTPLUG_S, "vdb gone")


@pytest.fixture(scope="module")
def chaos2(ganeti_cluster: Cluster) -> Iterator[str]:
    """chaos2 (``-t sharedfile``), booted on gnta."""
    add_instance(ganeti_cluster, INST2, "sharedfile", "0:size=64M", **QUIET_GUEST)
    yield INST2
    remove_instance(ganeti_cluster, INST2)


def test_noded_killed_on_the_target_during_a_live_migration(ganeti_cluster: Cluster,
                                                            chaos2: str) -> None:
    """Once the target's libvirt holds the incoming domain, the target noded's next RPC
    processes are killed (FinalizeMigrationDst, as a rule). Ganeti then reports that it
    could not finalize the migration and keeps the source as primary; a start there
    would fail on the disk's lock (QEMU on the target holds it). Ganeti's own remedy,
    ``gnt-instance migrate --cleanup``, finds the instance on the target (libvirt made
    it persistent there as the migration ended) and fixes the configuration: one QEMU,
    where Ganeti says, migrating on afterwards."""
    name = ganeti_cluster.fqdn(chaos2)
    ensure_running(ganeti_cluster, chaos2)
    source = state(ganeti_cluster, chaos2)[0]
    target = "gntb" if source.startswith("gnta") else "gnta"
    killer = Killer(ganeti_cluster, target, "path", f"/run/libvirt/qemu/{name}.xml")
    with step("gnt-instance migrate (target noded's RPC children killed)"):
        done = ganeti_cluster.gnt("gnt-instance", "migrate", "-f", name, check=False)
    killer.result()
    log.info("migrate with a kill: exit %d\n%s", done.returncode, done.stdout[-2000:] + done.stderr[-2000:])
    wait_for(lambda: qemu_count(ganeti_cluster, name) == 1, 60, "one QEMU")
    if done.returncode != 0:
        # Ganeti's answer to a migration it could not finish or finalize: look where the
        # instance runs (ListInstances on both nodes) and fix its configuration.
        with step("gnt-instance migrate --cleanup"):
            ganeti_cluster.gnt("gnt-instance", "migrate", "--cleanup", "-f", name)
    where = state(ganeti_cluster, chaos2)[0].split(".")[0]
    assert state(ganeti_cluster, chaos2)[1:] == ("running", "Y")
    assert name in domains(ganeti_cluster, where)
    assert name not in domains(ganeti_cluster, "gntb" if where == "gnta" else "gnta")
    assert qemu_count(ganeti_cluster, name) == 1
    with step("gnt-instance reboot (from the definition the migration left)"):
        ganeti_cluster.gnt("gnt-instance", "reboot", name)
    ganeti_cluster.console("gnta", chaos2, "ls /sys/block", "vda", timeout=BOOT_S)
    with step("gnt-instance migrate afterwards"):
        ganeti_cluster.gnt("gnt-instance", "migrate", "-f", name)
    assert qemu_count(ganeti_cluster, name) == 1
    ganeti_cluster.console("gnta", chaos2, "ls /sys/block", "vda")



def test_cluster_verify_is_clean_after_the_chaos(ganeti_cluster: Cluster, chaos1: str,
                                                 chaos2: str) -> None:
    """After every cut RPC above and the operator's ordinary remedies, ``gnt-cluster
    verify`` finds nothing (but the lab kernel's missing sysrq): no instance running
    where Ganeti does not expect it, no orphan volume, no node out of step."""
    for instance in (chaos1, chaos2):
        ensure_running(ganeti_cluster, instance)
    with step("gnt-cluster verify after the chaos"):
        _rc, problems = verify_problems(ganeti_cluster)  # rc: the sysrq ERROR
    assert not problems, problems
