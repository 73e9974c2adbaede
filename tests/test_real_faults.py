"""Tier 3/4: faults on the real tier - libvirtd SIGKILLed (and restarted) while a call is
in flight, QEMU SIGKILLed under a running instance, a guest that ignores an unplug.

Each fault is injected deterministically: a wrapper around the libvirt-python method
the library calls (``defineXML``, ``attachDeviceFlags``, ``detachDeviceAlias``, ...)
kills the daemon right after that call returned, or a watcher thread kills it once
libvirt's own state shows the step under way. After each fault:

* the call in flight raised HypervisorError/HotplugError (or succeeded), nothing else;
* the next call works, through the library's cached connection;
* GetInstanceInfo/ListInstances agree with libvirt (a fresh connection's XML) and with
  the guest (``HVL-DEV`` / ``HVL-READY`` on its serial log);
* no instance is lost or duplicated, nothing is half-attached (an ``ua-`` device is in
  the live XML, the persistent definition and our metadata, or in none of them);
* StopInstance(force) + CleanupInstance leave no domain, no definition, no state file.

Faults injected and survived are counted and printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.domain_xml import metadata as md
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from lab.console import ConsoleCapture
from lab.daemon import LibvirtDaemon
from lab.instances import BOOT, READY, Running, make_instance
from lab.netns import LabNetwork
from lab.serial import SerialLog

# Tiers per test: 3 on one daemon, 4 for the faults of a migration between two.
pytestmark = pytest.mark.real

DISK = C.HOTPLUG_TARGET_DISK
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


# ------------------------------------------------------------------------- fault ledger

@dataclass
class Ledger:
    injected: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # what the call in flight did


LEDGER = Ledger()


@pytest.fixture(scope="module", autouse=True)
def fault_ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """Print the faults injected and survived when the module is done."""
    yield LEDGER
    lost = [f for f in LEDGER.injected if f not in LEDGER.survived]
    line = (f"faults injected: {len(LEDGER.injected)}, survived: {len(LEDGER.survived)}"
            + (f" (not survived: {', '.join(lost)})" if lost else ""))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # into the run's output, not captured
        reporter.write_line(f"\ntest_real_faults: {line}")
        for fault in LEDGER.injected:
            outcome = LEDGER.outcomes.get(fault)
            reporter.write_line(f"  {'survived' if fault in LEDGER.survived else 'LOST    '}"
                                f"  {fault}" + (f" ({outcome})" if outcome else ""))


class Fault:
    """One injected fault: counted when injected, marked survived by the test once every
    check after it passed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fired = threading.Event()

    def inject(self, action: Callable[[], None]) -> None:
        if not self.fired.is_set():
            self.fired.set()
            LEDGER.injected.append(self.name)
            action()

    def survived(self, outcome: str = "") -> None:
        assert self.fired.is_set(), f"fault {self.name} was never injected"
        LEDGER.survived.append(self.name)
        if outcome:
            LEDGER.outcomes[self.name] = outcome


def _lost_by_libvirt(daemon: Any, name: str) -> str:
    """Why libvirt no longer runs the guest after a restart ('' while it does)."""
    if not daemon.libvirtd_running():
        daemon.restart_libvirtd()
        return "libvirtd died as it reconnected to the guest's QEMU"
    conn = libvirt.open(daemon.uri)
    try:
        if not conn.lookupByName(name).isActive():
            return "libvirtd stopped the domain as it reconnected"
    finally:
        conn.close()
    return ""


def after(monkeypatch: pytest.MonkeyPatch, cls: type, method: str,
          action: Callable[[], None], when: Callable[..., bool] = lambda *_a: True,
          before: bool = False) -> None:
    """Run ``action`` right after (or just before) each ``cls.method`` call matching
    ``when`` (the library's call then goes on with a connection whose daemon is gone)."""
    original = getattr(cls, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before and when(self, *args, **kwargs):
            action()
        result = original(self, *args, **kwargs)
        if not before and when(self, *args, **kwargs):
            action()
        return result

    monkeypatch.setattr(cls, method, wrapper)


# ------------------------------------------------------------------------- what libvirt sees

@contextlib.contextmanager
def fresh(uri: str) -> Iterator[libvirt.virConnect]:
    """A connection of our own (what virsh would see), never the library's cached one."""
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class Seen:
    """One domain as a fresh connection sees it."""

    active: bool
    live: set[str]      # ua-disk-/ua-nic- aliases in the live XML
    config: set[str]    # ... in the persistent definition
    meta: set[str]      # ... in our metadata
    pending: set[str]   # unplugs our metadata records as pending
    slots: list[str]    # PCI slots of the live devices
    disks: int          # virtio disks in the live XML
    nics: int


def _aliases(root: etree._Element) -> set[str]:
    return {a for a in root.xpath("devices/*/alias/@name") if a.startswith(("ua-disk-", "ua-nic-"))}


def seen(uri: str, name: str) -> Seen | None:
    with fresh(uri) as conn:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as err:
            assert err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, err
            return None
        active = bool(dom.isActive())
        config = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        live = etree.fromstring(dom.XMLDesc(0).encode()) if active else config
    meta_elem = md.find(live)
    meta = md.parse(meta_elem) if meta_elem is not None else None
    conf_elem = md.find(config)
    conf_meta = md.parse(conf_elem) if conf_elem is not None else None
    assert meta is not None and conf_meta is not None, f"{name} lost our metadata"
    assert meta.devices == conf_meta.devices and meta.pending_unplug == conf_meta.pending_unplug
    return Seen(active=active, live=_aliases(live), config=_aliases(config),
                meta={alias for _kind, _uuid, alias in meta.devices},
                pending=set(meta.pending_unplug),
                slots=[a.get("slot") for a in live.xpath("devices/*/address[@type='pci']")],
                disks=len(live.xpath("devices/disk[target/@bus='virtio']")),
                nics=len(live.xpath("devices/interface")))


def consistent(hv: KVMHypervisor, daemon: LibvirtDaemon, name: str) -> Seen | None:
    """Check what the library reports against libvirt; return what libvirt sees."""
    found = seen(daemon.uri, name)
    info = hv.GetInstanceInfo(name)
    listed = name in hv.ListInstances()
    if found is None or not found.active:
        assert info is None and not listed, (info, listed)
        return found
    assert info is not None and info[4] == HvInstanceState.RUNNING and listed
    assert found.live == found.config == found.meta, found  # nothing half-attached
    assert found.pending <= found.live
    assert len(found.slots) == len(set(found.slots)), f"a PCI slot is used twice: {found}"
    return found


def guest_agrees(run: Running, found: Seen, since: int = 0, timeout: float = 30) -> None:
    """The guest's own device list matches the live XML (its virtio disks and NICs)."""
    def same(dev: dict[str, Any]) -> bool:
        return (len([b for b in dev["blk"] if b.startswith("vd")]) == found.disks
                and len([n for n in dev["net"] if n.startswith("eth")]) == found.nics)
    run.serial.wait_dev(same, timeout, since)


def gone(hv: KVMHypervisor, daemon: LibvirtDaemon, name: str) -> None:
    """StopInstance(force) + CleanupInstance, then: no domain, no definition or state
    file under the daemon, no QEMU for it, nothing reported."""
    hv.StopInstance(None, force=True, name=name)
    hv.CleanupInstance(name)
    assert seen(daemon.uri, name) is None
    assert hv.GetInstanceInfo(name) is None and name not in hv.ListInstances()
    files = [p for p in (daemon.workdir / "etc" / "qemu").glob(f"{name}.xml")]
    files += list((daemon.workdir / "run" / "qemu").glob(f"{name}.*"))
    assert not files, files
    assert qemu_of(name) is None, "QEMU left"


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def crash(daemon: LibvirtDaemon, restart: bool = False) -> Callable[[], None]:
    """The fault action: SIGKILL libvirtd (and start it again at once, if asked)."""
    def act() -> None:
        daemon.kill_libvirtd()
        if restart:
            daemon.restart_libvirtd()
    return act


def while_down(hv: KVMHypervisor, name: str) -> None:
    """Calls while libvirtd is down fail with HypervisorError, or answer without it
    where Ganeti needs an answer (GetNodeInfo's Linux facts, Verify's problem)."""
    for call in (lambda: hv.GetInstanceInfo(name), hv.ListInstances, hv.GetAllInstancesInfo,
                 lambda: hv.StopInstance(None, force=True, name=name)):
        with pytest.raises(HypervisorError):
            call()
    assert C.HV_NODEINFO_KEY_VERSION not in hv.GetNodeInfo()
    assert "libvirt" in (hv.Verify() or "")


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def qemus_of(name: str) -> list[int]:
    """The pids of the QEMUs (exec'd, not libvirt's children before exec) running
    ``name``, on any daemon (they share the PID namespace)."""
    found = []
    for pid in _pids():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.endswith("qemu-system-x86_64") and f"guest={name}," in _cmdline(pid):
            found.append(pid)
    return found


def qemu_of(name: str) -> int | None:
    """The pid of a QEMU running ``name``, if any."""
    return next(iter(qemus_of(name)), None)


@pytest.fixture
def hv(libvirt_daemon: LibvirtDaemon, tmp_path: Path) -> KVMHypervisor:
    return KVMHypervisor(uri=libvirt_daemon.uri, serial_log_dir=str(tmp_path))


# ------------------------------------------------------------------------- StartInstance

@pytest.mark.tier3
def test_libvirtd_killed_and_restarted_after_define(hv: KVMHypervisor, libvirt_daemon,
                                                     guest_image, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed and back while StartInstance is between defineXML and createWithFlags."""
    fault = Fault("libvirtd killed+restarted after defineXML in StartInstance")
    inst, block = make_instance("flt-define", guest_image, tmp_path)
    after(monkeypatch, libvirt.virConnect, "defineXML",
          lambda: fault.inject(crash(libvirt_daemon, restart=True)))
    with pytest.raises(HypervisorError, match="flt-define"):
        hv.StartInstance(inst, block, startup_paused=False)
    monkeypatch.undo()
    assert consistent(hv, libvirt_daemon, inst.name) is None  # the failed start left nothing
    _start_works(hv, libvirt_daemon, inst, block, tmp_path)
    fault.survived()


@pytest.mark.tier3
def test_libvirtd_killed_while_qemu_starts(hv: KVMHypervisor, libvirt_daemon, guest_image,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once QEMU runs (exec'd), inside createWithFlags; restarted before the
    failed call cleans up. (Killed earlier, while libvirt's forked child still waits for
    its handshake, libvirt 9.0 restarts with the domain's start job orphaned and every
    job on the domain times out: libvirt's, not ours to fix, see the closing note.)"""
    fault = Fault("libvirtd killed while createWithFlags launches QEMU")
    inst, block = make_instance("flt-create", guest_image, tmp_path)
    original = libvirt.virDomain.createWithFlags

    def create(dom: libvirt.virDomain, flags: int = 0) -> int:
        def watch() -> None:
            if wait_until(lambda: qemu_of(inst.name) is not None):
                fault.inject(crash(libvirt_daemon))
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            return original(dom, flags)
        finally:
            watcher.join(60)
            if fault.fired.is_set():
                libvirt_daemon.restart_libvirtd()

    monkeypatch.setattr(libvirt.virDomain, "createWithFlags", create)
    try:
        hv.StartInstance(inst, block, startup_paused=False)
        started = True
    except HypervisorError:
        started = False
    monkeypatch.undo()
    found = consistent(hv, libvirt_daemon, inst.name)
    if started:  # libvirt answered before it died: then it runs, once
        assert found is not None and found.active
        gone(hv, libvirt_daemon, inst.name)
    else:
        assert found is None
    _start_works(hv, libvirt_daemon, inst, block, tmp_path)
    fault.survived("StartInstance succeeded" if started else
                   "StartInstance failed, nothing left")


def _start_works(hv: KVMHypervisor, daemon: LibvirtDaemon, inst: Any, block: Any,
                 tmp_path: Path) -> None:
    """The next StartInstance boots the guest; stop and cleanup leave nothing."""
    try:
        hv.StartInstance(inst, block, startup_paused=False)
        serial = SerialLog(tmp_path / f"{inst.name}.serial")
        serial.wait(READY, BOOT)
        found = consistent(hv, daemon, inst.name)
        assert found is not None and found.active
    finally:
        gone(hv, daemon, inst.name)


# ------------------------------------------------------------------------- QEMU killed

@pytest.mark.tier3
def test_qemu_killed_under_a_running_instance(boot: Callable[..., Running],
                                              libvirt_daemon) -> None:
    fault = Fault("QEMU SIGKILLed under a running instance")
    run = boot("flt-qemu")
    run.serial.wait(READY, BOOT)
    pidfile = libvirt_daemon.workdir / "run" / "qemu" / f"{run.inst.name}.pid"
    pid = int(pidfile.read_text().strip())
    fault.inject(lambda: os.kill(pid, signal.SIGKILL))
    deadline = time.monotonic() + 30
    while hv_active(libvirt_daemon, run.inst.name):
        assert time.monotonic() < deadline, "libvirt never noticed QEMU's death"
        time.sleep(0.05)
    found = consistent(run.hv, libvirt_daemon, run.inst.name)
    assert found is not None and not found.active  # defined, not running, not reported
    with fresh(libvirt_daemon.uri) as conn:
        state, reason = conn.lookupByName(run.inst.name).state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
    # Ganeti starts it again (the watcher would): it boots.
    mark = run.serial.mark()
    run.hv.StartInstance(run.inst, run.block_devices, startup_paused=False)
    run.serial.wait(READY, BOOT, mark)
    found = consistent(run.hv, libvirt_daemon, run.inst.name)
    assert found is not None and found.active
    guest_agrees(run, found, mark)
    gone(run.hv, libvirt_daemon, run.inst.name)
    fault.survived()


def hv_active(daemon: LibvirtDaemon, name: str) -> bool:
    found = seen(daemon.uri, name)
    return found is not None and found.active


# ------------------------------------------------------------------------- hotplug

def _alias(uuid: str, kind: str = "disk") -> str:
    return f"ua-{kind}-{'-'.join(uuid.split('-')[:3])}"


@pytest.mark.tier3
def test_libvirtd_killed_during_hot_add_and_hot_del(boot: Callable[..., Running],
                                                    libvirt_daemon,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A booted guest: libvirtd dies just before the live attach of a hot-add, then
    after it (before the persistent one), then after the unplug request of a hot-del
    (the guest releases the disk while libvirtd is down). Restarted after each failed
    call."""
    run = boot("flt-hotplug")
    run.hv.HOTPLUG_TIMEOUT = 10.0
    run.serial.wait(READY, BOOT)
    name = run.inst.name

    early = Fault("libvirtd killed just before the live attach of HotAddDevice")
    lost, lost_extra = run.new_disk(8)
    after(monkeypatch, libvirt.virDomain, "attachDeviceFlags",
          lambda: early.inject(crash(libvirt_daemon)),
          when=lambda _dom, _xml, flags=0: flags == _LIVE, before=True)
    with pytest.raises(HotplugError):
        run.hv.HotAddDevice(run.inst, DISK, lost, lost_extra, 1)
    monkeypatch.undo()
    libvirt_daemon.restart_libvirtd()
    # Never attached: the next call (Ganeti removing the disk) settles its record away.
    assert run.hv.HotDelDevice(run.inst, DISK, lost, lost_extra, 1) == {
        "alias": _alias(lost.uuid)}
    found = consistent(run.hv, libvirt_daemon, name)
    assert _alias(lost.uuid) not in found.meta and found.disks == 1
    guest_agrees(run, found)
    early.survived()

    add = Fault("libvirtd killed after the live attach of HotAddDevice")
    first, extra = run.new_disk(8)
    after(monkeypatch, libvirt.virDomain, "attachDeviceFlags",
          lambda: add.inject(crash(libvirt_daemon)),
          when=lambda _dom, _xml, flags=0: flags == _LIVE)
    mark = run.serial.mark()
    with pytest.raises(HotplugError):
        run.hv.HotAddDevice(run.inst, DISK, first, extra, 1)
    monkeypatch.undo()
    libvirt_daemon.restart_libvirtd()
    # The next call (another disk) works, and settles the interrupted one: the guest
    # got it, so it is kept, in the definition and our metadata too.
    second, extra2 = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, second, extra2, 2)
    found = consistent(run.hv, libvirt_daemon, name)
    assert {_alias(first.uuid), _alias(second.uuid)} <= found.live and found.disks == 3
    guest_agrees(run, found, mark)
    add.survived()

    delete = Fault("libvirtd killed while HotDelDevice waits for the guest")
    after(monkeypatch, libvirt.virDomain, "detachDeviceAlias",
          lambda: delete.inject(crash(libvirt_daemon)),
          when=lambda _dom, _alias, flags=0: flags == _LIVE)
    mark = run.serial.mark()
    try:  # fails, unless the guest was quicker than the kill (TCG's guests never are)
        run.hv.HotDelDevice(run.inst, DISK, first, extra, 1)
        outcome = "HotDelDevice succeeded"
    except HotplugError:
        outcome = ""
    monkeypatch.undo()
    libvirt_daemon.restart_libvirtd()
    time.sleep(2)  # libvirtd reconciles the domain's devices as it reconnects to QEMU
    lost = _lost_by_libvirt(libvirt_daemon, name)
    if lost:
        # A guest quicker than the kill released the disk, and the kill interrupted
        # libvirt's own removal (blockdev-del then finds the node "in use"): libvirt 9.0's
        # reconnect then crashed or stopped the domain (two CI runs of 2026-12-02).
        # hvlibvirt cannot save a guest libvirt itself destroys; reported, not hidden.
        LEDGER.outcomes[delete.name] = f"lost by libvirt 9.0 itself: {lost}"
        pytest.xfail(f"libvirt 9.0 lost the guest reconnecting after the kill: {lost}")
    run.serial.wait_dev(lambda d: len([b for b in d["blk"] if b.startswith("vd")]) == 2, 30,
                        mark)
    if not outcome:
        # Asked again, the removal is done (the guest released it meanwhile).
        where = run.hv.HotDelDevice(run.inst, DISK, first, extra, 1)
        assert where["alias"] == _alias(first.uuid)
        outcome = "HotDelDevice failed; asked again, it reports the removal done"
    found = consistent(run.hv, libvirt_daemon, name)
    assert _alias(first.uuid) not in found.live and found.disks == 2
    guest_agrees(run, found)
    # And hotplug goes on as usual.
    mark = run.serial.mark()
    run.hv.HotDelDevice(run.inst, DISK, second, extra2, 2)
    found = consistent(run.hv, libvirt_daemon, name)
    assert found.disks == 1
    guest_agrees(run, found, mark)
    gone(run.hv, libvirt_daemon, name)
    delete.survived(outcome)


@pytest.mark.tier3
def test_guest_ignores_an_unplug_and_libvirtd_dies_meanwhile(
        boot: Callable[..., Running], libvirt_daemon,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest without an OS never releases a device: the removal stays pending, the
    device stays in all three places. Then libvirtd dies while a second removal waits."""
    run = boot("flt-noos", os=False)
    run.hv.HOTPLUG_TIMEOUT = 2.0
    name = run.inst.name
    ignored = Fault("guest ignores an unplug")
    first, extra = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, first, extra, 1)
    ignored.inject(lambda: None)
    with pytest.raises(HotplugError, match="did not release the device"):
        run.hv.HotDelDevice(run.inst, DISK, first, extra, 1)
    found = consistent(run.hv, libvirt_daemon, name)
    assert found.pending == {_alias(first.uuid)} and _alias(first.uuid) in found.live
    ignored.survived()

    killed = Fault("libvirtd killed while HotDelDevice waits for a guest that ignores it")
    second, extra2 = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, second, extra2, 2)
    after(monkeypatch, libvirt.virDomain, "detachDeviceAlias",
          lambda: killed.inject(crash(libvirt_daemon)),
          when=lambda _dom, _alias, flags=0: flags == _LIVE)
    with pytest.raises(HotplugError):
        run.hv.HotDelDevice(run.inst, DISK, second, extra2, 2)
    monkeypatch.undo()
    libvirt_daemon.restart_libvirtd()
    # Asked again: still the guest's to release, and said so; nothing half-removed.
    with pytest.raises(HotplugError, match="did not release the device|pending"):
        run.hv.HotDelDevice(run.inst, DISK, second, extra2, 2)
    found = consistent(run.hv, libvirt_daemon, name)
    assert found.pending == {_alias(first.uuid), _alias(second.uuid)}
    # Another disk still gets a slot of its own.
    third, extra3 = run.new_disk(4)
    run.hv.HotAddDevice(run.inst, DISK, third, extra3, 3)
    found = consistent(run.hv, libvirt_daemon, name)
    assert _alias(third.uuid) in found.live
    gone(run.hv, libvirt_daemon, name)
    killed.survived()


# ------------------------------------------------------------------------- migration

def _where(uris: tuple[str, str], name: str) -> list[str]:
    """The URIs where ``name`` runs (never more than one)."""
    return [uri for uri in uris if (s := seen(uri, name)) is not None and s.active]


def _migrate(run: Running, a: LibvirtDaemon, b: LibvirtDaemon, net: LabNetwork
             ) -> tuple[KVMHypervisor, KVMHypervisor, str]:
    """Ganeti's first steps of a live migration from daemon a to b: (source, target,
    migration info), the transfer under way."""
    src = KVMHypervisor(uri=a.uri, migration_uri=b.uri, serial_log_dir=run.hv.serial_log_dir)
    dst = KVMHypervisor(uri=b.uri, migration_uri=a.uri, serial_log_dir=run.hv.serial_log_dir)
    info = src.MigrationInfo(run.inst)
    dst.AcceptInstance(run.inst, info, net.b.ip)
    src.MigrateInstance("cluster", run.inst, net.b.ip, True)
    return src, dst, info


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.tier4
def test_libvirtd_killed_during_a_live_migration(boot: Callable[..., Running],
                                                 libvirt_daemon_pair, lab_network: LabNetwork,
                                                 side: str) -> None:
    """Ganeti's sequence (MigrationInfo, AcceptInstance, MigrateInstance, status polls,
    finalize both sides by the outcome); the source's or the target's libvirtd dies
    while memory is being transferred and is restarted."""
    a, b = libvirt_daemon_pair
    victim = a if side == "source" else b
    fault = Fault(f"{side} libvirtd killed during MigrateInstance's transfer")
    run = boot(f"flt-mig-{side}", attach=True, migration_bandwidth=1,
               migration_port=8110 + (side == "target"))
    run.serial.wait(READY, BOOT)
    # Dirty memory so that the 1 MiB/s transfer is still running when the fault hits.
    run.console.send("while :; do dd if=/dev/urandom of=/dev/null bs=1M count=4 "
                     "2>/dev/null; cat /proc/meminfo > /tmp/m; done &\n")
    name = run.inst.name
    src, dst, info = _migrate(run, a, b, lab_network)
    assert wait_until(lambda: (src.GetMigrationStatus(run.inst).transferred_ram or 0) > 0, 60)
    fault.inject(crash(victim))
    while_down(src if side == "source" else dst, name)
    victim.restart_libvirtd()
    # Ganeti polls until the job is no longer active; a poll that fails is a failure.
    deadline = time.monotonic() + 120
    while True:
        try:
            status = src.GetMigrationStatus(run.inst).status
        except HypervisorError:
            status = C.HV_MIGRATION_FAILED
        if status not in C.HV_KVM_MIGRATION_ACTIVE_STATUSES or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    success = status == C.HV_MIGRATION_COMPLETED
    dst.FinalizeMigrationDst(run.inst, info, success)
    src.FinalizeMigrationSource(run.inst, success, True)
    # Exactly one copy runs, where the outcome says, and it is the same guest.
    where = _where((a.uri, b.uri), name)
    assert where == [b.uri if success else a.uri], (status, where)
    here, there = (dst, src) if success else (src, dst)
    home = b if success else a
    found = consistent(here, home, name)
    assert found is not None and found.active
    away = seen((a if success else b).uri, name)
    assert away is None, f"{name} is left defined on the other node: {away}"
    assert there.GetInstanceInfo(name) is None and name not in there.ListInstances()
    mark = run.serial.mark()
    console = ConsoleCapture(home.uri, name, run.workdir / f"{name}-after.stream")
    try:
        console.send("echo alive-$((6*7))\n")
        run.serial.wait("alive-42", 30, mark)
    finally:
        console.close()
    gone(here, home, name)
    fault.survived(f"migration {status}, the guest runs on the {'target' if success else 'source'}")


@pytest.mark.tier4
def test_source_libvirtd_restarted_before_the_completed_migration_is_polled(
        boot: Callable[..., Running], libvirt_daemon_pair, lab_network: LabNetwork) -> None:
    """The migration ends (the guest runs on the target), then the source's libvirtd is
    killed and restarted before Ganeti's poll sees the end: the restarted daemon forgot
    the job and why the domain is off, yet the status must still say completed."""
    a, b = libvirt_daemon_pair
    fault = Fault("source libvirtd killed+restarted between a migration's end and its poll")
    run = boot("flt-mig-done", migration_port=8113)
    run.serial.wait(READY, BOOT)
    name = run.inst.name
    src, dst, info = _migrate(run, a, b, lab_network)
    assert wait_until(lambda: _where((a.uri, b.uri), name) == [b.uri]
                      and seen(b.uri, name) is not None, 120)
    fault.inject(crash(a, restart=True))
    status = src.GetMigrationStatus(run.inst).status
    assert status == C.HV_MIGRATION_COMPLETED, status
    dst.FinalizeMigrationDst(run.inst, info, True)
    src.FinalizeMigrationSource(run.inst, True, True)
    assert _where((a.uri, b.uri), name) == [b.uri] and seen(a.uri, name) is None
    found = consistent(dst, b, name)
    assert found is not None and found.active
    assert src.GetInstanceInfo(name) is None and name not in src.ListInstances()
    gone(dst, b, name)
    fault.survived()
