"""Tier 1: cdroms, the floppy, the boot device, the mouse and the VGA card, as Ganeti's
hv_kvm lays them out.

Ganeti 3.0 (hypervisor/hv_kvm/__init__.py): ``_CdromOption`` puts the cdrom it boots
from on ``if=ide`` whatever cdrom_disk_type says, the second cdrom always follows
cdrom_disk_type and never boots, and without ``kernel_path`` nothing boots from a device.
The cdroms' ``-drive`` options come before the disks' (those are added when QEMU is
started), and QEMU numbers ``if=ide`` drives in command-line order: IDE cdroms take the
first IDE units, IDE disks follow. QEMU's default VGA card stays (no -nodefaults), and
``-usb`` plus ``-usbdevice`` give the mouse (a tablet when VNC is on).
"""

from __future__ import annotations

import itertools

import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import (GuestTarget, Listen, StartupOptions, addresses,
                                  build_domain, to_string)
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance

pytestmark = pytest.mark.tier1

SCHEMA = "/usr/share/libvirt/schemas/domain.rng"
KVM = GuestTarget(domain_type="kvm", arch="x86_64", machine="pc", emulator="/usr/bin/kvm")
ISO1, ISO2 = "/srv/iso/install.iso", "/srv/iso/drivers.iso"
CDROM_TYPES = ("", C.HT_DISK_PARAVIRTUAL, C.HT_DISK_IDE, "scsi-cd", "scsi-hd")


@pytest.fixture(scope="module")
def relaxng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(SCHEMA))


def hvparams(**overrides: object) -> dict:
    return {**tables.HVC_DEFAULTS[C.HT_KVM], C.HV_KERNEL_PATH: "", **overrides}


def domain(hvp: dict, n_disks: int = 1, n_nics: int = 1, **options: object
           ) -> etree._Element:
    disks = [Disk(uuid=f"{i:08x}-1111-2222-3333-444455556666", dev_type=C.DT_PLAIN, size=64)
             for i in range(n_disks)]
    nics = [NIC(uuid=f"{i:08x}-aaaa-bbbb-cccc-ddddeeeeffff", mac=f"aa:00:00:00:00:{i:02x}",
                nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "br0"})
            for i in range(n_nics)]
    inst = Instance(name="cd1.example.com", uuid="6a2dc1f0-3d5e-4f38-9c1b-2f1e8d7c6b5a",
                    hvparams=hvp, beparams={"maxmem": 256, "minmem": 128, "vcpus": 1},
                    disks_info=disks, nics=nics)
    block = [(d, f"/dev/xenvg/disk{i}", None) for i, d in enumerate(disks)]
    inst.network_port = 5910
    xml = to_string(build_domain(inst, block, hvp, StartupOptions(
        target=KVM, startup_memory=256, **options)))  # type: ignore[arg-type]
    return etree.fromstring(xml.encode())


def by_alias(root: etree._Element, alias: str) -> etree._Element:
    (elem,) = root.xpath("devices/*[alias/@name=$a]", a=alias)
    return elem


def placement(elem: etree._Element) -> tuple[str, str, str]:
    """(device, bus, guest name) of a disk element."""
    target = elem.find("target")
    return elem.get("device"), target.get("bus"), target.get("dev")


def booted(root: etree._Element) -> list[str]:
    """The devices that boot, in their boot order."""
    return [e.find("alias").get("name") for e in sorted(
        root.iterfind("devices/*[boot]"), key=lambda e: int(e.find("boot").get("order")))]


DISK0 = "ua-disk-00000000-1111-2222"


def ide_units(root: etree._Element) -> list[tuple[str, str, str]]:
    return [(e.find("alias").get("name"), e.find("address").get("bus"),
             e.find("address").get("unit"))
            for e in root.iterfind("devices/disk") if e.find("target").get("bus") == "ide"]


@pytest.mark.parametrize("cdrom_disk_type", CDROM_TYPES)
def test_the_boot_cdrom_is_an_ide_cdrom_whatever_cdrom_disk_type_says(cdrom_disk_type: str
                                                                        ) -> None:
    root = domain(hvparams(boot_order=C.HT_BO_CDROM, cdrom_image_path=ISO1,
                           cdrom_disk_type=cdrom_disk_type))
    cdrom = by_alias(root, "ua-cdrom1")
    assert placement(cdrom) == ("cdrom", "ide", "hda")
    assert cdrom.find("readonly") is not None
    assert booted(root) == ["ua-cdrom1", DISK0]  # then the disk, as hv_kvm's -boot d
    assert ide_units(root) == [("ua-cdrom1", "0", "0")]


@pytest.mark.parametrize("cdrom_disk_type, expected", [
    ("", ("disk", "virtio", "vdb")), (C.HT_DISK_PARAVIRTUAL, ("disk", "virtio", "vdb")),
    (C.HT_DISK_IDE, ("cdrom", "ide", "hdb")), ("scsi-cd", ("cdrom", "scsi", "sda")),
    ("scsi-hd", ("cdrom", "scsi", "sda"))])
def test_cdrom2_follows_cdrom_disk_type_and_never_boots(cdrom_disk_type: str,
                                                        expected: tuple) -> None:
    root = domain(hvparams(boot_order=C.HT_BO_CDROM, cdrom_image_path=ISO1,
                           cdrom2_image_path=ISO2, cdrom_disk_type=cdrom_disk_type))
    assert placement(by_alias(root, "ua-cdrom1")) == ("cdrom", "ide", "hda")
    assert placement(by_alias(root, "ua-cdrom2")) == expected
    assert booted(root) == ["ua-cdrom1", DISK0]


def test_a_cdrom_that_does_not_boot_follows_cdrom_disk_type() -> None:
    root = domain(hvparams(cdrom_image_path=ISO1, cdrom_disk_type=C.HT_DISK_PARAVIRTUAL))
    cdrom = by_alias(root, "ua-cdrom1")
    assert placement(cdrom) == ("disk", "virtio", "vdb")  # read-only virtio disk, slot 7
    assert cdrom.find("address").get("slot") == "0x07"
    assert booted(root) == [DISK0]


def test_with_a_kernel_boot_order_cdrom_does_not_move_the_cdrom() -> None:
    """Ganeti ignores boot_order when kernel_path is set (no -boot, no if=ide)."""
    root = domain(hvparams(kernel_path="/boot/vmlinuz", root_path="/dev/vda",
                           boot_order=C.HT_BO_CDROM, cdrom_image_path=ISO1,
                           cdrom_disk_type="scsi-cd"))
    assert placement(by_alias(root, "ua-cdrom1")) == ("cdrom", "scsi", "sda")
    assert booted(root) == []


def test_disk_type_ide_puts_the_cdroms_before_the_disks() -> None:
    root = domain(hvparams(disk_type=C.HT_DISK_IDE, cdrom_image_path=ISO1,
                           cdrom2_image_path=ISO2), n_disks=2)
    assert ide_units(root) == [("ua-cdrom1", "0", "0"), ("ua-cdrom2", "0", "1"),
                               ("ua-disk-00000000-1111-2222", "1", "0"),
                               ("ua-disk-00000001-1111-2222", "1", "1")]
    assert [placement(by_alias(root, a))[2] for a, _, _ in ide_units(root)] == \
        ["hda", "hdb", "hdc", "hdd"]
    assert booted(root) == [DISK0]  # -boot c: the first disk


def test_ide_disks_and_cdroms_beyond_four_units_are_refused() -> None:
    with pytest.raises(HypervisorError, match="Too many IDE devices at disk 2"):
        domain(hvparams(disk_type=C.HT_DISK_IDE, cdrom_image_path=ISO1,
                        cdrom2_image_path=ISO2), n_disks=3)


@pytest.mark.parametrize("disk_type, cdrom_disk_type, boot_order, cdroms, n_disks",
                         [combo for combo in itertools.product(
                             (C.HT_DISK_PARAVIRTUAL, C.HT_DISK_IDE, "scsi-hd"), CDROM_TYPES,
                             (C.HT_BO_DISK, C.HT_BO_CDROM), (1, 2), (0, 1, 2))])
def test_no_two_devices_share_an_ide_unit_and_the_xml_is_valid(
        relaxng: etree.RelaxNG, disk_type: str, cdrom_disk_type: str, boot_order: str,
        cdroms: int, n_disks: int) -> None:
    hvp = hvparams(disk_type=disk_type, cdrom_disk_type=cdrom_disk_type,
                   boot_order=boot_order, cdrom_image_path=ISO1,
                   cdrom2_image_path=ISO2 if cdroms == 2 else "")
    root = domain(hvp, n_disks=n_disks)
    assert relaxng.validate(etree.ElementTree(root)), relaxng.error_log
    units = [(bus, unit) for _, bus, unit in ide_units(root)]
    assert len(set(units)) == len(units)
    # QEMU's order: the first free unit of bus 0, then bus 1, with no gaps.
    assert units == [(str(i // 2), str(i % 2)) for i in range(len(units))]
    names = [t.get("dev") for t in root.iterfind("devices/disk/target")]
    assert len(set(names)) == len(names)
    if boot_order == C.HT_BO_CDROM:
        assert booted(root) == ["ua-cdrom1"] + [DISK0] * bool(n_disks)
        assert ide_units(root)[0][0] == "ua-cdrom1"


def test_floppy_is_read_write_on_the_fdc_and_boots_with_boot_order_floppy() -> None:
    root = domain(hvparams(boot_order=C.HT_BO_FLOPPY, floppy_image_path="/srv/fd.img"))
    floppy = by_alias(root, "ua-floppy1")
    assert placement(floppy) == ("floppy", "fdc", "fda")
    assert floppy.find("readonly") is None
    assert booted(root) == ["ua-floppy1", DISK0]


def test_network_boot_is_the_first_nic_then_the_first_disk() -> None:
    """libvirt boots only what has an order; hv_kvm's -boot n goes on to the disk."""
    root = domain(hvparams(boot_order=C.HT_BO_NETWORK, cdrom_image_path=ISO1), n_nics=2)
    assert booted(root) == ["ua-nic-00000000-aaaa-bbbb", DISK0]


def test_a_diskless_network_boot_boots_the_nic_only() -> None:
    root = domain(hvparams(boot_order=C.HT_BO_NETWORK), n_disks=0)
    assert booted(root) == ["ua-nic-00000000-aaaa-bbbb"]


def test_boot_cdrom_accepts_a_cdrom_disk_type_only_cdrom2_would_use() -> None:
    """The boot cdrom is on IDE, so a disk type cdroms cannot use matters only for
    cdrom2 (Ganeti accepts the first and would fail the second at QEMU's start)."""
    hvp = hvparams(disk_type="scsi-block", boot_order=C.HT_BO_CDROM, cdrom_image_path=ISO1)
    KVMHypervisor.CheckParameterSyntax(hvp)
    assert placement(by_alias(domain(hvp, n_disks=0), "ua-cdrom1")) == ("cdrom", "ide", "hda")
    for bad in ({C.HV_KVM_CDROM2_IMAGE_PATH: ISO2}, {C.HV_BOOT_ORDER: C.HT_BO_DISK}):
        with pytest.raises(HypervisorError, match="Parameter 'disk_type'.*cdrom_disk_type is "
                                                  "empty"):
            KVMHypervisor.CheckParameterSyntax({**hvp, **bad})
        with pytest.raises(HypervisorError, match="image_path would be on 'scsi-block'"):
            domain({**hvp, **bad}, n_disks=0)  # a caller that skipped the check
    with pytest.raises(HypervisorError, match="Parameter 'cdrom_disk_type' value 'scsi-block'"):
        KVMHypervisor.CheckParameterSyntax({**hvp, C.HV_KVM_CDROM2_IMAGE_PATH: ISO2,
                                            C.HV_KVM_CDROM_DISK_TYPE: "scsi-block"})


@pytest.mark.parametrize("vga, graphics, model", [
    ("", {}, "vga"), ("", {"vnc_listen": Listen(address="192.0.2.1")}, "vga"),
    ("", {"spice_listen": Listen(address="192.0.2.1")}, "qxl"), ("cirrus", {}, "cirrus"),
    ("std", {}, "vga"), ("none", {}, "none")])
def test_the_vga_card_is_there_with_or_without_graphics(vga: str, graphics: dict,
                                                         model: str) -> None:
    root = domain(hvparams(vga=vga), **graphics)
    (video,) = root.iterfind("devices/video")
    assert video.find("model").get("type") == model
    slot = video.find("address")
    assert (slot is None) if model == "none" else \
        (int(slot.get("slot"), 16) == addresses.VIDEO_SLOT)


@pytest.mark.parametrize("usb_mouse, vnc, expected", [
    ("", False, []), ("", True, ["tablet"]), ("mouse", False, ["mouse"]),
    ("mouse", True, ["mouse"]), ("tablet", False, ["tablet"])])
def test_usb_mouse_and_the_vnc_tablet(usb_mouse: str, vnc: bool, expected: list) -> None:
    options = {"vnc_listen": Listen(address="192.0.2.1")} if vnc else {}
    root = domain(hvparams(usb_mouse=usb_mouse), **options)
    assert [(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")] == \
        [(kind, "usb") for kind in expected]
