"""The Debian 12 -> 13 upgrade on a real Ganeti 3.1 cluster (issue 21): gnta is this host's
Debian 12 (QEMU 7.2, libvirt 9.0, Ganeti 3.1 from bookworm-backports), gntb the trixie
root's Debian 13 (QEMU 10.0, libvirt 11.3, Ganeti 3.1), both serving ``kvm`` from
hvlibvirt's .deb (tests/lab/upgrade_cluster.py).

One instance, started on gnta, goes through what an operator upgrading node by node
does, through gnt-* commands only: live to 13 and back (the same boot), a disk and a NIC
hot-added on 13 that come back along, failover both ways (a restart). Restarted on 13
it takes QEMU 10's default machine type, which QEMU 7.2 lacks: gnta's AcceptInstance
refuses the way back naming it, before any data moves, and the guest runs on.

It needs the trixie root that tier 7 makes, so it runs from the host after tier 7, like
tests/test_real_upgrade.py (scripts/test.sh --tier 7 sets HVLIBVIRT_UPGRADE_TIER=1;
tests/conftest.py leaves both out of other runs). A session that also uses the tier-5
``ganeti_cluster`` would wait for its machine lock: run it without that fixture.

Steps run in file order on the module's instance; each asserts where it starts.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

from lab import unavailable
from lab.cluster import ClusterError, cluster_prerequisites, ensure_deb
from lab.gnt_steps import (BOOT_S, HOTPLUG_S, QUIET_GUEST, add_instance, devices, domains, guest, remove_instance,
                           state, step)
from lab.guest import GuestImage, default_cache_dir
from lab.upgrade import trixie_root
from lab.upgrade_cluster import UpgradeCluster, backports_debs, root_problems, version_problem

pytestmark = [pytest.mark.tier5, pytest.mark.real]
log = logging.getLogger(__name__)

A, B = "gnta.gnt.test", "gntb.gnt.test"
NAME = "upg1"
OLD_MACHINE = "pc-i440fx-7.2"  # QEMU 7.2's 'pc'; QEMU 10 still offers it
NEW_MACHINE = re.compile(r"pc-i440fx-10\.\d+")  # QEMU 10's 'pc'


@pytest.fixture(scope="module")
def cluster(real_tier: None, guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> UpgradeCluster:
    """The mixed-release cluster; skips (fails in CI) when the machine cannot host it."""
    root = trixie_root()
    problems = cluster_prerequisites() + root_problems(root)
    if problems:
        unavailable("mixed-release Ganeti cluster unavailable: " + "; ".join(problems))
    try:
        deb = ensure_deb()
        backports = backports_debs(default_cache_dir())
    except ClusterError as err:
        unavailable(f"mixed-release Ganeti cluster unavailable: {err}")
    problem = version_problem(root, backports)
    if problem:
        unavailable(f"mixed-release Ganeti cluster unavailable: {problem}")
    made = UpgradeCluster(tmp_path_factory.mktemp("ganeti-upgrade"), root=root, backports=backports,
                          guest=guest_image, deb=deb)
    request.addfinalizer(made.teardown)  # before up(): a half-built cluster is torn down too
    made.up()
    log.warning("UPGRADE cluster up: %s", made.timings.phases)
    return made


@pytest.fixture(scope="module")
def instance(cluster: UpgradeCluster) -> Iterator[str]:
    """``-t sharedfile`` (both nodes see its disk), machine_version unpinned, started on gnta."""
    add_instance(cluster, NAME, "sharedfile", "0:size=64M", node="gnta", **QUIET_GUEST)
    yield cluster.fqdn(NAME)
    remove_instance(cluster, NAME)


def machine(cluster: UpgradeCluster, node: str, name: str) -> str:
    """The machine type of the running domain on ``node``."""
    found = re.search(r"machine=['\"]([^'\"]+)", cluster.virsh(node, "dumpxml", name).stdout)
    assert found, f"no machine type in {name}'s XML on {node}"
    return found.group(1)


def migrate(cluster: UpgradeCluster, name: str, src: str, dst: str) -> None:
    """``gnt-instance migrate`` to ``dst``, live: the guest runs there, the same boot,
    its uptime grown, and nothing of it is left on ``src``."""
    assert state(cluster, name) == (f"{src}.gnt.test", "running", "Y")
    before = guest(cluster, name)
    with step(f"gnt-instance migrate {src} -> {dst}"):
        done = cluster.gnt("gnt-instance", "migrate", "-f", "-n", f"{dst}.gnt.test", name)
    # Ganeti compares the nodes' hv_version (their QEMUs) and asks the hypervisor class
    # whether such a migration is safe; were it not, it would refuse without
    # --ignore-hvversions.
    out = done.stdout + done.stderr
    assert "hypervisor version mismatch" in out and "should be safe" in out, out
    assert state(cluster, name) == (f"{dst}.gnt.test", "running", "Y")
    assert name in domains(cluster, dst)
    assert name not in cluster.virsh(src, "list", "--all", "--name").stdout.split()
    after = guest(cluster, name)
    assert after.boot_id == before.boot_id, "the guest was rebooted"
    assert after.uptime > before.uptime


def failover(cluster: UpgradeCluster, name: str, src: str, dst: str) -> None:
    """``gnt-instance failover`` to ``dst``: stopped on ``src``, booted on ``dst``."""
    assert state(cluster, name) == (f"{src}.gnt.test", "running", "Y")
    before = guest(cluster, name)
    console = cluster.serial_log(dst, name)
    mark = console.mark()
    with step(f"gnt-instance failover {src} -> {dst}"):
        # A bounded stop: a guest wedged by an earlier step must not cost Ganeti's 2 min.
        cluster.gnt("gnt-instance", "failover", "-f", "--shutdown-timeout=30", "-n", f"{dst}.gnt.test",
                    name)
    console.wait("HVL-READY", BOOT_S, since=mark)
    assert state(cluster, name) == (f"{dst}.gnt.test", "running", "Y")
    assert name not in cluster.virsh(src, "list", "--all", "--name").stdout.split()
    assert guest(cluster, name).boot_id != before.boot_id


# ------------------------------------------------------------------------------ the cluster

def test_each_node_runs_its_own_release(cluster: UpgradeCluster) -> None:
    """Debian 12's QEMU, libvirt and Python on gnta, Debian 13's on gntb, one Ganeti
    version on both, and hvlibvirt serving kvm on both."""
    expected = {"gnta": ("QEMU 7.2", "libvirt 9.0", "3.11"), "gntb": ("QEMU 10.0", "libvirt 11.3", "3.13")}
    ganeti = {}
    for node, (qemu, libvirt, python) in expected.items():
        version = cluster.virsh(node, "version").stdout
        assert f"hypervisor: {qemu}." in version and f"library: {libvirt}." in version, (node, version)
        py = cluster.run(node, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        assert py.stdout.strip() == python, node
        # "gnt-cluster (ganeti BUILD) RELEASE": the node's own Debian build of one release
        ganeti[node] = cluster.run(node, ["gnt-cluster", "--version"]).stdout.split()[-2:]
        assert cluster.hvlibvirt_ganeti(node, "status").startswith("hvlibvirt serves kvm"), node
    assert ganeti["gnta"][1].startswith("3.1.") and ganeti["gnta"][1] == ganeti["gntb"][1], ganeti
    assert "bpo12" in ganeti["gnta"][0] and "bpo12" not in ganeti["gntb"][0], ganeti
    nodes = cluster.gnt("gnt-node", "list", "--no-headers", "-o", "name").stdout.split()
    assert sorted(nodes) == [A, B], nodes


# ------------------------------------------------------------------------------ the instance

def test_live_migration_12_to_13(cluster: UpgradeCluster, instance: str) -> None:
    """Unpinned, the guest took QEMU 7.2's 'pc' when it started, and keeps it on 13."""
    assert machine(cluster, "gnta", instance) == OLD_MACHINE
    migrate(cluster, instance, "gnta", "gntb")
    assert machine(cluster, "gntb", instance) == OLD_MACHINE


def test_hot_add_on_13_of_an_instance_started_on_12(cluster: UpgradeCluster, instance: str) -> None:
    """Ganeti 3.1 hotplugs by default: a disk and a NIC, added to the running guest on 13."""
    assert state(cluster, instance)[0] == B
    before = guest(cluster, instance)
    with step("gnt-instance modify --disk add (on 13)"):
        cluster.gnt("gnt-instance", "modify", "--disk", "add:size=16M", instance)
    with step("gnt-instance modify --net add (on 13)"):
        cluster.gnt("gnt-instance", "modify", "--net", "add", instance)
    deadline = time.monotonic() + HOTPLUG_S
    while not {"vdb", "eth1"} <= (seen := devices(cluster, instance)):
        assert time.monotonic() < deadline, f"the guest sees only {sorted(seen)}"
        time.sleep(1.0)
    assert cluster.instance_fields(NAME, "disk.count", "nic.count") == ["2", "2"]
    assert guest(cluster, instance).boot_id == before.boot_id


def test_live_migration_13_to_12_with_the_hot_added_devices(cluster: UpgradeCluster, instance: str) -> None:
    seen = devices(cluster, instance)
    migrate(cluster, instance, "gntb", "gnta")
    assert devices(cluster, instance) == seen
    assert machine(cluster, "gnta", instance) == OLD_MACHINE


def test_failover_12_to_13(cluster: UpgradeCluster, instance: str) -> None:
    """Restarted on 13, the unpinned guest takes QEMU 10's 'pc' (the next step's case)."""
    failover(cluster, instance, "gnta", "gntb")
    assert NEW_MACHINE.fullmatch(machine(cluster, "gntb", instance))


def test_a_machine_type_qemu72_lacks_is_refused_for_12(cluster: UpgradeCluster, instance: str) -> None:
    """gnta's AcceptInstance (Ganeti's pre-migration, before any data moves) refuses the
    guest's machine type, naming it and machine_version; the guest runs on on 13."""
    assert state(cluster, instance) == (B, "running", "Y")
    new = machine(cluster, "gntb", instance)
    before = guest(cluster, instance)
    with step("gnt-instance migrate 13 -> 12 (refused)"):
        done = cluster.gnt("gnt-instance", "migrate", "-f", "-n", A, instance, check=False)
    out = done.stdout + done.stderr
    log.warning("UPGRADE refused: %s", " ".join(line for line in out.splitlines() if new in line)[:600])
    assert done.returncode != 0, out
    assert "pre-migrate" in out and new in out and "machine_version" in out, out
    assert state(cluster, instance) == (B, "running", "Y")
    assert instance not in cluster.virsh("gnta", "list", "--all", "--name").stdout.split()
    after = guest(cluster, instance)
    assert after.boot_id == before.boot_id and after.uptime > before.uptime


def test_failover_13_to_12(cluster: UpgradeCluster, instance: str) -> None:
    """The way back for such a guest: a restart, on QEMU 7.2's 'pc' again."""
    failover(cluster, instance, "gntb", "gnta")
    assert machine(cluster, "gnta", instance) == OLD_MACHINE
    assert {"vdb", "eth1"} <= devices(cluster, instance)
