"""The KVM hvparam table, docs/hvparams.md and the XML builder agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.cli import hvparams_markdown
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.kvm_params import KVM_PARAMS
from hvparam_examples import KVM as EXAMPLES
from xmlcases import instance, render, without_metadata

pytestmark = pytest.mark.tier1

DOC = Path(__file__).resolve().parent.parent / "docs" / "hvparams.md"
DEFAULTS = tables.HVC_DEFAULTS[C.HT_KVM]
# XML-mapped parameters that have no value which changes the XML.
NO_EXAMPLE = {C.HV_VNET_HDR: "only the default is accepted; libvirt's behaviour"}
RUNTIME_SAMPLES = {
    C.HV_MIGRATION_PORT: 9000, C.HV_MIGRATION_BANDWIDTH: 100, C.HV_MIGRATION_DOWNTIME: 300,
    C.HV_MIGRATION_MODE: C.HT_MIGRATION_NONLIVE, C.HV_KVM_MIGRATION_CAPS: "xbzrle:auto-converge",
    C.HV_KVM_USER_SHUTDOWN: True, C.HV_KVM_SPICE_IP_VERSION: 4,
    # host-wide in libvirt: checked against the node's qemu.conf (test_qemu_conf.py)
    C.HV_VNC_TLS: True, C.HV_VNC_X509: "/etc/pki/vnc", C.HV_VNC_X509_VERIFY: True,
    C.HV_KVM_USE_CHROOT: True,
}
REFUSED_SAMPLES = {
    C.HV_VNET_HDR: {C.HV_VNET_HDR: False},  # with the default paravirtual nic_type
    C.HV_KVM_SPICE_TLS_CIPHERS: {C.HV_KVM_SPICE_TLS_CIPHERS: "HIGH"},
    C.HV_SECURITY_MODEL: {C.HV_SECURITY_MODEL: C.HT_SM_POOL},
    C.HV_DISK_TYPE: {C.HV_DISK_TYPE: "scsi-generic"},
    C.HV_NIC_TYPE: {C.HV_NIC_TYPE: "ne2k_isa"},
    C.HV_KVM_CDROM_DISK_TYPE: {C.HV_CDROM_IMAGE_PATH: "/srv/a.iso",
                               C.HV_KVM_CDROM_DISK_TYPE: "scsi-block"},
    C.HV_CPU_TYPE: {C.HV_CPU_TYPE: "qemu64,+aes=on"},
    C.HV_USB_DEVICES: {C.HV_USB_DEVICES: "tablet,gadget"},
    C.HV_VGA: {C.HV_VGA: "fancy"},
    C.HV_SOUNDHW: {C.HV_SOUNDHW: "gus"},
    C.HV_KVM_MIGRATION_CAPS: {C.HV_KVM_MIGRATION_CAPS: "xbzrle:zero-blocks"},
    C.HV_KVM_EXTRA: {C.HV_KVM_EXTRA: '-device "unbalanced'},
}


def test_doc_matches_the_table() -> None:
    assert DOC.read_text() == hvparams_markdown(), (
        "docs/hvparams.md is stale: regenerate it with `hvlibvirt hvparams-doc`")


def test_the_tables_load_without_any_builder() -> None:
    """Refusals ask hvlibvirt.param_values, never an XML builder: a fresh interpreter
    loads every table without domain_xml, lxml or libvirt."""
    code = ("import sys, hvlibvirt.kvm_params, hvlibvirt.xen_params; print(sorted(m for m in "
            "sys.modules if m.split('.')[0] in ('lxml', 'libvirt') or "
            "m.startswith('hvlibvirt.domain_xml')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=DOC.parent.parent, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_table_covers_exactly_ganetis_parameters() -> None:
    assert set(KVM_PARAMS) == set(DEFAULTS) and len(KVM_PARAMS) == 65
    assert set(KVMHypervisor.PARAMETERS) == set(DEFAULTS)
    for name, entry in KVM_PARAMS.items():
        described = [bool(entry.xml), bool(entry.runtime)]
        assert sum(described) <= 1, f"{name}: both XML and runtime"
        assert sum(described) == 1 or entry.refuse, f"{name}: neither mapped nor refused"
        assert bool(entry.refuse) == bool(entry.refused), f"{name}: refusal undocumented"
        assert name in DOC.read_text()


@pytest.mark.parametrize("name", sorted(n for n, e in KVM_PARAMS.items() if e.xml))
def test_every_xml_parameter_changes_the_xml(name: str) -> None:
    example = EXAMPLES.get(name)
    if name in NO_EXAMPLE:
        assert example is None
        return
    assert example and name in example, f"{name} needs an example"
    baseline = dict(example, **{name: DEFAULTS[name]})
    changed_inst, block = instance(example)
    KVMHypervisor.CheckParameterSyntax(changed_inst.hvparams)
    base_inst, _ = instance(baseline)
    assert without_metadata(render(changed_inst, block)) != \
        without_metadata(render(base_inst, block)), f"{name} does not reach the XML"


@pytest.mark.parametrize("name", sorted(n for n, e in KVM_PARAMS.items() if e.runtime))
def test_runtime_parameters_leave_the_domain_alone(name: str) -> None:
    assert name in RUNTIME_SAMPLES, f"add a sample value for {name}"
    overrides = {name: RUNTIME_SAMPLES[name]}
    if name == C.HV_KVM_SPICE_IP_VERSION:
        overrides[C.HV_KVM_SPICE_BIND] = "192.0.2.1"
    if name == C.HV_VNC_X509_VERIFY:
        overrides[C.HV_VNC_X509] = "/etc/pki/vnc"  # Ganeti's rule: verify needs the path
    changed, block = instance(overrides)
    KVMHypervisor.CheckParameterSyntax(changed.hvparams)
    base, _ = instance({k: DEFAULTS[k] if k == name else v for k, v in overrides.items()})
    assert without_metadata(render(changed, block)) == without_metadata(render(base, block))
    assert f'name="{name}"' in render(changed, block)  # recorded in our metadata


@pytest.mark.parametrize("name", sorted(n for n, e in KVM_PARAMS.items() if e.refuse))
def test_refused_values_name_the_parameter(name: str) -> None:
    assert name in REFUSED_SAMPLES, f"add a refused sample value for {name}"
    inst, _ = instance(REFUSED_SAMPLES[name])
    with pytest.raises(HypervisorError, match=rf"Parameter '{name}' value .* is not supported"):
        KVMHypervisor.CheckParameterSyntax(inst.hvparams)


def test_every_refused_sample_is_a_table_refusal() -> None:
    assert set(REFUSED_SAMPLES) == {n for n, e in KVM_PARAMS.items() if e.refuse}


@pytest.mark.parametrize("disk_type", ["mtd", "pflash", "sd", "scsi", "scsi-generic"])
def test_each_refused_disk_type_says_why(disk_type: str) -> None:
    inst, _ = instance({C.HV_DISK_TYPE: disk_type})
    with pytest.raises(HypervisorError, match=rf"'disk_type' value '{disk_type}'.*: \w+"):
        KVMHypervisor.CheckParameterSyntax(inst.hvparams)


def test_every_example_belongs_to_an_xml_row() -> None:
    """A row renamed or moved to runtime leaves no stale example behind."""
    from hvlibvirt.xen_params import XEN_HVM_PARAMS, XEN_PVM_PARAMS
    from hvparam_examples import BY_HYPERVISOR
    tables = {C.HT_KVM: KVM_PARAMS, C.HT_XEN_PVM: XEN_PVM_PARAMS, C.HT_XEN_HVM: XEN_HVM_PARAMS}
    for hv_name, examples in BY_HYPERVISOR.items():
        assert set(examples) <= {n for n, e in tables[hv_name].items() if e.xml}, hv_name
