"""The one reader of XML libvirt hands back (pure): live and defined domain XML,
capabilities, a migration's source XML. One parser with safe settings, the facts the
library keeps (``LiveDomain``) and the questions the hypervisors ask of a live domain
(a device by alias, the guest machine, graphics listens, bridges)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from hvlibvirt.domain_xml import metadata
from hvlibvirt.errors import HypervisorError

# XML from libvirt, or from another node in a migration, is data: no entity expansion
# (no "billion laughs"), no DTD and nothing fetched over the network.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False)


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


@dataclass(frozen=True)
class Machine:
    """What a domain runs as: the key of libvirt's domain capabilities."""

    emulator: str | None
    arch: str | None
    machine: str | None
    domain_type: str | None


def parse_domain(xml: str | bytes) -> LiveDomain:
    """Parse a domain XML document as returned by ``virDomainGetXMLDesc``."""
    return domain_facts(parse_tree(xml))


def parse_tree(xml: str | bytes, what: str = "domain XML") -> etree._Element:
    """``xml`` (a libvirt document: ``what`` names it in the error) as a tree."""
    try:
        return etree.fromstring(xml.encode() if isinstance(xml, str) else xml, _PARSER)
    except etree.XMLSyntaxError as err:
        raise HypervisorError(f"Unparsable {what}: {err}") from err


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


def device(root: etree._Element, alias: str, tag: str = "*") -> etree._Element | None:
    """The device element (of kind ``tag``: disk, interface...) carrying ``alias``."""
    found = root.xpath(f"devices/{tag}[alias/@name=$alias]", alias=alias)
    return found[0] if found else None


def nic(root: etree._Element, alias: str) -> etree._Element | None:
    """The NIC carrying ``alias``."""
    return device(root, alias, "interface")


def aliases(root: etree._Element) -> set[str]:
    """Every device alias of the domain."""
    return set(root.xpath("devices/*/alias/@name"))


def disk_targets(root: etree._Element) -> set[str]:
    """The guest disk names in use (vda, sdb, hdc...)."""
    return set(root.xpath("devices/disk/target/@dev"))


def has_scsi_controller(root: etree._Element) -> bool:
    """Whether SCSI controller 0, the one disks go on, exists."""
    return bool(root.xpath("devices/controller[@type='scsi' and @index='0']"))


def machine(root: etree._Element) -> Machine:
    """The emulator, architecture, machine type and domain type of the domain."""
    os_type = root.find("os/type")
    return Machine(emulator=root.findtext("devices/emulator"),
                   arch=os_type.get("arch") if os_type is not None else None,
                   machine=os_type.get("machine") if os_type is not None else None,
                   domain_type=root.get("type"))


def graphics(root: etree._Element) -> dict[str, tuple[str | None, int]]:
    """Graphics kind (vnc, spice) -> (listen address, port) of a running domain; kinds
    without a port yet are left out."""
    found = {}
    for elem in root.iterfind("devices/graphics"):
        port = int(elem.get("port") or elem.get("tlsPort") or 0)
        listen = elem.find("listen")
        address = listen.get("address") if listen is not None else elem.get("listen")
        if port > 0:
            found[elem.get("type")] = (address, port)
    return found


def bridges(root: etree._Element) -> list[str]:
    """The bridges the domain's bridged NICs are on, sorted, each once."""
    return sorted(set(root.xpath("devices/interface[@type='bridge']/source/@bridge")))
