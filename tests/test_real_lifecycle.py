"""Tier 3: the everyday lifecycle on a real private libvirtd with a TCG Linux guest.

start -> ready line; info; pinning; reboot (ready twice); soft stop by ACPI; start paused
and resume through the console command; user shutdown -> SHUTDOWN until cleanup; force
stop of a guest that ignores ACPI; node info; Verify; drift and restore; consoles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import libvirt
import pytest

from hvlibvirt import connection, constants as C
from hvlibvirt import tables
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from lab.daemon import LibvirtDaemon
from lab.instances import BOOT, READY, Running, Shutdown, ganeti_shutdown
from lab.netns import LabNetwork

pytestmark = [pytest.mark.tier3, pytest.mark.real]

def test_start_info_pinning_reboot_and_soft_stop(boot: Callable[..., Running]) -> None:
    run = boot("life-main", vcpus=2, cpu_mask="0:1")
    run.serial.wait(READY, BOOT)
    name, _id, mem, vcpus, state, _cpu = run.hv.GetInstanceInfo(run.inst.name)
    assert (mem, vcpus, state) == (192, 2, HvInstanceState.RUNNING)
    # cpu_mask "0:1": vCPU 0 on host CPU 0, vCPU 1 on host CPU 1, in the live domain.
    assert [list(p[:2]) for p in run.dom.vcpuPinInfo(0)] == [[True, False], [False, True]]

    started = time.monotonic()
    run.hv.RebootInstance(run.inst)
    assert time.monotonic() - started < 5, "the reboot waited for the guest"
    run.serial.wait(f"{READY}(.|\\n)*{READY}", BOOT)  # booted a second time

    assert ganeti_shutdown(run.hv, run.inst, 30) == Shutdown(presses=1, forced=False)
    assert not run.dom.isActive()
    run.serial.wait("HVL-ACPI-POWEROFF", 1)
    assert run.hv.GetInstanceInfo(run.inst.name) is None  # user_shutdown is off


def test_a_missed_press_is_repeated_by_ganetis_loop(boot: Callable[..., Running]) -> None:
    """A guest that misses the power button (no acpid listening, as while it boots):
    StopInstance returns at once instead of waiting for Ganeti's whole timeout, and
    Ganeti's next press (5 s later) stops the guest, not the forced fallback."""
    run = boot("life-missed-press", attach=True)
    run.serial.wait(READY, BOOT)
    mark = run.serial.mark()
    run.console.send("killall acpid; echo acpid-$((1+1))-gone\n")
    run.serial.wait("acpid-2-gone", 10, mark)
    started = time.monotonic()
    run.hv.StopInstance(run.inst, timeout=120)
    assert time.monotonic() - started < 10, "StopInstance waited for Ganeti's timeout"
    assert run.dom.isActive(), "the press should have been missed"
    run.console.send("acpid -d -c /etc/acpi </dev/null & sleep 1; echo acpid-$((2+1))-back\n")
    run.serial.wait("acpid-3-back", 10, mark)
    assert ganeti_shutdown(run.hv, run.inst, 60) == Shutdown(presses=1, forced=False)
    run.serial.wait("HVL-ACPI-POWEROFF", 1, mark)


def test_start_paused_then_console_resumes(boot: Callable[..., Running],
                                           libvirt_daemon: LibvirtDaemon) -> None:
    run = boot("life-paused", paused=True)
    assert run.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    # The vCPU threads' own time (not QEMU's start-up, which a loaded CI machine makes
    # long) must not grow while the guest is paused.
    before = sum(vcpu[2] for vcpu in run.dom.vcpus()[0])
    time.sleep(1)
    assert sum(vcpu[2] for vcpu in run.dom.vcpus()[0]) - before < 0.1e9, \
        "vCPUs ran while paused"
    assert run.hv.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    console = subprocess.Popen(
        [sys.executable, "-m", "hvlibvirt.cli", "console", "--uri", libvirt_daemon.uri,
         run.inst.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        output = b""
        deadline = time.monotonic() + BOOT
        while b"HVL-READY" not in output:
            assert time.monotonic() < deadline, output[-500:]
            chunk = os.read(console.stdout.fileno(), 65536)
            assert chunk, "console command exited"
            output += chunk
        assert run.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        console.stdin.write(b"echo console-$((6*7))\n")
        console.stdin.flush()
        while b"console-42" not in output:
            assert time.monotonic() < deadline, output[-500:]
            output += os.read(console.stdout.fileno(), 65536)
    finally:
        console.kill()
        console.wait()


@pytest.mark.parametrize("user_shutdown", [True, False])
def test_user_shutdown(boot: Callable[..., Running], user_shutdown: bool) -> None:
    run = boot(f"life-user-{str(user_shutdown).lower()}", attach=True,
               user_shutdown=user_shutdown)
    run.serial.wait(READY, BOOT)
    run.console.send("poweroff -f\n")
    run.wait_off(30)
    info = run.hv.GetInstanceInfo(run.inst.name)
    listed = [i for i in run.hv.GetAllInstancesInfo() if i[0] == run.inst.name]
    if user_shutdown:
        assert info == (run.inst.name, -1, 0, 0, HvInstanceState.SHUTDOWN, 0.0)
        assert listed == [info]
    else:
        assert info is None and listed == []
    assert run.inst.name not in run.hv.ListInstances()
    run.hv.CleanupInstance(run.inst.name)
    assert run.hv.GetInstanceInfo(run.inst.name) is None
    with pytest.raises(libvirt.libvirtError):
        connection.get(run.hv.uri).lookupByName(run.inst.name)


def test_our_own_stop_is_not_a_user_shutdown(boot: Callable[..., Running]) -> None:
    run = boot("life-ourstop", user_shutdown=True)
    run.serial.wait(READY, BOOT)
    assert ganeti_shutdown(run.hv, run.inst, 30).forced is False
    assert not run.dom.isActive()
    assert run.hv.GetInstanceInfo(run.inst.name) is None


def test_force_stop_of_a_guest_that_ignores_acpi(boot: Callable[..., Running]) -> None:
    run = boot("life-hung", attach=True)
    run.serial.wait(READY, BOOT)
    mark = run.serial.mark()
    run.console.send("killall acpid; echo acpid-$((1+1))-gone\n")
    run.serial.wait("acpid-2-gone", 10, mark)
    started = time.monotonic()
    run.hv.StopInstance(run.inst, timeout=120)
    assert time.monotonic() - started < 10, "StopInstance waited for Ganeti's timeout"
    assert run.dom.isActive(), "the guest should have ignored the power button"
    with pytest.raises(HypervisorError, match="live instance"):
        run.hv.CleanupInstance(run.inst.name)
    run.hv.StopInstance(run.inst, force=True)
    assert not run.dom.isActive()


def test_drift_and_restore(boot: Callable[..., Running], libvirt_daemon: LibvirtDaemon,
                           lab_network: LabNetwork) -> None:
    run = boot("life-drift")
    assert run.hv.VerifyInstance(run.inst)
    libvirt_daemon.run(["ip", "link", "add", "hvlbr9", "type", "bridge"], check=False)
    libvirt_daemon.run(["ip", "link", "set", "hvlbr9", "up"])
    try:
        run.inst.nics[0].nicparams[C.NIC_LINK] = "hvlbr9"
        run.inst.hvparams[C.HV_MIGRATION_DOWNTIME] = 500   # runtime only: no drift
        assert not run.hv.VerifyInstance(run.inst)
        run.hv.RestoreInstance(run.inst, [])
        assert "bridge='hvlbr9'" in run.dom.XMLDesc(0)
        assert run.hv.VerifyInstance(run.inst)
        assert "500" in run.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                         "urn:x-hvlibvirt:instance:1", 0)
        run.inst.beparams["vcpus"] = 2  # needs a restart: reported, not fixed
        assert not run.hv.VerifyInstance(run.inst)
    finally:
        run.hv.StopInstance(run.inst, force=True)
        libvirt_daemon.run(["ip", "link", "del", "hvlbr9"], check=False)


def test_node_info_and_verify(libvirt_daemon: LibvirtDaemon) -> None:
    hv = KVMHypervisor(uri=libvirt_daemon.uri)
    info = hv.GetNodeInfo()
    conn = connection.get(hv.uri)
    assert info["cpu_total"] == conn.getInfo()[2] == os.cpu_count()
    assert 0 < info["memory_free"] <= info["memory_total"]
    assert 0 < info["memory_dom0"] < info["memory_total"]  # /proc/meminfo Active
    assert info["cpu_nodes"] >= 1 and info["cpu_sockets"] >= 1
    version = conn.getVersion()  # QEMU's, e.g. 7002022 for 7.2.22
    assert info["hv_version"] == (version // 1000000, version // 1000 % 1000, version % 1000)
    assert info["hv_version"][0] >= 7
    hvp = dict(tables.HVC_DEFAULTS[C.HT_KVM], kvm_path="/usr/bin/qemu-system-x86_64",
               kvm_flag=C.HT_KVM_DISABLED)
    assert hv.Verify() is None and hv.Verify(hvp) is None
    assert "machine" in hv.Verify(dict(hvp, machine_version="no-such-machine-9"))
    assert "kvm_path" in hv.Verify(dict(hvp, kvm_path="/nonexistent/qemu"))


def test_vnc_console_reports_the_live_port(boot: Callable[..., Running],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run = boot("life-vnc", serial_console=False, vnc_bind_address="0.0.0.0")
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", run.hv.uri)

    class Node:
        name = "node1.example.com"

    console = KVMHypervisor.GetInstanceConsole(run.inst, Node(), None, run.inst.hvparams,
                                               run.inst.beparams)
    assert console.Validate()
    assert (console.kind, console.host, console.port, console.display) == (
        C.CONS_VNC, "node1.example.com", 5907, 7)
    assert run.hv.HotplugSupported(run.inst) is None
