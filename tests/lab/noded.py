"""Hypervisor calls made the way Ganeti's node daemon makes them.

noded runs every RPC in a child it forks from its main process, which has imported the
hypervisor modules but holds no libvirt connection and never ran libvirt's event loop;
the child builds a fresh hypervisor object and opens its own connection. A test
process is no such parent: it holds connections and may have run the event loop, whose
wakeup pipe a forked child would share with it. So the children here are forked by
multiprocessing's fork server, a clean process that imported this module (and with it
``hvlibvirt.kvm``) and nothing else.

``calls(uri, [(method, args), ...])`` runs each call in its own child, all released
together, and returns what each child reported.
"""

from __future__ import annotations

import multiprocessing
import traceback
from typing import Any

from hvlibvirt import connection
from hvlibvirt.kvm import KVMHypervisor

JOIN = 300.0  # seconds a child may take before the caller gives up on it (not a timing check)
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload([__name__])

Outcome = tuple[str, str]  # ("ok", repr of the result) or (exception class, text + traceback)


def fresh_hypervisor(uri: str) -> KVMHypervisor:
    """What noded's child builds for an RPC, connected (events on, as hotplug wants)."""
    hv = KVMHypervisor(uri=uri)
    connection.get(uri, events=True)
    return hv


def _child(index: int, uri: str, method: str, args: tuple[Any, ...], gate: Any,
           results: Any) -> None:
    try:
        hv = fresh_hypervisor(uri)  # before the gate: the calls race, not the logins
        gate.wait(JOIN)
        value = getattr(hv, method)(*args)
        results.put((index, "ok", repr(value)))
    except BaseException as err:  # noqa: BLE001 - every escape is reported
        results.put((index, type(err).__name__, f"{err}\n{traceback.format_exc()}"))


def calls(uri: str, requests: list[tuple[str, tuple[Any, ...]]]) -> list[Outcome]:
    """Run each (method, args) on a fresh KVMHypervisor in its own forked child, all
    released at once; the outcomes in request order."""
    gate = CONTEXT.Barrier(len(requests))
    results = CONTEXT.Queue()
    procs = [CONTEXT.Process(target=_child, args=(i, uri, method, args, gate, results),
                             daemon=True)
             for i, (method, args) in enumerate(requests)]
    for proc in procs:
        proc.start()
    got: dict[int, Outcome] = {}
    try:
        for _ in procs:
            index, kind, text = results.get(timeout=JOIN)
            got[index] = (kind, text)
    finally:
        for proc in procs:
            proc.join(JOIN)
            if proc.exitcode is None:
                proc.kill()
                proc.join(JOIN)
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    assert not bad, f"children exited with {bad}"
    return [got[i] for i in range(len(requests))]
