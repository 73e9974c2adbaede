"""``<hostdev>`` elements: PCI devices passed through to Xen HVM guests (pci_pass)."""

from __future__ import annotations

from lxml import etree

from hvlibvirt import param_values


def pci_hostdevs(value: str) -> list[etree._Element]:
    """Ganeti's ``pci_pass`` (``;``-separated xl PCI specs) -> one PCI ``<hostdev>``
    each, unmanaged: the operator makes the device assignable (``xl
    pci-assignable-add``), as with Ganeti's own Xen hypervisor."""
    elems = []
    for domain, bus, slot, function, permissive in param_values.pci_devices(value):
        elem = etree.Element("hostdev", mode="subsystem", type="pci", managed="no")
        etree.SubElement(elem, "driver", name="xen")
        source = etree.SubElement(elem, "source")
        if permissive:
            source.set("writeFiltering", "no")
        etree.SubElement(source, "address", domain=f"0x{domain}", bus=f"0x{bus}",
                         slot=f"0x{slot}", function=f"0x{function}")
        elems.append(elem)
    return elems
