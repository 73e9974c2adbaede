"""Ganeti 3.0's own constants and objects against ours (the ``ganeti`` fixture is in
conftest.py)."""

from __future__ import annotations

import sys

import pytest

from hvlibvirt import connection, constants as C, get_hypervisor_class
from hvlibvirt import tables
from hvlibvirt.base import HvInstanceState

pytestmark = pytest.mark.tier2

@pytest.mark.parametrize("hv_name", [C.HT_KVM, C.HT_XEN_PVM, C.HT_XEN_HVM])
def test_defaults_equal_ganeti(ganeti, hv_name: str) -> None:
    gconst, _ = ganeti
    assert tables.HVC_DEFAULTS[hv_name] == gconst.HVC_DEFAULTS[hv_name]
    for name in tables.HVC_DEFAULTS[hv_name]:
        assert tables.HVS_PARAMETER_TYPES[name] == gconst.HVS_PARAMETER_TYPES[name], name
    cls = get_hypervisor_class(hv_name)
    assert set(cls.PARAMETERS) == set(gconst.HVC_DEFAULTS[hv_name])
    cls.CheckParameterSyntax(dict(gconst.HVC_DEFAULTS[hv_name]))


def test_shared_names_equal_ganeti(ganeti) -> None:
    gconst, _ = ganeti
    for name in ("HT_KVM", "HT_XEN_PVM", "HT_XEN_HVM", "HOTPLUG_TARGET_DISK",
                 "HOTPLUG_TARGET_NIC", "HOTPLUG_ACTION_ADD", "HOTPLUG_ACTION_REMOVE",
                 "HOTPLUG_ACTION_MODIFY", "HV_MIGRATION_ACTIVE", "HV_MIGRATION_COMPLETED",
                 "HV_MIGRATION_FAILED", "HV_MIGRATION_CANCELLED",
                 "HV_KVM_MIGRATION_POSTCOPY_ACTIVE", "HV_NODEINFO_KEY_VERSION",
                 "CONS_SSH", "CONS_VNC", "CONS_SPICE", "CONS_MESSAGE", "NIC_MODE_BRIDGED",
                 "NIC_MODE_ROUTED", "NIC_MODE_OVS", "DISK_RDWR", "DISK_RDONLY",
                 "VALID_SERIAL_SPEEDS", "QEMU_PCI_SLOTS", "VNC_BASE_PORT", "FD_LOOP",
                 "FD_BLKTAP", "FD_BLKTAP2"):
        ours, theirs = getattr(C, name), getattr(gconst, name)
        if isinstance(theirs, list):
            theirs = tuple(theirs)
        assert ours == theirs, name
    assert C.DISK_TEMPLATES == set(gconst.DISK_TEMPLATES)
    assert C.HV_KVM_MIGRATION_VALID_STATUSES == set(gconst.HV_KVM_MIGRATION_VALID_STATUSES)
    assert C.HOTPLUG_ALL_ACTIONS == set(gconst.HOTPLUG_ALL_ACTIONS)


def test_ganeti_objects_drive_a_lifecycle(ganeti) -> None:
    """Ganeti's own Instance/Disk/NIC objects, unchanged, on the test driver."""
    gconst, gobjects = ganeti
    hv = get_hypervisor_class(C.HT_KVM)(uri="test:///default")
    hvparams = dict(gconst.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable)
    disk = gobjects.Disk(uuid="932df160-7a22-4067-a566-7e0ca8386133", dev_type="plain",
                         mode="rw", size=1024, iv_name="disk/0", params={})
    nic = gobjects.NIC(uuid="003fc157-66a8-4e6d-8b7e-4a6d1ecdd4b7", mac="aa:00:00:35:d0:7e",
                       nicparams={"mode": "bridged", "link": "br0", "vlan": ""})
    inst = gobjects.Instance(name="gnt1.example.com",
                             uuid="11d2bb1e-5f27-4b8c-8c4e-1a2b3c4d5e6f",
                             hypervisor=C.HT_KVM, hvparams=hvparams,
                             beparams={"maxmem": 256, "minmem": 128, "vcpus": 1},
                             nics=[nic], disks=[disk.uuid], disks_info=[disk])
    try:
        hv.StartInstance(inst, [(disk, "/var/run/ganeti/instance-disks/gnt1:0", None)], False)
        info = hv.GetInstanceInfo(inst.name)
        assert info[0] == inst.name and info[4] == HvInstanceState.RUNNING
        xml = hv.domain_xml(inst.name)
        assert "ua-disk-932df160-7a22-4067" in xml and "ua-nic-003fc157-66a8-4e6d" in xml
        hv.BalloonInstanceMemory(inst, 200)
        assert hv.GetInstanceInfo(inst.name)[2] == 200
        hv.StopInstance(inst, force=True)
        hv.CleanupInstance(inst.name)
        assert inst.name not in hv.ListInstances()
    finally:
        for dom in connection.get("test:///default").listAllDomains():
            if dom.name() == inst.name:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
