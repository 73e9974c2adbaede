"""Live domain XML -> the facts the rest of the library needs (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from hvlibvirt.domain_xml import metadata
from hvlibvirt.errors import HypervisorError


@dataclass
class LiveDevice:
    """A device with a user alias, and its address attributes as libvirt reports them."""

    alias: str
    tag: str                                   # disk, interface, ...
    address: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveDomain:
    name: str
    uuid: str
    domain_type: str
    meta: metadata.InstanceMetadata | None
    devices: dict[str, LiveDevice] = field(default_factory=dict)
    pci_slots: set[int] = field(default_factory=set)  # bus 0 slots taken by any device


def parse_domain(xml: str | bytes) -> LiveDomain:
    """Parse a domain XML document as returned by ``virDomainGetXMLDesc``."""
    return domain_facts(parse_tree(xml))


def parse_tree(xml: str | bytes) -> etree._Element:
    try:
        return etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    except etree.XMLSyntaxError as err:
        raise HypervisorError(f"Unparsable domain XML: {err}") from err


def domain_facts(root: etree._Element) -> LiveDomain:
    """The facts of a parsed domain XML tree (which this does not change)."""
    meta_elem = metadata.find(root)
    live = LiveDomain(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""),
                      domain_type=root.get("type", ""),
                      meta=metadata.parse(meta_elem) if meta_elem is not None else None)
    for dev in root.iterfind("devices/*"):
        addr = dev.find("address")
        address = dict(addr.attrib) if addr is not None else {}
        if address.get("type") == "pci" and int(address.get("bus", "0"), 16) == 0:
            live.pci_slots.add(int(address["slot"], 16))
        alias = dev.find("alias")
        if alias is not None and alias.get("name", "").startswith("ua-"):
            live.devices[alias.get("name")] = LiveDevice(alias.get("name"), dev.tag, address)
    return live
