"""Tier 3: libvirt failing at every call index of KVM's public methods, on a private
libvirtd running QEMU (TCG) guests: the real tier's counterpart of
tests/test_libvirt_faults.py, with the same injection (tests/fault_injection.py).

For each method, a run without faults counts the libvirt calls it makes (it must
succeed here); then run N makes call N raise, for N = 1 ... that count. Each run must
end within ``BOUND`` seconds, raising nothing or HypervisorError (HotplugError for
hotplug) carrying libvirt's message; afterwards:

* what ListInstances, GetInstanceInfo and GetAllInstancesInfo report is what libvirt
  has (read on a connection of our own, outside the counting), and a value the faulted
  call returned is the truth too;
* a refused start leaves no domain; every ``ua-`` device is in the live XML, the
  persistent definition and our metadata, or in none of them - except a removal the
  guest completed whose definition or record update failed, which the next hotplug
  call must settle (it is made, and checked);
* a refused hot-add leaves the domain as it was once the guest has released what the
  rollback took back;
* at the end of each hotplug method, the guest's own device list matches the live XML.

Guests are shared and never rebooted per index: a booted lab guest for the methods a
guest must answer (hot-remove, hot-modify) and the read-only ones, an instance without
an OS (SeaBIOS only, started in a fraction of a second) for start, stop, reboot and
cleanup. Between runs only a changed state is put back (a start that went through is
stopped, a device a run added or removed is removed or added again).

The migration methods that need a second daemon (MigrateInstance, the finalizations
of a completed migration, the target's of a failed one) are in
tests/test_real_migration_faults.py.

KVM on 'pc' machines only: the Xen hypervisors' real counterpart runs in tier 6's
nested Xen (tests/test_real_xen_faults.py, the same injection armed in dom0's node
child); q35 hotplug runs the same flow (hvlibvirt/hotplug) behind root ports and is left
out to keep this module under two minutes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libvirt
import pytest
from lxml import etree

from fault_injection import INJECTED, Faults, carries_injected, instrument
from hvlibvirt import constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.domain_xml.identity import device_alias
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Instance
from lab.daemon import LibvirtDaemon
from lab.guest import GuestImage
from lab.instances import BOOT, READY, Running, make_instance, start
from test_real_faults import Seen, guest_agrees, qemu_of, seen

pytestmark = [pytest.mark.tier3, pytest.mark.real]

DISK, NIC_T = C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC
BOUND = 30.0   # seconds one call may take (a removal waits up to HOTPLUG_TIMEOUT)
RELEASE = 20.0  # seconds the guest gets to release a device a rollback or removal took
SPARE_BRIDGE = "hvlbr9"  # RestoreInstance moves a NIC there (made in daemon A's netns)
_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


# ------------------------------------------------------------------------- the lab

class Tally(Protocol):
    """What ``every_index`` records each method's figures in."""

    totals: dict[str, tuple[int, float]]  # label -> calls, seconds


@dataclass
class Lab:
    hv: KVMHypervisor
    daemon: LibvirtDaemon
    workdir: Path
    linux: Running                     # a booted lab guest
    bare: Instance                     # an instance without an OS
    bare_block: list[Any]
    totals: dict[str, tuple[int, float]] = field(default_factory=dict)  # calls, seconds


@pytest.fixture(scope="module")
def lab(libvirt_daemon: LibvirtDaemon, guest_image: GuestImage,
        tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
        ) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("rfaults")
    hv = KVMHypervisor(uri=libvirt_daemon.uri, serial_log_dir=str(workdir))
    hv.SOFT_STOP_GRACE = 0.3  # the OS-less guest never answers the power button
    libvirt_daemon.run(["ip", "link", "add", SPARE_BRIDGE, "type", "bridge"], check=False)
    libvirt_daemon.run(["ip", "link", "set", SPARE_BRIDGE, "up"])
    bare, bare_block = make_instance("rf-bare", None, workdir)
    names = ["rf-lx", "rf-bare"]
    lab = None
    try:
        linux = start(hv, "rf-lx", guest_image, workdir)
        linux.serial.wait(READY, BOOT)
        lab = Lab(hv, libvirt_daemon, workdir, linux, bare, bare_block)
        yield lab
    finally:
        for name in names:
            hv.StopInstance(None, force=True, name=name)
            hv.CleanupInstance(name)
        libvirt_daemon.run(["ip", "link", "del", SPARE_BRIDGE], check=False)
        if lab is not None:
            summary(request, lab)


def summary(request: pytest.FixtureRequest, lab: Tally,
            module: str = "test_real_libvirt_faults") -> None:
    """Each method's call count and time, into the run's output."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not lab.totals:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{module}: libvirt failed at every call of")
        for label, (calls, took) in lab.totals.items():
            reporter.write_line(f"  {label}: {calls} calls, {took:.1f} s")


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    state = instrument(monkeypatch)
    yield state
    state.disarm()


# ------------------------------------------------------------------------- the runs

@dataclass
class Run:
    """One call of the method, libvirt failing at call ``fail_at`` (0: none)."""

    fail_at: int
    raised: BaseException | None
    result: Any
    calls: list[str]
    where: str

    def called(self, what: str) -> bool:
        """Whether the call went through libvirt's ``what`` (the failed call excluded)."""
        done = self.calls[:self.fail_at - 1] if self.fail_at else self.calls
        return what in done


def every_index(lab: Tally, faults: Faults, label: str, call: Callable[[], Any],
                prepare: Callable[[], None], check: Callable[[Run], None],
                error: type[HypervisorError] | None = HypervisorError) -> int:
    """Run ``call`` without faults, then failing at each of its call indexes; before
    each run ``prepare`` puts back the starting state, after it ``check`` checks. The
    one error ``call`` may raise is ``error`` (None: none at all). Returns the number
    of calls."""
    fail_at, total, began = 0, None, time.monotonic()
    while total is None or fail_at <= total:
        prepare()
        where = f"{label}, libvirt failing at call {fail_at or 'none'}"
        faults.arm(fail_at or None)
        started = time.monotonic()
        result, raised = None, None
        try:
            result = call()
        except Exception as err:  # noqa: BLE001 - the type is what is checked
            raised = err
        finally:
            faults.disarm()
        took = time.monotonic() - started
        calls = list(faults.calls)
        if total is None:
            assert raised is None, f"{where}: {raised!r}; calls {calls}"
            total = len(calls)
        assert took < BOUND, f"{where}: took {took:.1f}s; calls {calls}"
        if raised is not None:
            assert error is not None and isinstance(raised, error), \
                f"{where}: raised {type(raised).__name__}: {raised}; calls {calls}"
            if carries_injected(raised):
                assert INJECTED in str(raised), f"{where}: libvirt's message lost: {raised}"
        check(Run(fail_at, raised, result, calls, where))
        fail_at += 1
    lab.totals[label] = (total, time.monotonic() - began)
    return total


# ------------------------------------------------------------------------- what libvirt has

def reported(lab: Lab, name: str, where: str) -> Seen | None:
    """What the library reports of ``name`` is what libvirt has; returns the latter."""
    found = seen(lab.daemon.uri, name)
    running = found is not None and found.active
    assert (name in lab.hv.ListInstances()) == running, where
    info = lab.hv.GetInstanceInfo(name)
    if running:
        assert info is not None and info[0] == name and info[4] == HvInstanceState.RUNNING, \
            (where, info)
    else:
        assert info is None, (where, info)
    listed = {i[0]: i[4] for i in lab.hv.GetAllInstancesInfo()}
    assert listed.get(name) == (info[4] if info else None), where
    return found


def whole(found: Seen | None, where: str) -> None:
    """Nothing half-attached: every device in all three places, or in none."""
    assert found is not None, f"{where}: the instance is gone"
    assert found.live == found.config == found.meta, f"{where}: {found}"
    assert found.pending <= found.live, f"{where}: {found}"


def left_to_settle(found: Seen, alias: str) -> bool:
    """A removal the guest completed whose record (and maybe definition) is still
    there: what the next hotplug call's settle finishes."""
    return alias not in found.live and alias in found.meta


def wait_released(lab: Lab, name: str, alias: str) -> Seen:
    """What libvirt has once the guest released ``alias`` (RELEASE at most)."""
    deadline = time.monotonic() + RELEASE
    while True:
        found = seen(lab.daemon.uri, name)
        assert found is not None
        if alias not in found.live:
            return found
        assert time.monotonic() < deadline, f"the guest kept {alias}: {found}"
        time.sleep(0.1)


def domain(lab: Lab, name: str) -> libvirt.virDomain:
    return lab.hv.host.lookup(name)  # outside the counting: only read while disarmed


# ------------------------------------------------------------------------- lifecycle

def _state(found: Seen | None) -> str:
    return "absent" if found is None else "running" if found.active else "stopped"


def _bare_state(lab: Lab, state: str) -> None:
    """The OS-less instance absent, stopped (defined) or running."""
    hv, inst = lab.hv, lab.bare
    now = _state(seen(lab.daemon.uri, inst.name))
    if now == state:
        return
    if now == "running":
        hv.StopInstance(inst, force=True)
    if state == "absent":
        hv.CleanupInstance(inst.name)
        return
    hv.StartInstance(inst, lab.bare_block, False)
    if state == "stopped":
        hv.StopInstance(inst, force=True)


def _lifecycle(lab: Lab, faults: Faults, label: str, state: str, done: str,
               call: Callable[[], Any]) -> None:
    """``call`` from ``state``; one that returned leaves the instance ``done``."""
    name = lab.bare.name

    def check(run: Run) -> None:
        found = reported(lab, name, run.where)
        if found is not None:
            whole(found, run.where)
        if run.raised is None:
            assert _state(found) == done, f"{run.where}: {_state(found)}"
        elif label == "StartInstance":
            assert found is None and qemu_of(name) is None, \
                f"{run.where}: a refused start left a domain or its QEMU"

    every_index(lab, faults, label, call, lambda: _bare_state(lab, state), check)


def test_start_instance(lab: Lab, faults: Faults) -> None:
    _lifecycle(lab, faults, "StartInstance", "absent", "running",
               lambda: lab.hv.StartInstance(lab.bare, lab.bare_block, False))


@pytest.mark.parametrize("force", [True, False], ids=["forced", "soft"])
def test_stop_instance(lab: Lab, faults: Faults, force: bool) -> None:
    # The OS-less guest ignores the power button: a soft stop returns with it running.
    _lifecycle(lab, faults, f"StopInstance({'forced' if force else 'soft'})", "running",
               "stopped" if force else "running",
               lambda: lab.hv.StopInstance(lab.bare, force=force,
                                           timeout=None if force else 1))


def test_reboot_instance(lab: Lab, faults: Faults) -> None:
    _lifecycle(lab, faults, "RebootInstance", "running", "running",
               lambda: lab.hv.RebootInstance(lab.bare))


def test_cleanup_instance(lab: Lab, faults: Faults) -> None:
    _lifecycle(lab, faults, "CleanupInstance", "stopped", "absent",
               lambda: lab.hv.CleanupInstance(lab.bare.name))


# ------------------------------------------------------------------------- reads and changes

def _linux_check(lab: Lab, returned: Callable[[Any], bool] | None = None
                 ) -> Callable[[Run], None]:
    """After a run on the booted guest: still running and reported so, nothing half
    attached, and what the call returned (if it returned) passes ``returned``."""
    name = lab.linux.inst.name

    def check(run: Run) -> None:
        found = reported(lab, name, run.where)
        assert found is not None and found.active, run.where
        whole(found, run.where)
        if run.raised is None and returned is not None:
            assert returned(run.result), f"{run.where}: returned {run.result!r}"
    return check


def _nothing() -> None:
    pass


def test_info_and_listing(lab: Lab, faults: Faults) -> None:
    name = lab.linux.inst.name
    hv = lab.hv
    every_index(lab, faults, "GetInstanceInfo", lambda: hv.GetInstanceInfo(name), _nothing,
                _linux_check(lab, lambda info: info is not None and info[0] == name
                             and info[4] == HvInstanceState.RUNNING))
    every_index(lab, faults, "GetAllInstancesInfo", hv.GetAllInstancesInfo, _nothing,
                _linux_check(lab, lambda infos: name in {i[0] for i in infos}))
    every_index(lab, faults, "ListInstances", hv.ListInstances, _nothing,
                _linux_check(lab, lambda names: name in names))


def test_balloon_verify_and_migration_info(lab: Lab, faults: Faults) -> None:
    inst, hv = lab.linux.inst, lab.hv
    every_index(lab, faults, "BalloonInstanceMemory",
                lambda: hv.BalloonInstanceMemory(inst, 160), _nothing, _linux_check(lab))
    every_index(lab, faults, "VerifyInstance", lambda: hv.VerifyInstance(inst), _nothing,
                _linux_check(lab, lambda same: same is True))
    every_index(lab, faults, "MigrationInfo", lambda: hv.MigrationInfo(inst), _nothing,
                _linux_check(lab, lambda xml: f"<name>{inst.name}</name>" in xml))
    # The target side's checks, for an instance this daemon does not run (yet).
    info = hv.MigrationInfo(inst)
    incoming = copy.deepcopy(inst)
    incoming.name = "rf-incoming"
    every_index(lab, faults, "AcceptInstance",
                lambda: hv.AcceptInstance(incoming, info, lab.daemon.ip), _nothing,
                lambda run: _absent(lab, incoming.name, run))


def _absent(lab: Lab, name: str, run: Run) -> None:
    assert reported(lab, name, run.where) is None, f"{run.where}: {name} appeared"


def test_the_other_methods_on_a_running_instance(lab: Lab, faults: Faults) -> None:
    """The rest of the interface that reaches libvirt, on the booted guest (no
    migration under way: its status and a failed migration's finalization)."""
    inst, hv = lab.linux.inst, lab.hv
    disk = inst.disks_info[0]
    # GetNodeInfo and Verify answer without libvirt (Ganeti calls them unguarded).
    calls: list[tuple[str, Callable[[], Any], Callable[[Any], bool] | None,
                      type[HypervisorError] | None]] = [
        ("GetNodeInfo", hv.GetNodeInfo, lambda info: "memory_free" in info, None),
        ("Verify", lambda: hv.Verify(inst.hvparams), None, None),
        ("domain_xml", lambda: hv.domain_xml(inst.name),
         lambda xml: f"<name>{inst.name}</name>" in xml, HypervisorError),
        ("GetMigrationStatus", lambda: hv.GetMigrationStatus(inst), None, HypervisorError),
        ("FinalizeMigrationSource(failed)",
         lambda: hv.FinalizeMigrationSource(inst, False, True), None, HypervisorError),
        ("HotplugSupported", lambda: hv.HotplugSupported(inst), None, HotplugError),
        ("VerifyHotplugSupport", lambda: hv.VerifyHotplugSupport(
            inst, C.HOTPLUG_ACTION_ADD, DISK), None, HotplugError),
        ("ResizeDisk", lambda: hv.ResizeDisk(inst, disk, 48 << 20), None, HotplugError),
    ]
    for label, call, returned, error in calls:
        every_index(lab, faults, label, call, _nothing, _linux_check(lab, returned), error)


def test_restore_instance(lab: Lab, faults: Faults) -> None:
    """RestoreInstance moves a NIC the instance has on another bridge now: live and
    defined together (one update), or not at all."""
    inst, hv = lab.linux.inst, lab.hv
    alias = device_alias(NIC_T, inst.nics[0].uuid)
    moved = copy.deepcopy(inst)
    moved.nics[0].nicparams = dict(moved.nics[0].nicparams, link=SPARE_BRIDGE)

    def bridges() -> tuple[list[str], list[str]]:
        dom = domain(lab, inst.name)
        return tuple(etree.fromstring(dom.XMLDesc(flags).encode()).xpath(
            "devices/interface[alias/@name=$a]/source/@bridge", a=alias)
            for flags in (0, _INACTIVE))

    def back() -> None:
        if bridges() != ([inst.nics[0].nicparams[C.NIC_LINK]],) * 2:
            hv.RestoreInstance(inst, lab.linux.block_devices)

    def check(run: Run) -> None:
        _linux_check(lab)(run)
        live, defined = bridges()
        assert live == defined and live[0] in (SPARE_BRIDGE, "hvlbr0"), (run.where, live,
                                                                          defined)
        if run.raised is None:
            assert live == [SPARE_BRIDGE], run.where

    try:
        every_index(lab, faults, "RestoreInstance",
                    lambda: hv.RestoreInstance(moved, lab.linux.block_devices), back, check)
    finally:
        back()


# ------------------------------------------------------------------------- hotplug

@dataclass
class Plugged:
    """A device the tests hot-add and remove on the booted guest."""

    dev_type: str
    device: Any
    extra: Any

    @property
    def alias(self) -> str:
        return device_alias(self.dev_type, self.device.uuid)


def _new_disk(lab: Lab) -> Plugged:
    disk, extra = lab.linux.new_disk(8)
    return Plugged(DISK, disk, extra)


def _new_nic(mac: str) -> Plugged:
    return Plugged(NIC_T, NIC(mac=mac, nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                                  C.NIC_LINK: "hvlbr0"}), None)


def _ensure(lab: Lab, dev: Plugged, present: bool) -> None:
    """The device attached (or not): a state a refused run left is settled by the next
    hotplug call, which must then leave all three places in agreement."""
    hv, inst = lab.hv, lab.linux.inst
    found = seen(lab.daemon.uri, inst.name)
    if left_to_settle(found, dev.alias):
        assert hv.HotDelDevice(inst, dev.dev_type, dev.device, dev.extra, 1) == \
            {"alias": dev.alias}
        found = seen(lab.daemon.uri, inst.name)
        whole(found, f"{dev.alias} settled")
    if dev.alias in found.live and not present:
        hv.HotDelDevice(inst, dev.dev_type, dev.device, dev.extra, 1)
    elif dev.alias not in found.live and present:
        hv.HotAddDevice(inst, dev.dev_type, dev.device, dev.extra, 1)
    whole(seen(lab.daemon.uri, inst.name), f"{dev.alias} {'added' if present else 'removed'}")


def _hotplug_done(lab: Lab) -> None:
    """The guest sees what the live XML has."""
    found = seen(lab.daemon.uri, lab.linux.inst.name)
    guest_agrees(lab.linux, found)


@pytest.mark.parametrize("kind", [DISK, NIC_T])
def test_hot_add_device(lab: Lab, faults: Faults, kind: str) -> None:
    """A refused hot-add leaves the domain as it was (once the guest released what the
    rollback took back); one that went through is complete."""
    inst, hv = lab.linux.inst, lab.hv
    dev = _new_disk(lab) if kind == DISK else _new_nic("aa:00:00:7a:40:01")
    before: list[Seen] = []

    def prepare() -> None:
        _ensure(lab, dev, present=False)
        before[:] = [seen(lab.daemon.uri, inst.name)]

    def check(run: Run) -> None:
        if run.raised is not None and run.called("virDomain.attachDeviceFlags"):
            wait_released(lab, inst.name, dev.alias)
        found = reported(lab, inst.name, run.where)
        whole(found, run.where)
        if run.raised is None:
            assert dev.alias in found.live, run.where
        else:
            was = before[0]
            assert (found.live, found.config, found.meta, found.pending) == \
                (was.live, was.config, was.meta, was.pending), f"{run.where}: {found}"

    try:
        every_index(lab, faults, f"HotAddDevice({kind})",
                    lambda: hv.HotAddDevice(inst, dev.dev_type, dev.device, dev.extra, 1),
                    prepare, check, HotplugError)
        _ensure(lab, dev, present=False)
        _hotplug_done(lab)
    finally:
        faults.disarm()


def _removal_check(lab: Lab, dev: Plugged) -> Callable[[Run], None]:
    """After a removal or replacement: the device in all three places or none, or left
    for the next call to settle; once the guest is done with an unplug the run asked
    for."""
    inst = lab.linux.inst

    def check(run: Run) -> None:
        if run.raised is not None and run.called("virDomain.detachDeviceAlias"):
            settled(lab, inst.name, dev.alias, run.where)
        found = reported(lab, inst.name, run.where)
        assert found is not None and found.active, run.where
        if not left_to_settle(found, dev.alias):
            whole(found, run.where)
    return check


def settled(lab: Lab, name: str, alias: str, where: str) -> Seen:
    """What libvirt has once the guest has done what a run asked of it: a state the
    checks accept (all three places agree, or a removal left to settle), unchanged for
    a second; RELEASE at most."""
    deadline = time.monotonic() + RELEASE
    last = None
    while True:
        found = seen(lab.daemon.uri, name)
        assert found is not None, where
        accepted = found.live == found.config == found.meta or left_to_settle(found, alias)
        if accepted and found == last:
            return found
        assert time.monotonic() < deadline, f"{where}: not settled: {found}"
        last = found if accepted else None
        time.sleep(0.5)


@pytest.mark.parametrize("kind", [DISK, NIC_T])
def test_hot_del_device(lab: Lab, faults: Faults, kind: str) -> None:
    inst, hv = lab.linux.inst, lab.hv
    dev = _new_disk(lab) if kind == DISK else _new_nic("aa:00:00:7a:40:02")
    removal = _removal_check(lab, dev)

    def check(run: Run) -> None:
        removal(run)
        if run.raised is None:
            found = seen(lab.daemon.uri, inst.name)
            assert dev.alias not in found.live | found.config | found.meta, run.where

    try:
        every_index(lab, faults, f"HotDelDevice({kind})",
                    lambda: hv.HotDelDevice(inst, dev.dev_type, dev.device, dev.extra, 1),
                    lambda: _ensure(lab, dev, present=True), check, HotplugError)
        _ensure(lab, dev, present=False)
        _hotplug_done(lab)
    finally:
        faults.disarm()


def test_hot_mod_device(lab: Lab, faults: Faults) -> None:
    """A new MAC: the NIC removed and added again at its slot (the old one put back if
    the add fails). Each run changes it to the MAC it does not have."""
    inst, hv = lab.linux.inst, lab.hv
    macs = ("aa:00:00:7a:40:03", "aa:00:00:7a:40:04")
    dev = _new_nic(macs[0])
    removal = _removal_check(lab, dev)

    def live_mac() -> str | None:
        found = domain(lab, inst.name).XMLDesc(0)
        got = etree.fromstring(found.encode()).xpath(
            "devices/interface[alias/@name=$a]/mac/@address", a=dev.alias)
        return got[0] if got else None

    def prepare() -> None:
        _ensure(lab, dev, present=True)
        dev.device.mac = live_mac()

    def call() -> None:
        changed = copy.copy(dev.device)
        changed.mac = macs[1] if dev.device.mac == macs[0] else macs[0]
        hv.HotModDevice(inst, NIC_T, changed, None, 1)

    def check(run: Run) -> None:
        removal(run)
        found = seen(lab.daemon.uri, inst.name)
        if dev.alias in found.live and dev.alias in found.config:
            defined = etree.fromstring(domain(lab, inst.name).XMLDesc(_INACTIVE).encode())
            assert defined.xpath("devices/interface[alias/@name=$a]/mac/@address",
                                 a=dev.alias) == [live_mac()], run.where
        if run.raised is None:
            assert live_mac() != dev.device.mac, run.where

    try:
        every_index(lab, faults, "HotModDevice(nic, new MAC)", call, prepare, check,
                    HotplugError)
        _ensure(lab, dev, present=False)
        _hotplug_done(lab)
    finally:
        faults.disarm()
