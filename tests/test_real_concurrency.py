"""Tier 3: concurrency the way Ganeti's node daemon makes it (issue 12, part 4).

noded forks a fresh child for every RPC, so two calls on one node run in two processes,
each with its own ``KVMHypervisor`` and libvirt connection; a lock held in one process
means nothing to the other. Every worker here is such a child, never a thread: forked
from a clean parent as noded's are (``lab.noded``).

* Hot-plug: 8 processes hot-add disks and NICs to one running instance at once; 20
  rounds. Every fifth is on a booted guest and 8 processes then hot-remove them at once;
  the others are on fresh paused instances, half of them with only 6 free PCI slots (2
  adds must fail). Every success is checked in the live XML, the persistent definition
  and our metadata (live and persistent), with distinct slots and aliases; every
  failure is a HotplugError that left nothing anywhere.
* Lifecycle: 4 processes start (paused: no boot needed) and stop 4 instances, 20
  times each, while a fifth lists the node (ListInstances, GetAllInstancesInfo) without
  pause. The lister never raises; whatever it sees is a state the instance was in
  during that call, and an instance that was up (or gone) for the whole call is
  reported so.

No timing is asserted: "during the call" is decided by CLOCK_MONOTONIC stamps, which
every process on the machine shares.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import metadata as md
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC
from lab import noded
from lab.instances import BOOT, READY, Running, make_instance

pytestmark = [pytest.mark.tier3, pytest.mark.real]

ROUNDS = 20
WORKERS = 8
LIFECYCLES = 4
DISK, NIC_T = C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC


def _alias(kind: str, uuid: str) -> str:
    return f"ua-{kind}-{'-'.join(uuid.split('-')[:3])}"


# ------------------------------------------------------------------------------ hot-plug

class _Views:
    """Where a device must (or must not) be: live XML, persistent XML, metadata."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.live = etree.fromstring(dom.XMLDesc(0).encode())
        self.config = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        get = dom.metadata
        self.meta_live = md.from_libvirt(etree.fromstring(get(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, md.NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_LIVE)))
        self.meta_config = md.from_libvirt(etree.fromstring(get(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, md.NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)))

    @staticmethod
    def device(root: etree._Element, alias: str) -> etree._Element | None:
        found = root.xpath("devices/*[alias/@name=$a]", a=alias)
        assert len(found) <= 1, f"{alias} is attached {len(found)} times"
        return found[0] if found else None

    def slots(self, root: etree._Element) -> list[str]:
        return root.xpath("devices/*/address[@type='pci']/@slot")

    def recorded(self, alias: str) -> tuple[int, int]:
        return (sum(d[2] == alias for d in self.meta_live.devices),
                sum(d[2] == alias for d in self.meta_config.devices))


def _new_devices(run: Running, round_no: int) -> list[tuple[str, Any, Any]]:
    """WORKERS devices, disks and NICs alternating: (kind, device, extra)."""
    out: list[tuple[str, Any, Any]] = []
    for i in range(WORKERS):
        if i % 2 == 0:
            disk, extra = run.new_disk(1)
            out.append((DISK, disk, extra))
        else:
            nic = NIC(mac=f"aa:00:00:7c:{round_no:02x}:{i:02x}",
                      nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
            out.append((NIC_T, nic, None))
    return out


def _guest_sees(run: Running, disks: int, nics: int, since: int) -> None:
    """Wait until the guest lists ``disks`` virtio disks and ``nics`` NICs."""
    run.serial.wait_dev(lambda d: sum(b.startswith("vd") for b in d["blk"]) == disks
                        and sum(n.startswith("eth") for n in d["net"]) == nics, 120, since)


def _hotplug_round(run: Running, round_no: int, free_slots: int, tally: dict[str, Any],
                   remove: bool) -> None:
    """One round: WORKERS concurrent hot-adds and their checks; with ``remove`` (a
    booted guest, which acknowledges unplugs), as many concurrent hot-removes."""
    uri, inst = run.hv.uri, run.inst
    before = _Views(run.dom)
    devices = _new_devices(run, round_no)
    mark = run.serial.mark()

    started = time.monotonic()
    results = noded.calls(uri, [("HotAddDevice", (inst, kind, dev, extra, 10 + i))
                                for i, (kind, dev, extra) in enumerate(devices)])
    tally["add_s"] += time.monotonic() - started
    after = _Views(run.dom)
    ok = [dev for dev, (res, _t) in zip(devices, results) if res == "ok"]
    failed = [(dev, res, text) for dev, (res, text) in zip(devices, results) if res != "ok"]
    escapes = [f"{res}: {text}" for _dev, res, text in failed if res != "HotplugError"]
    assert not escapes, f"round {round_no}: non-HotplugError escapes:\n" + "\n".join(escapes)
    assert len(ok) == min(WORKERS, free_slots), (
        f"round {round_no}: {len(ok)} of {WORKERS} adds succeeded with {free_slots} free "
        "slots; failures:\n" + "\n".join(t for _d, _r, t in failed))
    assert all("No free PCI slot" in text for _d, _r, text in failed), failed
    live_slots, config_slots = {}, {}
    for kind, dev, _extra in ok:
        alias = _alias(kind, dev.uuid)
        live = _Views.device(after.live, alias)
        config = _Views.device(after.config, alias)
        assert live is not None, f"round {round_no}: {alias} reported added, not live"
        assert config is not None, f"round {round_no}: {alias} not in the persistent definition"
        live_slots[alias] = live.find("address").get("slot")
        config_slots[alias] = config.find("address").get("slot")
        assert after.recorded(alias) == (1, 1), (
            f"round {round_no}: {alias} recorded {after.recorded(alias)} times in the "
            "(live, persistent) metadata")
    assert live_slots == config_slots
    assert len(set(live_slots.values())) == len(ok), f"round {round_no}: shared slots {live_slots}"
    for root in (after.live, after.config):
        slots = after.slots(root)
        assert len(slots) == len(set(slots)), f"round {round_no}: a PCI slot is used twice"
    for (kind, dev, _extra), _res, _text in failed:
        alias = _alias(kind, dev.uuid)
        assert _Views.device(after.live, alias) is None, f"{alias} failed but is live"
        assert _Views.device(after.config, alias) is None, f"{alias} failed but is defined"
        assert after.recorded(alias) == (0, 0), f"{alias} failed but is in our metadata"
    assert not after.meta_live.pending_unplug
    tally["adds_ok"] += len(ok)
    tally["adds_failed"] += len(failed)
    tally["slots"] |= set(live_slots.values())  # type: ignore[operator]

    if not remove:
        return
    n_disks = sum(k == DISK for k, _d, _e in ok)
    started = time.monotonic()
    _guest_sees(run, 1 + n_disks, 1 + len(ok) - n_disks, mark)
    tally["guest_s"] += time.monotonic() - started
    mark = run.serial.mark()

    started = time.monotonic()
    results = noded.calls(uri, [("HotDelDevice", (inst, kind, dev, extra, 10 + i))
                                for i, (kind, dev, extra) in enumerate(ok)])
    tally["remove_s"] += time.monotonic() - started
    bad = [text for res, text in results if res != "ok"]
    assert not bad, f"round {round_no}: hot-removes failed:\n" + "\n".join(bad)
    _guest_sees(run, 1, 1, mark)
    final = _Views(run.dom)
    for kind, dev, _extra in ok:
        alias = _alias(kind, dev.uuid)
        assert _Views.device(final.live, alias) is None
        assert _Views.device(final.config, alias) is None
        assert final.recorded(alias) == (0, 0), f"round {round_no}: {alias} still recorded"
    assert final.meta_live.devices == before.meta_live.devices
    assert final.meta_config.devices == before.meta_config.devices
    assert not final.meta_live.pending_unplug and not final.meta_config.pending_unplug
    tally["removes_ok"] += len(ok)


def test_hotplug_from_eight_processes(boot: Callable[..., Running]) -> None:
    """Every fifth round on a booted guest, with concurrent hot-removes after the adds;
    the others each on a fresh paused instance without an OS (nothing to boot, nothing
    to remove: it is destroyed), alternately roomy and tight."""
    # Roomy: the default reservations (12); disk0 and nic0 take 0x0c and 0x0d, 18 slots
    # stay free. Tight: reservations 24, disk0 and nic0 take 24 and 25, 6 stay free and
    # 2 of the 8 adds must fail.
    booted = boot("cc-booted")
    booted.serial.wait(READY, BOOT)
    tally: dict[str, Any] = {"adds_ok": 0, "adds_failed": 0, "removes_ok": 0, "slots": set(),
                             "add_s": 0.0, "guest_s": 0.0, "remove_s": 0.0}
    for round_no in range(ROUNDS):
        if round_no % 5 == 0:
            _hotplug_round(booted, round_no, 18, tally, remove=True)
            continue
        tight = round_no % 2 == 1
        run = boot(f"cc-paused-{round_no}", os=False, paused=True,
                   **({"kvm_pci_reservations": 24} if tight else {}))
        _hotplug_round(run, round_no, 6 if tight else 18, tally, remove=False)
        run.hv.StopInstance(None, force=True, name=run.inst.name)
        run.hv.CleanupInstance(run.inst.name)
    print(f"hotplug rounds={ROUNDS} adds_ok={tally['adds_ok']} adds_failed="
          f"{tally['adds_failed']} removes_ok={tally['removes_ok']} distinct_slots="
          f"{sorted(tally['slots'])} seconds: adds {tally['add_s']:.0f}, guest "
          f"{tally['guest_s']:.0f}, removes {tally['remove_s']:.0f}")


# ------------------------------------------------------------------------------ lifecycle

def _settle(calls: Any) -> None:
    """Let the lister finish one whole call (a sync, not a sleep): the call under way
    may have begun before the caller's stamp."""
    target = calls.value + 2
    while calls.value < target:
        time.sleep(0.005)


def _life_worker(uri: str, name: str, workdir: Path, calls: Any, gate: Any, queue: Any
                 ) -> None:
    """ROUNDS x (start paused, forced stop, cleanup) of one instance, each call on a
    fresh hypervisor object, stamping every step; between steps the lister finishes a
    call, so that every up and every gone interval holds a listing to check."""
    try:
        inst, block = make_instance(name, None, workdir)  # one instance: one uuid throughout
        events = [("gone", time.monotonic())]
        gate.wait(noded.JOIN)
        for _ in range(ROUNDS):
            _settle(calls)
            events.append(("start", time.monotonic()))
            noded.fresh_hypervisor(uri).StartInstance(inst, block, startup_paused=True)
            events.append(("up", time.monotonic()))
            _settle(calls)
            events.append(("stop", time.monotonic()))
            noded.fresh_hypervisor(uri).StopInstance(inst, force=True)
            noded.fresh_hypervisor(uri).CleanupInstance(name)
            events.append(("gone", time.monotonic()))
        queue.put((name, "ok", events))
    except BaseException as err:  # noqa: BLE001 - reported, not lost in a child
        queue.put((name, f"{type(err).__name__}: {err}\n{traceback.format_exc()}", []))


def _lister(uri: str, stop: Any, calls: Any, queue: Any) -> None:
    """List until told to stop: (kind, t0, t1, names or info tuples, or the escape)."""
    seen = []
    while not stop.is_set():
        hv = KVMHypervisor(uri=uri)  # a fresh object per call, as noded builds them
        kind = "list" if calls.value % 2 == 0 else "info"
        t0 = time.monotonic()
        try:
            answer: Any = hv.ListInstances() if kind == "list" else hv.GetAllInstancesInfo()
        except BaseException as err:  # noqa: BLE001 - the lister must never raise
            answer, kind = f"{type(err).__name__}: {err}", "raised"
        seen.append((kind, t0, time.monotonic(), answer))
        with calls.get_lock():
            calls.value += 1
        time.sleep(0.002)  # leave the 2 cores some room; the race is still every call
    queue.put(("lister", "ok", seen))


def _intervals(events: list[tuple[str, float]]) -> tuple[list, list]:
    """(up, gone) intervals: when the instance certainly ran / certainly did not exist
    (from StartInstance's return to StopInstance's call; from CleanupInstance's return
    to the next StartInstance's call)."""
    up, gone = [], []
    for (what, t), (nxt, t2) in itertools.pairwise(events):
        if (what, nxt) == ("up", "stop"):
            up.append((t, t2))
        elif (what, nxt) == ("gone", "start"):
            gone.append((t, t2))
    gone.append((events[-1][1], float("inf")))
    return up, gone


def test_lifecycle_from_four_processes_while_a_fifth_lists(
        boot: Callable[..., Running], libvirt_daemon: Any, tmp_path: Path) -> None:
    witness = boot("cc-witness", os=False, paused=True)  # up throughout: always listed
    uri = libvirt_daemon.uri
    names = [f"cc-life-{i}" for i in range(LIFECYCLES)]
    ctx = noded.CONTEXT
    queue, stop, calls = ctx.Queue(), ctx.Event(), ctx.Value("l", 0)
    gate = ctx.Barrier(LIFECYCLES)
    lister = ctx.Process(target=_lister, args=(uri, stop, calls, queue), daemon=True)
    workers = [ctx.Process(target=_life_worker, args=(uri, n, tmp_path, calls, gate, queue),
                           daemon=True) for n in names]
    lister.start()
    started = time.monotonic()
    reports, outcome = {}, {}
    try:
        for proc in workers:
            proc.start()
        for _ in names:
            name, result, events = queue.get(timeout=noded.JOIN)
            reports[name], outcome[name] = events, result
    finally:
        stop.set()
        elapsed = time.monotonic() - started
        # Read before joining: a child exits only once its queue's data is through.
        _name, _res, reports["lister"] = queue.get(timeout=noded.JOIN)
        for proc in (*workers, lister):
            proc.join(noded.JOIN)
    assert lister.exitcode == 0 and all(p.exitcode == 0 for p in workers)
    bad = [result for result in outcome.values() if result != "ok"]
    assert not bad, "start/stop failed:\n" + "\n".join(bad)

    seen = reports["lister"]
    raised = [answer for kind, _t0, _t1, answer in seen if kind == "raised"]
    assert not raised, f"the lister raised {len(raised)} times: {raised[:3]}"
    ours = set(names) | {witness.inst.name}
    intervals = {name: _intervals(reports[name]) for name in names}
    problems: list[str] = []
    checked = 0
    for kind, t0, t1, answer in seen:
        listed = set(answer) if kind == "list" else {info[0] for info in answer}
        if witness.inst.name not in listed:
            problems.append(f"{kind} at {t0:.3f}: the witness (always up) is missing")
        if kind == "info":
            for info in answer:
                name, dom_id, mem, vcpus, state, _cpu = info
                if name in ours and not (dom_id > 0 and 128 <= mem <= 192 and vcpus == 1
                                         and state == C.HV_STATE_RUNNING):
                    problems.append(f"info at {t0:.3f}: inconsistent tuple {info}")
        for name in names:
            up, gone = intervals[name]
            if name in listed and any(a <= t0 and t1 <= b for a, b in gone):
                problems.append(f"{kind} [{t0:.3f}, {t1:.3f}]: {name} listed while gone")
            if name not in listed and any(a <= t0 and t1 <= b for a, b in up):
                problems.append(f"{kind} [{t0:.3f}, {t1:.3f}]: {name} up but not listed")
            checked += any(a <= t0 and t1 <= b for a, b in up + gone)
    counts = {k: sum(s[0] == k for s in seen) for k in ("list", "info")}
    print(f"lifecycle cycles={ROUNDS * LIFECYCLES} lister calls={counts} certain views "
          f"checked={checked} problems={len(problems)} seconds {elapsed:.0f}")
    assert not problems, f"{len(problems)} inconsistent views:\n" + "\n".join(problems[:20])

