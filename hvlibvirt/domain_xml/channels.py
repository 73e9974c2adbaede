"""Character devices: the serial console and the virtio-serial agent channels."""

from __future__ import annotations

from lxml import etree

GUEST_AGENT_PORT = 1
SPICE_AGENT_PORT = 2


def serial_console(log_file: str | None = None) -> list[etree._Element]:
    """ttyS0 on a pty (reached with virDomainOpenConsole / ``virsh console``), copied to
    ``log_file`` when given."""
    serial = etree.Element("serial", type="pty")
    if log_file:
        etree.SubElement(serial, "log", file=log_file, append="on")
    etree.SubElement(serial, "target", port="0")
    console = etree.Element("console", type="pty")
    etree.SubElement(console, "target", type="serial", port="0")
    return [serial, console]


def xen_console() -> etree._Element:
    """A paravirtual guest's console (hvc0 in the guest), on a pty libvirt opens."""
    console = etree.Element("console", type="pty")
    etree.SubElement(console, "target", type="xen", port="0")
    return console


def _virtio_port(elem: etree._Element, port: int) -> None:
    etree.SubElement(elem, "address", type="virtio-serial", controller="0", bus="0",
                     port=str(port))


def guest_agent() -> etree._Element:
    """The QEMU guest agent socket; libvirt chooses its path and talks to it."""
    elem = etree.Element("channel", type="unix")
    etree.SubElement(elem, "target", type="virtio", name="org.qemu.guest_agent.0")
    _virtio_port(elem, GUEST_AGENT_PORT)
    return elem


def spice_agent() -> etree._Element:
    elem = etree.Element("channel", type="spicevmc")
    etree.SubElement(elem, "target", type="virtio", name="com.redhat.spice.0")
    _virtio_port(elem, SPICE_AGENT_PORT)
    return elem
