"""q35 machines (pure and test driver): the PCIe root-port layout, the free-port pool for
hotplug, where hot-added devices go, SATA for IDE, the floppy controller, the setting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

import golden_cases
from hvlibvirt import config, connection, constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import StartupOptions, addresses, build_domain, disks, pcie
from hvlibvirt.errors import HypervisorError
from hvlibvirt.hotplug.kvm import place_pci, refusal, scsi_controller
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance

pytestmark = pytest.mark.tier2

Q35 = "pc-q35-7.2"


def golden_tree(name: str, **options: object) -> etree._Element:
    case = golden_cases.build(name)
    inst, block = case.objects()
    opts = StartupOptions(**{**case.options.__dict__, **options})
    return build_domain(inst, block, case.hvparams, opts)


def ports(root: etree._Element) -> dict[int, tuple[int, int]]:
    """root port index -> (slot, function) on pcie.0"""
    return {int(c.get("index")): (int(c.find("address").get("slot"), 16),
                                  int(c.find("address").get("function"), 16))
            for c in root.xpath("devices/controller[@model='pcie-root-port']")}


def bus_of(elem: etree._Element) -> int:
    return int(elem.find("address").get("bus"), 16)


def test_each_disk_and_nic_has_a_root_port_of_its_own_and_four_are_free() -> None:
    root = golden_tree("q35_virtio")
    found = ports(root)
    assert found == {i: (12, i - 1) for i in range(1, 9)}  # 2 disks + 2 NICs + 4 free
    devices = root.xpath("devices/disk | devices/interface")
    assert [bus_of(d) for d in devices] == [1, 2, 3, 4]
    assert all(d.find("address").get("slot") == "0x00" for d in devices)
    assert pcie.free_port(root, "x") == 5
    # Nothing of the platform sits behind a root port or at a root port's slot.
    platform = [a for a in root.xpath("devices/*[not(self::disk or self::interface)]"
                                      "/address[@type='pci']")]
    assert {a.get("bus") for a in platform} == {"0x00"}
    assert "0x0c" not in {a.get("slot") for a in platform if a.getparent().get("model")
                          != "pcie-root-port"}
    assert root.find("devices/controller[@model='pcie-root']") is not None
    assert root.find("devices/controller[@model='piix3-uhci']") is None


@pytest.mark.parametrize("free", [0, 1, 7])
def test_the_pool_size_is_the_setting(free: int) -> None:
    root = golden_tree("q35_virtio", pcie_hotplug_ports=free)
    assert len(ports(root)) == 4 + free
    if free == 0:
        with pytest.raises(HypervisorError, match="pcie_hotplug_ports.*\\[kvm\\]"):
            pcie.free_port(root, "hot-add of nic x")
    else:
        assert pcie.free_port(root, "x") == 5


def test_ports_fill_eight_functions_per_slot_and_skip_the_ich9_slots() -> None:
    allocator = pcie.RootPorts(reservations=28)
    for number in range(16):
        allocator.take(f"device {number}")
    elems = allocator.elements(free=0)
    assert elems[0].get("model") == "pcie-root"
    slots = sorted({slot for slot, _ in allocator.places})
    assert slots == [28, 30]  # 0x1d is USB, 0x1f the LPC/AHCI/SMBus functions
    multi = [e.find("address").get("multifunction") for e in elems[1:]]
    assert multi == (["on"] + [None] * 7) * 2
    with pytest.raises(HypervisorError, match="No free PCI slot for device 16"):
        allocator.take("device 16")


def test_a_lone_port_is_not_multifunction() -> None:
    allocator = pcie.RootPorts(reservations=12)
    allocator.take("disk 0")
    (port,) = allocator.elements(free=0)[1:]
    assert port.find("address").get("multifunction") is None
    assert (port.find("target").get("chassis"), port.find("target").get("port")) == ("1", "0x60")


def test_the_layout_is_the_same_at_every_start() -> None:
    one = etree.tostring(golden_tree("q35_many_ports"))
    assert one == etree.tostring(golden_tree("q35_many_ports"))


def test_hot_added_devices_take_the_lowest_free_port_and_a_removal_frees_it() -> None:
    root = golden_tree("q35_virtio")
    hv = dict(golden_cases.build("q35_virtio").hvparams)
    nic = etree.Element("interface")
    place_pci(root, (), hv, nic, "hot-add of nic a")
    assert (bus_of(nic), nic.find("address").get("slot")) == (5, "0x00")
    root.find("devices").append(nic)
    disk = etree.Element("disk")
    place_pci(root, (), hv, disk, "hot-add of disk b")
    assert bus_of(disk) == 6
    root.find("devices").remove(nic)  # hot-removed: port 5 is free again
    other = etree.Element("disk")
    place_pci(root, (), hv, other, "hot-add of disk c")
    assert bus_of(other) == 5


def test_running_out_of_ports_names_the_setting() -> None:
    root = golden_tree("q35_virtio", pcie_hotplug_ports=1)
    hv = dict(golden_cases.build("q35_virtio").hvparams)
    first = etree.SubElement(root.find("devices"), "disk")
    place_pci(root, (), hv, first, "hot-add of disk a")
    with pytest.raises(HypervisorError, match="No free PCIe root port for hot-add of disk b.*"
                                              "all 5 root ports.*pcie_hotplug_ports"):
        place_pci(root, (), hv, etree.Element("disk"), "hot-add of disk b")


def test_pc_hot_adds_stay_on_bus_zero() -> None:
    root = golden_tree("templates_block")
    hv = dict(golden_cases.build("templates_block").hvparams)
    elem = etree.Element("disk")
    place_pci(root, {12, 13, 14, 15, 16, 17}, hv, elem, "hot-add")
    assert (elem.find("address").get("bus"), elem.find("address").get("slot")) == \
        ("0x00", "0x12")


def test_a_hot_added_scsi_controller_goes_behind_a_free_port_on_q35() -> None:
    root = golden_tree("q35_virtio")
    controller = scsi_controller(root, "virtio-scsi", "hot-add of disk a")
    assert (bus_of(controller), controller.find("alias").get("name")) == (5, "ua-scsi0")
    pc = scsi_controller(golden_tree("templates_block"), "virtio-scsi", "hot-add")
    assert (pc.find("address").get("bus"), pc.find("address").get("slot")) == ("0x00", "0x04")


def test_q35_hotplug_is_allowed_with_acpi_and_refused_without() -> None:
    root = golden_tree("q35_virtio")
    hv = dict(golden_cases.build("q35_virtio").hvparams)
    for kind in (C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC):
        assert refusal(root, hv, C.HOTPLUG_ACTION_ADD, kind) is None
    root.find("features").remove(root.find("features/acpi"))
    assert "needs ACPI" in refusal(root, hv, C.HOTPLUG_ACTION_ADD, C.HOTPLUG_TARGET_NIC)


def test_ide_is_sata_on_q35() -> None:
    hv = dict(tables.HVC_DEFAULTS[C.HT_KVM], machine_version=Q35, cdrom_image_path="/a.iso")
    assert disks.cdrom_type(1, dict(hv, cdrom_disk_type="ide")) == "sata"
    assert disks.cdrom_type(1, dict(hv, boot_order="cdrom", kernel_path="")) == "sata"
    assert disks.cdrom_type(1, dict(hv, machine_version="pc", boot_order="cdrom",
                                    kernel_path="")) == "ide"
    assert disks.disk_kind(dict(hv, disk_type="ide")) == ("disk", "sata", "sd")
    root = golden_tree("q35_ide_disks")
    sata = root.xpath("devices/disk[target/@bus='sata']")
    assert [d.find("address").get("unit") for d in sata] == ["0", "1", "2"]
    assert [d.get("device") for d in sata] == ["cdrom", "disk", "disk"]
    assert root.find("devices/controller[@type='sata']/address").get("slot") == "0x1f"


def test_seven_sata_devices_are_too_many() -> None:
    case = golden_cases.build("q35_ide_disks")
    inst, block = case.objects()
    block = block + [(block[0][0], block[0][1], None)] * 5  # 1 cdrom + 7 disks
    with pytest.raises(HypervisorError, match="Too many SATA devices.*at most 6"):
        build_domain(inst, block, case.hvparams, case.options)


def test_a_readonly_sata_disk_is_refused() -> None:
    case = golden_cases.build("q35_ide_disks")
    inst, block = case.objects()
    block[0][0].mode = C.DISK_RDONLY
    with pytest.raises(HypervisorError, match="read-only, which SATA hard disks cannot be"):
        build_domain(inst, block, case.hvparams, case.options)


def test_a_floppy_on_q35_brings_its_own_controller() -> None:
    """q35 has no floppy controller built in: the floppy is drive A of an explicit one,
    which 'pc' (where it is built in) does not get."""
    case = golden_cases.build("q35_floppy")
    KVMHypervisor.CheckParameterSyntax(case.hvparams)
    root = golden_tree("q35_floppy")
    (floppy,) = root.findall("devices/disk[@device='floppy']")
    assert floppy.find("target").attrib == {"dev": "fda", "bus": "fdc"}
    assert floppy.find("boot").get("order") == "1"
    assert (floppy.find("address").get("type"), floppy.find("address").get("controller")) \
        == ("drive", "0")
    (fdc,) = root.findall("devices/controller[@type='fdc']")
    assert fdc.attrib == {"type": "fdc", "index": "0"} and len(fdc) == 0  # ISA: no address
    assert not golden_tree("boot_floppy").findall("devices/controller[@type='fdc']")
    assert not golden_tree("q35_virtio").findall("devices/controller[@type='fdc']")


def test_every_pci_address_on_q35_is_unique() -> None:
    for name in ("q35_virtio", "q35_many_ports", "q35_cdrom_boot", "q35_ide_disks",
                 "q35_scsi", "q35_floppy"):
        root = golden_tree(name)
        seen = [(a.get("bus"), a.get("slot"), a.get("function"))
                for a in root.xpath("devices/*/address[@type='pci']")]
        assert len(seen) == len(set(seen)), name
        assert addresses.is_q35(root.find("os/type").get("machine"))


# -- the setting -------------------------------------------------------------------------

@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hvlibvirt.conf"
    monkeypatch.setenv(config.PATH_ENV, str(path))
    return path


@pytest.mark.parametrize("text", ["-1", "65", "four", "4.0", "0x4"])
def test_a_bad_setting_names_the_file_and_the_key(conf: Path, text: str) -> None:
    conf.write_text(f"[DEFAULT]\npcie_hotplug_ports = {text}\n")
    with pytest.raises(HypervisorError, match=rf"{conf}: \[DEFAULT\] pcie_hotplug_ports must "
                                              rf"be an integer from 0 to 64, not '{text}'"):
        config.integer("kvm", "pcie_hotplug_ports", 4)


def test_a_setting_in_range_is_read(conf: Path) -> None:
    assert config.integer("kvm", "pcie_hotplug_ports", 4) == 4
    conf.write_text("[kvm]\npcie_hotplug_ports = 64\n")
    assert config.integer("kvm", "pcie_hotplug_ports", 4) == 64


@pytest.fixture
def hv() -> Iterator[KVMHypervisor]:
    hv = KVMHypervisor(uri="test:///default")
    yield hv
    for dom in connection.get("test:///default").listAllDomains():
        if dom.name().startswith("q35-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def _instance(name: str) -> tuple[Instance, list]:
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable,
                    machine_version=Q35)
    disk = Disk(size=64)
    nic = NIC(mac="aa:00:00:12:35:01", nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                                  C.NIC_LINK: "br0"})
    inst = Instance(name=name, hvparams=hvparams, disks_info=[disk], nics=[nic],
                    beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})
    return inst, [(disk, "/dev/fake-disk", None)]


@pytest.mark.parametrize("setting,expected", [(None, 4), ("0", 0), ("9", 9)])
def test_a_start_reads_the_setting(hv: KVMHypervisor, conf: Path, setting: str | None,
                                   expected: int) -> None:
    if setting is not None:
        conf.write_text(f"[kvm]\npcie_hotplug_ports = {setting}\n")
    inst, block = _instance(f"q35-pool-{expected}")
    hv.StartInstance(inst, block, False)
    root = etree.fromstring(hv.domain_xml(inst.name).encode())
    assert len(ports(root)) == 2 + expected


def test_a_start_with_a_bad_setting_fails_naming_it(hv: KVMHypervisor, conf: Path) -> None:
    conf.write_text("[kvm]\npcie_hotplug_ports = lots\n")
    inst, block = _instance("q35-bad")
    with pytest.raises(HypervisorError, match="pcie_hotplug_ports"):
        hv.StartInstance(inst, block, False)
