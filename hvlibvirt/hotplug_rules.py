"""What KVM hotplug may do on a running domain, decided from its live XML alone (pure):
which requests to refuse, and where a new PCI device or SCSI disk goes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import addresses, controllers, disks, pcie

SCSI_CONTROLLER_ALIAS = "ua-scsi0"


def on_q35(root: etree._Element) -> bool:
    return addresses.is_q35(root.find("os/type").get("machine"))


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
        on_pci = hvp[C.HV_DISK_TYPE] == C.HT_DISK_PARAVIRTUAL or not root.xpath(
            "devices/controller[@type='scsi' and @index='0']")
    else:
        on_pci = True
    if on_pci and action == C.HOTPLUG_ACTION_ADD and root.find("features/acpi") is None:
        # On q35 too: from QEMU 6.1 on, q35's root ports are hot-plugged through ACPI
        # and their native PCIe hotplug is hidden from the guest, so without ACPI a
        # guest never sees a device hot-added behind a root port.
        return "PCI hotplug needs ACPI, which this instance runs without (acpi=false)"
    return None
