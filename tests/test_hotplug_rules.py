"""Hotplug decisions that depend only on the live domain XML (pure)."""

from __future__ import annotations

import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.hotplug.kvm import free_scsi_id, refusal

pytestmark = pytest.mark.tier1

ADD, DEL, MOD = C.HOTPLUG_ACTION_ADD, C.HOTPLUG_ACTION_REMOVE, C.HOTPLUG_ACTION_MODIFY
HV = dict(tables.HVC_DEFAULTS[C.HT_KVM])


def domain(acpi: bool = True, machine: str = "pc-i440fx-7.2", scsi: str | None = None,
           scsi_disks: tuple[tuple[str, str], ...] = ()) -> etree._Element:
    features = "<acpi/>" if acpi else ""
    controller = f"<controller type='scsi' index='0' model='{scsi}'/>" if scsi else ""
    disks = "".join(
        f"<disk type='file' device='disk'><target dev='sd{chr(97 + i)}' bus='scsi'/>"
        f"<address type='drive' controller='0' bus='0' target='{t}' unit='{u}'/></disk>"
        for i, (t, u) in enumerate(scsi_disks))
    return etree.fromstring(
        f"<domain type='kvm'><os><type arch='x86_64' machine='{machine}'>hvm</type></os>"
        f"<features>{features}</features><devices>{controller}{disks}</devices></domain>")


@pytest.mark.parametrize("root,hv,action,kind,reason", [
    (domain(), HV, ADD, C.HOTPLUG_TARGET_NIC, None),
    (domain(), HV, ADD, C.HOTPLUG_TARGET_DISK, None),
    (domain(), HV, MOD, C.HOTPLUG_TARGET_NIC, None),
    (domain(acpi=False), HV, ADD, C.HOTPLUG_TARGET_NIC, "needs ACPI"),
    (domain(acpi=False), HV, DEL, C.HOTPLUG_TARGET_NIC, None),
    # q35: hot-adds go behind free root ports (see test_q35.py); ACPI still needed.
    (domain(machine="pc-q35-7.2"), HV, ADD, C.HOTPLUG_TARGET_DISK, None),
    (domain(machine="pc-q35-7.2"), HV, ADD, C.HOTPLUG_TARGET_NIC, None),
    (domain(acpi=False, machine="q35"), HV, ADD, C.HOTPLUG_TARGET_NIC, "needs ACPI"),
    (domain(), HV, MOD, C.HOTPLUG_TARGET_DISK, "cannot be modified"),
    (domain(), dict(HV, disk_type="ide"), ADD, C.HOTPLUG_TARGET_DISK, "'ide' disks"),
    (domain(), dict(HV, disk_type="ide"), DEL, C.HOTPLUG_TARGET_DISK, "'ide' disks"),
    # A SCSI disk on an existing controller needs no PCI hotplug, hence no ACPI...
    (domain(acpi=False, scsi="virtio-scsi"), dict(HV, disk_type="scsi-hd"), ADD,
     C.HOTPLUG_TARGET_DISK, None),
    # ... but adding the controller does.
    (domain(acpi=False), dict(HV, disk_type="scsi-hd"), ADD, C.HOTPLUG_TARGET_DISK,
     "needs ACPI"),
])
def test_hotplug_refusals(root, hv, action, kind, reason) -> None:
    found = refusal(root, hv, action, kind)
    assert (found is None) if reason is None else (reason in found)


def test_free_scsi_id_per_controller_model() -> None:
    root = domain(scsi="virtio-scsi", scsi_disks=(("0", "0"), ("1", "0"), ("3", "0")))
    assert free_scsi_id(root, "virtio-scsi") == 2
    root = domain(scsi="lsilogic", scsi_disks=(("0", "0"), ("0", "1")))
    assert free_scsi_id(root, "lsilogic") == 2
