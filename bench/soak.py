"""A soak: one long-lived process runs thousands of mixed operations on real guests
while a second process lists, and what the first keeps (file descriptors, threads,
RSS, per-process caches, children, files under /run/hvlibvirt) is measured after a
warm-up and at the end.

Ganeti's node daemon runs each call in a fresh child, but the master's job processes,
tools and other users of the library live long: nothing may grow with the number of
calls or of instances ever seen. The operations (seeded, so a run can be repeated):
info, list, all-info, balloon, hot-add and hot-remove of a disk or NIC, reboot, stop
and start again, each on one of a few TCG guests of the lab's private libvirtd
(tests/lab), whose boot is awaited before a hotplug (the guest must answer the unplug).

    .venv/bin/python bench/soak.py [--ops 2000] [--guests 3] [--seed 26]

Exit status 1 when a figure grew past its bound (printed beside it).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hvlibvirt import constants as C, locks, ownership  # noqa: E402
from hvlibvirt.kvm import KVMHypervisor  # noqa: E402
from hvlibvirt.objects import NIC  # noqa: E402
from lab.daemon import standalone_lab  # noqa: E402
from lab.guest import build_guest, default_cache_dir  # noqa: E402
from lab.instances import BOOT, READY, Running, start  # noqa: E402
from lab.serial import SerialTimeout  # noqa: E402

# What may differ between the warm-up and the end (the event loop thread and libvirt's
# own buffers are taken in the warm-up).
BOUNDS = {"fds": 0, "threads": 0, "children": 0, "rss_kib": 8 * 1024,
          "ownership_known": 0, "lock_entries": 0, "run_entries": 0}
WEIGHTS = {"info": 34, "list": 18, "all_info": 12, "balloon": 12, "hotplug_disk": 6,
           "hotplug_nic": 6, "reboot": 5, "restart": 7}
LISTER = """
import sys, time
from hvlibvirt.kvm import KVMHypervisor  # lists as a monitoring loop would, 50 times a second
hv = KVMHypervisor(uri=sys.argv[1])
calls = 0
while True:
    hv.ListInstances(); hv.GetAllInstancesInfo(); calls += 2
    time.sleep(0.02)
    if calls % 200 == 0:
        print(calls, flush=True)
"""


def figures() -> dict[str, int]:
    """What this process keeps, and the node files of its URI."""
    status = dict(line.split(":", 1) for line in
                  Path("/proc/self/status").read_text().splitlines() if ":" in line)
    children = [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == os.getpid()]
    run_entries = sum(len(files) for _dirpath, _dirs, files in os.walk("/run/hvlibvirt"))
    return {"fds": len(os.listdir("/proc/self/fd")),
            "threads": int(status["Threads"]),
            "children": len(children),
            "rss_kib": int(status["VmRSS"].split()[0]),
            "ownership_known": len(ownership._known),
            "lock_entries": len(locks._entries),
            "run_entries": run_entries}


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


class Soak:
    def __init__(self, hv: KVMHypervisor, work: Path, guests: int, seed: int) -> None:
        self.hv, self.work = hv, work
        self.rng = random.Random(seed)
        self.image = build_guest(default_cache_dir())
        self.runs: list[Running] = [start(hv, f"soak{i}.bench.test", self.image, work)
                                    for i in range(guests)]
        self.ready = [False] * guests
        self.marks = [0] * guests  # serial log offsets of each guest's latest boot
        self.boot_waits: list[float] = []
        self.stuck: list[str] = []  # guests that never booted after a start or reset
        self.last = ["start"] * guests  # each guest's latest reboot or restart
        self.done: Counter[str] = Counter()
        self.seq = 100

    def _booted(self, index: int) -> Running:
        """The guest, once it has booted since its latest start or reset (it must answer
        an unplug). Generous: the soak measures what this process keeps, not TCG."""
        run = self.runs[index]
        while not self.ready[index]:
            t0 = time.monotonic()
            try:
                run.serial.wait(READY, 3 * BOOT, self.marks[index])
            except SerialTimeout:
                # Counted and printed, then started afresh: the soak goes on measuring.
                self.stuck.append(f"{run.inst.name} after {self.last[index]} "
                                  f"(libvirt state {run.dom.state()})")
                self.op_on(index, "restart")
                continue
            self.boot_waits.append(time.monotonic() - t0)
            self.ready[index] = True
        return run

    def op(self, kind: str) -> None:
        self.op_on(self.rng.randrange(len(self.runs)), kind)

    def op_on(self, index: int, kind: str) -> None:
        run, name = self.runs[index], self.runs[index].inst.name
        if kind == "info":
            assert self.hv.GetInstanceInfo(name) is not None
        elif kind == "list":
            assert name in self.hv.ListInstances()
        elif kind == "all_info":
            assert len(self.hv.GetAllInstancesInfo()) == len(self.runs)
        elif kind == "balloon":
            self.hv.BalloonInstanceMemory(run.inst, self.rng.choice((160, 192)))
        elif kind in ("hotplug_disk", "hotplug_nic"):
            run = self._booted(index)
            self.seq += 1
            if kind == "hotplug_disk":
                device, extra = run.new_disk(4)
                dev_type = C.HOTPLUG_TARGET_DISK
            else:
                device = NIC(mac=f"aa:00:00:5a:{self.seq // 256 % 256:02x}:{self.seq % 256:02x}",
                             nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
                extra, dev_type = None, C.HOTPLUG_TARGET_NIC
            self.hv.HotAddDevice(run.inst, dev_type, device, extra, self.seq)
            self.hv.HotDelDevice(run.inst, dev_type, device, extra, self.seq)
            if extra is not None:
                os.unlink(extra[0])
        elif kind == "reboot":
            self.marks[index] = run.serial.mark()
            self.hv.RebootInstance(run.inst)
            self.ready[index], self.last[index] = False, kind
        elif kind == "restart":
            self.hv.StopInstance(run.inst, force=True)
            self.hv.CleanupInstance(name)
            self.marks[index] = run.serial.mark()
            self.hv.StartInstance(run.inst, run.block_devices, startup_paused=False)
            self.ready[index], self.last[index] = False, kind
        self.done[kind] += 1

    def run_ops(self, count: int) -> None:
        kinds = list(WEIGHTS)
        for _ in range(count):
            self.op(self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0])

    def stop(self) -> None:
        for run in self.runs:
            self.hv.StopInstance(run.inst, force=True)
            self.hv.CleanupInstance(run.inst.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--guests", type=int, default=3)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    warmup = max(50, args.ops // 20)
    t0 = time.monotonic()
    with standalone_lab("soak") as (work, daemons, _net):
        logs = work / "serial"
        logs.mkdir(mode=0o700)
        hv = KVMHypervisor(uri=daemons[0].uri, serial_log_dir=str(logs))
        soak = Soak(hv, work, args.guests, args.seed)
        lister = subprocess.Popen([sys.executable, "-c", LISTER, daemons[0].uri],
                                  stdout=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            soak.run_ops(warmup)
            before = figures()
            t_ops = time.monotonic()
            soak.run_ops(args.ops - warmup)
            after = figures()
            seconds = time.monotonic() - t_ops
        finally:
            lister.kill()
            listed = lister.communicate()[0].split()
            soak.stop()
    print(f"{args.ops} operations ({warmup} of warm-up), {args.guests} guests, seed "
          f"{args.seed}: {dict(sorted(soak.done.items()))}")
    print(f"measured part: {args.ops - warmup} operations in {seconds:.0f} s; the lister "
          f"made {listed[-1] if listed else 0} list calls meanwhile; waits for a boot before "
          f"a hotplug: {len(soak.boot_waits)}, longest {max(soak.boot_waits, default=0):.1f} s")
    grown = []
    print("| figure | after warm-up | end | growth | bound |\n|---|---|---|---|---|")
    for key, bound in BOUNDS.items():
        growth = after[key] - before[key]
        ok = growth <= bound
        grown += [] if ok else [key]
        print(f"| {key} | {before[key]} | {after[key]} | {growth:+d} | <= {bound:+d}"
              f"{'' if ok else ' EXCEEDED'} |")
    print(f"guests that never booted after a start or reset (started afresh): "
          f"{len(soak.stuck)} {soak.stuck}")
    print(f"whole run {time.monotonic() - t0:.0f} s")
    return 1 if grown else 0


if __name__ == "__main__":
    sys.exit(main())
