"""Tier 2: lifecycle, listing and info on libvirt's embedded test driver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from collections.abc import Iterator

import libvirt
import pytest

import hvlibvirt
from hvlibvirt import connection, constants as C
from hvlibvirt import tables
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance

pytestmark = pytest.mark.tier2

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
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable,
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


class _BeingDestroyed:
    """A domain as libxl's driver shows it after the guest's power-off: already shut
    off, still active until the destroy that follows (a few polls later here)."""

    def __init__(self, dom: libvirt.virDomain):
        self.dom, self.polls = dom, 0

    def state(self) -> list[int]:
        return [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN]

    def isActive(self) -> int:  # noqa: N802
        self.polls += 1
        if self.polls == 3:
            self.dom.destroy()
        return self.dom.isActive()

    def __getattr__(self, name: str):
        return getattr(self.dom, name)


def test_cleanup_waits_for_a_powered_off_domain_being_destroyed(
        hv: KVMHypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    inst, block = make_instance("tdl-dying")
    hv.StartInstance(inst, block, False)
    dying = _BeingDestroyed(connection.get(URI).lookupByName("tdl-dying"))
    monkeypatch.setattr(hv.host, "owned", lambda name: dying)
    hv.CleanupInstance("tdl-dying")
    assert dying.polls >= 3
    with pytest.raises(libvirt.libvirtError):
        connection.get(URI).lookupByName("tdl-dying")


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


def test_node_info_is_this_machine_plus_the_hypervisor_version(hv: KVMHypervisor,
                                                                frozen_meminfo: Path) -> None:
    info = hv.GetNodeInfo()
    assert info.pop(C.HV_NODEINFO_KEY_VERSION) == (0, 0, 2)  # the test driver's version 2
    assert info == KVMHypervisor.GetLinuxNodeInfo()
    assert hv.Verify() is None


def test_node_info_without_libvirt_keeps_the_linux_facts(frozen_meminfo: Path) -> None:
    """Ganeti's node_info/node_verify RPCs call GetNodeInfo unguarded."""
    hv = KVMHypervisor(uri="test:///nonexistent/node.xml")
    assert hv.GetNodeInfo() == KVMHypervisor.GetLinuxNodeInfo()
    assert "not usable" in hv.Verify()


def test_verify_reports_an_unusable_uri() -> None:
    msg = KVMHypervisor(uri="test:///nonexistent/node.xml").Verify()
    assert msg is not None and "test:///nonexistent/node.xml" in msg


def test_demo_command_runs_a_whole_lifecycle() -> None:
    out = subprocess.run([sys.executable, "-m", "hvlibvirt.cli", "demo"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for step in ("CheckParameterSyntax", "StartInstance", "<domain type='test'",
                 "ua-disk-932df160-7a22-4067", "BalloonInstanceMemory(384)", "StopInstance",
                 "CleanupInstance: instances left: []", "[xen-pvm] hypervisor",
                 "[xen-hvm] hypervisor", "<domain type='xen'", "machine='xenpv'>linux</type>",
                 "machine='xenfv'>hvm</type>", "<memballoon model='xen'/>"):
        assert step in out
    assert out.count("CleanupInstance: instances left: []") == 3
    assert "demo-pw" not in out  # the VNC password shows as *** at most


def test_user_shutdown_is_reported_until_cleanup(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-usd", user_shutdown=True)
    hv.StartInstance(inst, block, False)
    connection.get(URI).lookupByName("tdl-usd").shutdown()  # the guest powers off
    expected = ("tdl-usd", -1, 0, 0, HvInstanceState.SHUTDOWN, 0.0)
    assert hv.GetInstanceInfo("tdl-usd") == expected
    assert expected in hv.GetAllInstancesInfo()
    assert "tdl-usd" not in hv.ListInstances()
    hv.CleanupInstance("tdl-usd")
    assert hv.GetInstanceInfo("tdl-usd") is None


def test_our_soft_stop_is_not_a_user_shutdown(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-oursd", user_shutdown=True)
    hv.StartInstance(inst, block, False)
    hv.StopInstance(inst, timeout=5)
    assert hv.GetInstanceInfo("tdl-oursd") is None
    # ... and starting again clears the stop marker for the next guest poweroff.
    hv.StartInstance(inst, block, False)
    connection.get(URI).lookupByName("tdl-oursd").shutdown()
    assert hv.GetInstanceInfo("tdl-oursd")[4] == HvInstanceState.SHUTDOWN


def test_reboot_restarts_at_once(hv: KVMHypervisor, caplog) -> None:
    """As Ganeti's KVM reboots (stop and start QEMU), without waiting for the guest: a
    new domain from the same definition, and nothing falls back to anything."""
    inst, block = make_instance("tdl-reboot")
    hv.StartInstance(inst, block, False)
    before = hv.GetInstanceInfo("tdl-reboot")
    hv.RebootInstance(inst)
    after = hv.GetInstanceInfo("tdl-reboot")
    assert after[4] == HvInstanceState.RUNNING and after[1] != before[1]
    assert "reboot" not in caplog.text


def test_reboot_behaviour_exit_restarts_the_instance(hv: KVMHypervisor) -> None:
    """reboot_behavior=exit governs the guest's own reboots; Ganeti's reboot leaves the
    instance running, as with Ganeti's KVM (a new domain, started from its definition)."""
    inst, block = make_instance("tdl-exit", reboot_behavior="exit")
    hv.StartInstance(inst, block, False)
    before = hv.GetInstanceInfo("tdl-exit")[1]
    hv.RebootInstance(inst)
    after = hv.GetInstanceInfo("tdl-exit")
    assert after[4] == HvInstanceState.RUNNING and after[1] != before
    hv.StopInstance(inst, force=True)
    with pytest.raises(HypervisorError, match="not running"):
        hv.RebootInstance(inst)


def test_a_user_shut_down_instance_starts_the_way_ganeti_starts_it(hv: KVMHypervisor
                                                                   ) -> None:
    """Ganeti starts a SHUTDOWN (USER_down) instance by stopping it until it no longer
    reports SHUTDOWN, then starting it: StopInstance marks even a stopped domain."""
    inst, block = make_instance("tdl-userdown", user_shutdown=True)
    hv.StartInstance(inst, block, False)
    connection.get(URI).lookupByName("tdl-userdown").shutdown()
    assert hv.GetInstanceInfo("tdl-userdown")[4] == HvInstanceState.SHUTDOWN
    hv.StopInstance(inst, retry=False, timeout=120)
    assert hv.GetInstanceInfo("tdl-userdown") is None
    assert [i[0] for i in hv.GetAllInstancesInfo()] == []
    hv.StartInstance(inst, block, False)
    assert hv.GetInstanceInfo("tdl-userdown")[4] == HvInstanceState.RUNNING
    connection.get(URI).lookupByName("tdl-userdown").shutdown()  # the marker went too
    assert hv.GetInstanceInfo("tdl-userdown")[4] == HvInstanceState.SHUTDOWN


def test_hotplug_supported_needs_a_running_instance(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-hp")
    with pytest.raises(HotplugError, match="probably down"):
        hv.HotplugSupported(inst)
    hv.StartInstance(inst, block, False)
    assert hv.HotplugSupported(inst) is None


class _Node:
    name = "node1.example.com"


class _Group:
    @staticmethod
    def FillND(node):  # noqa: N802 - Ganeti's name
        return {"ssh_port": 2222}


def test_consoles_of_each_kind(hv: KVMHypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", URI)
    inst, block = make_instance("tdl-cons")
    serial = KVMHypervisor.GetInstanceConsole(inst, _Node(), _Group(), inst.hvparams, {})
    assert serial.Validate() and serial.kind == C.CONS_SSH
    assert (serial.host, serial.port, serial.user) == ("node1.example.com", 2222, "root")
    # Run on the primary node, the command finds that node's libvirt in its own
    # configuration: no URI of this process's.
    assert serial.command == hvlibvirt.helper_command("console", "--hypervisor", "kvm",
                                                      "tdl-cons")

    inst, block = make_instance("tdl-cons", serial_console=False,
                                vnc_bind_address="0.0.0.0")
    inst.network_port = 5912
    hv.StartInstance(inst, block, False)
    vnc = KVMHypervisor.GetInstanceConsole(inst, _Node(), _Group(), inst.hvparams, {})
    assert vnc.Validate()
    assert (vnc.kind, vnc.host, vnc.port, vnc.display) == (C.CONS_VNC, "node1.example.com",
                                                          5912, 12)
    spice = KVMHypervisor.GetInstanceConsole(
        inst, _Node(), _Group(), dict(inst.hvparams, vnc_bind_address="",
                                      spice_bind="192.0.2.4"), {})
    assert spice.Validate() and (spice.kind, spice.host, spice.port) == (
        C.CONS_SPICE, "192.0.2.4", 5912)
    none = KVMHypervisor.GetInstanceConsole(
        inst, _Node(), _Group(), dict(inst.hvparams, vnc_bind_address=""), {})
    assert none.Validate() and none.kind == C.CONS_MESSAGE and "tdl-cons" in none.message


def test_passwords_never_reach_the_log(hv: KVMHypervisor, tmp_path, caplog) -> None:
    secret = tmp_path / "vnc.pw"
    secret.write_text("hunter2-xyzzy\n")
    inst, block = make_instance("tdl-pw", vnc_bind_address="127.0.0.1",
                                vnc_password_file=str(secret))
    inst.network_port = 5913
    caplog.set_level("DEBUG", logger="hvlibvirt")
    hv.StartInstance(inst, block, False)
    assert "Domain XML for tdl-pw" in caplog.text and "passwd" in caplog.text
    assert "hunter2-xyzzy" not in caplog.text
    assert "hunter2-xyzzy" not in hv.domain_xml("tdl-pw")


def test_verify_instance_reports_drift(hv: KVMHypervisor) -> None:
    inst, block = make_instance("tdl-drift")
    hv.StartInstance(inst, block, False)
    assert hv.VerifyInstance(inst)
    inst.beparams["vcpus"] = 4
    inst.hvparams["disk_cache"] = "none"
    assert not hv.VerifyInstance(inst)


def test_verify_with_partial_hvparams_reports_instead_of_raising() -> None:
    """Ganeti passes the cluster's filled hvparams; a caller passing a few gets Ganeti's
    defaults for the rest, not a KeyError."""
    msg = KVMHypervisor(uri="test:///default").Verify(hvparams={"kvm_path": "/nonexistent/kvm"})
    assert msg is not None and "kvm_path '/nonexistent/kvm' does not exist" in msg


def test_forget_hv_kvm_runtime_ends_the_way_back(hv: KVMHypervisor, capsys) -> None:
    """``hvlibvirt forget-hv-kvm-runtime``: a handed-over instance's kept runtime goes
    from both definitions; a second run changes nothing; an unknown name is refused."""
    from hvlibvirt import cli, instance_metadata
    from hvlibvirt.handover import back

    inst, block = make_instance("tdl-handed")
    hv.StartInstance(inst, block, False)
    dom = connection.get(URI).lookupByName("tdl-handed")
    back.keep(dom, "RUNTIME")
    assert back.kept_runtime(back.migratable_root(dom)) == "RUNTIME"
    command = ["forget-hv-kvm-runtime", "--uri", URI, "tdl-handed"]
    assert cli.main(command) == 0
    assert "dropped" in capsys.readouterr().out
    assert back.kept_runtime(back.migratable_root(dom)) is None
    assert instance_metadata.read(dom, live=False).hv_kvm_runtime is None
    assert instance_metadata.read(dom).hvparams == inst.hvparams  # the rest stays
    assert cli.main(command) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert cli.main(["forget-hv-kvm-runtime", "--uri", URI, "tdl-nosuch"]) == 1
    assert "no hvlibvirt instance" in capsys.readouterr().err
