"""Tier 3 foundation check: hvlibvirt drives a real QEMU guest on a private libvirtd.

The instance is built from Ganeti-shaped objects with our KVM class and domain XML
builder, started paused, watched through libvirt's console stream, resumed, ballooned
and powered off with the ACPI button. Later issues extend this tier.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import libvirt
import pytest

from hvlibvirt import connection, constants as C
from hvlibvirt import tables
from hvlibvirt.base import HvInstanceState
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance
from lab.console import ConsoleCapture
from lab.daemon import LibvirtDaemon
from lab.guest import GuestImage
from lab.instances import ganeti_shutdown
from lab.serial import SerialLog
from marks import FORK_WITH_THREADS


pytestmark = [pytest.mark.tier3, pytest.mark.real]

BOOT_TIMEOUT = 60.0


def lab_instance(name: str, image: GuestImage, disk_path: Path) -> tuple[Instance, list]:
    hvparams = dict(
        tables.HVC_DEFAULTS[C.HT_KVM],
        kvm_path="/usr/bin/qemu-system-x86_64",
        kernel_path=str(image.kernel), initrd_path=str(image.initrd),
        root_path="/dev/vda", kernel_args="quiet panic=-1", serial_speed=115200,
        # /dev/kvm on the development machine cannot run a Linux guest: use TCG.
        kvm_flag=C.HT_KVM_DISABLED)
    disk = Disk(dev_type=C.DT_FILE, size=64, iv_name="disk/0")
    nic = NIC(mac="aa:00:00:7a:10:01",
              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
    inst = Instance(name=name, hvparams=hvparams, disks_info=[disk], nics=[nic],
                    beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})
    return inst, [(disk, str(disk_path), None)]


def test_instance_lifecycle_on_real_qemu(libvirt_daemon: LibvirtDaemon, guest_image: GuestImage,
                                        tmp_path: Path) -> None:
    disk_path = tmp_path / "disk0.img"
    with open(disk_path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    hv = KVMHypervisor(uri=libvirt_daemon.uri)
    inst, block = lab_instance("real-life1", guest_image, disk_path)
    try:
        hv.StartInstance(inst, block, startup_paused=True)
        conn = connection.get(libvirt_daemon.uri)
        dom = conn.lookupByName(inst.name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        assert hv.GetInstanceInfo(inst.name)[4] == HvInstanceState.RUNNING
        console = ConsoleCapture(libvirt_daemon.uri, inst.name, tmp_path / "console.log")
        serial = SerialLog(console.path)
        dom.resume()

        serial.wait(r"HVL-READY", BOOT_TIMEOUT)
        dev = serial.last_dev()
        assert "vda" in dev["blk"] and "eth0" in dev["net"], dev
        assert hv.ListInstances() == [inst.name]
        name, _id, mem, vcpus, state, cpu = hv.GetInstanceInfo(inst.name)
        assert (name, mem, vcpus, state) == (inst.name, 256, 1, HvInstanceState.RUNNING)
        assert cpu > 0.5  # the guest really ran its kernel

        mark = serial.mark()
        total_before = dev["mem"]
        hv.BalloonInstanceMemory(inst, 160)
        shrunk = serial.wait_dev(lambda d: d["mem"] <= total_before - 80 * 1024, 30, mark)
        assert shrunk["mem"] < total_before
        deadline = time.monotonic() + 15
        while hv.GetInstanceInfo(inst.name)[2] != 160 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hv.GetInstanceInfo(inst.name)[2] == 160

        assert ganeti_shutdown(hv, inst, 30).forced is False
        serial.wait(r"HVL-ACPI-POWEROFF", 5)
        assert hv.GetInstanceInfo(inst.name) is None
        console.close()
        hv.CleanupInstance(inst.name)
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(inst.name)
    finally:
        hv.StopInstance(inst, force=True)
        hv.CleanupInstance(inst.name)


@FORK_WITH_THREADS
def test_a_forked_child_leaves_its_parents_connection_working(
        libvirt_daemon: LibvirtDaemon) -> None:
    """noded's model, with a parent that has connected: the child opens its own
    connection, and the parent's copy it inherited, once collected, does not end the
    parent's session (libvirt-python closes on garbage collection; the socket is shared)."""
    hv = KVMHypervisor(uri=libvirt_daemon.uri)
    hv.ListInstances()
    parent = connection.get(libvirt_daemon.uri)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            hv.ListInstances()
            ok = connection.get(libvirt_daemon.uri) is not parent
            connection._inherited.clear()  # what interpreter exit does to it
            gc.collect()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert connection.get(libvirt_daemon.uri) is parent
    assert hv.ListInstances() is not None  # no broken pipe


def test_connection_survives_a_daemon_restart(lab_network, lab_workdir: Path) -> None:
    """A cached connection whose daemon restarted is replaced on next use (noticed at
    once with the event loop running, else by the first call on the dead socket)."""
    daemon = LibvirtDaemon("r", lab_workdir / "daemon-restart", "33333333-3333-4333-8333-"
                           "333333333333", lab_network.a.netns, lab_network.a.ip)
    try:
        daemon.start()
        hv = KVMHypervisor(uri=daemon.uri)
        assert hv.Verify() is None
        old = connection.get(daemon.uri)
        daemon.stop()
        assert hv.Verify() is not None  # daemon down: reported, not raised
        assert not old.isAlive()
        daemon.start()
        assert hv.Verify() is None
        assert connection.get(daemon.uri) is not old
        assert hv.ListInstances() == []
    finally:
        connection.drop(daemon.uri)
        daemon.stop()
