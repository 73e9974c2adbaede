"""Tier 4: migration between two private libvirtd daemons (different host_uuid, two
network namespaces joined by a veth pair), with a TCG Linux guest.

Ganeti's steps: MigrationInfo (source) -> AcceptInstance (target) -> MigrateInstance
(source; returns when the job has ended, or after ``migration.FOLLOW`` seconds while it
runs) -> GetMigrationStatus polled, here from another process -> FinalizeMigrationDst /
FinalizeMigrationSource.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from hvlibvirt import connection, constants as C, migration
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from lab.console import ConsoleCapture
from lab.instances import BOOT, READY, Running
from lab.netns import LabNetwork

pytestmark = [pytest.mark.tier4, pytest.mark.real]

POLLER = textwrap.dedent("""
    import json, sys, time
    from hvlibvirt.kvm import KVMHypervisor
    from hvlibvirt.objects import Instance
    uri, name, hvparams = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    hv, inst = KVMHypervisor(uri=uri), Instance(name=name, hvparams=hvparams)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = hv.GetMigrationStatus(inst)
        print(json.dumps([st.status, st.transferred_ram, st.total_ram, st.postcopy_status]),
              flush=True)
        if st.status not in ("active", "postcopy-active"):
            break
        time.sleep(0.05)
""")


@pytest.fixture
def pair(libvirt_daemon_pair, lab_network: LabNetwork):
    a, b = libvirt_daemon_pair
    return a, b, lab_network


def hypervisors(run: Running, a, b) -> tuple[KVMHypervisor, KVMHypervisor]:
    """Source and target hypervisor objects; the template leads to the other daemon."""
    source = KVMHypervisor(uri=a.uri, migration_uri=b.uri, serial_log_dir=run.hv.serial_log_dir)
    target = KVMHypervisor(uri=b.uri, migration_uri=a.uri, serial_log_dir=run.hv.serial_log_dir)
    return source, target


def migrate(src: KVMHypervisor, dst: KVMHypervisor, run: Running, target_ip: str,
            live: bool = True) -> list[list]:
    """Ganeti's sequence, with the status polled by a separate process."""
    info = src.MigrationInfo(run.inst)
    dst.AcceptInstance(run.inst, info, target_ip)
    src.MigrateInstance("cluster", run.inst, target_ip, live)
    poller = subprocess.run([sys.executable, "-c", POLLER, src.uri, run.inst.name,
                             json.dumps(run.inst.hvparams)],
                            capture_output=True, text=True, timeout=150, check=True)
    samples = [json.loads(line) for line in poller.stdout.splitlines()]
    success = samples[-1][0] == C.HV_MIGRATION_COMPLETED
    dst.FinalizeMigrationDst(run.inst, info, success)
    src.FinalizeMigrationSource(run.inst, success, live)
    return samples


def test_live_migration_there_and_back(boot: Callable[..., Running], pair) -> None:
    a, b, net = pair
    run = boot("mig-live", migration_bandwidth=100, migration_port=8102)
    run.serial.wait(READY, BOOT)
    src, dst = hypervisors(run, a, b)
    disk, extra = run.new_disk(8)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, C.HOTPLUG_TARGET_DISK, disk, extra, 1)
    run.serial.wait_dev(lambda d: "vdb" in d["blk"], 30, mark)

    samples = migrate(src, dst, run, net.b.ip)
    # A 2 s transfer ends while MigrateInstance follows it: Ganeti's first poll sees the
    # end (the figures of a running job: test_non_live_migration_pauses_the_guest).
    assert [s[0] for s in samples] == [C.HV_MIGRATION_COMPLETED]

    # Gone from the source, running on the target with its hot-added disk.
    assert src.GetInstanceInfo(run.inst.name) is None
    with pytest.raises(libvirt.libvirtError):
        connection.get(a.uri).lookupByName(run.inst.name)
    there = connection.get(b.uri).lookupByName(run.inst.name)
    assert there.isActive() and there.isPersistent()
    assert f"ua-disk-{'-'.join(disk.uuid.split('-')[:3])}" in there.XMLDesc(0)
    assert dst.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    console = ConsoleCapture(b.uri, run.inst.name, run.workdir / "mig-b.stream")
    try:
        mark = run.serial.mark()
        console.send("echo still-$((20+22)); ls /sys/block\n")
        run.serial.wait("still-42", 20, mark)  # the serial log keeps going, from B
        run.serial.wait("vdb", 5, mark)
    finally:
        console.close()

    # And back to the first daemon.
    samples = migrate(dst, src, run, net.a.ip)
    assert samples[-1][0] == C.HV_MIGRATION_COMPLETED
    assert src.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    with pytest.raises(libvirt.libvirtError):
        connection.get(b.uri).lookupByName(run.inst.name)


def test_migration_outlives_the_process_that_started_it(boot: Callable[..., Running],
                                                        pair) -> None:
    a, b, net = pair
    run = boot("mig-orphan", migration_bandwidth=100, migration_port=8103)
    run.serial.wait(READY, BOOT)
    script = textwrap.dedent("""
        import json, sys
        from hvlibvirt.kvm import KVMHypervisor
        from hvlibvirt.objects import Instance
        a, b, name, ip, hvparams = sys.argv[1:6]
        inst = Instance(name=name, hvparams=json.loads(hvparams))
        KVMHypervisor(uri=a, migration_uri=b).MigrateInstance("c", inst, ip, True)
        print("returned", flush=True)
    """)
    started = subprocess.run([sys.executable, "-c", script, a.uri, b.uri, run.inst.name,
                              net.b.ip, json.dumps(run.inst.hvparams)],
                             capture_output=True, text=True, timeout=60, check=True)
    assert "returned" in started.stdout  # and that process has exited
    there = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            there = connection.get(b.uri).lookupByName(run.inst.name)
            if there.isActive() and there.state()[0] == libvirt.VIR_DOMAIN_RUNNING and \
                    not connection.get(a.uri).lookupByName(run.inst.name).isActive():
                break
        except libvirt.libvirtError:
            pass
        time.sleep(0.1)
    src, dst = hypervisors(run, a, b)
    assert src.GetMigrationStatus(run.inst).status == C.HV_MIGRATION_COMPLETED
    dst.FinalizeMigrationDst(run.inst, "", True)
    src.FinalizeMigrationSource(run.inst, True, True)
    assert dst.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    dst.StopInstance(run.inst, force=True)
    dst.CleanupInstance(run.inst.name)


def test_non_live_migration_pauses_the_guest(boot: Callable[..., Running], pair,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest is paused throughout; the polls of the running job report the transfer
    as Ganeti shows it (MigrateInstance returns at once, as for a migration longer than
    it follows)."""
    monkeypatch.setattr(migration, "FOLLOW", 0.0)
    a, b, net = pair
    run = boot("mig-offline", migration_bandwidth=20, migration_port=8104)
    run.serial.wait(READY, BOOT)
    src, dst = hypervisors(run, a, b)
    dst.AcceptInstance(run.inst, src.MigrationInfo(run.inst), net.b.ip)
    src.MigrateInstance("cluster", run.inst, net.b.ip, False)
    during, transferred, totals = [], [], set()  # while memory is being transferred
    while True:
        # The state first, then the status: a state read after an "active" poll can
        # already be the shut-off of a migration that ended in between (CI, 2026-12-02).
        state = run.dom.state()[0]
        status = src.GetMigrationStatus(run.inst)
        if status.status != C.HV_MIGRATION_ACTIVE:
            break
        if status.transferred_ram:
            during.append(state)
            transferred.append(status.transferred_ram)
            totals.add(status.total_ram)
        time.sleep(0.05)
    assert during and all(s == libvirt.VIR_DOMAIN_PAUSED for s in during), sorted(set(during))
    assert transferred == sorted(transferred) and transferred[-1] > transferred[0]
    assert max(totals) >= 192 * 1024 * 1024 * 0.9  # total RAM in bytes, once known
    assert src.GetMigrationStatus(run.inst).status == C.HV_MIGRATION_COMPLETED
    dst.FinalizeMigrationDst(run.inst, "", True)
    src.FinalizeMigrationSource(run.inst, True, False)
    there = connection.get(b.uri).lookupByName(run.inst.name)
    assert there.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    dst.StopInstance(run.inst, force=True)
    dst.CleanupInstance(run.inst.name)


def test_failed_migration_keeps_the_guest_on_the_source(boot: Callable[..., Running],
                                                        pair) -> None:
    a, b, net = pair
    run = boot("mig-fail", attach=True, migration_bandwidth=1, migration_port=8105)
    run.serial.wait(READY, BOOT)
    # Keep the guest dirtying memory so the 1 MiB/s transfer cannot converge.
    run.console.send("while :; do dd if=/dev/urandom of=/dev/null bs=1M count=8 "
                     "2>/dev/null; cat /proc/meminfo > /tmp/m; done &\n")
    src, dst = hypervisors(run, a, b)
    info = src.MigrationInfo(run.inst)
    dst.AcceptInstance(run.inst, info, net.b.ip)
    src.MigrateInstance("cluster", run.inst, net.b.ip, True)
    time.sleep(1)
    assert src.GetMigrationStatus(run.inst).status == C.HV_MIGRATION_ACTIVE
    # The target's QEMU (found by daemon B's pidfile: both QEMUs share the PID
    # namespace) dies mid-migration.
    pidfile = b.workdir / "run" / "qemu" / f"{run.inst.name}.pid"
    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    deadline = time.monotonic() + 60
    status = src.GetMigrationStatus(run.inst)
    while status.status == C.HV_MIGRATION_ACTIVE and time.monotonic() < deadline:
        time.sleep(0.1)
        status = src.GetMigrationStatus(run.inst)
    assert status.status in C.HV_MIGRATION_FAILED_STATUSES
    dst.FinalizeMigrationDst(run.inst, info, False)
    src.FinalizeMigrationSource(run.inst, False, True)
    assert run.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert src.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    with pytest.raises(libvirt.libvirtError):
        connection.get(b.uri).lookupByName(run.inst.name)
    mark = run.serial.mark()
    run.console.send("echo alive-$((3*3))\n")
    run.serial.wait("alive-9", 20, mark)
    # The helper said why it failed to nobody (MigrateInstance had returned): no file
    # keeps that, in /tmp or elsewhere; libvirt's job statistics told the outcome.
    assert not list(Path(tempfile.gettempdir()).glob("hvlibvirt-migrate-*"))


def test_a_migration_that_fails_at_once_says_why_and_leaves_no_file(
        boot: Callable[..., Running], pair) -> None:
    a, b, net = pair
    run = boot("mig-refused")
    src = KVMHypervisor(uri=a.uri, migration_uri="qemu+unix:///system?socket=/nonexistent/sock",
                        serial_log_dir=run.hv.serial_log_dir)
    with pytest.raises(HypervisorError, match="Migration of mig-refused to .* failed: .*"
                                              "/nonexistent/sock"):
        src.MigrateInstance("cluster", run.inst, net.b.ip, True)
    assert run.dom.isActive()
    assert not list(Path(tempfile.gettempdir()).glob("hvlibvirt-migrate-*"))


def test_bad_migration_input(boot: Callable[..., Running], pair) -> None:
    a, b, net = pair
    run = boot("mig-bad")
    src, dst = hypervisors(run, a, b)
    with pytest.raises(HypervisorError, match="Invalid migration target"):
        src.MigrateInstance("cluster", run.inst, "evil target; rm", True)
    with pytest.raises(HypervisorError, match="Invalid migration info"):
        dst.AcceptInstance(run.inst, "<not xml", net.b.ip)
    info = src.MigrationInfo(run.inst).replace("hvlbr0", "nosuchbr9")
    with pytest.raises(HypervisorError, match="bridge nosuchbr9 does not exist here"):
        dst.AcceptInstance(run.inst, info, net.b.ip)
    with pytest.raises(HypervisorError, match="migration_caps"):
        src.MigrateInstance("cluster", type(run.inst)(
            name=run.inst.name, hvparams=dict(run.inst.hvparams, migration_caps="bogus")),
            net.b.ip, True)
    assert run.dom.isActive()


def test_postcopy_switch(boot: Callable[..., Running], pair) -> None:
    a, b, net = pair
    run = boot("mig-postcopy", attach=True, migration_bandwidth=5, migration_port=8106,
               migration_caps="postcopy-ram")
    run.serial.wait(READY, BOOT)
    run.console.send("while :; do dd if=/dev/urandom of=/dev/null bs=1M count=4 "
                     "2>/dev/null; cat /proc/meminfo > /tmp/m; done &\n")
    src, dst = hypervisors(run, a, b)
    info = src.MigrationInfo(run.inst)
    dst.AcceptInstance(run.inst, info, net.b.ip)
    src.MigrateInstance("cluster", run.inst, net.b.ip, True)
    seen, deadline = [], time.monotonic() + 120
    status = src.GetMigrationStatus(run.inst)
    while status.status in C.HV_KVM_MIGRATION_ACTIVE_STATUSES and time.monotonic() < deadline:
        seen.append((status.status, status.postcopy_status))
        time.sleep(0.1)
        status = src.GetMigrationStatus(run.inst)
    assert status.status == C.HV_MIGRATION_COMPLETED, (status, seen[-5:])
    assert (C.HV_MIGRATION_ACTIVE, C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE) in seen
    assert any(s == C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE for s, _ in seen)
    dst.FinalizeMigrationDst(run.inst, info, True)
    src.FinalizeMigrationSource(run.inst, True, True)
    assert connection.get(b.uri).lookupByName(run.inst.name).isActive()


def test_accept_refuses_what_the_target_cannot_run(boot: Callable[..., Running], pair) -> None:
    a, b, net = pair
    run = boot("mig-accept")
    src, dst = hypervisors(run, a, b)
    info = src.MigrationInfo(run.inst)
    dst.AcceptInstance(run.inst, info, net.b.ip)  # the real one is fine
    # The machine 'pc' expanded to on this QEMU (pc-i440fx-7.2 on Debian 12, 10.0 on 13).
    machine = re.search(r"machine='([^']+)'", info)
    assert machine, info
    for change, reason in (
            (("<currentMemory unit='KiB'>", "<currentMemory unit='KiB'>99999"),
             "MiB are free"),
            (("</os>", "</os><cpu mode='custom' match='exact'><model>NoSuchCPU9</model></cpu>"),
             "CPU model NoSuchCPU9 is not usable here"),
            ((machine.group(0), "machine='no-such-machine'"), "cannot run"),
            ((f"{run.inst.name}-0.img", "missing-0.img"), "missing-0.img does not exist here")):
        broken = info.replace(*change, 1)
        assert broken != info, change
        with pytest.raises(HypervisorError, match=reason):
            dst.AcceptInstance(run.inst, broken, net.b.ip)
