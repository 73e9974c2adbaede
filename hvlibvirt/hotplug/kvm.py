"""KVM's part of the hotplug flow: what to refuse on a running domain, decided from its
live XML, and the device elements with their place (a PCI slot, a q35 root port, a
SCSI id behind a controller hot-added first if the domain has none)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import addresses, controllers, disks, identity, inputs, nics, parser, pcie
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.hotplug.flow import NewDevice, Target

SCSI_CONTROLLER_ALIAS = "ua-scsi0"


def on_q35(root: etree._Element) -> bool:
    return addresses.is_q35(parser.machine(root).machine)


def place_pci(root: etree._Element, pci_slots: Iterable[int], hvp: Mapping[str, Any],
              elem: etree._Element, what: str) -> None:
    """Give a hot-added disk or NIC its PCI address in the live domain ``root``: on q35
    slot 0 behind the lowest free root port (pcie.0 takes no hot-plugged device), else
    the first bus-0 slot at/after kvm_pci_reservations that no device (``pci_slots``)
    or platform device uses. HypervisorError when there is none."""
    if on_q35(root):
        pcie.behind(elem, pcie.free_port(root, what))
        return
    slots = addresses.PciAllocator(hvp[C.HV_KVM_PCI_RESERVATIONS],
                                   used=set(pci_slots) | set(addresses.PLATFORM_SLOTS))
    addresses.pci(elem, slots.take(what))


def scsi_controller(root: etree._Element, model: str, what: str) -> etree._Element:
    """The SCSI controller to hot-add before a first SCSI disk: at its fixed slot, or on
    q35 behind a free root port."""
    elem = controllers.scsi(model)
    if on_q35(root):
        elem.remove(elem.find("address"))
        pcie.behind(elem, pcie.free_port(root, f"{what} (its SCSI controller)"))
    etree.SubElement(elem, "alias", name=SCSI_CONTROLLER_ALIAS)
    return elem


def free_scsi_id(root: etree._Element, model: str) -> int:
    """The lowest SCSI id not used on controller 0 (one id per device, as at start)."""
    field = "unit" if model in ("lsilogic", "dc390") else "target"
    used = {int(a.get(field)) for a in root.xpath(
        "devices/disk[target/@bus='scsi']/address[@type='drive' and @controller='0']")}
    return next(i for i in range(1024) if i not in used)


def refusal(root: etree._Element, hvp: Mapping[str, Any], action: str,
            dev_type: str) -> str | None:
    """Why this hotplug cannot work on this running domain, or None."""
    if dev_type == C.HOTPLUG_TARGET_DISK:
        if action == C.HOTPLUG_ACTION_MODIFY:
            return "Disks cannot be modified while the instance runs (only added, removed " \
                   "or resized)"
        if hvp[C.HV_DISK_TYPE] not in disks.DISK_KINDS or \
                hvp[C.HV_DISK_TYPE] == C.HT_DISK_IDE:
            return f"disk_type {hvp[C.HV_DISK_TYPE]!r} disks cannot be hot-plugged"
        on_pci = hvp[C.HV_DISK_TYPE] == C.HT_DISK_PARAVIRTUAL or \
            not parser.has_scsi_controller(root)
    else:
        on_pci = True
    if on_pci and action == C.HOTPLUG_ACTION_ADD and root.find("features/acpi") is None:
        # On q35 too: from QEMU 6.1 on, q35's root ports are hot-plugged through ACPI
        # and their native PCIe hotplug is hidden from the guest, so without ACPI a
        # guest never sees a device hot-added behind a root port.
        return "PCI hotplug needs ACPI, which this instance runs without (acpi=false)"
    return None


class KvmDevices:
    """KVM's refusal rules and element factory for ``hotplug.Flow``. The two node facts
    they need come as callables, asked only when a request needs them:
    ``linux_bridge_vlans`` (whether libvirt puts a VLAN on a Linux bridge port) and
    ``disk_buses`` (the buses the domain's emulator and machine offer, None: unknown)."""

    def __init__(self, linux_bridge_vlans: Callable[[], bool],
                 disk_buses: Callable[[etree._Element], frozenset[str] | None]) -> None:
        self._linux_bridge_vlans, self._disk_buses = linux_bridge_vlans, disk_buses

    def refusal(self, target: Target, action: str, dev_type: str) -> str | None:
        """``refusal``, and a disk bus the domain capabilities do not offer."""
        hvp = target.hvparams
        reason = refusal(target.root, hvp, action, dev_type)
        if reason is None and action == C.HOTPLUG_ACTION_ADD and \
                dev_type == C.HOTPLUG_TARGET_DISK:
            bus = disks.DISK_KINDS[hvp[C.HV_DISK_TYPE]][1]
            buses = self._disk_buses(target.root)
            if buses is not None and bus not in buses:
                reason = (f"this emulator and machine offer no {bus} disk bus (domain "
                          f"capabilities list {', '.join(sorted(buses))})")
        return reason

    def element(self, target: Target, dev_type: str, device: Any, extra: Any, seq: int,
                what: str) -> NewDevice:
        """A NIC or virtio disk at a free PCI place; a SCSI disk at a free id, with the
        controller to add first if the domain has none (``extra`` = (link_name,
        drive_uri) for a disk)."""
        root, hvp = target.root, target.hvparams
        if dev_type == C.HOTPLUG_TARGET_NIC:
            elem = nics.interface(device, seq, hvp, self._linux_bridge_vlans())
            place_pci(root, target.live.pci_slots, hvp, elem, what)
            return NewDevice(elem)
        try:
            link_name, drive_uri = inputs.disk_extra(extra, what)
        except HypervisorError as err:
            raise HotplugError(str(err)) from None
        _device, bus, prefix = disks.DISK_KINDS[hvp[C.HV_DISK_TYPE]]
        used_targets = parser.disk_targets(root)
        name = next(t for t in (identity.target_name(prefix, i) for i in range(1024))
                    if t not in used_targets)
        elem = disks.disk(device, link_name, drive_uri, seq, hvp, name)
        if bus == "virtio":
            place_pci(root, target.live.pci_slots, hvp, elem, what)
            return NewDevice(elem)
        model = addresses.SCSI_MODELS[hvp[C.HV_KVM_SCSI_CONTROLLER_TYPE]]
        controller = None if parser.has_scsi_controller(root) else \
            scsi_controller(root, model, what)
        addresses.scsi_drive(elem, model, free_scsi_id(root, model), what)
        return NewDevice(elem, controller)

    def replacement(self, target: Target, old: etree._Element, device: Any, seq: int,
                    what: str) -> etree._Element:
        """The changed NIC at ``old``'s address (on q35: behind its root port)."""
        new = nics.interface(device, seq, target.hvparams, self._linux_bridge_vlans())
        new.append(copy.deepcopy(old.find("address")))
        return new

    @staticmethod
    def in_place(old: etree._Element, new: etree._Element) -> bool:
        """The QEMU driver changes a NIC's bridge or link state live, not its MAC or
        type."""
        return new.find("mac").get("address") == old.find("mac").get("address") and \
            new.get("type") == old.get("type")

    @staticmethod
    def where(target: Target, alias: str, elem: etree._Element) -> dict[str, str]:
        """Its alias and PCI or drive address."""
        return {"alias": alias, **target.live.devices[alias].address}
