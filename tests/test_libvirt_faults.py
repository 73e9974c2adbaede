"""Tier 2: libvirt failing at every call index of every public method.

Each libvirt call this thread makes (libvirt.open and every virConnect/virDomain method
but two pure-Python accessors; tests/fault_injection.py, which the real tier's
counterpart tests/test_real_libvirt_faults.py shares) is counted; a run makes call
number N raise ``libvirtError``, for N = 1, 2, ... up to the number of calls the method
makes without a failure. The method must then succeed or raise our
``HypervisorError`` (``HotplugError`` for hotplug), carrying libvirt's message, within
a bounded time; and what the next ListInstances/GetInstanceInfo reports must match
libvirt's own view (read without faults), a refused start must leave no domain, and a
refused hotplug must leave the live XML, the definition and our metadata as they were
(a refused removal may have happened live: then the device must still be defined and
recorded, so that the next hotplug call settles it).

libvirt 9's test driver cannot attach, detach, resize or update devices, so every
hotplug change ends refused there (the refusal paths, and everything before them, are
what is covered); libvirt 11's attaches and detaches live but refuses the definition
(AFFECT_CONFIG), so its hot-adds are undone and its removals left to settle. It sends
no REBOOT event (the reboot's reset fallback runs) and has no migration
(MigrateInstance's helper is a stand-in that fails).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pytest
from lxml import etree

from hvlibvirt import connection, constants as C, events, helper, interface, node, ownership
from hvlibvirt.domain_xml import metadata
from hvlibvirt.domain_xml.identity import device_alias
from hvlibvirt.base import BaseHypervisor, HvInstanceState
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.hotplug import steps
from hvlibvirt.interface import HOTPLUG_METHODS
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk
from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor
import fault_injection
from fault_injection import INJECTED, Faults, carries_injected, counted, instrument
from test_testdriver_lifecycle import make_instance
from test_xen import files as files  # noqa: F401 - the fixture Xen instances need
from test_xen import FakeLibxlDomain, _NoEvents
from test_xen import make as make_xen

pytestmark = pytest.mark.tier2

URI = "test:///default"
BOUND = 10.0  # seconds any one call may take here (its waits are shortened below)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """Every libvirt entry point counted (and failed on demand) by one Faults."""
    state = instrument(monkeypatch)
    yield state
    state.disarm()


@pytest.fixture
def raw() -> Iterator[libvirt.virConnect]:
    """libvirt's view, outside the counting (held open so that the test driver's state
    lives as long as the test, whatever the library's cached connection does)."""
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@dataclass
class Case:
    """One method call on one kind of instance, in one starting state."""

    method: str
    state: str  # "absent", "running" or "stopped" before the call
    call: Callable[[BaseHypervisor, Any, list], Any]
    instance_changes: dict[str, Any] = field(default_factory=dict)


def _nic(mac: str = "aa:00:00:00:77:01") -> NIC:
    return NIC(mac=mac, nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "br1"})


class _Node:
    name = "node1.example.com"


def _moved_nic(inst: Any) -> Any:
    """The instance with its first NIC on another bridge (what RestoreInstance fixes)."""
    changed = copy.deepcopy(inst)
    changed.nics[0].nicparams = dict(changed.nics[0].nicparams, link="br9")
    return changed


CASES = [
    Case("StartInstance", "absent", lambda hv, i, b: hv.StartInstance(i, b, False)),
    Case("StopInstance", "running", lambda hv, i, b: hv.StopInstance(i, timeout=1)),
    Case("StopInstance", "running", lambda hv, i, b: hv.StopInstance(i, force=True)),
    Case("StopInstance", "running",
         lambda hv, i, b: hv.StopInstance(None, force=True, name=i.name)),
    Case("RebootInstance", "running", lambda hv, i, b: hv.RebootInstance(i)),
    Case("RebootInstance", "running", lambda hv, i, b: hv.RebootInstance(i),
         {C.HV_REBOOT_BEHAVIOR: C.INSTANCE_REBOOT_EXIT}),
    Case("CleanupInstance", "stopped", lambda hv, i, b: hv.CleanupInstance(i.name)),
    Case("CleanupInstance", "running", lambda hv, i, b: hv.CleanupInstance(i.name)),
    Case("ListInstances", "running", lambda hv, i, b: hv.ListInstances()),
    Case("GetInstanceInfo", "running", lambda hv, i, b: hv.GetInstanceInfo(i.name)),
    Case("GetInstanceInfo", "stopped", lambda hv, i, b: hv.GetInstanceInfo(i.name)),
    Case("GetAllInstancesInfo", "running", lambda hv, i, b: hv.GetAllInstancesInfo()),
    Case("GetNodeInfo", "running", lambda hv, i, b: hv.GetNodeInfo()),
    Case("Verify", "running", lambda hv, i, b: hv.Verify()),
    Case("Verify", "running", lambda hv, i, b: hv.Verify(i.hvparams)),
    Case("VerifyInstance", "running", lambda hv, i, b: hv.VerifyInstance(i)),
    Case("RestoreInstance", "running", lambda hv, i, b: hv.RestoreInstance(_moved_nic(i), b)),
    Case("BalloonInstanceMemory", "running",
         lambda hv, i, b: hv.BalloonInstanceMemory(i, 160)),
    Case("GetInstanceConsole", "running",
         lambda hv, i, b: type(hv).GetInstanceConsole(i, _Node(), None, i.hvparams, {})),
    Case("domain_xml", "running", lambda hv, i, b: hv.domain_xml(i.name)),
    Case("MigrationInfo", "running", lambda hv, i, b: hv.MigrationInfo(i)),
    Case("AcceptInstance", "absent",
         lambda hv, i, b: hv.AcceptInstance(i, _INFO[i.name], "node2")),
    Case("MigrateInstance", "running",
         lambda hv, i, b: hv.MigrateInstance("cluster", i, "node2", True)),
    Case("GetMigrationStatus", "running", lambda hv, i, b: hv.GetMigrationStatus(i)),
    Case("FinalizeMigrationSource", "running",
         lambda hv, i, b: hv.FinalizeMigrationSource(i, False, True)),
    Case("FinalizeMigrationSource", "stopped",
         lambda hv, i, b: hv.FinalizeMigrationSource(i, True, True)),
    Case("FinalizeMigrationDst", "running",
         lambda hv, i, b: hv.FinalizeMigrationDst(i, "", True)),
    Case("FinalizeMigrationDst", "stopped",
         lambda hv, i, b: hv.FinalizeMigrationDst(i, "", False)),
    Case("HotplugSupported", "running", lambda hv, i, b: hv.HotplugSupported(i)),
    Case("VerifyHotplugSupport", "running", lambda hv, i, b: hv.VerifyHotplugSupport(
        i, C.HOTPLUG_ACTION_ADD, C.HOTPLUG_TARGET_NIC)),
    Case("HotAddDevice", "running", lambda hv, i, b: hv.HotAddDevice(
        i, C.HOTPLUG_TARGET_NIC, _nic(), None, 1)),
    Case("HotAddDevice", "running", lambda hv, i, b: hv.HotAddDevice(
        i, C.HOTPLUG_TARGET_DISK, Disk(size=64), ("/dev/fake-new", None), 1)),
    Case("HotDelDevice", "running", lambda hv, i, b: hv.HotDelDevice(
        i, C.HOTPLUG_TARGET_NIC, i.nics[0], None, 1)),
    Case("HotModDevice", "running", lambda hv, i, b: hv.HotModDevice(
        i, C.HOTPLUG_TARGET_NIC, _moved_nic(i).nics[0], None, 1)),
    Case("ResizeDisk", "running", lambda hv, i, b: hv.ResizeDisk(
        i, i.disks_info[0], 1 << 30)),
]
_INFO: dict[str, str] = {}  # instance name -> its migratable XML (AcceptInstance's info)
HYPERVISORS = {"kvm": KVMHypervisor, "xen-pvm": XenPvmHypervisor, "xen-hvm": XenHvmHypervisor}


def _instance(hv_name: str, files: dict[str, str], changes: dict[str, Any]
              ) -> tuple[Any, list]:
    if hv_name == "kvm":
        inst, block = make_instance("flt-kvm", serial_console=False,
                                    vnc_bind_address="0.0.0.0", **changes)
        inst.network_port = 5917
        return inst, block
    return make_xen(hv_name, files, name=f"flt-{hv_name}", **changes)


def _remove(raw: libvirt.virConnect, name: str) -> None:
    try:
        dom = raw.lookupByName(name)
    except libvirt.libvirtError:
        return
    ownership.forget(URI, dom)
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _prepare(hv: BaseHypervisor, raw: libvirt.virConnect, case: Case, inst: Any,
             block: list) -> None:
    _remove(raw, inst.name)
    if case.method == "AcceptInstance":  # the info of an instance that runs elsewhere
        hv.StartInstance(inst, block, False)
        _INFO[inst.name] = hv.MigrationInfo(inst)
        _remove(raw, inst.name)
    if case.state == "absent":
        return
    hv.StartInstance(inst, block, False)
    if case.state == "stopped":
        raw.lookupByName(inst.name).destroy()


def _libvirt_view(raw: libvirt.virConnect, name: str) -> tuple[str, str, bool] | None:
    """(live XML, persistent XML, active) of ``name`` as libvirt has it, or None."""
    try:
        dom = raw.lookupByName(name)
    except libvirt.libvirtError:
        return None
    return (dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            bool(dom.isActive()))


REMOVALS = ("HotDelDevice", "HotModDevice")  # cases removing the instance's first NIC
# What a read of a running instance returns, when it returns, must be the truth (a
# running instance left out is reported down to Ganeti).
TRUE_READS: dict[str, Callable[[Any, str], bool]] = {
    "ListInstances": lambda names, name: name in names,
    "GetInstanceInfo": lambda info, name: info is not None and info[0] == name
    and info[4] == HvInstanceState.RUNNING,
    "GetAllInstancesInfo": lambda infos, name: name in {i[0] for i in infos},
}


def _left_to_settle(view: tuple[str, str, bool] | None, alias: str) -> bool:
    """Whether ``alias`` is gone from the live domain but still in the definition and
    our metadata: a removal done live whose definition update failed, which the next
    hotplug call's ``settle`` finishes."""
    if view is None:
        return False
    live, config = (etree.fromstring(xml.encode()) for xml in view[:2])
    meta = metadata.find(live)
    recorded = meta is not None and alias in [d[2] for d in metadata.parse(meta).devices]
    return (recorded and not live.xpath("devices/*[alias/@name=$a]", a=alias)
            and bool(config.xpath("devices/*[alias/@name=$a]", a=alias)))


def _check_consistent(hv: BaseHypervisor, raw: libvirt.virConnect, name: str,
                      where: str) -> None:
    """What the library reports of ``name`` is what libvirt has."""
    view = _libvirt_view(raw, name)
    running = view is not None and view[2]
    assert (name in hv.ListInstances()) == running, where
    info = hv.GetInstanceInfo(name)
    if running:
        assert info is not None and info[0] == name and info[4] == HvInstanceState.RUNNING, \
            where
    else:
        assert info is None or info[4] == HvInstanceState.SHUTDOWN, where
    listed = {i[0]: i[4] for i in hv.GetAllInstancesInfo()}  # the cpu time moves on
    assert listed.get(name) == (info[4] if info else None), where


@pytest.mark.parametrize("hv_name", sorted(HYPERVISORS))
@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c.method}-{c.state}-{n}" for n, c in enumerate(CASES)])
def test_libvirt_failing_at_every_call(hv_name: str, index: int, faults: Faults,
                                       raw: libvirt.virConnect, files: dict[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[index]
    monkeypatch.setenv(HYPERVISORS[hv_name].URI_ENV, URI)  # the console's classmethod
    monkeypatch.setattr(helper, "helper_command", lambda *_a: [
        sys.executable, "-c", "print('no migration on the test driver'); raise SystemExit(1)"])
    hv = HYPERVISORS[hv_name](uri=URI)
    for wait in ("REBOOT_TIMEOUT", "SOFT_STOP_GRACE", "DESTROY_SETTLE", "HOTPLUG_TIMEOUT"):
        setattr(hv, wait, 0.1)
    inst, block = _instance(hv_name, files, case.instance_changes)
    error = HotplugError if case.method in HOTPLUG_METHODS else HypervisorError
    never_raises = case.method in ("GetNodeInfo", "Verify")
    try:
        fail_at, total = 0, None
        while total is None or fail_at <= total:
            _prepare(hv, raw, case, inst, block)
            before = _libvirt_view(raw, inst.name)
            where = f"{hv_name} {case.method} ({case.state}), libvirt failing at call " \
                    f"{fail_at or 'none'}"
            faults.arm(fail_at or None)
            began = time.monotonic()
            try:
                result, raised = case.call(hv, inst, block), None
            except Exception as err:  # noqa: BLE001 - the type is what is checked
                result, raised = None, err
            finally:
                faults.disarm()
            took = time.monotonic() - began
            if total is None:
                total = len(faults.calls)
            calls = faults.calls
            assert took < BOUND, f"{where}: took {took:.1f}s; calls {calls}"
            if raised is not None:
                assert isinstance(raised, error) and not never_raises, \
                    f"{where}: raised {type(raised).__name__}: {raised}; calls {calls}"
                if fail_at and carries_injected(raised):
                    assert INJECTED in str(raised), f"{where}: libvirt's message lost: " \
                                                    f"{raised}"
            if raised is None and case.method in TRUE_READS and case.state == "running":
                assert TRUE_READS[case.method](result, inst.name), \
                    f"{where}: returned {result!r}; calls {calls}"
            _check_consistent(hv, raw, inst.name, where)
            after = _libvirt_view(raw, inst.name)
            if case.method == "StartInstance" and raised is not None:
                assert after is None, f"{where}: a refused start left a domain; calls {calls}"
            if case.method in HOTPLUG_METHODS and raised is not None and after != before:
                alias = device_alias(C.HOTPLUG_TARGET_NIC, inst.nics[0].uuid)
                assert case.method in REMOVALS and _left_to_settle(after, alias), \
                    f"{where}: a refused hotplug changed the domain; calls {calls}"
            fail_at += 1
    finally:
        _remove(raw, inst.name)


@pytest.mark.parametrize("cls", list(HYPERVISORS.values()), ids=list(HYPERVISORS))
def test_every_interface_method_is_guarded(cls: type) -> None:
    """The mechanism covers each class's own methods and the ones it inherits."""
    for name in interface.METHODS:
        if hasattr(cls, name):
            raw = next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)
            func = getattr(raw, "__func__", raw)
            assert getattr(func, "__hvlibvirt_guarded__", False), f"{cls.__name__}.{name}"


def test_a_converted_error_names_the_method_the_instance_and_libvirts_message(
        faults: Faults, raw: libvirt.virConnect) -> None:
    hv = KVMHypervisor(uri=URI)
    inst, block = make_instance("flt-kvm")
    try:
        hv.StartInstance(inst, block, False)
        faults.arm(None)
        hv.VerifyInstance(inst)
        at = faults.calls.index("virDomain.isActive") + 1  # the state read after the lookup
        faults.arm(at)
        with pytest.raises(HypervisorError) as caught:
            hv.VerifyInstance(inst)
        faults.disarm()
        assert str(caught.value) == ("VerifyInstance failed for instance flt-kvm: libvirt: "
                                     f"{INJECTED} at call {at} (virDomain.isActive)")
        assert isinstance(caught.value.__cause__, libvirt.libvirtError)
        faults.arm(None)
        hv.HotplugSupported(inst)
        faults.arm(faults.calls.index("virConnect.lookupByName") + 1)
        with pytest.raises(HotplugError, match="flt-kvm.*injected"):
            hv.HotplugSupported(inst)
    finally:
        faults.disarm()
        _remove(raw, inst.name)


# -- hotplug with attach semantics ---------------------------------------------------------
class FakeQemuDomain(FakeLibxlDomain):
    """The libxl stand-in with detach by alias, as QEMU's driver has it."""

    def detachDeviceAlias(self, alias: str, flags: int) -> None:  # noqa: N802
        devices = self._tree(flags).find("devices")
        for dev in devices.xpath("*[alias/@name=$a]", a=alias):
            devices.remove(dev)
            return
        raise libvirt.libvirtError(f"no device with alias {alias}")


class _LiveOnlyDomain(FakeQemuDomain):
    """libvirt 11's test driver: it attaches and detaches live but refuses the persistent
    definition (AFFECT_CONFIG); its first ``detach_failures`` detaches fail."""

    def __init__(self, xml: str, detach_failures: int) -> None:
        super().__init__(xml)
        self.detach_failures = detach_failures

    def attachDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802
        if flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            raise fault_injection.error("unsupported flags (0x2)")
        super().attachDeviceFlags(xml, flags)

    def detachDeviceAlias(self, alias: str, flags: int) -> None:  # noqa: N802
        if self.detach_failures:
            self.detach_failures -= 1
            raise fault_injection.error(INJECTED)
        super().detachDeviceAlias(alias, flags)


@pytest.mark.parametrize("detach_failures", [0, 1, 2])
def test_a_live_attach_the_definition_refuses_is_taken_back(detach_failures: int) -> None:
    """Undone even when its first detach fails (a device only live is in no record or
    definition that would take it away later); when both fail, the error says that the
    instance may keep it."""
    dom = _LiveOnlyDomain("<domain type='kvm'><name>g</name><devices/></domain>",
                          detach_failures)
    nic = etree.fromstring("<interface type='bridge'><mac address='aa:00:00:00:77:09'/>"
                           "<source bridge='br1'/><alias name='ua-nic-9'/></interface>")
    with pytest.raises(HotplugError, match="persistent definition refused") as caught:
        steps.attach(dom, nic, "hot-add of nic 9")
    kept = detach_failures > 1
    assert bool(dom.live.xpath("devices/*[alias/@name='ua-nic-9']")) == kept
    assert ("may keep it until it stops" in str(caught.value)) == kept


def _where(fake: FakeLibxlDomain, alias: str) -> tuple[bool, bool, bool, bool]:
    """Whether ``alias`` is in the live devices, the persistent ones, and the live and
    persistent metadata."""
    def recorded(tree: etree._Element) -> bool:
        meta = metadata.find(tree)
        return meta is not None and alias in [d[2] for d in metadata.parse(meta).devices]

    return (bool(fake.live.xpath("devices/*[alias/@name=$a]", a=alias)),
            bool(fake.config.xpath("devices/*[alias/@name=$a]", a=alias)),
            recorded(fake.live), recorded(fake.config))


def _snapshot(fake: FakeLibxlDomain) -> list[Any]:
    """The stand-in's live and persistent XML without our metadata, and the metadata
    parsed (a metadata write serialises it anew, as libvirt does)."""
    found = []
    for tree in (fake.live, fake.config):
        tree = copy.deepcopy(tree)
        meta = metadata.find(tree)
        found.append(metadata.parse(meta) if meta is not None else None)
        if meta is not None:
            meta.getparent().remove(meta)
        found.append(etree.tostring(tree))
    return found


HOTPLUG_KINDS = [("kvm", C.HOTPLUG_TARGET_NIC), ("kvm", C.HOTPLUG_TARGET_DISK),
                 ("xen-pvm", C.HOTPLUG_TARGET_NIC), ("xen-pvm", C.HOTPLUG_TARGET_DISK),
                 ("xen-hvm", C.HOTPLUG_TARGET_NIC)]


@pytest.mark.parametrize("action", ["add", "remove"])
@pytest.mark.parametrize("hv_name,dev_type", HOTPLUG_KINDS)
def test_hotplug_with_attach_semantics_failing_at_every_call(
        hv_name: str, dev_type: str, action: str, faults: Faults, raw: libvirt.virConnect,
        files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test driver cannot attach: a stand-in domain with the drivers' attach and
    detach semantics on its live and persistent XML (started from a test-driver domain's
    own XML) takes its place, its calls counted and failed like libvirt's. Whatever call
    fails, the device ends up in the live domain, the definition and our metadata, or
    in none of them; and a refused hot-add changes nothing."""
    hv = HYPERVISORS[hv_name](uri=URI)
    hv.HOTPLUG_TIMEOUT = 0.1
    inst, block = _instance(hv_name, files, {})
    device = _nic() if dev_type == C.HOTPLUG_TARGET_NIC else Disk(size=64)
    extra = ("/dev/fake-new", None) if dev_type == C.HOTPLUG_TARGET_DISK else None
    alias = device_alias(dev_type, device.uuid)
    monkeypatch.setattr(steps, "DomainEventWaiter", _NoEvents)  # detaches are at once
    _remove(raw, inst.name)
    hv.StartInstance(inst, block, False)
    xml = raw.lookupByName(inst.name).XMLDesc(0)
    _remove(raw, inst.name)
    try:
        fail_at, total = 0, None
        while total is None or fail_at <= total:
            fake = FakeQemuDomain(xml)
            for name in ("lookup", "owned"):
                monkeypatch.setattr(hv.host, name, lambda _name, fake=fake: fake)
            if action == "remove":
                hv.HotAddDevice(inst, dev_type, device, extra, 1)
            for name in [n for n in dir(fake) if not n.startswith("_") and n != "connect"]:
                if callable(getattr(fake, name)):
                    setattr(fake, name, counted(faults, f"stand-in.{name}", getattr(fake, name)))
            before = _snapshot(fake)
            where = f"{hv_name} hot-{action} of a {dev_type}, failing at call {fail_at or 'none'}"
            faults.arm(fail_at or None)
            try:
                if action == "add":
                    hv.HotAddDevice(inst, dev_type, device, extra, 1)
                else:
                    hv.HotDelDevice(inst, dev_type, device, extra, 1)
                raised = None
            except Exception as err:  # noqa: BLE001 - the type is what is checked
                raised = err
            finally:
                faults.disarm()
            if total is None:
                total = len(faults.calls)
                assert raised is None, f"{where}: {raised}"
            calls = faults.calls
            assert raised is None or isinstance(raised, HotplugError), \
                f"{where}: raised {type(raised).__name__}: {raised}; calls {calls}"
            state = _where(fake, alias)
            if action == "remove" and raised is not None and state[2:] == (True, True):
                # Recorded still, so the next hotplug call settles it: try one.
                faults.disarm()
                hv.HotDelDevice(inst, dev_type, device, extra, 1)
                state = _where(fake, alias)
            assert state in ((True,) * 4, (False,) * 4), \
                f"{where}: live, definition, metadata disagree: {state}; calls {calls}"
            if raised is not None and action == "add":
                assert _snapshot(fake) == before, f"{where}: a refused hot-add changed the domain; {raised}; calls {calls}"
            fail_at += 1
    finally:
        _remove(raw, inst.name)


def test_an_event_registration_left_behind_is_removed_before_the_next(
        raw: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt refuses a second callback for a domain and event while one is tracked: a
    waiter whose deregistration failed (twice) leaves it for the next waiter on that
    connection to remove, rather than failing every later hot-remove of the instance."""
    hv = KVMHypervisor(uri=URI)
    inst, block = make_instance("flt-events")
    removed = libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED
    try:
        hv.StartInstance(inst, block, False)
        dom = connection.get(URI, events=True).lookupByName(inst.name)
        deregister = libvirt.virConnect.domainEventDeregisterAny

        def refused(_conn: libvirt.virConnect, _callback_id: int) -> int:
            raise fault_injection.error(INJECTED)

        monkeypatch.setattr(libvirt.virConnect, "domainEventDeregisterAny", refused)
        with events.DomainEventWaiter(dom, removed):
            pass
        assert len(events._stale) == 1
        monkeypatch.setattr(libvirt.virConnect, "domainEventDeregisterAny", deregister)
        with events.DomainEventWaiter(dom, removed):  # "event callback already tracked"
            assert not events._stale
    finally:
        _remove(raw, inst.name)


def test_an_os_error_is_converted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """This node's files fail too (/proc unreadable): still our error, naming the call."""
    def unreadable(*_args: Any) -> None:
        raise PermissionError(13, "Permission denied", "/proc/meminfo")

    monkeypatch.setattr(node, "linux_node_info", unreadable)
    with pytest.raises(HypervisorError, match="GetNodeInfo failed: .*Permission denied"):
        KVMHypervisor(uri=URI).GetNodeInfo()
