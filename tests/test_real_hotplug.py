"""Tier 3: disk and NIC hotplug on a real QEMU guest, confirmed by the guest itself.

The lab guest prints its block devices, NICs and disk sizes whenever they change
(``HVL-DEV``), so every add/remove is checked from inside the guest as well as in the
live domain XML, the persistent definition and our metadata.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt
import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HotplugError
from hvlibvirt.objects import NIC
from lab.instances import BOOT, READY, Running

pytestmark = [pytest.mark.tier3, pytest.mark.real]

DISK, NIC_T = C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC
META_NS = "urn:x-hvlibvirt:instance:1"


def alias(kind: str, uuid: str) -> str:
    return f"ua-{kind}-{'-'.join(uuid.split('-')[:3])}"


def live_xml(run: Running) -> str:
    return run.dom.XMLDesc(0)


def device(run: Running, name: str, flags: int = 0) -> etree._Element | None:
    """The device carrying alias ``name`` in the live (or, with flags, other) XML."""
    root = etree.fromstring(run.dom.XMLDesc(flags).encode())
    found = root.xpath("devices/*[alias/@name=$a]", a=name)
    return found[0] if found else None


def slot(run: Running, name: str) -> str:
    return device(run, name).find("address").get("slot")


def config_xml(run: Running) -> str:
    return run.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def metadata(run: Running) -> str:
    return run.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)


def test_virtio_disk_add_and_remove(boot: Callable[..., Running]) -> None:
    run = boot("hp-blk")
    run.serial.wait(READY, BOOT)
    disk, extra = run.new_disk(8)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 1)
    name = alias("disk", disk.uuid)
    # disk0 took slot 12 and the NIC 13 at start: the first free slot is 14.
    assert slot(run, name) == "0x0e"
    assert device(run, name, libvirt.VIR_DOMAIN_XML_INACTIVE) is not None
    assert name in metadata(run)
    seen = run.serial.wait_dev(lambda d: "vdb" in d["sizes"], 30, mark)
    assert seen["sizes"]["vdb"] == 8 * 1024 * 1024 // 512

    mark = run.serial.mark()
    where = run.hv.HotDelDevice(run.inst, DISK, disk, extra, 1)
    assert where["alias"] == name and where["slot"] == "0x0e"
    run.serial.wait_dev(lambda d: "vdb" not in d["blk"], 30, mark)
    assert device(run, name) is None
    assert device(run, name, libvirt.VIR_DOMAIN_XML_INACTIVE) is None
    assert name not in metadata(run)
    with pytest.raises(HotplugError, match="Cannot find disk"):
        run.hv.HotDelDevice(run.inst, DISK, disk, extra, 1)


def test_scsi_disk_adds_its_controller(boot: Callable[..., Running]) -> None:
    run = boot("hp-scsi", disks=0, disk_type="scsi-hd", scsi_controller_type="virtio-scsi-pci")
    run.serial.wait(READY, BOOT)
    assert "type='scsi'" not in live_xml(run)
    disk, extra = run.new_disk(16)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 0)
    controller = device(run, "ua-scsi0")
    assert controller.get("model") == "virtio-scsi"
    assert controller.find("address").get("slot") == "0x04"
    address = device(run, alias("disk", disk.uuid)).find("address").attrib
    assert (address["type"], address["target"], address["unit"]) == ("drive", "0", "0")
    run.serial.wait_dev(lambda d: "sda" in d["blk"], 30, mark)
    second, extra2 = run.new_disk(8)
    run.hv.HotAddDevice(run.inst, DISK, second, extra2, 1)
    assert device(run, alias("disk", second.uuid)).find("address").get("target") == "1"
    mark = run.serial.mark()
    run.hv.HotDelDevice(run.inst, DISK, disk, extra, 0)
    run.serial.wait_dev(lambda d: "sda" not in d["blk"] and "sdb" in d["blk"], 30, mark)
    assert device(run, alias("disk", disk.uuid)) is None


@pytest.mark.parametrize("mode,link", [(C.NIC_MODE_BRIDGED, "hvlbr0"),
                                       (C.NIC_MODE_ROUTED, "")])
def test_nic_add_modify_remove(boot: Callable[..., Running], mode: str, link: str) -> None:
    run = boot(f"hp-nic-{mode}")
    run.serial.wait(READY, BOOT)
    nic = NIC(mac="aa:00:00:7a:30:02", nicparams={C.NIC_MODE: mode, C.NIC_LINK: link})
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, NIC_T, nic, None, 1)
    name = alias("nic", nic.uuid)
    assert device(run, name).get("type") == ("bridge" if link else "ethernet")
    assert slot(run, name) == "0x0e"
    run.serial.wait_dev(lambda d: "eth1" in d["net"], 30, mark)

    nic.nicparams["link_state"] = "down"
    run.hv.HotModDevice(run.inst, NIC_T, nic, None, 1)
    assert device(run, name).find("link").get("state") == "down"
    assert device(run, name, libvirt.VIR_DOMAIN_XML_INACTIVE).find("link").get("state") == "down"
    # A new MAC, as Ganeti's KVM does it: removed and added again, at the same slot.
    nic.mac = "aa:00:00:7a:30:03"
    mark = run.serial.mark()
    run.hv.HotModDevice(run.inst, NIC_T, nic, None, 1)
    # The guest lost eth1 (the removal is confirmed by its release) and got it back.
    run.serial.wait(r"net=eth0,lo .*\n(.|\n)*net=eth0,eth1,lo ", 30, mark)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        assert device(run, name, flags).find("mac").get("address") == nic.mac
        assert device(run, name, flags).find("link").get("state") == "down"
    assert slot(run, name) == "0x0e"

    mark = run.serial.mark()
    run.hv.HotDelDevice(run.inst, NIC_T, nic, None, 1)
    run.serial.wait_dev(lambda d: "eth1" not in d["net"], 30, mark)
    assert device(run, name) is None
    assert device(run, name, libvirt.VIR_DOMAIN_XML_INACTIVE) is None


def test_resize_disk_is_seen_by_the_guest(boot: Callable[..., Running]) -> None:
    run = boot("hp-resize")
    run.serial.wait(READY, BOOT)
    disk = run.inst.disks_info[0]
    before = run.serial.last_dev()["sizes"]["vda"]
    mark = run.serial.mark()
    run.hv.ResizeDisk(run.inst, disk, 64 * 1024 * 1024)
    grown = run.serial.wait_dev(lambda d: d["sizes"].get("vda", 0) > before, 30, mark)
    assert grown["sizes"]["vda"] == 64 * 1024 * 1024 // 512
    with pytest.raises(HotplugError, match="Invalid new size"):
        run.hv.ResizeDisk(run.inst, disk, -1)


def test_unplug_a_guest_never_acknowledges(boot: Callable[..., Running]) -> None:
    run = boot("hp-noos", os=False)  # SeaBIOS only: no ACPI eject handling
    run.hv.HOTPLUG_TIMEOUT = 3.0
    disk, extra = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 1)
    name = alias("disk", disk.uuid)
    started = time.monotonic()
    with pytest.raises(HotplugError, match="did not release the device within 3s"):
        run.hv.HotDelDevice(run.inst, DISK, disk, extra, 1)
    assert time.monotonic() - started < 12  # libvirt's own wait (5 s) + ours, bounded
    assert run.hv.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
    assert device(run, name) is not None and f'alias="{name}"' in metadata(run)
    assert "<unplug" in metadata(run)

    # Again: the request is not re-sent (QEMU would refuse it) and it is still pending.
    started = time.monotonic()
    with pytest.raises(HotplugError, match="pending"):
        run.hv.HotDelDevice(run.inst, DISK, disk, extra, 1)
    assert time.monotonic() - started < 5
    with pytest.raises(HotplugError, match="removal is still pending"):
        run.hv.HotAddDevice(run.inst, DISK, disk, extra, 1)
    # Its slot is not handed out again.
    other, extra2 = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, other, extra2, 2)
    assert slot(run, name) != slot(run, alias("disk", other.uuid))
    # The instance is still usable.
    run.hv.BalloonInstanceMemory(run.inst, 160)
    run.hv.StopInstance(run.inst, force=True)
    assert run.hv.GetInstanceInfo(run.inst.name) is None


def _add_concurrently(run: Running, count: int) -> tuple[list, list]:
    disks = [run.new_disk(1) for _ in range(count)]
    done, failed = [], []
    barrier = threading.Barrier(count)

    def add(disk, extra, seq) -> None:
        barrier.wait()
        try:
            run.hv.HotAddDevice(run.inst, DISK, disk, extra, seq)
            done.append(disk)
        except HotplugError as err:
            failed.append((disk, str(err)))

    threads = [threading.Thread(target=add, args=(d, e, i + 1)) for i, (d, e) in
               enumerate(disks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return done, failed


def _slots(run: Running, disks: list) -> list[str]:
    return [slot(run, alias("disk", d.uuid)) for d in disks]


def test_eight_concurrent_hot_adds_get_distinct_slots(boot: Callable[..., Running]) -> None:
    run = boot("hp-many")
    done, failed = _add_concurrently(run, 8)
    assert not failed and len(done) == 8
    slots = _slots(run, done)
    assert len(set(slots)) == 8 and min(int(s, 16) for s in slots) == 14


def test_concurrent_hot_adds_fail_cleanly_when_slots_run_out(
        boot: Callable[..., Running]) -> None:
    # Slots 28-31 are free; the first disk and the NIC take 28 and 29.
    run = boot("hp-full", kvm_pci_reservations=28)
    before = metadata(run)
    done, failed = _add_concurrently(run, 8)
    assert len(done) == 2 and len(failed) == 6
    assert all("No free PCI slot" in msg for _d, msg in failed)
    assert sorted(_slots(run, done)) == ["0x1e", "0x1f"]
    meta = metadata(run)
    for disk, _msg in failed:
        name = alias("disk", disk.uuid)
        assert device(run, name) is None and name not in meta
        assert device(run, name, libvirt.VIR_DOMAIN_XML_INACTIVE) is None
    assert meta.count("kind=\"disk\"") == before.count("kind=\"disk\"") + 2


def test_a_refused_device_leaves_nothing_behind(boot: Callable[..., Running]) -> None:
    run = boot("hp-refused")
    disk, _extra = run.new_disk(1)
    before = (live_xml(run), config_xml(run), metadata(run))
    with pytest.raises(HotplugError, match="libvirt refused the device"):
        run.hv.HotAddDevice(run.inst, DISK, disk, ("/nonexistent/disk.img", None), 1)
    assert (live_xml(run), config_xml(run), metadata(run)) == before
    with pytest.raises(HotplugError, match="extra must be"):
        run.hv.HotAddDevice(run.inst, DISK, disk, None, 1)


def test_hotplug_support_checks(boot: Callable[..., Running]) -> None:
    run = boot("hp-ide", disk_type="ide")
    hv, inst = run.hv, run.inst
    assert hv.HotplugSupported(inst) is None
    hv.VerifyHotplugSupport(inst, C.HOTPLUG_ACTION_ADD, NIC_T)
    with pytest.raises(HotplugError, match="'ide' disks cannot be hot-plugged"):
        hv.VerifyHotplugSupport(inst, C.HOTPLUG_ACTION_ADD, DISK)
    with pytest.raises(HotplugError, match="cannot be modified"):
        hv.VerifyHotplugSupport(inst, C.HOTPLUG_ACTION_MODIFY, DISK)
    with pytest.raises(HotplugError, match="only disks and NICs"):
        hv.VerifyHotplugSupport(inst, C.HOTPLUG_ACTION_ADD, "cdrom")
    hv.StopInstance(inst, force=True)
    with pytest.raises(HotplugError, match="not running"):
        hv.VerifyHotplugSupport(inst, C.HOTPLUG_ACTION_ADD, NIC_T)
    with pytest.raises(HotplugError, match="probably down"):
        hv.HotplugSupported(inst)
