"""Tiers 3 and 4: q35 instances on a real QEMU (TCG) guest.

Disks and NICs sit behind PCIe root ports; hot-added ones take the free ports an
instance starts with (``pcie_hotplug_ports``, 2 here), and the guest itself reports
what it sees (``HVL-DEV``): hot-add, hot-modify (a replacement at the same port),
hot-remove, running out of ports, a live migration that keeps every port, a boot
from an ISO on the SATA cdrom q35 has instead of IDE, and a boot from a floppy on the
floppy controller q35 gets added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from lxml import etree

import golden_cases
from hvlibvirt import connection, constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HotplugError
from hvlibvirt.objects import NIC
from lab import floppy
from lab.console import ConsoleCapture
from lab.instances import BOOT, READY, Running
from test_real_cdrom_boot import SERIAL_SPEED, boot_iso  # noqa: F401 (a fixture)
from test_real_define import _kept_problems, define_cases
from test_real_migration import hypervisors, migrate

# Tiers per test: 3 on one daemon, 4 for the migration between two.
pytestmark = pytest.mark.real

DISK, NIC_T = C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC
META_NS = "urn:x-hvlibvirt:instance:1"
FREE_PORTS = 2


@pytest.fixture
def two_free_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "hvlibvirt.conf"
    conf.write_text(f"[kvm]\npcie_hotplug_ports = {FREE_PORTS}\n")
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(conf))


def alias(kind: str, uuid: str) -> str:
    return f"ua-{kind}-{'-'.join(uuid.split('-')[:3])}"


def tree(dom: libvirt.virDomain, flags: int = 0) -> etree._Element:
    return etree.fromstring(dom.XMLDesc(flags).encode())


def bus(dom: libvirt.virDomain, name: str, flags: int = 0) -> str | None:
    """The bus (root port) of the device carrying alias ``name``, None without one."""
    found = tree(dom, flags).xpath("devices/*[alias/@name=$a]/address/@bus", a=name)
    return found[0] if found else None


def layout(dom: libvirt.virDomain, flags: int = 0) -> dict[tuple[str, ...], dict[str, str]]:
    """Every device with a PCI address (root ports included) -> that address."""
    found = {}
    for elem in tree(dom, flags).xpath("devices/*[address/@type='pci']"):
        name = elem.xpath("string(alias/@name)")
        key = (elem.tag, name, *(elem.get(attr) or "" for attr in ("type", "index", "model")))
        found[key] = dict(elem.find("address").attrib)
    return found


def metadata(run: Running) -> str:
    return run.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)


@pytest.mark.tier3
def test_hotplug_behind_root_ports(boot: Callable[..., Running], two_free_ports: None
                                   ) -> None:
    run = boot("q35-hp", machine_version="q35")
    run.serial.wait(READY, BOOT)
    root = tree(run.dom)
    assert "q35" in root.find("os/type").get("machine")
    # disk 0 on port 1, NIC 0 on port 2, ports 3 and 4 free
    assert sorted(root.xpath("devices/controller[@model='pcie-root-port']/@index")) == \
        ["1", "2", "3", "4"]
    assert bus(run.dom, alias("disk", run.inst.disks_info[0].uuid)) == "0x01"
    # libvirt added no bridge and picked no address: every PCI controller is ours.
    assert sorted(root.xpath("devices/controller[@type='pci']/@model")) == \
        ["pcie-root"] + ["pcie-root-port"] * 4
    assert sorted(root.xpath("devices/controller[@type='usb']/@model")) == \
        ["ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3"]

    disk, extra = run.new_disk(8)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 1)
    disk_alias = alias("disk", disk.uuid)
    assert bus(run.dom, disk_alias) == bus(run.dom, disk_alias,
                                           libvirt.VIR_DOMAIN_XML_INACTIVE) == "0x03"
    seen = run.serial.wait_dev(lambda d: "vdb" in d["blk"], 30, mark)
    assert seen["sizes"]["vdb"] == 8 * 1024 * 1024 // 512

    nic = NIC(mac="aa:00:00:7a:35:02",
              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, NIC_T, nic, None, 1)
    nic_alias = alias("nic", nic.uuid)
    assert bus(run.dom, nic_alias) == "0x04"
    run.serial.wait_dev(lambda d: "eth1" in d["net"], 30, mark)

    # The pool is used up: a clear refusal naming the setting, nothing left behind.
    third, extra3 = run.new_disk(4)
    before = (run.dom.XMLDesc(0), run.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
              metadata(run))
    with pytest.raises(HotplugError, match="No free PCIe root port.*pcie_hotplug_ports"):
        run.hv.HotAddDevice(run.inst, DISK, third, extra3, 2)
    assert (run.dom.XMLDesc(0), run.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            metadata(run)) == before

    # A new MAC: the NIC is removed and added again behind the same port.
    nic.mac = "aa:00:00:7a:35:03"
    mark = run.serial.mark()
    run.hv.HotModDevice(run.inst, NIC_T, nic, None, 1)
    # 60 s: once in the trixie root the guest's console stayed silent for 30 s here
    # (its output then came all at once), a run alone passed in 27 s.
    run.serial.wait(r"net=eth0,lo .*\n(.|\n)*net=eth0,eth1,lo ", 60, mark)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        assert bus(run.dom, nic_alias, flags) == "0x04"
        assert tree(run.dom, flags).xpath("devices/interface[alias/@name=$a]/mac/@address",
                                          a=nic_alias) == [nic.mac]

    # A removal frees the port: the next hot-add takes it.
    mark = run.serial.mark()
    where = run.hv.HotDelDevice(run.inst, DISK, disk, extra, 1)
    assert (where["alias"], where["bus"]) == (disk_alias, "0x03")
    run.serial.wait_dev(lambda d: "vdb" not in d["blk"], 30, mark)
    assert bus(run.dom, disk_alias) is None
    assert bus(run.dom, disk_alias, libvirt.VIR_DOMAIN_XML_INACTIVE) is None
    assert disk_alias not in metadata(run)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, third, extra3, 2)
    assert bus(run.dom, alias("disk", third.uuid)) == "0x03"
    run.serial.wait_dev(lambda d: "vdb" in d["blk"], 30, mark)

    mark = run.serial.mark()
    run.hv.HotDelDevice(run.inst, NIC_T, nic, None, 1)
    run.serial.wait_dev(lambda d: "eth1" not in d["net"], 30, mark)
    assert bus(run.dom, nic_alias) is None


@pytest.mark.tier3
def test_a_first_scsi_disk_brings_its_controller_behind_a_free_port(
        boot: Callable[..., Running], two_free_ports: None) -> None:
    run = boot("q35-scsi", machine_version="q35", disks=0, disk_type="scsi-hd",
               scsi_controller_type="virtio-scsi-pci")
    run.serial.wait(READY, BOOT)
    disk, extra = run.new_disk(16)
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 0)
    assert bus(run.dom, "ua-scsi0") == "0x02"  # the NIC has port 1
    address = tree(run.dom).xpath("devices/disk[alias/@name=$a]/address",
                                  a=alias("disk", disk.uuid))[0]
    assert (address.get("type"), address.get("controller")) == ("drive", "0")
    run.serial.wait_dev(lambda d: "sda" in d["blk"], 30, mark)
    mark = run.serial.mark()
    run.hv.HotDelDevice(run.inst, DISK, disk, extra, 0)
    run.serial.wait_dev(lambda d: "sda" not in d["blk"], 30, mark)


@pytest.mark.tier4
def test_live_migration_keeps_every_port(boot: Callable[..., Running], two_free_ports: None,
                                         libvirt_daemon_pair, lab_network) -> None:
    a, b = libvirt_daemon_pair
    run = boot("q35-mig", machine_version="q35", migration_bandwidth=100,
               migration_port=8110)
    run.serial.wait(READY, BOOT)
    disk, extra = run.new_disk(8)
    nic = NIC(mac="aa:00:00:7a:36:02",
              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
    mark = run.serial.mark()
    run.hv.HotAddDevice(run.inst, DISK, disk, extra, 1)
    run.hv.HotAddDevice(run.inst, NIC_T, nic, None, 1)
    run.serial.wait_dev(lambda d: "vdb" in d["blk"] and "eth1" in d["net"], 30, mark)
    before = layout(run.dom)
    defined = layout(run.dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert (bus(run.dom, alias("disk", disk.uuid)), bus(run.dom, alias("nic", nic.uuid))) \
        == ("0x03", "0x04")

    src, dst = hypervisors(run, a, b)
    samples = migrate(src, dst, run, lab_network.b.ip)
    assert samples[-1][0] == C.HV_MIGRATION_COMPLETED
    there = connection.get(b.uri).lookupByName(run.inst.name)
    try:
        assert there.isActive() and there.isPersistent()
        assert layout(there) == before
        assert layout(there, libvirt.VIR_DOMAIN_XML_INACTIVE) == defined
        assert dst.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING
        console = ConsoleCapture(b.uri, run.inst.name, run.workdir / "q35-mig-b.stream")
        try:
            mark = run.serial.mark()
            console.send("echo q35-$((40+2)) $(ls /sys/block) $(ls /sys/class/net)\n")
            # Up to the end of the line: a search of a line still arriving takes a part.
            found = run.serial.wait(r"q35-42 ([^\r\n]*)\r?\n", 20, mark)
            assert "vdb" in found.group(1) and "eth1" in found.group(1), found.group(1)
        finally:
            console.close()
        # Hotplug goes on on the target, behind the same ports.
        mark = run.serial.mark()
        dst.HotDelDevice(run.inst, NIC_T, nic, None, 1)
        run.serial.wait_dev(lambda d: "eth1" not in d["net"], 30, mark)
        again = NIC(mac="aa:00:00:7a:36:03",
                    nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
        dst.HotAddDevice(run.inst, NIC_T, again, None, 2)
        assert bus(there, alias("nic", again.uuid)) == "0x04"
    finally:
        dst.StopInstance(run.inst, force=True)
        dst.CleanupInstance(run.inst.name)


@pytest.mark.tier3
def test_boot_from_an_iso_on_the_sata_cdrom(boot: Callable[..., Running],
                                            boot_iso: Path) -> None:  # noqa: F811
    t0 = time.monotonic()
    run = boot("q35-cdrom", machine_version="q35", kernel_path="", initrd_path="",
               boot_order=C.HT_BO_CDROM, cdrom_image_path=str(boot_iso),
               cdrom_disk_type=C.HT_DISK_PARAVIRTUAL, serial_speed=SERIAL_SPEED, vga="",
               nics=0)
    run.serial.wait(READY, BOOT)
    booted = time.monotonic() - t0
    assert "vda" in run.serial.last_dev()["blk"]  # the disk, behind its root port
    root = tree(run.dom)
    (cdrom,) = root.findall("devices/disk[@device='cdrom']")
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "sata"}
    assert cdrom.find("boot").get("order") == "1"
    assert cdrom.find("address").get("controller") == "0"
    assert root.find("devices/controller[@type='sata']/address").get("slot") == "0x1f"
    print(f"q35 booted from the ISO to {READY} in {booted:.1f} s")


@pytest.mark.tier3
def test_boot_from_a_floppy_on_the_added_controller(boot: Callable[..., Running],
                                                    tmp_path: Path) -> None:
    """QEMU gives q35 no floppy controller; the one we add (libvirt's isa-fdc) is there
    and SeaBIOS boots the image from it (the lab kernel has no floppy driver: the
    firmware is the guest that reads it)."""
    line = "HVL-FLOPPY q35 boot sector"
    image = floppy.boot_image(tmp_path / "boot-floppy.img", line)
    run = boot("q35-floppy", os=False, machine_version="q35", boot_order=C.HT_BO_FLOPPY,
               floppy_image_path=str(image), disks=0, nics=0)
    run.serial.wait(line, 60)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        root = tree(run.dom, flags)
        assert [c.attrib.get("index") for c in root.findall("devices/controller[@type='fdc']")] \
            == ["0"]
        (disk,) = root.findall("devices/disk[@device='floppy']")
        assert disk.find("target").attrib == {"dev": "fda", "bus": "fdc"}
        assert disk.find("address").get("controller") == "0"
    assert run.hv.GetInstanceInfo(run.inst.name)[4] == HvInstanceState.RUNNING


@pytest.mark.tier3
def test_the_qemu_driver_keeps_every_q35_address(libvirt_daemon, tmp_path: Path) -> None:
    """Every q35 golden case defines on the QEMU driver as generated: aliases, drive
    addresses, and every PCI address on every bus (root ports and what is behind
    them), with no controller libvirt added on its own."""
    conn = libvirt_daemon.connect()
    try:
        failures = define_cases(conn, [n for n in golden_cases.KVM_NAMES if "q35" in n],
                                "qemu", tmp_path, _q35_problems)
    finally:
        conn.close()
    assert not failures, failures


def _q35_problems(generated: str, defined: str) -> list[str]:
    """What test_real_define checks, and that libvirt added or moved no PCI device and
    added no controller."""
    problems = _kept_problems(generated, defined)
    ours, theirs = etree.fromstring(generated.encode()), etree.fromstring(defined.encode())
    if _pci_addresses(ours) != _pci_addresses(theirs):
        problems.append("PCI addresses differ: libvirt added or moved a device")
    if _controllers(ours) != _controllers(theirs):
        problems.append(f"controllers differ: ours {_controllers(ours)}, "
                        f"libvirt's {_controllers(theirs)}")
    return problems


def _pci_addresses(root: etree._Element) -> list[tuple[str, ...]]:
    return sorted(tuple(address.get(key) for key in ("bus", "slot", "function"))
                  for address in root.xpath("devices/*/address[@type='pci']"))


def _controllers(root: etree._Element) -> list[tuple[str, ...]]:
    return sorted((c.get("type"), c.get("index"), c.get("model") or "")
                  for c in root.iterfind("devices/controller"))
