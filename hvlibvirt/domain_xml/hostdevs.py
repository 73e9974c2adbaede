"""``<hostdev>`` elements: PCI devices passed through to Xen HVM guests (pci_pass)."""

from __future__ import annotations

import re

from lxml import etree

from hvlibvirt.errors import HypervisorError

# xl's PCI BDF: [DDDD:]BB:DD.F, optionally followed by ,permissive=0|1
_BDF = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])\Z")
_OPTION = re.compile(r"^permissive=([01])\Z")


def pci_hostdevs(value: str) -> list[etree._Element]:
    """Ganeti's ``pci_pass`` (``;``-separated xl PCI specs) -> one PCI ``<hostdev>``
    each, unmanaged: the operator makes the device assignable (``xl
    pci-assignable-add``), as with Ganeti's own Xen hypervisor."""
    elems = []
    for spec in (s.strip() for s in (value or "").split(";")):
        if not spec:
            continue
        bdf, *options = [part.strip() for part in spec.split(",")]
        m = _BDF.match(bdf)
        if m is None:
            raise HypervisorError(f"Invalid pci_pass entry {spec!r}: expected "
                                  "[DDDD:]BB:DD.F")
        permissive = False
        for option in options:
            opt = _OPTION.match(option)
            if opt is None:
                raise HypervisorError(f"Invalid pci_pass entry {spec!r}: libvirt expresses "
                                      "only permissive=0|1 of xl's PCI options")
            permissive = opt.group(1) == "1"
        elem = etree.Element("hostdev", mode="subsystem", type="pci", managed="no")
        etree.SubElement(elem, "driver", name="xen")
        source = etree.SubElement(elem, "source")
        if permissive:
            source.set("writeFiltering", "no")
        etree.SubElement(source, "address", domain=f"0x{(m.group(1) or '0000').lower()}",
                         bus=f"0x{m.group(2).lower()}", slot=f"0x{m.group(3).lower()}",
                         function=f"0x{m.group(4)}")
        elems.append(elem)
    return elems
