"""Ganeti 3.0's own Instance/Disk/NIC objects give the same domain XML as ours.

Every golden case (tests/golden_cases.py) is built twice from the same field values, once
with ``hvlibvirt.objects`` and once with Ganeti's ``ganeti.objects``, and with hvparams
made from Ganeti's own HVC_DEFAULTS plus the case's overrides; the XML strings must be
equal (and equal to the golden file). The cases include several disk templates in one
instance (kernel-space block and file, userspace rbd/gluster), NICs in every mode and
VLANs on bridged and openvswitch NICs.

Ganeti's Python modules come from the ``ganeti`` fixture in conftest.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import golden_cases
from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import to_string

pytestmark = pytest.mark.tier1

GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"

# Cases that must be among those compared (the acceptance list).
REQUIRED = {
    "templates_block": "disks of several block templates",
    "templates_file": "file-based templates",
    "templates_userspace": "userspace rbd/gluster URIs",
    "nic_modes": "NICs in each mode, VLANs on bridged and openvswitch",
    "nic_vhost_multiqueue": "openvswitch access VLAN, vhost, queues",
    "spice_full_tls": "SPICE with every option",
    "kernel_boot_plain": "kernel boot",
    "xen_pv_kernel": "Xen PV direct kernel boot",
    "xen_pv_templates_file": "Xen file drivers from the disks' logical_id",
    "xen_pv_nic_modes": "Xen NICs in each mode, with IPs",
    "xen_hvm_devices": "Xen HVM with VNC, sound, PCI passthrough, cpuid",
}


def ganeti_hvparams(gconst: Any, case: golden_cases.Case) -> dict[str, Any]:
    """Ganeti's defaults for the case's hypervisor with its non-default values on top."""
    ours = tables.HVC_DEFAULTS[case.hypervisor]
    hvp = dict(gconst.HVC_DEFAULTS[case.hypervisor])
    hvp.update({k: v for k, v in case.hvparams.items() if ours[k] != v})
    return hvp


def test_required_cases_exist() -> None:
    assert set(REQUIRED) <= set(golden_cases.NAMES)


@pytest.mark.parametrize("name", golden_cases.NAMES)
def test_ganeti_objects_give_the_same_xml(ganeti, name: str) -> None:
    gconst, gobjects = ganeti
    case = golden_cases.build(name)
    hvp = ganeti_hvparams(gconst, case)
    assert hvp == case.hvparams
    ganeti_case = golden_cases.Case(**{**case.__dict__, "hvparams": hvp})
    inst, block = ganeti_case.objects(gobjects)
    assert type(inst).__module__ == "ganeti.objects"
    assert all(type(d).__module__ == "ganeti.objects" for d, _, _ in block)
    ours = case.render()
    theirs = ganeti_case.render(gobjects)
    assert theirs == ours
    assert theirs.encode() == (GOLDEN_DIR / f"{name}.xml").read_bytes()


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_objects_after_an_rpc_round_trip_give_the_same_xml(ganeti, name: str) -> None:
    """What the node daemon receives: the instance serialised as Ganeti's RPC layer does
    (ToDict plus ``disks_info`` as disk dicts, rpc/node.py) and rebuilt with FromDict."""
    _, gobjects = ganeti
    case = golden_cases.build(name)
    inst, block = case.objects(gobjects)
    idict = inst.ToDict()
    idict["disks_info"] = [d.ToDict() for d, _, _ in block]
    inst = gobjects.Instance.FromDict(idict)
    assert all(isinstance(d, gobjects.Disk) for d in inst.disks_info)
    block = [(d, link, uri) for d, (_, link, uri) in zip(inst.disks_info, block, strict=True)]
    assert to_string(case.tree(inst, block)) == case.render()
