"""Tier 6: libvirt failing at every call index of the Xen hypervisors' public methods, on
the nested Xen of tests/test_real_xen.py: the real tier's counterpart of the Xen cases of
tests/test_libvirt_faults.py, with the same injection (tests/fault_injection.py), armed
in dom0's forked node child by a request's ``fail_at`` (tests/lab/xen_node.py).

For each method, a run without faults counts the libvirt calls it makes in dom0 (it must
succeed here); then run N makes call N raise, for N = 1 ... that count. Each run must be
answered within ``BOUND`` seconds by a child that did not die, with a result or a
HypervisorError (the class arrives as names) carrying libvirt's message. Afterwards:

* ListInstances and GetInstanceInfo (asked without faults) say what ``xl list`` says,
  and libvirt (``virsh domstate``) agrees;
* a refused start leaves no domain, in xl or in libvirt; every device of ours is in the
  live XML, the definition and our metadata, or in none of them, and xl has the disks
  the live XML has.

Guests: one PV guest booted once and kept running, for the reads, the balloon, the
migration source's calls; a second PV instance without disk or vif, started
paused (its kernel never runs: a start is libxl building the domain, in 2 s) for start,
stop and cleanup, and with
``reboot_behavior=exit``, so that RebootInstance is the destroy-and-start it then is
(the guest then runs its kernel until the next stop).

Left out, for time (an HVM boot costs minutes under TCG, a PV boot tens of seconds, and
tier 6 is the longest tier): disk hotplug (a hot-add and removal at every index took
7.5 minutes; Xen hotplug faults stay the test driver's), the soft stop
(libxl refuses it for a guest that never started its PV drivers, "Failed to shutdown
domain", and on the booted guest each index would cost a boot), the soft reboot (libxl's
reboot request, verified by the guest's new domain ID), hot-adding a vif, HotModDevice,
RestoreInstance, MigrateInstance and the HVM class but for Verify (its own device-model
check).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pytest
from lxml import etree

from fault_injection import INJECTED
from hvlibvirt import constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.domain_xml import metadata as md
from lab.xen_tier import NodeError, XenLab
from test_real_libvirt_faults import summary
from test_real_xen import HVM, PV_BOOT, PVM, Instance, pv, remove, start, xen_hvm_params

pytestmark = [pytest.mark.tier6, pytest.mark.real]

BOUND = 90.0    # seconds one call may take in nested TCG (a removal waits for the guest)
RUN = "pv-faults-run.tier6.test"
BARE = "pv-faults-bare.tier6.test"
_STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "blocked",
           libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
           libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}


# ------------------------------------------------------------------------- the lab

@dataclass
class Lab:
    xen: XenLab
    running: Instance            # booted, kept running
    bare: Instance               # started paused, never booted
    totals: dict[str, tuple[int, float]] = field(default_factory=dict)  # calls, seconds


@pytest.fixture(scope="module")
def lab(xen: XenLab, ganeti: Any, request: pytest.FixtureRequest) -> Iterator[Lab]:
    started: list[Instance] = []
    # No disk, no vif: libxl builds it in 2 s instead of 12 (the hotplug scripts).
    bare = Instance(ganeti, PVM, BARE, dict(pv(ganeti, BARE).obj.hvparams, **{
        C.HV_REBOOT_BEHAVIOR: C.INSTANCE_REBOOT_EXIT}), disks=0, nics=0, memory=128)
    lab = None
    try:
        running = pv(ganeti, RUN)
        start(xen, running, started)
        started.append(bare)
        xen.wait_console(running.name, "HVL-READY", timeout=PV_BOOT)
        lab = Lab(xen, running, bare)
        yield lab
    finally:
        remove(xen, started)
        if lab is not None:
            summary(request, lab, "test_real_xen_faults (in dom0)")


# ------------------------------------------------------------------------- the runs

@dataclass
class Run:
    """One call of the method in dom0, libvirt failing at call ``fail_at`` (0: none)."""

    fail_at: int
    answer: dict[str, Any]
    where: str

    @property
    def raised(self) -> bool:
        return "error" in self.answer

    @property
    def result(self) -> Any:
        return self.answer.get("result")


def every_index(lab: Lab, label: str, hv: str, method: str, args: list[Any],
                prepare: Callable[[], None], check: Callable[[Run], None],
                error: str | None = "HypervisorError") -> int:
    """``method`` without faults, then failing at each of its call indexes; before each
    run ``prepare`` puts back the starting state, after it ``check`` checks. The one
    error it may raise is ``error`` (None: none at all). Returns the number of calls."""
    fail_at, total, began = 0, None, time.monotonic()
    while total is None or fail_at <= total:
        prepare()
        where = f"{label}, libvirt failing at call {fail_at or 'none'}"
        answer = lab.xen.faulted(hv, method, fail_at, *args, bound=BOUND)
        assert "crash" not in answer, f"{where}: the node child died: {answer}"
        calls = answer["calls"]
        if total is None:
            assert "error" not in answer, f"{where}: {_error(answer)}; calls {calls}"
            total = len(calls)
        if "error" in answer:
            assert error is not None and error in answer["mro"], \
                f"{where}: raised {_error(answer)}; calls {calls}"
            if answer["injected"]:
                assert INJECTED in answer["message"], \
                    f"{where}: libvirt's message lost: {answer['message']}"
        check(Run(fail_at, answer, where))
        fail_at += 1
    lab.totals[label] = (total, time.monotonic() - began)
    return total


def _error(answer: dict[str, Any]) -> str:
    return f"{answer['error']}: {answer['message']}\n{answer.get('traceback', '')}"


# ------------------------------------------------------------------------- what dom0 has

@dataclass
class Seen:
    """One domain as xl and libvirt have it (``state`` None: libvirt has no domain; the
    aliases of a stopped one are its definition's)."""

    xl_id: int | None
    state: str | None
    blocks: int                  # xl block-list's rows
    disks: int                   # disks in the live XML
    live: set[str] = field(default_factory=set)     # our device aliases there
    config: set[str] = field(default_factory=set)   # ... in the definition
    meta: set[str] = field(default_factory=set)     # ... in our metadata
    pending: set[str] = field(default_factory=set)
    listed: bool | None = None   # in ListInstances (asked with ``reported``)
    info: Any = None             # GetInstanceInfo's answer (likewise)


def seen(xen: XenLab, name: str, reported: str | None = None) -> Seen:
    """What dom0 has of ``name``; with ``reported`` (a hypervisor name), also what that
    class reports of it, asked in the same request before dom0 is read."""
    got = xen.view(name, reported)
    found = Seen(got["xl_id"], _STATES.get(got["state"], got["state"]), got["blocks"] or 0, 0)
    if reported is not None:
        for part in ("listed", "info"):
            if "error" in got[part]:
                raise NodeError(got[part])
        found.listed = name in got["listed"]["result"]
        found.info = got["info"]["result"]
    if got["config"] is None:
        return found
    config = etree.fromstring(got["config"].encode())
    live = etree.fromstring(got["live"].encode()) if got["live"] else config
    found.disks = len(live.xpath("devices/disk"))
    found.live, found.config = _aliases(live), _aliases(config)
    meta = md.find(live)
    if meta is not None:
        parsed = md.parse(meta)
        found.meta = {alias for _kind, _uuid, alias in parsed.devices}
        found.pending = set(parsed.pending_unplug)
    return found


def _aliases(root: etree._Element) -> set[str]:
    return {a for a in root.xpath("devices/*/alias/@name") if a.startswith("ua-")}


def reported(lab: Lab, name: str, where: str) -> Seen:
    """What the library reports of ``name`` is what xl and libvirt have; returns it."""
    found = seen(lab.xen, name, reported=PVM)
    running = found.xl_id is not None
    assert running == (found.state in ("running", "paused", "idle", "blocked")), \
        f"{where}: xl and libvirt disagree: {found}"
    assert found.listed == running, (where, found)
    info = found.info
    if running:
        assert info is not None and info[0] == name and info[1] == found.xl_id \
            and info[4] == HvInstanceState.RUNNING, (where, info, found)
    else:
        assert info is None, (where, info, found)
    return found


def whole(found: Seen, where: str) -> None:
    """Nothing half-attached: every device in all three places, or in none, and xl
    has the disks the live XML has."""
    assert found.live == found.config == found.meta, f"{where}: {found}"
    assert found.pending <= found.live, f"{where}: {found}"
    if found.xl_id is not None:
        assert found.blocks == found.disks, f"{where}: {found}"


def _nothing() -> None:
    pass


# ------------------------------------------------------------------------- lifecycle

def _state(found: Seen) -> str:
    return "absent" if found.state is None else "running" if found.xl_id is not None \
        else "stopped"


def _bare_state(lab: Lab, state: str) -> None:
    """The paused instance absent, stopped (defined) or running (paused)."""
    xen, inst = lab.xen, lab.bare
    now = _state(seen(xen, inst.name))
    if now == state:
        return
    if now == "running":
        xen.call(PVM, "StopInstance", inst.rpc, True)
    if state == "absent":
        xen.call(PVM, "CleanupInstance", inst.name)
        return
    if now != "running" or state == "running":
        xen.call(PVM, "StartInstance", inst.rpc, inst.block_devices(), True)
    if state == "stopped":
        xen.call(PVM, "StopInstance", inst.rpc, True)


def _lifecycle(lab: Lab, label: str, state: str, done: str, method: str,
               args: list[Any]) -> None:
    """``method`` from ``state``; one that returned leaves the instance ``done``."""
    name = lab.bare.name

    def check(run: Run) -> None:
        found = reported(lab, name, run.where)
        if found.state is not None:
            whole(found, run.where)
        if not run.raised:
            assert _state(found) == done, f"{run.where}: {found}"
        elif method == "StartInstance":
            assert found.state is None and found.xl_id is None, \
                f"{run.where}: a refused start left a domain: {found}"

    every_index(lab, label, PVM, method, args, lambda: _bare_state(lab, state), check)


def test_start_instance(lab: Lab) -> None:
    _lifecycle(lab, "StartInstance(paused)", "absent", "running", "StartInstance",
               [lab.bare.rpc, lab.bare.block_devices(), True])


def test_stop_instance_forced(lab: Lab) -> None:
    _lifecycle(lab, "StopInstance(forced)", "running", "stopped", "StopInstance",
               [lab.bare.rpc, True])


def test_reboot_instance(lab: Lab) -> None:
    _lifecycle(lab, "RebootInstance(exit: destroy and start)", "running", "running",
               "RebootInstance", [lab.bare.rpc])


def test_cleanup_instance(lab: Lab) -> None:
    _lifecycle(lab, "CleanupInstance", "stopped", "absent", "CleanupInstance",
               [lab.bare.name])


# ------------------------------------------------------------------------- reads and changes

def _running_check(lab: Lab, returned: Callable[[Any], bool] | None = None
                   ) -> Callable[[Run], None]:
    """After a run on the booted guest: still running and reported so, nothing half
    attached, and what the call returned (if it returned) passes ``returned``."""
    name = lab.running.name

    def check(run: Run) -> None:
        found = reported(lab, name, run.where)
        assert found.xl_id is not None, run.where
        whole(found, run.where)
        if not run.raised and returned is not None:
            assert returned(run.result), f"{run.where}: returned {run.result!r}"
    return check


def test_info_and_listing(lab: Lab) -> None:
    name = lab.running.name
    every_index(lab, "GetInstanceInfo", PVM, "GetInstanceInfo", [name, None], _nothing,
                _running_check(lab, lambda info: info is not None and info[0] == name
                               and info[4] == HvInstanceState.RUNNING))
    every_index(lab, "GetAllInstancesInfo", PVM, "GetAllInstancesInfo", [None], _nothing,
                _running_check(lab, lambda infos: name in {i[0] for i in infos}))
    every_index(lab, "ListInstances", PVM, "ListInstances", [None], _nothing,
                _running_check(lab, lambda names: name in names))


def test_node_and_verify(lab: Lab) -> None:
    """GetNodeInfo and Verify answer without libvirt too (Ganeti calls them unguarded)."""
    inst = lab.running
    calls: list[tuple[str, str, str, list[Any], Callable[[Any], bool] | None,
                      str | None]] = [
        ("GetNodeInfo", PVM, "GetNodeInfo", [None], lambda info: "memory_free" in info,
         None),
        ("Verify", PVM, "Verify", [None], None, None),
        ("Verify(xen-hvm, hvparams)", HVM, "Verify", [xen_hvm_params()], None, None),
        ("VerifyInstance", PVM, "VerifyInstance", [inst.rpc], lambda same: same is True,
         "HypervisorError"),
    ]
    for label, hv, method, args, returned, error in calls:
        every_index(lab, label, hv, method, args, _nothing, _running_check(lab, returned),
                    error)


def test_balloon(lab: Lab) -> None:
    inst = lab.running
    try:
        every_index(lab, "BalloonInstanceMemory", PVM, "BalloonInstanceMemory",
                    [inst.rpc, 192], _nothing, _running_check(lab))
    finally:
        lab.xen.call(PVM, "BalloonInstanceMemory", inst.rpc, 256)


def test_migration_calls(lab: Lab, ganeti: Any) -> None:
    """The source's calls with no migration under way, and the target's acceptance of
    an instance this host does not run."""
    inst = lab.running
    every_index(lab, "MigrationInfo", PVM, "MigrationInfo", [inst.rpc], _nothing,
                _running_check(lab, lambda xml: f"<name>{inst.name}</name>" in xml))
    every_index(lab, "GetMigrationStatus", PVM, "GetMigrationStatus", [inst.rpc], _nothing,
                _running_check(lab))
    every_index(lab, "FinalizeMigrationSource(failed)", PVM, "FinalizeMigrationSource",
                [inst.rpc, False, True], _nothing, _running_check(lab))
    info = lab.xen.call(PVM, "MigrationInfo", inst.rpc)
    incoming = pv(ganeti, "pv-faults-in.tier6.test")

    def absent(run: Run) -> None:
        assert _state(reported(lab, incoming.name, run.where)) == "absent", run.where

    every_index(lab, "AcceptInstance", PVM, "AcceptInstance",
                [incoming.rpc, info, "127.0.0.1"], _nothing, absent)
