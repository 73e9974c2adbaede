"""Controllers, each at its fixed PCI address: USB, SCSI, virtio-serial, and q35's PCI
Express root complex, root ports and built-in SATA (AHCI) controller; and q35's ISA
floppy controller."""

from __future__ import annotations

from lxml import etree

from hvlibvirt.domain_xml import addresses

# q35's built-in functions on pcie.0: the ICH9 USB controllers QEMU's -usb puts at slot
# 0x1d (EHCI at function 7, its UHCI companions at 0-2), and the LPC bridge, AHCI
# controller and SMBus at 0x1f (functions 0, 2, 3).
Q35_USB_SLOT = 0x1D
Q35_ICH9_SLOT = 0x1F
Q35_SATA_FUNCTION = 2
Q35_RESERVED_SLOTS = frozenset({Q35_USB_SLOT, Q35_ICH9_SLOT})
_EHCI_FUNCTION = 7
_UHCI_COMPANIONS = 3
_PORTS_PER_COMPANION = 2


def usb() -> etree._Element:
    """The PIIX3 UHCI controller every 'pc' machine has (Ganeti always passes -usb)."""
    elem = etree.Element("controller", type="usb", index="0", model="piix3-uhci")
    addresses.pci(elem, addresses.PIIX3_SLOT, addresses.USB_FUNCTION)
    return elem


def q35_usb() -> list[etree._Element]:
    """What -usb gives a q35 machine: an ICH9 EHCI controller with three UHCI companions
    (full- and low-speed devices such as the USB tablet go to a companion)."""
    ehci = etree.Element("controller", type="usb", index="0", model="ich9-ehci1")
    addresses.pci(ehci, Q35_USB_SLOT, _EHCI_FUNCTION)
    elems = [ehci]
    for number in range(_UHCI_COMPANIONS):
        uhci = etree.Element("controller", type="usb", index="0", model=f"ich9-uhci{number + 1}")
        etree.SubElement(uhci, "master", startport=str(number * _PORTS_PER_COMPANION))
        address = addresses.pci(uhci, Q35_USB_SLOT, number)
        if number == 0:
            address.set("multifunction", "on")
        elems.append(uhci)
    return elems


def sata() -> etree._Element:
    """q35's built-in ICH9 AHCI controller (where QEMU puts -drive if=ide on q35)."""
    elem = etree.Element("controller", type="sata", index="0")
    addresses.pci(elem, Q35_ICH9_SLOT, Q35_SATA_FUNCTION)
    return elem


def fdc() -> etree._Element:
    """q35's floppy controller. A 'pc' machine has one built in; QEMU's q35 machines
    have none, and libvirt makes this element QEMU's isa-fdc on the ISA bus of q35's
    ICH9 LPC bridge, which SeaBIOS boots from. Explicit, so that libvirt adds nothing
    on its own; an ISA device, so it has no address."""
    return etree.Element("controller", type="fdc", index="0")


def pcie_root() -> etree._Element:
    """q35's root complex, bus 0 (pcie.0): it has no address of its own."""
    return etree.Element("controller", type="pci", index="0", model="pcie-root")


def root_port(index: int, slot: int, function: int, multifunction: bool) -> etree._Element:
    """A pcie-root-port providing bus ``index``, at ``slot``.``function`` of pcie.0.
    Chassis and port numbers follow libvirt's own convention (index; slot*8+function),
    so the guest sees the same slot numbers libvirt would give."""
    elem = etree.Element("controller", type="pci", index=str(index), model="pcie-root-port")
    etree.SubElement(elem, "model", name="pcie-root-port")
    etree.SubElement(elem, "target", chassis=str(index), port=f"0x{slot * 8 + function:x}")
    address = addresses.pci(elem, slot, function)
    if multifunction:
        address.set("multifunction", "on")
    return elem


def scsi(model: str) -> etree._Element:
    elem = etree.Element("controller", type="scsi", index="0", model=model)
    addresses.pci(elem, addresses.SCSI_CONTROLLER_SLOT)
    return elem


def virtio_serial() -> etree._Element:
    """Carries the guest agent and SPICE agent channels."""
    elem = etree.Element("controller", type="virtio-serial", index="0")
    addresses.pci(elem, addresses.VIRTIO_SERIAL_SLOT)
    return elem
