"""Tier 3: the handover's domain XML gives the guest the machine hv_kvm's QEMU gave it
(issue 22 part 2, "guest-visible identity is checked, not assumed").

For each case of tests/identity_cases.py, the own hv_kvm module of the Ganeti this Debian
release carries (3.0 on Debian 12, 3.1 on Debian 13) makes the runtime and command line
(tests/lab/hv_kvm_source.py); that QEMU boots in namespace b,
and at the same time the domain ``handover.domain_xml`` makes from the same runtime (as
AcceptInstance would) boots fresh under the private libvirtd. Both boot the lab kernel
with the identity probe (tests/lab/identity.py) as their initramfs; every fact one guest
reads differently from the other fails the test, named. No migration: the stream moves
the state, the identity of the device model is what is checked here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest
from lxml import etree

from hvlibvirt import connection, constants as C
from hvlibvirt.ganeti import facts
from hvlibvirt.handover import domain_xml
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance
from identity_cases import Case, cases, platform_ganeti
from lab import identity, unavailable
from lab.ganeti_modules import ModulesUnavailable, ganeti_share
from lab.guest import default_cache_dir
from lab.handover_run import SOURCE
from lab.qmp import QMP

pytestmark = [pytest.mark.real, pytest.mark.tier3]

BOOT = 240.0  # seconds for a probe to write its facts (TCG, two shared, loaded cores)
MAC = "aa:00:00:51:00:{:02x}"
GANETI = platform_ganeti()
CASES = cases(GANETI)


@pytest.fixture(scope="module")
def source_ganeti() -> Path:
    try:
        return ganeti_share(GANETI, default_cache_dir())
    except ModulesUnavailable as err:
        unavailable(f"cannot fetch Ganeti {GANETI}'s modules: {err}")


@pytest.fixture(scope="module")
def probe(guest_image, tmp_path_factory) -> Path:
    return identity.probe_initrd(guest_image, tmp_path_factory.mktemp("probe") / "initrd")


@pytest.fixture(scope="module")
def boot_disk(guest_image, probe: Path) -> Path:
    return identity.boot_disk(guest_image, probe, probe.parent / "boot.img")


def _spec(case: Case, index: int, kernel: Path, initrd: Path, work: Path, bridge: str,
          first_disk: Callable[[Path], Path]) -> dict:
    # vhost_net off unless a case says otherwise: the lab has no /dev/vhost-net, and it
    # is on by default from Ganeti 3.1 on
    hvparams = {"kvm_path": "/usr/bin/qemu-system-x86_64", "kernel_path": str(kernel),
                "initrd_path": str(initrd), "root_path": "/dev/vda",
                "kernel_args": "quiet panic=-1", "serial_speed": 115200,
                "migration_port": 8102, C.HV_VHOST_NET: False, **case.hvparams}
    return {"name": f"id{index}.example.com", "uuid": f"8f0e6f0a-6b0e-4a57-9e0c-{index:012d}",
            "memory": 128, "vcpus": case.vcpus, "network_port": 11000 + index,
            "hvparams": hvparams,
            "disks": [{"uuid": f"{d + 1:08x}-2222-4333-8444-555555555555",
                       "path": str((first_disk if d == 0 else identity.new_disk)(
                           work / f"source{d}.img"))}
                      for d in range(case.disks)],
            "nics": [{"uuid": f"{n + 0x44:08x}-5555-4666-8777-888888888888",
                      "mac": MAC.format(n), "link": bridge, "tap": f"idtap{n}"}
                     for n in range(case.nics)]}


def _generate(share: Path, work: Path, spec: dict) -> dict:
    done = subprocess.run([sys.executable, str(SOURCE), str(share), str(work),
                           json.dumps(spec)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"hv_kvm_source: {done.stderr[-3000:]}"
    return json.loads(done.stdout)


def _libvirt_xml(uri: str, spec: dict, info: str, work: Path) -> tuple[str, Path]:
    """What AcceptInstance would restore into, booted fresh instead: its disks are
    copies of the source's (both guests write their facts to their first disk)."""
    # The node's Ganeti is the source's (IDE disks sit where its hv_kvm had QEMU put them).
    source = facts.from_tables(tuple(int(part) for part in GANETI.split(".")))
    hv = KVMHypervisor.following(source)(uri=uri, serial_log_dir=str(work))
    inst = Instance(name=spec["name"], uuid=spec["uuid"], hvparams=json.loads(info)[2],
                    beparams={"maxmem": spec["memory"], "minmem": spec["memory"],
                              "vcpus": spec["vcpus"]}, network_port=spec["network_port"])
    _, xml = domain_xml(hv.migrator, inst, info)
    root = etree.fromstring(xml)
    for source in root.iterfind("devices/disk[@device='disk']/source"):
        copy = work / ("target-" + Path(source.get("file")).name)
        shutil.copyfile(source.get("file"), copy)
        source.set("file", str(copy))
    return etree.tostring(root, encoding="unicode"), work / "target-source0.img"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_guest_sees_the_same_machine(case: Case, source_ganeti: Path, probe: Path,
                                     libvirt_daemon, lab_network, guest_image,
                                     request: pytest.FixtureRequest, tmp_path: Path) -> None:
    index = CASES.index(case)
    first_disk = identity.new_disk
    if case.hvparams.get(C.HV_KERNEL_PATH) == "":  # the firmware boots the first disk
        image = request.getfixturevalue("boot_disk")

        def first_disk(path: Path) -> Path:
            return Path(shutil.copyfile(image, path))

    spec = _spec(case, index, guest_image.kernel, probe, tmp_path, lab_network.bridge,
                 first_disk)
    made = _generate(source_ganeti, tmp_path, spec)
    xml, target_disk = _libvirt_xml(libvirt_daemon.uri, spec, made["runtime"], tmp_path)

    argv = list(made["argv"])
    argv[argv.index("-D") + 1] = str(tmp_path / "qemu.log")
    for sub in ("pid", "ctrl"):
        (tmp_path / "kvm" / sub).mkdir(parents=True, exist_ok=True)
    conn = connection.get(libvirt_daemon.uri)
    with open(tmp_path / "qemu.out", "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", lab_network.b.netns, *argv],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    dom = None
    try:
        dom = conn.createXML(xml, 0)
        t0 = time.monotonic()
        source = identity.wait_raw(Path(spec["disks"][0]["path"]), BOOT,
                                   lambda: proc.poll() is None)
        target = identity.wait_raw(target_disk, BOOT, lambda: _active(dom))
        print(f"IDENTITY {case.name}: facts of both in {time.monotonic() - t0:.1f}s")
        # once both guests run their probe: the firmware has addressed the USB devices
        usb = (identity.usb_facts(_source_hmp(made["qmp"], "info usb")),
               identity.usb_facts(libvirt_qemu.qemuMonitorCommand(
                   dom, "info usb", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        if dom is not None:
            _destroy(dom)
    (tmp_path / "source.facts").write_text(source)
    (tmp_path / "target.facts").write_text(target)
    source_facts = {**identity.parse(source), **usb[0]}
    target_facts = {**identity.parse(target), **usb[1]}
    # the probe read what it should (QEMU's firmware configuration: through ACPI only)
    expected = {"memory.MemTotal:", "cpu.online", "pci.0000:00:00.0/vendor"}
    if json.loads(made["runtime"])[2]["acpi"]:
        expected.add("fw_cfg.etc/e820")
    for facts in (source_facts, target_facts):
        assert expected <= set(facts), sorted(facts)
    diff, at_reset = identity.differences(source_facts, target_facts)
    print(f"IDENTITY {case.name}: {len(source_facts)} facts, {len(at_reset)} differ only "
          "from the next reset on:\n  " + "\n  ".join(at_reset))
    assert not diff, (f"{case.name}: the guest reads {len(diff)} facts differently:\n  "
                      + "\n  ".join(diff))


def _source_hmp(path: str, command: str) -> str:
    """A human monitor command on the source QEMU's QMP socket (once QEMU made it)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            qmp = QMP(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        return qmp.cmd("human-monitor-command", **{"command-line": command})
    finally:
        qmp.close()


def _destroy(dom: libvirt.virDomain) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError as err:
        if err.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                        libvirt.VIR_ERR_OPERATION_INVALID):
            raise  # gone (it powered off) or not running: nothing to end


def _active(dom: libvirt.virDomain) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False  # a transient domain is gone once it stops
