"""Tier 4: the live handover of a QEMU that Ganeti 3.0's own KVM hypervisor (hv_kvm)
built, into a private libvirtd managed by hvlibvirt, through Ganeti's migration calls
(tests/lab/handover_run.py): the guest's counter and boot id must continue on B; then
hvlibvirt hot-adds a disk, migrates the instance to another hvlibvirt node, reboots and
stops it. hv_kvm's own QEMU-to-QEMU migration, for comparison, is bench/handover.py's.

Also here: a cancelled handover, and libvirt's own save image checked against
``hvlibvirt.handover.saveimage``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from hvlibvirt import connection, constants as C
from hvlibvirt.handover import relay, saveimage
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Disk
from lab.handover_run import (SOURCE, TICK, clean, hand_over, healthy, instance_of, accept,
                              once_more_after_guest_fault, source, start_source,
                              start_ticker, ticks_on)
from lab.instances import READY
from lab.qmp import QMP
from lab.serial import SerialLog

pytestmark = pytest.mark.real
log = logging.getLogger(__name__)


@pytest.mark.tier4
# Two vCPUs: the cluster tier hands a 2-vCPU instance over through Ganeti
# (tests/test_ganeti_cluster_handover.py).
@pytest.mark.tcg_migration
@pytest.mark.parametrize("vcpus", [1])
def test_live_handover_from_ganeti_kvm(handover_lab, vcpus: int) -> None:
    """One more try on a fresh source after a guest crash: a live migration under TCG
    here sometimes corrupts a guest (tests/tiers/markers.py); twice fails."""
    once_more_after_guest_fault(lambda: _handover_and_manage(handover_lab, vcpus),
                                lambda: clean(handover_lab))


def _handover_and_manage(state: dict, vcpus: int) -> None:
    spec, daemon, net = state["spec"], state["daemon"], state["net"]
    spec["vcpus"] = vcpus
    made, _proc, serial = start_source(state)
    boot_id = start_ticker(serial)
    inst, _info, figures = hand_over(state, made)
    target = KVMHypervisor(uri=daemon.uri, serial_log_dir=str(state["log_dir"]))

    # The guest runs on B, under libvirt, persistent, one of hvlibvirt's instances
    dom = connection.get(daemon.uri).lookupByName(spec["name"])
    assert dom.isActive() and dom.isPersistent()
    assert spec["name"] in target.ListInstances()
    assert target.GetInstanceInfo(spec["name"])[3] == spec["vcpus"]
    xml = dom.XMLDesc(0)
    assert "ua-disk-11111111-2222-4333" in xml and "ua-nic-44444444-5555-4666" in xml
    assert "machine='pc-i440fx-" in xml
    assert not relay.relay_pids(daemon.uri, spec["name"])
    assert not os.path.exists(relay.work_dir(daemon.uri, spec["name"]))

    # No reboot: the counter continues on B with the same boot id
    console = SerialLog(state["log_dir"] / f"{spec['name']}.serial")
    last_source = serial.ticks()[-1]
    match = ticks_on(console, TICK.pattern, "after the handover")
    first = int(match.group(1))
    assert match.group(2) == boot_id, "the guest rebooted"
    assert first <= last_source[1] + 3, (first, last_source)
    assert ticks_on(console, rf"TICK {first + 25} {boot_id}", "after the handover")
    assert "HVL-READY" not in console.text()
    healthy(console.text(), "after the handover")
    figures.update(vcpus=vcpus, last_source_tick=last_source[1], first_target_tick=first)
    print("HANDOVER FIGURES", json.dumps(figures))
    log.warning("handover figures: %s", figures)

    # hvlibvirt manages it: a hot-added disk reaches the guest (at a slot hvlibvirt
    # computes from the live XML, past hv_kvm's) ...
    mark = console.mark()
    disk = Disk(dev_type=C.DT_FILE, size=8)
    path = state["work"] / "hotadded.img"
    with open(path, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    target.HotAddDevice(inst, C.HOTPLUG_TARGET_DISK, disk, (str(path), None), 1)
    console.wait_dev(lambda dev: "vdb" in dev["blk"], 60, since=mark)
    # ... it migrates live to another hvlibvirt node (daemon a), still the same boot ...
    other = state["daemon_a"]
    source_hv = KVMHypervisor(uri=daemon.uri, migration_uri=other.uri,
                              serial_log_dir=str(state["log_dir"]))
    dest_hv = KVMHypervisor(uri=other.uri, migration_uri=daemon.uri,
                            serial_log_dir=str(state["log_dir"]))
    again = source_hv.MigrationInfo(inst)
    dest_hv.AcceptInstance(inst, again, net.a.ip)
    source_hv.MigrateInstance("lab", inst, net.a.ip, True)
    deadline = time.monotonic() + 120
    while (status := source_hv.GetMigrationStatus(inst).status) in (
            C.HV_MIGRATION_ACTIVE, C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE):
        assert time.monotonic() < deadline, "the hvlibvirt migration does not end"
        time.sleep(0.2)
    assert status == C.HV_MIGRATION_COMPLETED, status
    dest_hv.FinalizeMigrationDst(inst, again, True)
    source_hv.FinalizeMigrationSource(inst, True, True)
    mark = console.mark()
    match = ticks_on(console, TICK.pattern, "after its migration between hvlibvirt nodes", mark)
    assert match.group(2) == boot_id, "the guest rebooted on its way to daemon a"
    ticks_on(console, rf"TICK {int(match.group(1)) + 10} {boot_id}",
             "after its migration between hvlibvirt nodes", mark)
    healthy(console.text(), "after its migration between hvlibvirt nodes")
    assert spec["name"] in dest_hv.ListInstances()
    assert spec["name"] not in target.ListInstances()

    # ... and hvlibvirt reboots it (a new boot) and stops it
    mark = console.mark()
    dest_hv.RebootInstance(inst)
    console.wait(READY, 120, since=mark)
    dest_hv.StopInstance(inst, force=True)
    dest_hv.CleanupInstance(spec["name"])
    assert spec["name"] not in dest_hv.ListInstances()


@pytest.mark.tier4
def test_cancelled_handover_leaves_the_source_running(handover_lab) -> None:
    """The source cancels mid-stream (as Ganeti's abort would end it): hv_kvm's QEMU runs
    on, and B keeps nothing: no domain, no relay, no FIFO directory."""
    state = handover_lab
    spec, daemon, net = state["spec"], state["daemon"], state["net"]
    spec["hvparams"]["migration_bandwidth"] = 1  # MiB/s: slow enough to cancel
    made, proc, serial = start_source(state)
    info = made["runtime"]
    (state["work"] / "info").write_text(info)
    inst = instance_of(spec, json.loads(info)[2])
    start_ticker(serial)
    accept(state, inst, state["work"] / "info")
    migrating = subprocess.Popen([sys.executable, str(SOURCE), str(state["share"]),
                                  str(state["work"]), json.dumps(spec), "migrate", net.b.ip],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    control = QMP(made["qmp"].replace(".qmp", ".kvmd"))
    try:
        deadline = time.monotonic() + 60
        while control.cmd("query-migrate").get("status") != "active":
            assert time.monotonic() < deadline, "the migration did not start"
            time.sleep(0.1)
        time.sleep(2)
        control.cmd("migrate_cancel")
        out, err = migrating.communicate(timeout=120)
        assert migrating.returncode == 0, err[-3000:]
        statuses = json.loads(out)
        assert statuses[-1][1] in (C.HV_MIGRATION_CANCELLED, C.HV_MIGRATION_FAILED), statuses
        target = KVMHypervisor(uri=daemon.uri, serial_log_dir=str(state["log_dir"]))
        target.FinalizeMigrationDst(inst, info, False)
        source(state, "finalize", "false")
        assert control.cmd("query-status")["status"] == "running"
    finally:
        control.close()
    ticks = len(serial.ticks())
    deadline = time.monotonic() + 30
    while len(serial.ticks()) < ticks + 5:
        assert time.monotonic() < deadline, "the source guest stopped ticking"
        time.sleep(0.1)
    assert proc.poll() is None
    conn = connection.get(daemon.uri)
    assert spec["name"] not in [d.name() for d in conn.listAllDomains()]
    assert not relay.relay_pids(daemon.uri, spec["name"])
    assert not os.path.exists(relay.work_dir(daemon.uri, spec["name"]))


@pytest.mark.tier3
def test_libvirt_save_image_header_matches(boot, libvirt_daemon, tmp_path) -> None:
    """libvirt's own save image has the header layout hvlibvirt writes: fails loudly
    when a libvirt changes it (then ``saveimage`` must follow, and its version range)."""
    conn = connection.get(libvirt_daemon.uri)
    saveimage.check_version(conn.getLibVersion())
    run = boot("hosave", os=False)
    path = tmp_path / "hosave.img"
    run.dom.save(str(path))
    blob = path.read_bytes()
    header = saveimage.parse(blob)
    assert header.magic == saveimage.MAGIC
    assert header.version == saveimage.VERSION
    assert header.was_running and header.compressed == 0
    assert "<name>hosave</name>" in header.xml
    # the cookie (libvirt's own, optional) sits after the XML inside data_len
    assert header.cookie_offset in (0, len(header.xml.encode()) + 1)
    # QEMU's migration stream starts right after data_len: its magic "QEVM"
    assert blob[header.stream_offset:header.stream_offset + 4] == b"QEVM"
    ours = saveimage.build(header.xml, was_running=True)
    assert ours[:20] == blob[:20]  # magic and version at the same offsets
    again = saveimage.parse(ours)
    assert (again.xml, again.was_running, again.compressed) == (header.xml, True, 0)
    assert again.stream_offset == len(ours)
