"""q35's PCI Express topology: a root port per disk and NIC, and free ports for hotplug.

pcie.0 (the root complex) cannot take hot-plugged devices; a root port can, one device
at slot 0 of the bus it provides. So on q35 every disk and NIC (and a SCSI controller
hot-added for a disk) sits behind a ``pcie-root-port`` of its own, and an instance
starts with a few more, empty, for later hot-adds (``pcie_hotplug_ports`` in
hvlibvirt.conf). The root ports themselves are on pcie.0, eight functions per slot
from ``kvm_pci_reservations`` on (the platform devices keep the slots below, as on
'pc'). Which port a device uses is read from the live XML (its address's bus), never
stored anywhere else: a port is free when no device's address names its bus.
"""

from __future__ import annotations

from lxml import etree

from hvlibvirt.domain_xml import addresses, controllers
from hvlibvirt.errors import HypervisorError

FUNCTIONS_PER_SLOT = 8
DEFAULT_HOTPLUG_PORTS = 4
HOTPLUG_PORTS_SETTING = "pcie_hotplug_ports"
_ROOT_PORT_XPATH = "devices/controller[@type='pci' and @model='pcie-root-port']"


def behind(elem: etree._Element, port: int) -> etree._Element:
    """Put ``elem`` at slot 0 of root port ``port``'s bus."""
    return addresses.pci(elem, 0, bus=port)


class RootPorts:
    """Root ports handed out while a domain is built: index 1, 2, ... in device order."""

    def __init__(self, reservations: int) -> None:
        self.slots = addresses.PciAllocator(
            reservations, used=set(addresses.PLATFORM_SLOTS) | controllers.Q35_RESERVED_SLOTS)
        self.places: list[tuple[int, int]] = []  # (slot, function) of port index i+1

    def take(self, what: str) -> int:
        """A new root port for ``what``; its index (the bus number behind it)."""
        function = len(self.places) % FUNCTIONS_PER_SLOT
        slot = self.slots.take(what) if function == 0 else self.places[-1][0]
        self.places.append((slot, function))
        return len(self.places)

    def elements(self, free: int) -> list[etree._Element]:
        """pcie-root and every port taken, after taking ``free`` more for hotplug."""
        for number in range(free):
            self.take(f"free PCIe root port {number + 1} of {free} "
                      f"({HOTPLUG_PORTS_SETTING})")
        slots = [slot for slot, _function in self.places]
        return [controllers.pcie_root()] + [
            controllers.root_port(index, slot, function,
                                  multifunction=function == 0 and slots.count(slot) > 1)
            for index, (slot, function) in enumerate(self.places, start=1)]


def free_port(root: etree._Element, what: str) -> int:
    """The lowest-indexed root port of the live domain ``root`` with no device behind
    it; HotplugError-worthy HypervisorError when there is none."""
    ports = sorted(int(index) for index in root.xpath(f"{_ROOT_PORT_XPATH}/@index"))
    used = {int(bus, 16) for bus in root.xpath("devices/*/address[@type='pci']/@bus")}
    for port in ports:
        if port not in used:
            return port
    raise HypervisorError(
        f"No free PCIe root port for {what}: all {len(ports)} root ports of this q35 "
        f"instance are in use. Each instance starts with {HOTPLUG_PORTS_SETTING} free "
        f"ports (hvlibvirt.conf, section [kvm], default {DEFAULT_HOTPLUG_PORTS}); a larger "
        "value takes effect at the instance's next start")
