"""What KVM hotplug may do on a running domain, decided from its live XML alone (pure):
which requests to refuse, and where a new SCSI device goes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import disks


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
    if on_pci and action == C.HOTPLUG_ACTION_ADD:
        if "q35" in (root.find("os/type").get("machine") or ""):
            return "PCI hotplug on a q35 machine needs PCIe root ports, which hvlibvirt " \
                   "does not add"
        if root.find("features/acpi") is None:
            return "PCI hotplug needs ACPI, which this instance runs without (acpi=false)"
    return None
