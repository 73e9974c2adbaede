"""Where a noded child's Python time goes, with libvirt answered instantly.

Run: /usr/bin/python3 bench/fresh_child.py [--rounds 300]   (Ganeti's interpreter)

bench/noded.py times whole calls against a real libvirtd. This script takes the
daemon away (``libvirt.open`` returns a stand-in whose calls return at once) to show
what is left: the Python a fresh child runs for one GetInstanceInfo, step by step, in
a child forked per sample from a noded-like parent (``ganeti.server.noded`` imported,
``hvlibvirt.ganeti.serve`` applied, the RPC's JSON body decoded before the clock starts,
as noded's handler does).

In a forked child, the first write to any page the parent owns copies it (a minor page
fault, ~3 us on this machine), and CPython writes to every object it touches (reference
counts; 3.11 also writes to code objects as it runs them). So a fresh child's cost is
mostly the number of distinct objects a call touches, which the fault count shows and
which, unlike the time, hardly varies between runs. Each row is a prefix of the call:
its cost minus the previous row's is that step's.

Prints figures; asserts nothing. Its temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GANETI_MODULES = "/usr/share/ganeti/3.0"
NAME = "inst1.example.com"
UUID = "6f1a0c2e-1111-4222-8333-444455556666"
URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


class StandInDomain:
    """What the calls read of a running domain, answered at once."""

    def UUIDString(self) -> str:  # noqa: N802
        return UUID

    def name(self) -> str:
        return NAME

    def ID(self) -> int:  # noqa: N802
        return 7

    def info(self) -> list[int]:
        return [1, 262144, 262144, 1, 123456789]


class StandInConnection:
    def lookupByName(self, _name: str) -> StandInDomain:  # noqa: N802
        return StandInDomain()

    def listAllDomains(self, _flags: int) -> list[StandInDomain]:  # noqa: N802
        return [StandInDomain()]

    def isAlive(self) -> int:  # noqa: N802
        return 1


class TrivialHypervisor:
    """The least a Ganeti hypervisor class can be (what GetHypervisor builds)."""

    def __init__(self) -> None:
        self._uri = None


def setup(work: str) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """A noded-like parent: Ganeti imported, hvlibvirt served, libvirt stood in for;
    the instance's ownership mark written as StartInstance would have."""
    conf = os.path.join(work, "hvlibvirt.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"[kvm]\nuri = {URI}\n")
    os.environ.update(HVLIBVIRT_CONFIG=conf, HVLIBVIRT_RUN_DIR=os.path.join(work, "run"))
    sys.path[:0] = [GANETI_MODULES, str(ROOT)]
    import ganeti.server.noded  # noqa: F401  what noded has imported when it forks
    import libvirt
    from ganeti import constants, hypervisor, serializer

    libvirt.open = lambda _uri: StandInConnection()
    from hvlibvirt import ownership
    from hvlibvirt.ganeti import serve

    serve(hypervisor._HYPERVISOR_MAP, ["kvm"])  # noqa: SLF001 - what noded's map gets
    hypervisor._HYPERVISOR_MAP["trivial"] = TrivialHypervisor  # noqa: SLF001
    marks = ownership._mark_dir(URI)  # noqa: SLF001
    assert marks is not None, "no trusted mark directory"
    open(os.path.join(marks, UUID), "w").close()
    hvparams = dict(constants.HVC_DEFAULTS[constants.HT_KVM])
    body = serializer.DumpJson([NAME, "kvm", hvparams])
    return hypervisor.GetHypervisor, hvparams, body


def steps(get: Callable[[str], Any], hvp: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Prefixes of GetInstanceInfo's path, then whole calls for comparison."""
    import libvirt

    from hvlibvirt import domains, ownership
    from hvlibvirt.domain_xml import identity

    def upto(stop: int) -> Any:
        hv = get("kvm")
        if stop > 1:
            identity.instance_name(NAME)
        if stop > 2:
            uri = hv.uri
        if stop > 3:
            dom = hv.host.lookup(NAME)  # connection (cached per process) and lookup
        if stop > 4:
            ownership.is_ours(uri, dom)
        if stop > 5:
            domains.instance_info(dom)

    def raw() -> Any:
        get("trivial")
        dom = libvirt.open(URI).lookupByName(NAME)
        return dom.name(), dom.ID(), dom.info()

    return {
        "nothing": lambda: None,
        "raw libvirt-python in a trivial hypervisor class": raw,
        "GetHypervisor (hvlibvirt's class)": lambda: upto(1),
        " + instance name checked": lambda: upto(2),
        " + URI (environment, configuration file)": lambda: upto(3),
        " + connection (cached per process), lookup": lambda: upto(4),
        " + ownership mark": lambda: upto(5),
        " + info tuple (= GetInstanceInfo's work)": lambda: upto(6),
        "GetInstanceInfo": lambda: get("kvm").GetInstanceInfo(NAME, hvparams=hvp),
        "ListInstances": lambda: get("kvm").ListInstances(hvparams=hvp),
        "GetAllInstancesInfo": lambda: get("kvm").GetAllInstancesInfo(hvparams=hvp),
    }


def in_child(work: Callable[[], Any], body: str) -> tuple[float, int]:
    """Seconds and minor page faults of ``work()`` in a fresh child."""
    from ganeti import serializer

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        serializer.LoadJson(body)  # the request noded's handler decodes first
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        os.write(write_end, json.dumps([seconds, faults]).encode())
        os._exit(0)
    os.close(write_end)
    reply = os.read(read_end, 256)
    os.close(read_end)
    os.waitpid(pid, 0)
    seconds, faults = json.loads(reply)
    return seconds, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    opts = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hvlibvirt-fresh-child-")
    try:
        get, hvp, body = setup(work)
        table = steps(get, hvp)
        samples: dict[str, list[tuple[float, int]]] = {label: [] for label in table}
        for _ in range(opts.rounds):  # interleaved: drift hits every row alike
            for label, work_fn in table.items():
                samples[label].append(in_child(work_fn, body))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"A fresh child per sample, libvirt answering at once; median of {opts.rounds}:")
    print(f"  {'':<50} {'us':>7} {'faults':>7}")
    for label, values in samples.items():
        us = statistics.median(v[0] for v in values) * 1e6
        faults = statistics.median(v[1] for v in values)
        print(f"  {label:<50} {us:7.1f} {faults:7.0f}")


if __name__ == "__main__":
    main()
