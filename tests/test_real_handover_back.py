"""Tier 4: the way back. A QEMU built by Ganeti 3.0's hv_kvm on node A is handed over to
hvlibvirt on node B (as tests/test_real_handover.py does), then returns live to A:
hvlibvirt's MigrationInfo on B (hv_kvm's runtime, kept) -> hv_kvm's own AcceptInstance
on A (its incoming QEMU) -> hvlibvirt's MigrateInstance and GetMigrationStatus on B ->
hv_kvm's FinalizeMigrationDst on A -> hvlibvirt's FinalizeMigrationSource on B. The
guest's counter and boot id must continue on A, and nothing of it stay on B.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from hvlibvirt import connection, constants as C
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Disk, Instance
from lab.handover_run import (TICK, SourceSerial, accept, clean, hand_over, healthy,
                              once_more_after_guest_fault, source, start_source,
                              start_ticker, ticks_on, wait_ticking_past)
from lab.qmp import QMP
from lab.serial import SerialLog

pytestmark = [pytest.mark.real, pytest.mark.tier4]
log = logging.getLogger(__name__)


def _in_a(state: dict, *args: str) -> str:
    """hv_kvm_source.py in node A's namespace (hv_kvm's incoming QEMU listens there)."""
    return source(state, *args, netns=state["net"].a.netns)


def _kill_back_qemu(state: dict) -> None:
    pidfile = state.pop("back_pidfile", None)
    try:
        pid = int(Path(pidfile).read_text().split()[0]) if pidfile else 0
    except (OSError, ValueError, IndexError):
        return
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Two vCPUs there and back run in the cluster tier (tests/test_ganeti_cluster_handover.py).
@pytest.mark.tcg_migration
@pytest.mark.parametrize("vcpus", [1])
def test_back_to_ganeti_kvm(handover_lab, vcpus: int) -> None:
    """One more try on a fresh guest after a TCG guest crash, as the handover's test."""
    def fresh() -> None:
        _kill_back_qemu(handover_lab)
        clean(handover_lab)

    try:
        once_more_after_guest_fault(lambda: _there_and_back(handover_lab, vcpus), fresh)
    finally:
        _kill_back_qemu(handover_lab)


def _hand_over(state: dict, vcpus: int) -> tuple[Instance, str, Path, KVMHypervisor,
                                                 SerialLog, str]:
    """hv_kvm's QEMU booted on A, counting, handed over to hvlibvirt on B: the instance,
    hv_kvm's runtime, its file, B's hypervisor, B's console and the boot id."""
    spec = state["spec"]
    spec["vcpus"] = vcpus
    made, _proc, serial = start_source(state)
    boot_id = start_ticker(serial)
    inst, info, _figures = hand_over(state, made)
    hv_b = KVMHypervisor(uri=state["daemon"].uri, serial_log_dir=str(state["log_dir"]))
    console = SerialLog(state["log_dir"] / f"{spec['name']}.serial")
    match = ticks_on(console, TICK.pattern, "after the handover")
    assert match.group(2) == boot_id, "the guest rebooted on its way to hvlibvirt"
    ticks_on(console, rf"TICK {int(match.group(1)) + 10} {boot_id}", "after the handover")
    healthy(console.text(), "after the handover")
    return inst, info, state["work"] / "info", hv_b, console, boot_id


def _there_and_back(state: dict, vcpus: int) -> None:
    spec, daemon, net = state["spec"], state["daemon"], state["net"]
    inst, info, info_file, hv_b, console, boot_id = _hand_over(state, vcpus)

    # Back: hvlibvirt's MigrationInfo is hv_kvm's runtime, verbatim
    back_info = hv_b.MigrationInfo(inst)
    assert back_info == info
    info_file.write_text(back_info)
    made_a = json.loads(_in_a(state, "accept", net.a.ip, str(info_file)))
    state["back_pidfile"] = made_a["pidfile"]
    events_a = QMP(made_a["qmp"].replace(".qmp", ".kvmd"))  # kvmd's socket: events only
    serial_a = SourceSerial(made_a["serial"])
    conn_b = connection.get(daemon.uri, events=True)
    stopped: list[float] = []  # B's QEMU's STOP, QEMU's own timestamp
    callback = libvirt_qemu.qemuMonitorEventRegister(
        conn_b, None, "STOP",
        lambda _c, dom, _e, sec, usec, _d, _o: stopped.append(sec + usec / 1e6)
        if dom.name() == spec["name"] else None, None, 0)
    try:
        t0 = time.time()
        hv_b.MigrateInstance("lab", inst, net.a.ip, True)
        polls = 0
        deadline = time.monotonic() + 180
        while (status := hv_b.GetMigrationStatus(inst).status) == C.HV_MIGRATION_ACTIVE:
            assert time.monotonic() < deadline, "the way back does not end"
            polls += 1
            time.sleep(0.2)
        total = time.time() - t0
        success = status == C.HV_MIGRATION_COMPLETED
        _in_a(state, "finalize_dst", "true" if success else "false", str(info_file))
        hv_b.FinalizeMigrationSource(inst, success, True)
        assert success, f"the way back ended {status}"
    finally:
        libvirt_qemu.qemuMonitorEventDeregister(conn_b, callback)

    # Nothing of it on B; the guest counts on in hv_kvm's QEMU on A, same boot
    assert spec["name"] not in hv_b.ListInstances()
    with pytest.raises(libvirt.libvirtError):
        connection.get(daemon.uri).lookupByName(spec["name"])
    last_b = int(TICK.findall(console.text())[-1][0])
    wait_ticking_past(serial_a, last_b, "on A after the way back")
    ticks = serial_a.ticks()
    assert {b for _, _, b in ticks} == {boot_id}, "the guest rebooted on its way back"
    assert ticks[0][1] <= last_b + 3, (ticks[0], last_b)
    healthy(serial_a.text(), "after the way back")
    resume = events_a.event_time("RESUME")
    figures = {"vcpus": vcpus, "total_s": round(total, 2), "status_polls": polls,
               "downtime_ms": round((resume - stopped[-1]) * 1000, 1)
               if resume and stopped else None,
               "last_b_tick": last_b, "first_a_tick": ticks[0][1]}
    print("WAY BACK FIGURES", json.dumps(figures))
    log.warning("way back figures: %s", figures)
    events_a.close()
    serial_a.close()


@pytest.mark.tcg_migration
@pytest.mark.parametrize("vcpus", [1])
def test_aborted_way_back_resumes_on_hvlibvirt(handover_lab, vcpus: int) -> None:
    """Ganeti aborts the way back mid-stream (hv_kvm's FinalizeMigrationDst kills its
    incoming QEMU, then hvlibvirt's FinalizeMigrationSource): the guest counts on, on
    B. Then a hot-added disk withdraws the runtime: MigrationInfo is the domain XML
    again, which hv_kvm's AcceptInstance refuses before it starts anything."""
    state = handover_lab
    try:
        _abort_and_refuse(state, vcpus)
    finally:
        _kill_back_qemu(state)


def _abort_and_refuse(state: dict, vcpus: int) -> None:
    spec, daemon, net = state["spec"], state["daemon"], state["net"]
    inst, info, info_file, hv_b, console, boot_id = _hand_over(state, vcpus)
    made_a = json.loads(_in_a(state, "accept", net.a.ip, str(info_file)))
    state["back_pidfile"] = made_a["pidfile"]
    pid_a = int(Path(made_a["pidfile"]).read_text().split()[0])
    slow = Instance(name=inst.name, uuid=inst.uuid,
                    hvparams={**inst.hvparams, C.HV_MIGRATION_BANDWIDTH: 1},
                    beparams=inst.beparams, network_port=inst.network_port)
    hv_b.MigrateInstance("lab", slow, net.a.ip, True)
    deadline = time.monotonic() + 60
    while not (hv_b.GetMigrationStatus(slow).transferred_ram or 0) > 1024 * 1024:
        assert time.monotonic() < deadline, "the way back does not start"
        time.sleep(0.2)
    assert hv_b.GetMigrationStatus(slow).status == C.HV_MIGRATION_ACTIVE
    _in_a(state, "finalize_dst", "false", str(info_file))  # Ganeti's abort: target first
    hv_b.FinalizeMigrationSource(slow, False, True)
    with pytest.raises(ProcessLookupError):
        os.kill(pid_a, 0)
    dom = connection.get(daemon.uri).lookupByName(spec["name"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    mark = console.mark()
    match = ticks_on(console, TICK.pattern, "after the aborted way back", mark)
    assert match.group(2) == boot_id
    ticks_on(console, rf"TICK {int(match.group(1)) + 10} {boot_id}",
           "after the aborted way back", mark)
    assert hv_b.MigrationInfo(inst) == info  # still the way back, nothing changed

    # A hot-added disk: hv_kvm cannot reproduce the domain any more
    path = state["work"] / "hotadded.img"
    with open(path, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    hv_b.HotAddDevice(inst, C.HOTPLUG_TARGET_DISK, Disk(dev_type=C.DT_FILE, size=8),
                      (str(path), None), 1)
    xml = hv_b.MigrationInfo(inst)
    assert xml.lstrip().startswith("<domain")
    info_file.write_text(xml)
    with pytest.raises(AssertionError, match=r"Expecting value: line 1 column 1 \(char 0\)"):
        _in_a(state, "accept", net.a.ip, str(info_file))
    assert not Path(made_a["pidfile"]).exists() or not _alive(made_a["pidfile"])
    assert dom.isActive()


def _alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().split()[0]), 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


@pytest.mark.tcg_migration
@pytest.mark.parametrize("vcpus", [1])
def test_handed_over_domain_moves_between_hvlibvirt_nodes(handover_lab, vcpus: int
                                                          ) -> None:
    """hvlibvirt to hvlibvirt, for a domain that keeps hv_kvm's runtime: QEMU's stream
    into the target's handover relay (what a target of the previous version does too);
    the target keeps the runtime, so the way back stays open."""
    state = handover_lab
    spec, daemon_a, net = state["spec"], state["daemon_a"], state["net"]
    inst, info, info_file, hv_b, console, boot_id = _hand_over(state, vcpus)
    log_dir_a = state["log_dir"].parent / "serial-a"
    log_dir_a.mkdir()
    again = hv_b.MigrationInfo(inst)
    assert again == info
    accept(state, inst, info_file, side="a", log_dir=log_dir_a)
    hv_b.MigrateInstance("lab", inst, net.a.ip, True)
    deadline = time.monotonic() + 180
    while (status := hv_b.GetMigrationStatus(inst).status) == C.HV_MIGRATION_ACTIVE:
        assert time.monotonic() < deadline, "the migration does not end"
        time.sleep(0.2)
    hv_a = KVMHypervisor(uri=daemon_a.uri, serial_log_dir=str(log_dir_a))
    hv_a.FinalizeMigrationDst(inst, again, status == C.HV_MIGRATION_COMPLETED)
    hv_b.FinalizeMigrationSource(inst, status == C.HV_MIGRATION_COMPLETED, True)
    assert status == C.HV_MIGRATION_COMPLETED, status
    assert spec["name"] not in hv_b.ListInstances()
    assert spec["name"] in hv_a.ListInstances()
    console_a = SerialLog(log_dir_a / f"{spec['name']}.serial")
    match = ticks_on(console_a, TICK.pattern, "after its move between hvlibvirt nodes")
    assert match.group(2) == boot_id, "the guest rebooted"
    assert int(match.group(1)) <= int(TICK.findall(console.text())[-1][0]) + 3
    ticks_on(console_a, rf"TICK {int(match.group(1)) + 10} {boot_id}",
           "after its move between hvlibvirt nodes")
    healthy(console_a.text(), "after its move between hvlibvirt nodes")
    assert hv_a.MigrationInfo(inst) == info  # the way back to hv_kvm stays open
    for log_file in log_dir_a.glob("*.serial"):
        log_file.unlink()
