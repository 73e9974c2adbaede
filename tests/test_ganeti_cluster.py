"""Tier 5: hvlibvirt serving Ganeti 3.0's ``kvm`` on a real two-node cluster.

The cluster (the session fixture ``ganeti_cluster``, tests/lab/cluster.py) runs nodes
gnta (master) and gntb with hvlibvirt installed from the project's .deb and enabled.
Each test is one step an operator would take, through the gnt-* commands only; the
guest is the lab's busybox initramfs, read through its serial log (hvlibvirt's
serial_log_dir) or typed into through ``gnt-instance console``.

Steps share the instances of module fixtures and run in file order; each checks the
state it needs first, so one failing step names itself instead of breaking the rest.
The last step gives Ganeti its own hv_kvm back and then re-enables hvlibvirt, so tests
after this module find the cluster as the fixture made it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest

from lab.cluster import Cluster
from lab.gnt_steps import (BOOT_S, HOTPLUG, HOTPLUG_S, QUIET_GUEST, SYSRQ, add_instance,
                            domains, ensure_running, remove_instance, set_hvlibvirt, state, step,
                            verify_problems, wait_for)

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.tier5, pytest.mark.real]

NODES = ("gnta.gnt.test", "gntb.gnt.test")


# ------------------------------------------------------------------------------ the cluster

def test_cluster_verify_is_clean_but_for_sysrq(ganeti_cluster: Cluster) -> None:
    with step("gnt-cluster verify"):
        done = ganeti_cluster.gnt("gnt-cluster", "verify", check=False)
    out = done.stdout + done.stderr
    errors = [line for line in out.splitlines() if "ERROR" in line or "WARNING" in line]
    assert errors and all(SYSRQ in line for line in errors), out
    assert all(any(node in line for line in errors) for node in NODES), out
    assert "failed" not in out, out


def test_node_list_shows_both_nodes_with_memory(ganeti_cluster: Cluster) -> None:
    out = ganeti_cluster.gnt("gnt-node", "list", "--no-headers", "--units=m", "--separator=|",
                             "-o", "name,mtotal,mnode,mfree,master").stdout
    rows = {row.split("|")[0]: row.split("|")[1:] for row in out.split()}
    assert sorted(rows) == list(NODES), out
    for name, (mtotal, mnode, mfree, _master) in rows.items():
        assert all(v.isdigit() and int(v) > 0 for v in (mtotal, mnode, mfree)), f"{name}: {out}"
    assert rows["gnta.gnt.test"][3] == "Y", out


def test_hvlibvirt_serves_kvm_on_both_nodes(ganeti_cluster: Cluster) -> None:
    for node in ganeti_cluster.nodes:
        assert ganeti_cluster.hvlibvirt_ganeti(node, "status").startswith("hvlibvirt serves kvm"), node
    # default leads to the installed Ganeti's share (3.0 on Debian 12, 3.1 on Debian 13)
    assert "hvlibvirt" in ganeti_cluster.master.read(
        "/usr/share/ganeti/default/ganeti/hypervisor/__init__.py")


def test_root_reaches_the_other_nodes_libvirt_over_ssh(ganeti_cluster: Cluster) -> None:
    """What hvlibvirt's migration_uri (qemu+ssh://{target}/system) needs on every node."""
    for node, other in (("gnta", "gntb"), ("gntb", "gnta")):
        target = ganeti_cluster.nodes[other]
        out = ganeti_cluster.run(node, ["virsh", "-c", f"qemu+ssh://{target.ip}/system", "hostname"]).stdout
        assert out.strip() == target.fqdn


# ------------------------------------------------------------------------------ a file-backed instance

INST1 = "inst1"


@pytest.fixture(scope="module")
def inst1(ganeti_cluster: Cluster) -> Iterator[str]:
    """inst1 (``-t file``, on gnta), booted."""
    add_instance(ganeti_cluster, INST1, "file", "0:size=64M")
    yield INST1
    remove_instance(ganeti_cluster, INST1)


def test_file_instance_runs_as_a_libvirt_domain(ganeti_cluster: Cluster, inst1: str) -> None:
    assert state(ganeti_cluster, inst1) == ("gnta.gnt.test", "running", "Y")
    assert ganeti_cluster.fqdn(inst1) in domains(ganeti_cluster, "gnta")
    assert domains(ganeti_cluster, "gntb") == []
    dev = ganeti_cluster.serial_log("gnta", inst1).last_dev()
    assert dev is not None and dev["blk"] == ["vda"] and "eth0" in dev["net"], dev


def test_console_types_into_the_guest(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    with step("gnt-instance console (type uname -r, Ctrl-])"):
        answer = ganeti_cluster.console("gnta", inst1, "uname -r", r"\d+\.\d+\.\d+")
    assert ganeti_cluster.guest is not None
    assert ganeti_cluster.guest.kernel_version in answer


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_reboot(ganeti_cluster: Cluster, inst1: str, kind: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    console = ganeti_cluster.serial_log("gnta", inst1)
    mark = console.mark()
    with step(f"gnt-instance reboot --type={kind}"):
        ganeti_cluster.gnt("gnt-instance", "reboot", f"--type={kind}", ganeti_cluster.fqdn(inst1))
    with step(f"reboot --type={kind}: guest ready again"):
        console.wait("HVL-READY", BOOT_S, since=mark)
    assert state(ganeti_cluster, inst1)[2] == "Y"


def test_disk_hotplug_add_and_remove(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    console, name = ganeti_cluster.serial_log("gnta", inst1), ganeti_cluster.fqdn(inst1)
    mark = console.mark()
    with step("gnt-instance modify --hotplug --disk add:size=32M"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--disk", "add:size=32M", name)
    dev = console.wait_dev(lambda d: "vdb" in d["sizes"], HOTPLUG_S, since=mark)
    assert dev["sizes"]["vdb"] == 32 * 2048, dev
    mark = console.mark()
    with step("gnt-instance modify --hotplug --disk 1:remove"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--disk", "1:remove", name)
    console.wait_dev(lambda d: d["blk"] == ["vda"], HOTPLUG_S, since=mark)
    assert ganeti_cluster.instance_fields(inst1, "disk.count") == ["1"]


def test_nic_hotplug_add_and_remove(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    console, name = ganeti_cluster.serial_log("gnta", inst1), ganeti_cluster.fqdn(inst1)
    mark = console.mark()
    with step("gnt-instance modify --hotplug --net add"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "add", name)
    console.wait_dev(lambda d: "eth1" in d["net"], HOTPLUG_S, since=mark)
    mark = console.mark()
    with step("gnt-instance modify --hotplug --net 1:remove"):
        ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "1:remove", name)
    console.wait_dev(lambda d: "eth1" not in d["net"], HOTPLUG_S, since=mark)


def test_nic_hot_modify_replaces_the_nic(ganeti_cluster: Cluster, inst1: str) -> None:
    """``modify --net N:modify,mac=... --hotplug --force``: the NIC is removed and added
    again with the new MAC (as Ganeti's hv_kvm does it); Ganeti's configuration and the
    live domain agree afterwards, and the guest has the NIC again."""
    ensure_running(ganeti_cluster, inst1)
    console, name = ganeti_cluster.serial_log("gnta", inst1), ganeti_cluster.fqdn(inst1)
    mark = console.mark()
    ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "add", name)
    console.wait_dev(lambda d: "eth1" in d["net"], HOTPLUG_S, since=mark)
    mac = "aa:00:00:26:00:01"
    mark = console.mark()
    with step("gnt-instance modify --hotplug --force --net 1:modify,mac=..."):
        done = ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--force", "--net",
                                  f"1:modify,mac={mac}", name)
    out = done.stdout + done.stderr
    assert "hotplug:failed" not in out and "Could not hotplug" not in out, out
    assert ganeti_cluster.instance_fields(inst1, "nic.mac/1") == [mac]
    live = ganeti_cluster.virsh("gnta", "domiflist", name).stdout
    assert mac in live, live
    console.wait(r"net=eth0,lo .*\n(.|\n)*net=eth0,eth1,lo ", HOTPLUG_S, since=mark)
    mark = console.mark()
    ganeti_cluster.gnt("gnt-instance", "modify", *HOTPLUG, "--net", "1:remove", name)
    console.wait_dev(lambda d: "eth1" not in d["net"], HOTPLUG_S, since=mark)


def test_a_user_shut_down_instance_starts_again(ganeti_cluster: Cluster, inst1: str) -> None:
    """user_shutdown=true, QEMU ends on SIGTERM: Ganeti shows USER_down, and
    ``gnt-instance start`` (which shuts a USER_down instance down first) boots it."""
    name = ganeti_cluster.fqdn(inst1)
    ensure_running(ganeti_cluster, inst1)
    ganeti_cluster.gnt("gnt-cluster", "modify", "--user-shutdown=yes")
    ganeti_cluster.gnt("gnt-instance", "modify", "-H", "user_shutdown=true", name)
    try:
        ganeti_cluster.gnt("gnt-instance", "shutdown", name)
        ensure_running(ganeti_cluster, inst1)  # the hvparam is in force from this start
        # "[g]": the pattern must not match the command line that runs pkill itself.
        ganeti_cluster.run("gnta", ["pkill", "-TERM", "-f", f"[g]uest={name},"])
        wait_for(lambda: state(ganeti_cluster, inst1)[1] == "USER_down", HOTPLUG_S,
                 "USER_down")
        console = ganeti_cluster.serial_log("gnta", inst1)
        mark = console.mark()
        with step("gnt-instance start (USER_down)"):
            ganeti_cluster.gnt("gnt-instance", "start", name)
        console.wait("HVL-READY", BOOT_S, since=mark)
        assert state(ganeti_cluster, inst1)[1:] == ("running", "Y")
    finally:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "user_shutdown=false", name)
        ganeti_cluster.gnt("gnt-cluster", "modify", "--user-shutdown=no")


def test_modify_memory_balloons_the_running_guest(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    console, name = ganeti_cluster.serial_log("gnta", inst1), ganeti_cluster.fqdn(inst1)
    before = console.last_dev()
    assert before is not None
    # Ganeti keeps runtime memory within [minmem, maxmem]: lower minmem first.
    ganeti_cluster.gnt("gnt-instance", "modify", "-B", "minmem=64M", name)
    mark = console.mark()
    with step("gnt-instance modify -m 96M"):
        ganeti_cluster.gnt("gnt-instance", "modify", "-m", "96M", name)
    # The balloon takes 32 MiB from the guest: MemTotal drops by about that much (the
    # guest reports it after this modify, not in an earlier boot's lines)...
    with step("balloon inflated in the guest"):
        console.wait_dev(lambda d: d["mem"] <= before["mem"] - 30 * 1024, HOTPLUG_S, since=mark)
    # ... and Ganeti reads the new size back (in MiB: --separator turns units off).
    wait_for(lambda: ganeti_cluster.instance_fields(inst1, "oper_ram") == ["96"], HOTPLUG_S,
             "oper_ram 96")
    ganeti_cluster.gnt("gnt-instance", "modify", "-m", "128M", name)


def test_shutdown_and_start(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    name = ganeti_cluster.fqdn(inst1)
    with step("gnt-instance shutdown"):
        ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    assert state(ganeti_cluster, inst1)[1:] == ("ADMIN_down", "N")
    assert name not in domains(ganeti_cluster, "gnta")
    console = ganeti_cluster.serial_log("gnta", inst1)
    mark = console.mark()
    with step("gnt-instance start"):
        ganeti_cluster.gnt("gnt-instance", "start", name)
    console.wait("HVL-READY", BOOT_S, since=mark)
    assert state(ganeti_cluster, inst1)[1:] == ("running", "Y")


def test_shutdown_right_after_start_presses_the_button_again(ganeti_cluster: Cluster, inst1: str) -> None:
    """A power-button press during boot is lost (acpid does not listen yet): Ganeti's
    shutdown loop presses again every 5 s, so the guest still powers itself off."""
    ensure_running(ganeti_cluster, inst1)
    name = ganeti_cluster.fqdn(inst1)
    console = ganeti_cluster.serial_log("gnta", inst1)
    ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    mark = console.mark()
    ganeti_cluster.gnt("gnt-instance", "start", name)
    with step("gnt-instance shutdown --timeout=60 right after start"):
        ganeti_cluster.gnt("gnt-instance", "shutdown", "--timeout=60", name)
    assert state(ganeti_cluster, inst1)[1:] == ("ADMIN_down", "N")
    console.wait("HVL-ACPI-POWEROFF", 5, since=mark)  # a button press, not the forced stop
    ensure_running(ganeti_cluster, inst1)


# ------------------------------------------------------------------------------ shared storage

INST2 = "inst2"


@pytest.fixture(scope="module")
def inst2(ganeti_cluster: Cluster) -> Iterator[str]:
    """inst2 (``-t sharedfile``: both nodes see its disk), booted on gnta."""
    add_instance(ganeti_cluster, INST2, "sharedfile", "0:size=64M", **QUIET_GUEST)
    yield INST2
    remove_instance(ganeti_cluster, INST2)


MIGRATION_HOPS = 4


def test_live_migration_hops_in_a_row(ganeti_cluster: Cluster, inst2: str) -> None:
    """``gnt-instance migrate`` two round trips in a row: each hop lands on the other
    node, the source keeps no domain, the same guest (its uptime only grows, so no
    reboot) answers on its console, and no node keeps a helper file in /tmp."""
    ensure_running(ganeti_cluster, inst2)
    name = ganeti_cluster.fqdn(inst2)
    source, uptimes = state(ganeti_cluster, inst2)[0], []
    for hop in range(1, MIGRATION_HOPS + 1):
        target = "gntb.gnt.test" if source == "gnta.gnt.test" else "gnta.gnt.test"
        with step(f"gnt-instance migrate -f (hop {hop})"):
            ganeti_cluster.gnt("gnt-instance", "migrate", "-f", name)
        assert state(ganeti_cluster, inst2) == (target, "running", "Y"), f"hop {hop}"
        assert name in domains(ganeti_cluster, target), f"hop {hop}"
        assert name not in domains(ganeti_cluster, source), f"hop {hop}"
        answer = ganeti_cluster.console("gnta", inst2, "cat /proc/uptime", r"\d+\.\d+ \d+\.\d+")
        uptimes.append(float(re.search(r"(\d+\.\d+) \d+\.\d+", answer).group(1)))
        source = target
    assert uptimes == sorted(uptimes), uptimes
    for node in ganeti_cluster.nodes:
        left = ganeti_cluster.run(node, ["ls", "-A", "/tmp"]).stdout.split()
        assert not [f for f in left if f.startswith("hvlibvirt")], (node, left)


def test_failover(ganeti_cluster: Cluster, inst2: str) -> None:
    ensure_running(ganeti_cluster, inst2)
    name = ganeti_cluster.fqdn(inst2)
    source = state(ganeti_cluster, inst2)[0]
    target = "gntb.gnt.test" if source == "gnta.gnt.test" else "gnta.gnt.test"
    console = ganeti_cluster.serial_log(target, inst2)
    mark = console.mark()
    with step("gnt-instance failover -f"):
        # A bounded stop: a guest wedged by an earlier step must not cost Ganeti's 2 min.
        ganeti_cluster.gnt("gnt-instance", "failover", "-f", "--shutdown-timeout=30", name)
    console.wait("HVL-READY", BOOT_S, since=mark)  # failover = stop here, boot there
    assert state(ganeti_cluster, inst2) == (target, "running", "Y")
    assert name not in domains(ganeti_cluster, source)


def test_blockdev_instance_boots_from_an_adopted_device(ganeti_cluster: Cluster) -> None:
    name = "inst3"
    adopt = ganeti_cluster.blockdev("bd3", 48)
    try:
        console = add_instance(ganeti_cluster, name, "blockdev", f"0:adopt={adopt}", **QUIET_GUEST)
        dev = console.last_dev()
        assert dev is not None and dev["sizes"].get("vda") == 48 * 2048, dev
        with step("gnt-instance migrate -f (blockdev)"):
            ganeti_cluster.gnt("gnt-instance", "migrate", "-f", ganeti_cluster.fqdn(name))
        assert state(ganeti_cluster, name) == ("gntb.gnt.test", "running", "Y")
    finally:
        remove_instance(ganeti_cluster, name)


# ------------------------------------------------------------------------------ trouble

def test_disable_is_refused_while_an_instance_runs(ganeti_cluster: Cluster, inst1: str) -> None:
    """Ganeti's hv_kvm would not see the libvirt guest (its watcher could start a second
    QEMU on the same disks): disable refuses, naming the instance, and changes nothing."""
    ensure_running(ganeti_cluster, inst1)
    done = ganeti_cluster.run("gnta", ["hvlibvirt", "ganeti", "disable"], check=False)
    err = done.stderr.strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1, (done.returncode, err)
    assert ganeti_cluster.fqdn(inst1) in err and "--force" in err, err
    assert ganeti_cluster.hvlibvirt_ganeti("gnta", "status").startswith("hvlibvirt serves kvm")


def test_a_start_the_node_refuses_is_ganetis_failed_start(ganeti_cluster: Cluster,
                                                          inst1: str) -> None:
    """use_chroot=true is honoured only where qemu.conf keeps QEMU's mount namespace,
    which the lab's nodes turn off. Under hvlibvirt the node refuses the value when it is
    set; set while hv_kvm served, it makes the start fail the way Ganeti reports a
    failed start, and Ganeti removes the instance's disk symlinks."""
    name = ganeti_cluster.fqdn(inst1)
    ensure_running(ganeti_cluster, inst1)
    refused = ganeti_cluster.gnt("gnt-instance", "modify", "-H", "use_chroot=true", name,
                                 check=False)
    assert refused.returncode != 0 and "use_chroot" in refused.stdout + refused.stderr
    ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    set_hvlibvirt(ganeti_cluster, "disable")
    try:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "use_chroot=true", name)
    finally:
        set_hvlibvirt(ganeti_cluster, "enable")
    try:
        with step("gnt-instance start (refused on the node)"):
            failed = ganeti_cluster.gnt("gnt-instance", "start", name, check=False)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "Could not start instance" in out and "use_chroot" in out, out
        assert "Error while executing backend function" not in out, out
        # Ganeti removes the links of the instance's disks (a link of a disk hot-removed
        # earlier, inst1:1, is Ganeti's to keep: it does so with hv_kvm too).
        links = ganeti_cluster.run("gnta", ["ls", "-A", "/run/ganeti/instance-disks"]).stdout
        assert f"{name}:0" not in links.split(), links
        assert name not in domains(ganeti_cluster, "gnta")
    finally:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "use_chroot=false", name)
    ensure_running(ganeti_cluster, inst1)


def test_verify_reports_an_hvparam_hvlibvirt_refuses(ganeti_cluster: Cluster, inst2: str) -> None:
    """A value Ganeti's hv_kvm accepted (disk_type=mtd), found by verify once hvlibvirt serves kvm."""
    name = ganeti_cluster.fqdn(inst2)
    ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    set_hvlibvirt(ganeti_cluster, "disable")
    try:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "disk_type=mtd", name)
        # The operator's review before switching (docs/ganeti.md) lists it.
        review = ganeti_cluster.run("gnta", ["hvlibvirt", "ganeti", "check"], check=False)
        assert review.returncode == 1, review
        assert [line for line in review.stdout.splitlines() if inst2 in line and "disk_type" in line], review
    finally:
        set_hvlibvirt(ganeti_cluster, "enable")
    try:
        with step("gnt-cluster verify (refused hvparam)"):
            rc, problems = verify_problems(ganeti_cluster)
        assert rc != 0
        assert [p for p in problems if "disk_type" in p and inst2 in p], problems
        assert not [p for p in problems if "job(s) failed" in p or "has failed" in p], problems
    finally:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "disk_type=paravirtual", name)


def test_libvirtd_down_is_named_by_verify(ganeti_cluster: Cluster) -> None:
    ganeti_cluster.stop_libvirtd("gntb")
    try:
        out = ganeti_cluster.gnt("gnt-node", "list", "--no-headers", "--units=m", "--separator=|",
                                 "-o", "name,mtotal,mfree").stdout
        row = [r.split("|") for r in out.split() if r.startswith("gntb.")]
        assert row and row[0][1].isdigit() and row[0][2].isdigit(), out
        with step("gnt-cluster verify (libvirtd down on gntb)"):
            rc, problems = verify_problems(ganeti_cluster)
        assert rc != 0
        assert [p for p in problems if "gntb.gnt.test" in p and "libvirt" in p], problems
    finally:
        with step("libvirtd restarted on gntb"):
            ganeti_cluster.start_libvirtd("gntb")


def test_watcher_restarts_a_killed_instance(ganeti_cluster: Cluster, inst1: str) -> None:
    ensure_running(ganeti_cluster, inst1)
    name = ganeti_cluster.fqdn(inst1)
    console = ganeti_cluster.serial_log("gnta", inst1)
    ganeti_cluster.virsh("gnta", "destroy", name)  # the guest dies behind Ganeti's back
    assert state(ganeti_cluster, inst1)[1:] == ("ERROR_down", "N")
    mark = console.mark()
    with step("ganeti-watcher"):
        ganeti_cluster.run("gnta", ["ganeti-watcher"], timeout=300)
    console.wait("HVL-READY", BOOT_S, since=mark)
    assert state(ganeti_cluster, inst1)[1:] == ("running", "Y")


@pytest.mark.parametrize("signal", ["TERM", "KILL"])
def test_reboot_and_watcher_after_qemu_ends_on_a_signal(ganeti_cluster: Cluster, inst1: str,
                                                        signal: str) -> None:
    """QEMU ends on SIGTERM or SIGKILL (user_shutdown off): Ganeti shows ERROR_down;
    ``gnt-instance reboot`` starts it, and after the next death the watcher does."""
    name = ganeti_cluster.fqdn(inst1)
    console = ganeti_cluster.serial_log("gnta", inst1)
    for then in (["gnt-instance", "reboot", name], ["ganeti-watcher"]):
        ensure_running(ganeti_cluster, inst1)
        # "[g]": the pattern must not match the command line that runs pkill itself.
        ganeti_cluster.run("gnta", ["pkill", f"-{signal}", "-f", f"[g]uest={name},"])
        wait_for(lambda: state(ganeti_cluster, inst1)[1:] == ("ERROR_down", "N"), HOTPLUG_S,
                 "ERROR_down")
        mark = console.mark()
        with step(f"SIG{signal}, then {then[0]} {' '.join(then[1:2])}"):
            ganeti_cluster.run("gnta", then, timeout=300)
        console.wait("HVL-READY", BOOT_S, since=mark)
        assert state(ganeti_cluster, inst1)[1:] == ("running", "Y")


def test_disable_gives_back_hv_kvm_which_starts_the_same_instance(ganeti_cluster: Cluster, inst1: str) -> None:
    name = ganeti_cluster.fqdn(inst1)
    ensure_running(ganeti_cluster, inst1)
    ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    # Ganeti 3.1's hv_kvm opens /dev/vhost-net for every NIC while vhost_net is on (3.1's
    # default; 3.0's is off), TCG or not, and this machine's kernel has no vhost-net: its
    # start would fail "Failed to open /dev/vhost-net". hvlibvirt keeps 3.1's default in
    # the steps above (libvirt uses no vhost for a TCG domain).
    no_vhost = not os.path.exists("/dev/vhost-net")
    if no_vhost:
        ganeti_cluster.gnt("gnt-instance", "modify", "-H", "vhost_net=false", name)
    with step("hvlibvirt ganeti disable (both nodes)"):
        set_hvlibvirt(ganeti_cluster, "disable")
    try:
        for node in ganeti_cluster.nodes:
            assert ganeti_cluster.hvlibvirt_ganeti(node, "status").startswith("Ganeti's own hypervisors")
        with step("gnt-instance start (hv_kvm)"):
            ganeti_cluster.gnt("gnt-instance", "start", name)
        assert domains(ganeti_cluster, "gnta") == []  # hv_kvm runs QEMU itself
        ganeti_cluster.console("gnta", inst1, "ls /sys/block", "vda")
        with step("gnt-instance shutdown (hv_kvm)"):
            ganeti_cluster.gnt("gnt-instance", "shutdown", name)
    finally:
        set_hvlibvirt(ganeti_cluster, "enable")
        if no_vhost:
            ganeti_cluster.gnt("gnt-instance", "modify", "-H", "vhost_net=default", name)
    for node in ganeti_cluster.nodes:
        assert ganeti_cluster.hvlibvirt_ganeti(node, "status").startswith("hvlibvirt serves kvm")
