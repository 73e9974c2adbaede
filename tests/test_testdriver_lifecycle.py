"""Tier 2: lifecycle, listing and info on libvirt's embedded test driver."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import libvirt
import pytest
from lxml import etree

from hvlibvirt import connection, constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance

URI = "test:///default"


@pytest.fixture
def hv() -> Iterator[KVMHypervisor]:
    hv = KVMHypervisor(uri=URI)
    yield hv
    # Leave the per-process test driver as we found it.
    conn = connection.get(URI)
    for dom in conn.listAllDomains():
        if dom.name().startswith("tdl-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def make_instance(name: str, **hv_overrides) -> tuple[Instance, list]:
    hvparams = dict(C.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable,
                    **hv_overrides)
    disk = Disk(size=64)
    nic = NIC(mac="aa:00:00:12:34:56", nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                                  C.NIC_LINK: "br0"})
    inst = Instance(name=name, hvparams=hvparams, disks_info=[disk], nics=[nic],
                    beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})
    return inst, [(disk, "/dev/fake-disk", None)]


def test_start_info_balloon_stop_cleanup(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-one")
    hv.StartInstance(inst, block, False)
    assert "tdl-one" in hv.ListInstances()
    name, dom_id, mem, vcpus, state, cpu = hv.GetInstanceInfo("tdl-one")
    assert (name, mem, vcpus, state) == ("tdl-one", 256, 1, HvInstanceState.RUNNING)
    assert dom_id > 0 and cpu >= 0
    assert [i[0] for i in hv.GetAllInstancesInfo()] == ["tdl-one"]
    hv.BalloonInstanceMemory(inst, 160)
    assert hv.GetInstanceInfo("tdl-one")[2] == 160
    hv.StopInstance(inst, timeout=10)
    assert hv.GetInstanceInfo("tdl-one") is None
    assert "tdl-one" not in hv.ListInstances()
    hv.CleanupInstance("tdl-one")
    with pytest.raises(libvirt.libvirtError):
        connection.get(URI).lookupByName("tdl-one")


def test_paused_counts_as_running(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-paused")
    hv.StartInstance(inst, block, False)
    dom = connection.get(URI).lookupByName("tdl-paused")
    dom.suspend()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert hv.GetInstanceInfo("tdl-paused")[4] == HvInstanceState.RUNNING
    assert "tdl-paused" in hv.ListInstances()


def test_start_paused_unsupported_by_driver_leaves_nothing(hv: KVMHypervisor) -> None:
    # The test driver rejects VIR_DOMAIN_START_PAUSED; the failed start must not leave a
    # definition behind (the real daemon tier starts paused for real).
    inst, block = make_instance("tdl-nopause")
    with pytest.raises(HypervisorError, match="Failed to start instance tdl-nopause"):
        hv.StartInstance(inst, block, True)
    with pytest.raises(libvirt.libvirtError):
        connection.get(URI).lookupByName("tdl-nopause")


def test_starting_twice_is_refused(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-twice")
    hv.StartInstance(inst, block, False)
    with pytest.raises(HypervisorError, match="already running"):
        hv.StartInstance(inst, block, False)


def test_foreign_domains_are_not_instances(hv: KVMHypervisor) -> None:
    # test:///default ships a running domain called "test" that we did not create.
    assert connection.get(URI).lookupByName("test").isActive()
    assert "test" not in hv.ListInstances()
    assert hv.GetInstanceInfo("test") is None
    assert "test" not in [i[0] for i in hv.GetAllInstancesInfo()]
    hv.StopInstance(None, force=True, name="test")   # must not touch it
    assert connection.get(URI).lookupByName("test").isActive()
    inst, block = make_instance("test")
    with pytest.raises(HypervisorError, match="did not create"):
        hv.StartInstance(inst, block, False)


def test_stop_by_name_only(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-byname")
    hv.StartInstance(inst, block, False)
    hv.StopInstance(None, force=True, name="tdl-byname")
    assert hv.GetInstanceInfo("tdl-byname") is None


def test_stopping_what_does_not_run_is_not_an_error(hv: KVMHypervisor) -> None:
    inst, _ = make_instance("tdl-never")
    hv.StopInstance(inst)
    hv.StopInstance(inst, force=True)
    hv.CleanupInstance("tdl-never")


def test_cleanup_refuses_a_running_instance(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-live")
    hv.StartInstance(inst, block, False)
    with pytest.raises(HypervisorError, match="live instance"):
        hv.CleanupInstance("tdl-live")
    assert hv.GetInstanceInfo("tdl-live") is not None


def test_failed_start_leaves_nothing_behind(hv: KVMHypervisor) -> None:
    # The test driver offers no KVM, so kvm_flag=enabled must fail before anything is
    # defined.
    inst, block = make_instance("tdl-nokvm", kvm_flag="enabled")
    with pytest.raises(HypervisorError, match="kvm_flag"):
        hv.StartInstance(inst, block, False)
    with pytest.raises(libvirt.libvirtError):
        connection.get(URI).lookupByName("tdl-nokvm")


def test_bad_input_names_the_field(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-bad", migration_port=0)
    with pytest.raises(HypervisorError, match="migration_port"):
        hv.StartInstance(inst, block, False)
    with pytest.raises(HypervisorError, match="instance name"):
        hv.GetInstanceInfo("")
    inst, block = make_instance("tdl-mem")
    hv.StartInstance(inst, block, False)
    with pytest.raises(HypervisorError, match="memory size"):
        hv.BalloonInstanceMemory(inst, -5)
    with pytest.raises(HypervisorError, match="forced stop cannot have a timeout"):
        hv.StopInstance(inst, force=True, timeout=3)


def test_node_info_from_libvirt(hv: KVMHypervisor) -> None:
    info = hv.GetNodeInfo()
    conn = connection.get(URI)
    _model, _mem, cpus, _mhz, nodes, _sockets, _cores, _threads = conn.getInfo()
    caps = etree.fromstring(conn.getCapabilities().encode())
    socket_ids = set(caps.xpath("host/topology/cells/cell/cpus/cpu/@socket_id"))
    assert info["cpu_total"] == cpus and info["cpu_nodes"] == nodes == 2
    assert info["cpu_sockets"] == len(socket_ids) == 2  # the test driver's two packages
    assert info[C.HV_NODEINFO_KEY_VERSION] == (0, 0, 2)  # the test driver's version 2
    assert 0 < info["memory_free"] <= info["memory_total"]
    assert hv.Verify() is None


def test_verify_reports_an_unusable_uri() -> None:
    msg = KVMHypervisor(uri="test:///nonexistent/node.xml").Verify()
    assert msg is not None and "test:///nonexistent/node.xml" in msg


def test_demo_command_runs_a_whole_lifecycle() -> None:
    out = subprocess.run([sys.executable, "-m", "hvlibvirt.cli", "demo"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for step in ("CheckParameterSyntax", "StartInstance", "<domain type='test'",
                 "ua-disk-932df160-7a22-4067", "BalloonInstanceMemory(384)", "StopInstance",
                 "CleanupInstance: instances left: []"):
        assert step in out
