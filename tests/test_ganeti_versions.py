"""hvlibvirt follows the Ganeti that runs it: hvparam names, defaults, value types, valid
values and node memory arithmetic of Ganeti 3.0 and 3.1, from hvlibvirt's tables
(standalone, and ``hvlibvirt ganeti check`` for a cluster of another version) and from
the installed Ganeti (inside it).

Ganeti 3.1's modules come from its Debian package (``ganeti31_share``); a process can
import one Ganeti only, so what runs "inside 3.1" runs in a child interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvlibvirt import constants as C, get_hypervisor_class
from hvlibvirt import tables
from hvlibvirt.errors import HypervisorError
from hvlibvirt.ganeti import check as ganeti_check, facts
from hvlibvirt.node import linux_node_info

pytestmark = pytest.mark.tier1

REPO = Path(__file__).resolve().parent.parent
MEMINFO = REPO / "tests/fixtures/proc_meminfo_32g.txt"
CPUINFO = REPO / "tests/fixtures/proc_cpuinfo_4cpu_2sockets.txt"
HVS = (C.HT_KVM, C.HT_XEN_PVM, C.HT_XEN_HVM)
V31 = facts.from_tables((3, 1))


def _following(hv: str, ganeti: facts.Ganeti = V31) -> type:
    return get_hypervisor_class(hv).following(ganeti)


# -- standalone: hvlibvirt's tables ------------------------------------------------------
def test_standalone_follows_the_documented_version() -> None:
    assert facts.STANDALONE_VERSION == (3, 0)
    for hv in HVS:
        cls = get_hypervisor_class(hv)
        assert cls.GANETI.version == (3, 0)
        assert cls.DEFAULTS == tables.HVC_DEFAULTS[hv]


def test_tables_for_31_carry_its_changes() -> None:
    kvm = _following(C.HT_KVM)
    assert kvm.DEFAULTS[C.HV_DISK_DISCARD] == "ignore"
    assert kvm.DEFAULTS[C.HV_VHOST_NET] is True
    assert {k: v for k, v in kvm.DEFAULTS.items()
            if k not in (C.HV_DISK_DISCARD, C.HV_VHOST_NET)} == \
        {k: v for k, v in tables.HVC_DEFAULTS[C.HT_KVM].items()
         if k not in (C.HV_DISK_DISCARD, C.HV_VHOST_NET)}
    for hv in (C.HT_XEN_PVM, C.HT_XEN_HVM):
        cls = _following(hv)
        assert C.HV_XEN_CMD not in cls.PARAMETERS and C.HV_XEN_CMD not in cls.DEFAULTS
        assert set(cls.PARAMETERS) == set(tables.HVC_DEFAULTS[hv]) - {C.HV_XEN_CMD}


@pytest.mark.parametrize("hv", HVS)
def test_each_version_accepts_its_own_defaults(hv: str) -> None:
    for version in facts.KNOWN_VERSIONS:
        cls = _following(hv, facts.from_tables(version))
        cls.CheckParameterSyntax(dict(cls.DEFAULTS))


def test_xen_under_31_is_not_asked_for_xen_cmd_and_refuses_it() -> None:
    cls = _following(C.HT_XEN_PVM)
    with pytest.raises(HypervisorError, match="'xen_cmd' is not supported"):
        cls.CheckParameterSyntax({**cls.DEFAULTS, C.HV_XEN_CMD: "xl"})
    with pytest.raises(HypervisorError, match="'xen_cmd' is missing"):
        get_hypervisor_class(C.HT_XEN_PVM).CheckParameterSyntax(dict(cls.DEFAULTS))


def test_io_uring_only_from_31() -> None:
    kvm30, kvm31 = get_hypervisor_class(C.HT_KVM), _following(C.HT_KVM)
    hvp = {C.HV_KVM_DISK_AIO: C.HT_KVM_AIO_IO_URING}
    with pytest.raises(HypervisorError, match="'disk_aio'"):
        kvm30.CheckParameterSyntax({**kvm30.DEFAULTS, **hvp})
    kvm31.CheckParameterSyntax({**kvm31.DEFAULTS, **hvp})
    kvm31.CheckParameterSyntax({**kvm31.DEFAULTS, **hvp, C.HV_DISK_CACHE: "writeback"})


def test_discard_default_only_until_30() -> None:
    kvm30, kvm31 = get_hypervisor_class(C.HT_KVM), _following(C.HT_KVM)
    kvm30.CheckParameterSyntax({**kvm30.DEFAULTS, C.HV_DISK_DISCARD: "default"})
    with pytest.raises(HypervisorError, match="'disk_discard'.*ignore, unmap"):
        kvm31.CheckParameterSyntax({**kvm31.DEFAULTS, C.HV_DISK_DISCARD: "default"})


def test_unknown_version_is_refused() -> None:
    with pytest.raises(HypervisorError, match="3.0, 3.1"):
        facts.from_tables((2, 16))


def test_following_is_cached_and_leaves_the_class_alone() -> None:
    kvm = get_hypervisor_class(C.HT_KVM)
    assert _following(C.HT_KVM) is _following(C.HT_KVM)
    assert issubclass(_following(C.HT_KVM), kvm)
    assert kvm.DEFAULTS[C.HV_VHOST_NET] is False


# -- node memory ------------------------------------------------------------------------------
def test_memory_arithmetic_by_version() -> None:
    old = linux_node_info(str(MEMINFO), str(CPUINFO), (3, 0))
    new = linux_node_info(str(MEMINFO), str(CPUINFO), (3, 1))
    assert (old["memory_free"], old["memory_dom0"]) == (19500, 9000)
    available = next(int(line.split()[1]) for line in MEMINFO.read_text().splitlines()
                     if line.startswith("MemAvailable:")) // 1024
    assert new["memory_free"] == available
    assert new["memory_dom0"] == new["memory_total"] - available
    assert linux_node_info(str(MEMINFO), str(CPUINFO), (3, 4)) == new  # later: 3.1's
    assert _following(C.HT_KVM).GetLinuxNodeInfo(str(MEMINFO), str(CPUINFO)) == new
    assert get_hypervisor_class(C.HT_KVM).GetLinuxNodeInfo(str(MEMINFO), str(CPUINFO)) == old


# -- Ganeti 3.1's own modules ---------------------------------------------------------------
def test_tables_for_31_equal_ganeti_31(ganeti31_share: Path) -> None:
    installed = facts.from_share(str(ganeti31_share))
    assert installed.version == (3, 1)
    for hv in HVS:
        ours, theirs = _following(hv), _following(hv, installed)
        assert ours.DEFAULTS == theirs.DEFAULTS == installed.constants.HVC_DEFAULTS[hv]
        assert ours.TYPES == theirs.TYPES
        for name, check in ours.PARAMETERS.items():
            assert check[0] == theirs.PARAMETERS[name][0], name
    for name in ("HT_KVM_VALID_AIO_TYPES", "HT_VALID_DISCARD_TYPES"):
        row = next(r for r in get_hypervisor_class(C.HT_KVM).TABLE.values() if r.valid == name)
        assert sorted(row.values_in((3, 1))) == sorted(getattr(installed.constants, name))


INSIDE = r"""
import json, sys
from ganeti import errors                       # as in noded: Ganeti is imported first
from ganeti.hypervisor import hv_base
from hvlibvirt import get_hypervisor_class
meminfo, cpuinfo = sys.argv[1:3]
out = {}
for hv in ("kvm", "xen-pvm", "xen-hvm"):
    cls = get_hypervisor_class(hv)
    out[hv] = {"version": list(cls.GANETI.version), "names": sorted(cls.PARAMETERS)}
    from ganeti import constants
    cls.CheckParameterSyntax(dict(constants.HVC_DEFAULTS[hv]))
kvm = get_hypervisor_class("kvm")
try:
    kvm.CheckParameterSyntax(dict(constants.HVC_DEFAULTS["kvm"], disk_discard="default"))
except errors.HypervisorError as err:
    out["discard"] = str(err)
out["ours"] = kvm.GetLinuxNodeInfo(meminfo, cpuinfo)
out["theirs"] = hv_base.BaseHypervisor.GetLinuxNodeInfo(meminfo=meminfo, cpuinfo=cpuinfo)
print(json.dumps(out))
"""


def _inside(share: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVLIBVIRT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(share), str(REPO)])
    done = subprocess.run([sys.executable, "-c", INSIDE, str(MEMINFO), str(CPUINFO)],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_inside_ganeti_31_its_facts_are_followed(ganeti31_share: Path) -> None:
    out = _inside(ganeti31_share)
    for hv in HVS:
        assert out[hv]["version"] == [3, 1]
    assert C.HV_XEN_CMD not in out[C.HT_XEN_PVM]["names"]
    assert "disk_discard" in out["discard"] and "'default'" in out["discard"]
    topology = {"cpu_sockets", "cpu_nodes"}  # Ganeti does not read them
    assert {k: v for k, v in out["ours"].items() if k not in topology} == \
        {k: v for k, v in out["theirs"].items() if k not in topology}


def test_inside_ganeti_30_its_facts_are_followed(ganeti) -> None:
    gconst, _ = ganeti
    out = _inside(Path(gconst.__file__).resolve().parents[1])
    assert out[C.HT_KVM]["version"] == [3, 0]
    assert C.HV_XEN_CMD in out[C.HT_XEN_PVM]["names"]
    assert "discard" not in out
    assert out["ours"]["memory_free"] == out["theirs"]["memory_free"] == 19500


# -- hvlibvirt ganeti check ------------------------------------------------------------------
def _cluster(version: int, hv: str, hvparams: dict, instance: dict) -> dict:
    return {"version": version,
            "cluster": {"hvparams": {hv: hvparams}},
            "instances": {"u1": {"name": "inst1", "hypervisor": hv, "os": "debian",
                                 "hvparams": instance}}}


def test_check_judges_a_31_cluster_by_31(tmp_path: Path) -> None:
    """3.1's cfgupgrade removed xen_cmd and rewrote disk_discard=default: an instance
    that still says default is a problem there, and Xen's defaults are fine."""
    share_root = str(tmp_path)  # no installed Ganeti: hvlibvirt's tables for 3.1
    kvm_defaults = dict(_following(C.HT_KVM).DEFAULTS)
    config = _cluster(3010000, C.HT_KVM, kvm_defaults, {C.HV_DISK_DISCARD: "default"})
    found = list(ganeti_check.problems(config, (C.HT_KVM,), share_root))
    assert [where for where, _ in found] == ["inst1"]
    assert "disk_discard" in found[0][1]
    xen = dict(_following(C.HT_XEN_PVM).DEFAULTS)
    config = _cluster(3010000, C.HT_XEN_PVM, xen, {})
    assert list(ganeti_check.problems(config, (C.HT_XEN_PVM,), share_root)) == []
    config = _cluster(3010000, C.HT_XEN_PVM, xen, {C.HV_XEN_CMD: "xl"})
    assert "'xen_cmd' is not supported" in \
        list(ganeti_check.problems(config, (C.HT_XEN_PVM,), share_root))[0][1]
    config = _cluster(3000000, C.HT_XEN_PVM, {}, {})  # 3.0 fills in its xen_cmd
    assert list(ganeti_check.problems(config, (C.HT_XEN_PVM,), share_root)) == []


def test_check_uses_the_installed_ganeti_of_the_clusters_version(
        ganeti31_share: Path) -> None:
    share_root = str(ganeti31_share.parent)
    config = _cluster(3010000, C.HT_KVM, {}, {C.HV_KVM_DISK_AIO: C.HT_KVM_AIO_IO_URING})
    assert list(ganeti_check.problems(config, (C.HT_KVM,), share_root)) == []
    config = _cluster(3010000, C.HT_KVM, {}, {C.HV_DISK_DISCARD: "default"})
    assert [w for w, _ in ganeti_check.problems(config, (C.HT_KVM,), share_root)] == ["inst1"]


@pytest.mark.parametrize("version", [None, "3.1", 12, True])
def test_check_needs_the_clusters_version(version: object) -> None:
    config = {"cluster": {}, "instances": {}}
    if version is not None:
        config["version"] = version
    with pytest.raises(HypervisorError, match="version"):
        list(ganeti_check.problems(config, (C.HT_KVM,)))
