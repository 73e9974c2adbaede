"""Device elements: disks, NICs, serial console, memory balloon, and their addresses.

One function per element kind. Device identity is the libvirt user alias
``ua-<kind>-<first three groups of the Ganeti uuid>`` (Ganeti's kvm_devid with the
``ua-`` prefix libvirt requires); every PCI device gets an explicit address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError

# Slots inside the reserved range for devices we always create (i440fx 'pc': slot 0 is
# the host bridge, slot 1 the PIIX3 ISA/IDE/USB functions, slot 2 the video card).
BALLOON_SLOT = 3
SCSI_CONTROLLER_SLOT = 4

_UUID_HEAD = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4})-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}$")
_DISK_BUS = {
    constants.HT_DISK_PARAVIRTUAL: ("virtio", "vd"),
    constants.HT_DISK_IDE: ("ide", "hd"),
    "scsi-hd": ("scsi", "sd"),
}


def device_alias(kind: str, dev_uuid: str) -> str:
    """``ua-disk-932df160-7a22-4067`` for disk uuid ``932df160-7a22-4067-...``."""
    match = _UUID_HEAD.match(str(dev_uuid))
    if match is None:
        raise HypervisorError(f"Invalid {kind} uuid {dev_uuid!r}: expected a UUID")
    return f"ua-{kind}-{match.group(1).lower()}"


def target_name(prefix: str, index: int) -> str:
    """Linux-style device names: vda..vdz, vdaa, ..."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def pci_address(parent: etree._Element, slot: int) -> etree._Element:
    return etree.SubElement(parent, "address", type="pci", domain="0x0000", bus="0x00",
                            slot=f"0x{slot:02x}", function="0x0")


def free_pci_slots(used: Iterable[int], reservations: int) -> Iterable[int]:
    """Free slots on bus 0 at or after ``reservations``, lowest first."""
    taken = set(used)
    return (s for s in range(max(reservations, 1), constants.QEMU_PCI_SLOTS) if s not in taken)


def disk(disk_obj: Any, link_name: str | None, drive_uri: str | None, index: int,
         hvparams: Mapping[str, Any], slot: int | None, scsi_unit: int | None
         ) -> etree._Element:
    """A ``<disk>`` for one entry of Ganeti's block_devices."""
    disk_type = hvparams[constants.HV_DISK_TYPE]
    try:
        bus, prefix = _DISK_BUS[disk_type]
    except KeyError:
        raise HypervisorError(
            f"disk_type {disk_type!r} is not supported yet by hvlibvirt") from None
    path = link_name or drive_uri
    if not path:
        raise HypervisorError(f"Disk {index} ({getattr(disk_obj, 'uuid', '?')}) has no path")
    file_based = getattr(disk_obj, "dev_type", None) in constants.DTS_FILEBASED
    elem = etree.Element("disk", type="file" if file_based else "block", device="disk")
    driver = etree.SubElement(elem, "driver", name="qemu", type="raw")
    cache = hvparams.get(constants.HV_DISK_CACHE, "default")
    if cache != "default":
        driver.set("cache", cache)
    etree.SubElement(elem, "source", **{"file" if file_based else "dev": path})
    etree.SubElement(elem, "target", dev=target_name(prefix, index), bus=bus)
    if getattr(disk_obj, "mode", constants.DISK_RDWR) == constants.DISK_RDONLY:
        etree.SubElement(elem, "readonly")
    etree.SubElement(elem, "alias", name=device_alias("disk", disk_obj.uuid))
    if slot is not None:
        pci_address(elem, slot)
    elif scsi_unit is not None:
        etree.SubElement(elem, "address", type="drive", controller="0", bus="0",
                         target="0", unit=str(scsi_unit))
    return elem


def nic(nic_obj: Any, hvparams: Mapping[str, Any], slot: int) -> etree._Element:
    """An ``<interface>`` for a Ganeti NIC in bridged, openvswitch or routed mode."""
    nicparams = getattr(nic_obj, "nicparams", None) or {}
    mode = nicparams.get(constants.NIC_MODE, constants.NIC_MODE_BRIDGED)
    link = nicparams.get(constants.NIC_LINK) or ""
    if mode in (constants.NIC_MODE_BRIDGED, constants.NIC_MODE_OVS):
        if not link:
            raise HypervisorError(f"NIC {nic_obj.uuid}: {mode} mode needs a link (bridge)")
        elem = etree.Element("interface", type="bridge")
    elif mode == constants.NIC_MODE_ROUTED:
        elem = etree.Element("interface", type="ethernet")
    else:
        raise HypervisorError(f"NIC {nic_obj.uuid}: mode {mode!r} is not supported yet")
    if getattr(nic_obj, "mac", None):
        etree.SubElement(elem, "mac", address=nic_obj.mac)
    if link and mode != constants.NIC_MODE_ROUTED:
        etree.SubElement(elem, "source", bridge=link)
    if mode == constants.NIC_MODE_OVS:
        etree.SubElement(elem, "virtualport", type="openvswitch")
    nic_type = hvparams[constants.HV_NIC_TYPE]
    model = "virtio" if nic_type == constants.HT_NIC_PARAVIRTUAL else nic_type
    etree.SubElement(elem, "model", type=model)
    etree.SubElement(elem, "alias", name=device_alias("nic", nic_obj.uuid))
    pci_address(elem, slot)
    return elem


def serial_console() -> list[etree._Element]:
    """A pty serial port on ttyS0 plus the console that points at it."""
    serial = etree.Element("serial", type="pty")
    etree.SubElement(serial, "target", port="0")
    console = etree.Element("console", type="pty")
    etree.SubElement(console, "target", type="serial", port="0")
    return [serial, console]


def memballoon() -> etree._Element:
    elem = etree.Element("memballoon", model="virtio")
    # libvirt refreshes the balloon size from the guest on this period, which is what
    # keeps virDomainGetInfo's memory figure current without asking QEMU per call.
    etree.SubElement(elem, "stats", period="5")
    pci_address(elem, BALLOON_SLOT)
    return elem


def scsi_controller(model: str) -> etree._Element:
    libvirt_model = {"lsi": "lsilogic", "megasas": "lsisas1078",
                     "virtio-scsi-pci": "virtio-scsi", "dc390": "dc390"}[model]
    elem = etree.Element("controller", type="scsi", index="0", model=libvirt_model)
    pci_address(elem, SCSI_CONTROLLER_SLOT)
    return elem
