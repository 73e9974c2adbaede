"""Controllers, each at its fixed PCI address: USB, SCSI, virtio-serial."""

from __future__ import annotations

from lxml import etree

from hvlibvirt.domain_xml import addresses


def usb() -> etree._Element:
    """The PIIX3 UHCI controller every 'pc' machine has (Ganeti always passes -usb)."""
    elem = etree.Element("controller", type="usb", index="0", model="piix3-uhci")
    addresses.pci(elem, addresses.PIIX3_SLOT, addresses.USB_FUNCTION)
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
