"""How fast the node daemon's hot paths are: instance info, listing, start and stop.

Run as root: .venv/bin/python bench/instance_info.py [--skip-real]

* On a private libvirtd (the test harness's, in its own namespaces) with 1, 5 and 10
  running TCG Linux guests: the median time of GetInstanceInfo, GetAllInstancesInfo and
  ListInstances, next to the plain libvirt way of getting the same facts
  (listAllDomains + virDomainGetInfo per domain) measured in the same run.
* StartInstance's return time next to a raw defineXML+create and a raw createXML of
  the same XML; a forced StopInstance next to libvirt's own destroy.
* On libvirt's test driver with 1, 100 and 1,000 instances: the same three calls.

Prints figures; asserts nothing. Ganeti 3.0's own GetAllInstancesInfo cannot run here
(it needs its runtime files and sockets); its cost is a QMP round trip per instance, so
the same run also times query-balloon + query-cpus-fast per instance through libvirt as
a lower bound of Ganeti's way, and prints the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hvlibvirt import connection, constants as C  # noqa: E402
from hvlibvirt import tables
from hvlibvirt.domain_xml import to_string  # noqa: E402
from hvlibvirt.kvm import KVMHypervisor  # noqa: E402
from hvlibvirt.objects import NIC, Disk, Instance  # noqa: E402

def median_ms(fn: Callable[[], object], runs: int = 200) -> float:
    fn()  # warm caches (ownership, connection)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def raw_all_info(conn: libvirt.virConnect) -> list:
    return [(d.name(), d.info()) for d in
            conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]


def qmp_all_info(conn: libvirt.virConnect) -> list:
    """Ganeti's way, as a lower bound: per instance, a QMP query-balloon and a
    query-cpus-fast round trip (Ganeti also opens a QMP socket per instance and call)."""
    import libvirt_qemu

    return [(libvirt_qemu.qemuMonitorCommand(d, '{"execute":"query-balloon"}', 0),
             libvirt_qemu.qemuMonitorCommand(d, '{"execute":"query-cpus-fast"}', 0))
            for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]


def report_calls(label: str, hv: KVMHypervisor, name: str, qmp: bool = False) -> None:
    conn = connection.get(hv.uri)
    one = median_ms(lambda: hv.GetInstanceInfo(name))
    every = median_ms(hv.GetAllInstancesInfo)
    names = median_ms(hv.ListInstances)
    raw = median_ms(lambda: raw_all_info(conn))
    line = (f"{label:<28} GetInstanceInfo {one:7.3f} ms | GetAllInstancesInfo {every:7.3f} ms"
            f" | ListInstances {names:7.3f} ms | raw listAllDomains+info {raw:7.3f} ms")
    if qmp:
        ganeti_like = median_ms(lambda: qmp_all_info(conn), runs=50)
        line += (f" | QMP per instance (Ganeti's way) {ganeti_like:7.3f} ms = "
                 f"{ganeti_like / every:.1f}x ours")
    print(line, flush=True)


def lab_instance(name: str, kernel: Path, initrd: Path, disk: Path) -> tuple[Instance, list]:
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kvm_path="/usr/bin/qemu-system-x86_64",
                    kernel_path=str(kernel), initrd_path=str(initrd), root_path="/dev/vda",
                    kernel_args="quiet panic=-1 hvlpoll=0", kvm_flag=C.HT_KVM_DISABLED)
    d = Disk(dev_type=C.DT_FILE, size=16)
    inst = Instance(name=name, hvparams=hvparams, disks_info=[d],
                    nics=[NIC(mac=f"aa:00:00:7b:00:{len(name) % 250:02x}",
                              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                         C.NIC_LINK: "hvlbr0"})],
                    beparams={"maxmem": 128, "minmem": 128, "vcpus": 1})
    return inst, [(d, str(disk), None)]


def bench_real() -> None:
    from lab.daemon import standalone_lab
    from lab.guest import build_guest, default_cache_dir

    image = build_guest(default_cache_dir())
    with standalone_lab("bench") as (work, (daemon,), _net):
        hv = KVMHypervisor(uri=daemon.uri)
        conn = connection.get(hv.uri)
        started: list[Instance] = []

        def start(i: int) -> tuple[Instance, list]:
            disk = work / f"disk{i}.img"
            disk.write_bytes(b"\0" * 1024 * 1024)
            inst, block = lab_instance(f"bench{i:02d}", image.kernel, image.initrd, disk)
            hv.StartInstance(inst, block, False)
            started.append(inst)
            return inst, block

        for count in (1, 5, 10):
            new = count - len(started)
            while len(started) < count:
                start(len(started))
            # Let the TCG guests finish booting (2 cores), so the figures are not
            # those of a machine busy booting kernels.
            time.sleep(min(4 * new, 30))
            report_calls(f"real daemon, {count:2d} guests", hv, started[0].name, qmp=True)

        # StartInstance vs raw libvirt, same XML, same run (guests not waited for).
        start_disk = work / "start.img"
        start_disk.write_bytes(b"\0" * 1024 * 1024)
        inst, block = lab_instance("bench-start", image.kernel, image.initrd, start_disk)
        xml = to_string(hv._build_domain(inst, block, 128))
        ours, define_create, create_xml, our_stop, raw_destroy = [], [], [], [], []
        for _ in range(5):
            t0 = time.perf_counter()
            hv.StartInstance(inst, block, False)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            hv.StopInstance(inst, force=True)
            our_stop.append(time.perf_counter() - t0)
            hv.CleanupInstance(inst.name)
            t0 = time.perf_counter()
            dom = conn.defineXML(xml)
            dom.create()
            define_create.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dom.destroy()
            raw_destroy.append(time.perf_counter() - t0)
            dom.undefine()
            t0 = time.perf_counter()
            dom = conn.createXML(xml, 0)
            create_xml.append(time.perf_counter() - t0)
            dom.destroy()
        med = {k: statistics.median(v) * 1000 for k, v in (
            ("ours", ours), ("define", define_create), ("create", create_xml),
            ("stop", our_stop), ("destroy", raw_destroy))}
        print(f"StartInstance {med['ours']:.1f} ms | raw defineXML+create {med['define']:.1f} ms"
              f" (overhead {100 * (med['ours'] / med['define'] - 1):+.1f}%) | raw createXML "
              f"{med['create']:.1f} ms", flush=True)
        print(f"StopInstance(force) {med['stop']:.1f} ms | raw destroy {med['destroy']:.1f} ms "
              f"({100 * (med['stop'] / med['destroy'] - 1):+.1f}%)", flush=True)
        for inst in started:
            hv.StopInstance(inst, force=True)
            hv.CleanupInstance(inst.name)
        connection.drop(daemon.uri)


def bench_test_driver() -> None:
    hv = KVMHypervisor(uri="test:///default")
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable)
    made = 0
    for count in (1, 100, 1000):
        while made < count:
            d = Disk(dev_type=C.DT_PLAIN)
            inst = Instance(name=f"tb{made:04d}", hvparams=hvparams, disks_info=[d],
                            beparams={"maxmem": 128, "minmem": 128, "vcpus": 1})
            hv.StartInstance(inst, [(d, "/dev/null", None)], False)
            made += 1
        report_calls(f"test driver, {count:4d} instances", hv, "tb0000")


if __name__ == "__main__":
    bench_test_driver()
    if "--skip-real" not in sys.argv:
        bench_real()
