"""Device addresses: PCI slots, SCSI, IDE and SATA drive addresses.

Every PCI device gets an explicit address so libvirt never picks one: the layout is
the same on every node, after every restart and on a migration target. Devices the
instance always or optionally has (video, balloon, controllers, virtio cdroms) sit at
fixed slots inside the reserved range; disks and NICs take the first free slot at or
after ``kvm_pci_reservations``, as Ganeti's bus manager does. On q35 the platform
devices keep these bus-0 slots and disks and NICs sit behind PCIe root ports
(``domain_xml.pcie``).
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError
from hvlibvirt.param_values import is_q35  # noqa: F401  (the machine fact, shared)

# i440fx ('pc'): slot 0 is the host bridge, slot 1 the PIIX3 functions (ISA bridge,
# IDE, USB UHCI at function 2, ACPI power management).
HOST_BRIDGE_SLOT = 0
PIIX3_SLOT = 1
USB_FUNCTION = 2
VIDEO_SLOT = 2
BALLOON_SLOT = 3
SCSI_CONTROLLER_SLOT = 4
VIRTIO_SERIAL_SLOT = 5
SOUND_SLOT = 6
CDROM_SLOTS = (7, 8)  # virtio-blk cdroms (cdrom_image_path, cdrom2_image_path)
ALWAYS_USED = frozenset({HOST_BRIDGE_SLOT, PIIX3_SLOT})
# The slots the platform devices above may take, never given to disks or NICs.
PLATFORM_SLOTS = range(PIIX3_SLOT, max(CDROM_SLOTS) + 1)

# libvirt's SCSI controller models, keyed by Ganeti's scsi_controller_type.
SCSI_MODELS = {"lsi": "lsilogic", "megasas": "lsisas1078", "virtio-scsi-pci": "virtio-scsi",
               "dc390": "dc390"}
# Controllers whose drive address maps 'unit' to the SCSI id; the others map 'target'.
_UNIT_IS_SCSI_ID = frozenset({"lsilogic", "dc390"})
_MAX_SCSI_ID = {"lsilogic": 7, "dc390": 7, "lsisas1078": 64, "virtio-scsi": 256}
MAX_IDE_DEVICES = 4
MAX_SATA_DEVICES = 6  # the ports of q35's built-in ICH9 AHCI controller


def pci(parent: etree._Element, slot: int, function: int = 0, bus: int = 0
        ) -> etree._Element:
    """Append ``<address type='pci' .../>`` to ``parent``."""
    return etree.SubElement(parent, "address", type="pci", domain="0x0000",
                            bus=f"0x{bus:02x}", slot=f"0x{slot:02x}",
                            function=f"0x{function:x}")


def drive(parent: etree._Element, bus: int, target: int, unit: int) -> etree._Element:
    return etree.SubElement(parent, "address", type="drive", controller="0", bus=str(bus),
                            target=str(target), unit=str(unit))


class PciAllocator:
    """Hands out bus-0 slots for disks and NICs: lowest free at/after the reservation."""

    def __init__(self, reservations: int, used: Iterable[int] = ()) -> None:
        self.reservations = reservations
        self.used = set(ALWAYS_USED) | set(used)

    def take(self, what: str) -> int:
        for slot in range(self.reservations, constants.QEMU_PCI_SLOTS):
            if slot not in self.used:
                self.used.add(slot)
                return slot
        raise HypervisorError(f"No free PCI slot for {what}: slots "
                              f"{self.reservations}-{constants.QEMU_PCI_SLOTS - 1} are taken "
                              f"(kvm_pci_reservations={self.reservations})")


def scsi_drive(parent: etree._Element, model: str, index: int, what: str) -> etree._Element:
    """One SCSI id per device, as Ganeti does, expressed the way ``model`` needs it."""
    if index >= _MAX_SCSI_ID[model]:
        raise HypervisorError(f"Too many SCSI devices for a {model} controller at {what}"
                              f" (at most {_MAX_SCSI_ID[model]})")
    if model in _UNIT_IS_SCSI_ID:
        return drive(parent, bus=0, target=0, unit=index)
    return drive(parent, bus=0, target=index, unit=0)


def ide_drive(parent: etree._Element, index: int, what: str) -> etree._Element:
    if index >= MAX_IDE_DEVICES:
        raise HypervisorError(f"Too many IDE devices at {what} (at most {MAX_IDE_DEVICES}: "
                              "two buses with two units each)")
    return drive(parent, bus=index // 2, target=0, unit=index % 2)


def sata_drive(parent: etree._Element, index: int, what: str) -> etree._Element:
    """Port ``index`` of the AHCI controller (libvirt's SATA address: the port is 'unit')."""
    if index >= MAX_SATA_DEVICES:
        raise HypervisorError(f"Too many SATA devices at {what} (at most {MAX_SATA_DEVICES}: "
                              "the ports of q35's AHCI controller)")
    return drive(parent, bus=0, target=0, unit=index)
