"""Tier 6: hvlibvirt's Xen classes on a real Xen 4.17 (libvirt's libxl driver in a
Debian 12 dom0), nested under QEMU's TCG on this machine.

Where the calls run: inside dom0, each in a child forked by ``lab/xen_node.py`` from a
parent that imported Ganeti 3.0 and hvlibvirt, as Ganeti's node daemon runs them. That
is where Ganeti calls a Xen hypervisor, and it is the only place the checks that read
the node (kernel and device-model paths, /proc/meminfo, the console helper) read
dom0's files; libvirt's URI is the default a Xen node uses, ``xen:///system``. The
arguments are Ganeti's own objects, built here, serialised with ``ToDict`` and rebuilt
in dom0 with ``FromDict``, as Ganeti's RPC layer does.

What is observed is observed on the real thing: the guest's console (xenconsoled's log
of the PV console, the HVM serial port), ``xl`` in dom0, and Xen's own scheduler.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest

from lab.xen_guest import DOM0_INITRD, DOM0_ISO, DOM0_KERNEL, PV_ARGS
from lab.xen_tier import NodeError, XenLab, is_ready_line
from lab.xen_vm import PeerLink

pytestmark = [pytest.mark.tier6, pytest.mark.real]
log = logging.getLogger(__name__)

PVM, HVM = "xen-pvm", "xen-hvm"
DISK_DIR = "/var/lib/hvl-xen/disks"
BRIDGE = "xenbr0"
HVM_DEVICE_MODEL = "/usr/libexec/xen-qemu-system-i386"  # Debian's qemu-xen
HVM_LOADER = "/usr/lib/xen-4.17/boot/hvmloader"
PV_BOOT = 180     # seconds from StartInstance to the ready line, nested TCG
HVM_BOOT = 600
MIGRATION_WAIT = 600  # seconds for a 256 MiB PV guest between two nested hosts
BALLOON_WAIT = 120  # seconds for a balloon to show in the guest's MemTotal
HVM_VNC_PASSWORD = "/var/lib/hvl-xen/vnc-password"


def _uuid(name: str, what: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{what}.{name}.tier6.test"))


class Instance:
    """A Ganeti instance for dom0: Ganeti's objects and their RPC form."""

    def __init__(self, ganeti: Any, hv: str, name: str, hvparams: dict[str, Any],
                 disks: int = 1, nics: int = 1, memory: int = 256, vcpus: int = 1):
        gconst, gobjects = ganeti
        self.hv, self.name, self.gobjects = hv, name, gobjects
        hvp = dict(gconst.HVC_DEFAULTS[hv])
        hvp.update(hvparams)
        self.disks = [self.file_disk(i) for i in range(disks)]
        self.nics = [self.bridged_nic(i) for i in range(nics)]
        self.obj = gobjects.Instance(
            name=name, uuid=_uuid(name, "instance"), hypervisor=hv, hvparams=hvp,
            beparams={"maxmem": memory, "minmem": memory, "vcpus": vcpus},
            osparams={}, nics=self.nics, disks=[d.uuid for d in self.disks],
            disk_template="file", primary_node=_uuid("node", "xendom0"),
            network_port=None, admin_state="up", os="debootstrap+default")

    def file_disk(self, index: int) -> Any:
        path = f"{DISK_DIR}/{self.name}-disk{index}"
        return self.gobjects.Disk(dev_type="file", logical_id=("loop", path), size=64,
                                  mode="rw", uuid=_uuid(self.name, f"disk{index}"),
                                  iv_name=f"disk/{index}", params={})

    def bridged_nic(self, index: int) -> Any:
        return self.gobjects.NIC(mac=f"aa:00:00:3{index}:{abs(hash(self.name)) % 256:02x}:01",
                                 uuid=_uuid(self.name, f"nic{index}"),
                                 nicparams={"mode": "bridged", "link": BRIDGE})

    @property
    def rpc(self) -> dict[str, Any]:
        """The instance as the node daemon receives it (rpc/node.py adds disks_info)."""
        data = self.obj.ToDict()
        data["disks_info"] = [d.ToDict() for d in self.disks]
        return {"$obj": "Instance", "data": data}

    @staticmethod
    def wire(obj: Any) -> dict[str, Any]:
        return {"$obj": type(obj).__name__, "data": obj.ToDict()}

    def block_devices(self) -> list[Any]:
        return [[self.wire(d), d.logical_id[1], None] for d in self.disks]


@pytest.fixture
def instances(xen: XenLab) -> Iterator[list[Instance]]:
    """Instances the test starts; each is destroyed and cleaned up afterwards."""
    started: list[Instance] = []
    yield started
    remove(xen, started)


def remove(xen: XenLab, started: list[Instance]) -> None:
    """Destroy and clean up each instance (running or not), then their disk files."""
    for inst in started:
        try:
            xen.call(inst.hv, "StopInstance", inst.rpc, True)
        except NodeError:
            pass
        xen.call(inst.hv, "CleanupInstance", inst.name)
    if started:
        xen.sh(f"rm -f {DISK_DIR}/*")


def start(xen: XenLab, inst: Instance, started: list[Instance]) -> None:
    """Create the instance's disk files in dom0, then Ganeti's start sequence."""
    xen.sh(f"mkdir -p {DISK_DIR} && rm -f {xen.console_path(inst.name)} && "
           + " && ".join(f"truncate -s 64M {d.logical_id[1]}" for d in inst.disks) or "true")
    started.append(inst)
    xen.call(inst.hv, "CheckParameterSyntax", inst.obj.hvparams)
    xen.call(inst.hv, "ValidateParameters", inst.obj.hvparams)
    xen.call(inst.hv, "StartInstance", inst.rpc, inst.block_devices(), False)


def started_pv(xen: XenLab, ganeti: Any, started: list[Instance], name: str,
               **hvparams: Any) -> tuple[Instance, str]:
    """A PV instance started and ready; its console so far."""
    inst = pv(ganeti, name, **hvparams)
    start(xen, inst, started)
    return inst, xen.wait_console(inst.name, "HVL-READY", timeout=PV_BOOT)


def pv(ganeti: Any, name: str, **hvparams: Any) -> Instance:
    hvp = {"kernel_path": str(DOM0_KERNEL), "initrd_path": str(DOM0_INITRD),
           "root_path": "", "kernel_args": PV_ARGS}
    hvp.update(hvparams)
    return Instance(ganeti, PVM, name, hvp)


def xl(xen: XenLab, *args: str) -> str:
    return xen.sh("xl " + " ".join(args))


def info(xen: XenLab, inst: Instance) -> list[Any] | None:
    return xen.call(inst.hv, "GetInstanceInfo", inst.name, inst.obj.hvparams)


def balloon_state(xen: XenLab, inst: Instance) -> str:
    """What Xen and the guest say about a balloon that did not arrive (for the failure)."""
    q = shlex.quote(inst.name)
    return xen.sh(f"xl list {q}; d=$(xl domid {q}); for k in target static-max videoram; do "
                  f"echo \"memory/$k: $(xenstore-read /local/domain/$d/memory/$k)\"; done; "
                  f"tail -c 1500 {shlex.quote(xen.console_path(inst.name))}", check=False)


# -- the node -----------------------------------------------------------------------
def test_node_info_is_what_xl_info_says(xen: XenLab) -> None:
    node = xen.call(PVM, "GetNodeInfo", None)
    facts = dict(re.findall(r"^(\w+)\s*:\s*(.*)$", xl(xen, "info"), re.M))
    dom0_mem = int(xl(xen, "list", "0").splitlines()[1].split()[2])
    assert node["memory_total"] == int(facts["total_memory"])
    assert abs(node["memory_free"] - int(facts["free_memory"])) <= 4
    assert node["memory_dom0"] == dom0_mem
    hv_mem = int(facts["total_memory"]) - int(facts["free_memory"]) - dom0_mem
    assert abs(node["memory_hv"] - hv_mem) <= 4, (node, facts)
    assert node["cpu_total"] == int(facts["nr_cpus"])
    assert node["cpu_dom0"] == 1
    assert node["hv_version"] == [int(facts["xen_major"]), int(facts["xen_minor"])]
    assert xen.call(PVM, "Verify", None) in (None, "")
    hvm = dict(xen_hvm_params())
    assert xen.call(HVM, "Verify", hvm) in (None, "")


def xen_hvm_params() -> dict[str, Any]:
    return {"kernel_path": HVM_LOADER, "device_model": HVM_DEVICE_MODEL,
            "boot_order": "d", "cdrom_image_path": str(DOM0_ISO),
            # An empty password: Debian's qemu-xen has no DES cipher, so a VNC password
            # fails the device model's start ("Cipher backend does not support DES").
            "vnc_bind_address": "127.0.0.1", "vnc_password_file": HVM_VNC_PASSWORD}


# -- PV --------------------------------------------------------------------------------
def test_pv_start_info_balloon_scheduler_and_soft_stop(xen: XenLab, ganeti: Any,
                                                        instances: list[Instance]) -> None:
    inst, text = started_pv(xen, ganeti, instances, "pv-life.tier6.test", cpu_mask="0",
                            cpu_cap=50, cpu_weight=512)
    assert is_ready_line(text, "PV"), text[-2000:]
    dev = xen.last_dev(inst.name)
    assert dev["blk"] == "sda" or dev["blk"].startswith("xvd"), dev
    assert "eth0" in dev["net"], dev

    assert inst.name in xen.call(PVM, "ListInstances", None)
    name, domid, memory, vcpus, state, cpu_time = info(xen, inst)
    assert name == inst.name and domid == int(xl(xen, "domid", inst.name))
    assert (memory, vcpus) == (256, 1)
    assert cpu_time > 0
    every = {row[0]: row for row in xen.call(PVM, "GetAllInstancesInfo", None)}
    assert every[inst.name][1] == domid

    # Scheduler: cpu_cap and cpu_weight in Xen's scheduler (Xen 4.17 defaults to credit2,
    # which has both), cpu_mask as pinning.
    scheduler = re.search(r"^xen_scheduler\s*:\s*(\S+)", xl(xen, "info"), re.M).group(1)
    sched = xl(xen, f"sched-{scheduler}", "-d", inst.name).splitlines()[-1].split()
    assert sched[-2:] == ["512", "50"], sched
    # "... Affinity (Hard / Soft)". The nested host has one CPU, so the hard affinity
    # {0} prints as "all": the pin itself is read back from libxl through libvirt.
    pinning = xl(xen, "vcpu-list", inst.name).splitlines()[-1].split()
    assert pinning[-3:] == ["all", "/", "all"], pinning
    assert re.search(r"<vcpupin vcpu='0' cpuset='0'/>",
                     xen.sh(f"virsh -c xen:///system dumpxml {inst.name}")), "no vcpupin"

    # Balloon: libvirt's currentMemory, and the guest's MemTotal follows.
    before = int(dev["mem"])
    xen.call(PVM, "BalloonInstanceMemory", inst.rpc, 160)
    asked = time.monotonic()
    shrunk = xen.wait_dev(inst.name, lambda d: int(d["mem"]) < before - 64 * 1024,
                          timeout=BALLOON_WAIT)
    assert int(shrunk["mem"]) < before - 64 * 1024, (before, shrunk, balloon_state(xen, inst))
    log.info("balloon 256 -> 160 MiB reached the guest in %.0f s", time.monotonic() - asked)
    assert info(xen, inst)[2] == 160
    xen.call(PVM, "BalloonInstanceMemory", inst.rpc, 256)
    grown = xen.wait_dev(inst.name, lambda d: int(d["mem"]) >= before - 1024,
                         timeout=BALLOON_WAIT)
    assert int(grown["mem"]) >= before - 1024, (before, grown, balloon_state(xen, inst))

    # Soft stop, as Ganeti's loop sends it: the guest is asked and powers itself off.
    xen.call(PVM, "StopInstance", inst.rpc, False, False)
    xen.wait_console(inst.name, "HVL-XEN-POWEROFF", timeout=60)
    deadline = time.monotonic() + 60
    while inst.name in xen.call(PVM, "ListInstances", None) and time.monotonic() < deadline:
        time.sleep(2)
    assert inst.name not in xen.call(PVM, "ListInstances", None)
    assert info(xen, inst) is None


def test_pv_console_reboot_and_user_poweroff(xen: XenLab, ganeti: Any,
                                             instances: list[Instance]) -> None:
    inst, _ = started_pv(xen, ganeti, instances, "pv-cons.tier6.test")

    # Console: the command Ganeti runs over ssh on the primary node, typed into.
    node = ganeti[1].Node(name="xendom0", uuid=_uuid("node", "xendom0"), ndparams={})
    group = ganeti[1].NodeGroup(name="default", uuid=_uuid("group", "default"), ndparams={},
                                members=[node.uuid])
    console = xen.call(PVM, "GetInstanceConsole", inst.rpc, Instance.wire(node),
                       Instance.wire(group), inst.obj.hvparams, inst.obj.beparams)["data"]
    assert console["kind"] == "ssh" and console["host"] == "xendom0", console
    out = xen.console_session(console["command"], "echo HVL-ANSWER-$((6*7))\r",
                              "HVL-ANSWER-42")
    assert "HVL-ANSWER-42" in out, out[-2000:]

    # Reboot: libxl builds the domain again, so the domain ID changes.
    old_id = info(xen, inst)[1]
    xen.call(PVM, "RebootInstance", inst.rpc)
    xen.wait_console(inst.name, "HVL-READY", count=2, timeout=PV_BOOT)
    assert info(xen, inst)[1] != old_id

    # A power-off from inside the guest: SHUTDOWN until CleanupInstance.
    # /sbin/poweroff by its path: busybox's shell runs its own applet for a bare name,
    # which only signals init.
    out = xen.console_session(console["command"], "/sbin/poweroff\r", "HVL-XEN-POWEROFF")
    try:
        xen.wait_console(inst.name, "HVL-XEN-POWEROFF", timeout=30)
    except AssertionError as err:
        raise AssertionError(f"{err}\nthe console sessions:\n{out[-2000:]}") from None
    deadline = time.monotonic() + 60
    while (row := info(xen, inst)) is not None and row[4] != 1 and time.monotonic() < deadline:
        time.sleep(2)
    assert row is not None and row[4] == 1, (row, xen.console(inst.name)[-2000:])  # SHUTDOWN
    assert row in [list(r) for r in xen.call(PVM, "GetAllInstancesInfo", None)]
    # ListInstances names running instances only, as Ganeti's own Xen layer does (its
    # xl list filtered to running). libvirt's libxl driver marks the domain shut off
    # before it has destroyed it, and lists it as active until then: wait for that.
    deadline = time.monotonic() + 60
    while inst.name in xen.call(PVM, "ListInstances", None) and time.monotonic() < deadline:
        time.sleep(2)
    assert inst.name not in xen.call(PVM, "ListInstances", None)
    assert info(xen, inst)[4] == 1  # still SHUTDOWN: only CleanupInstance ends it
    xen.call(PVM, "CleanupInstance", inst.name)
    assert info(xen, inst) is None


def test_pv_hotplug_disks_and_vif(xen: XenLab, ganeti: Any,
                                  instances: list[Instance]) -> None:
    inst, _ = started_pv(xen, ganeti, instances, "pv-hot.tier6.test")
    base = xen.last_dev(inst.name)
    xen.call(PVM, "VerifyHotplugSupport", inst.rpc, "hotadd", "disk")
    xen.call(PVM, "VerifyHotplugSupport", inst.rpc, "hotadd", "nic")
    with pytest.raises(NodeError) as err:
        xen.call(PVM, "VerifyHotplugSupport", inst.rpc, "hotmod", "disk")
    assert "HotplugError" in err.value.mro and "GenericError" in err.value.mro

    # A file disk (Ganeti's loop driver: blkback over a loop device) and a block device.
    extra = inst.file_disk(1)
    xen.sh(f"truncate -s 32M {extra.logical_id[1]}")
    loopdev = xen.sh(f"truncate -s 32M {DISK_DIR}/lv && losetup -f --show {DISK_DIR}/lv"
                     ).strip()
    block = ganeti[1].Disk(dev_type="plain", logical_id=("xenvg", "lv"), size=32, mode="rw",
                           uuid=_uuid(inst.name, "lv"), iv_name="disk/2", params={})
    nic = inst.bridged_nic(1)
    try:
        xen.call(PVM, "HotAddDevice", inst.rpc, "disk", Instance.wire(extra),
                 [extra.logical_id[1], None], 1)
        xen.call(PVM, "HotAddDevice", inst.rpc, "disk", Instance.wire(block), [loopdev, None], 2)
        xen.call(PVM, "HotAddDevice", inst.rpc, "nic", Instance.wire(nic), None, 1)
        added = xen.wait_dev(inst.name, lambda d: len(d["blk"].split(",")) == 3
                             and len(d["net"].split(",")) == len(base["net"].split(",")) + 1)
        assert len(added["blk"].split(",")) == 3, (base, added)
        assert len(added["net"].split(",")) == len(base["net"].split(",")) + 1, (base, added)
        live = xen.sh(f"virsh -c xen:///system dumpxml {inst.name}")
        persistent = xen.sh(f"virsh -c xen:///system dumpxml --inactive {inst.name}")
        for xml in (live, persistent):
            assert xml.count("<disk ") == 3 and xml.count("<interface ") == 2

        for dev_type, dev in (("disk", extra), ("disk", block), ("nic", nic)):
            xen.call(PVM, "HotDelDevice", inst.rpc, dev_type, Instance.wire(dev), None, 1)
        back = xen.wait_dev(inst.name, lambda d: d["blk"] == base["blk"]
                            and d["net"] == base["net"])
        assert (back["blk"], back["net"]) == (base["blk"], base["net"])
    finally:
        xen.sh(f"losetup -d {loopdev}", check=False)


# -- HVM -------------------------------------------------------------------------------
def test_hvm_boots_through_hvmloader_and_stops(xen: XenLab, ganeti: Any,
                                               instances: list[Instance]) -> None:
    inst = Instance(ganeti, HVM, "hvm.tier6.test", xen_hvm_params(), disks=1, nics=1)
    xen.sh(f"truncate -s 0 {HVM_VNC_PASSWORD}")
    start(xen, inst, instances)
    xen.capture_serial(inst.name)
    text = xen.wait_console(inst.name, "HVL-READY", timeout=HVM_BOOT)
    assert is_ready_line(text, "HVM"), text[-2000:]
    name, domid, memory, vcpus, _state, cpu_time = info(xen, inst)
    assert domid == int(xl(xen, "domid", inst.name))
    # libxl takes the video RAM out of an HVM guest's memory; xl list shows the same.
    xl_mem = int(xl(xen, "list", inst.name).splitlines()[1].split()[2])
    assert (memory, vcpus) == (xl_mem, 1) and 256 - 16 <= memory <= 256 and cpu_time > 0
    # PV disks and vifs can be hot-plugged into a PVHVM guest; a modification cannot.
    xen.call(HVM, "VerifyHotplugSupport", inst.rpc, "hotadd", "disk")
    with pytest.raises(NodeError) as err:
        xen.call(HVM, "VerifyHotplugSupport", inst.rpc, "hotmod", "disk")
    assert "HotplugError" in err.value.mro
    xen.call(HVM, "StopInstance", inst.rpc, False, False)
    xen.wait_console(inst.name, "HVL-XEN-POWEROFF", timeout=120)
    deadline = time.monotonic() + 120
    while info(xen, inst) is not None and time.monotonic() < deadline:
        time.sleep(3)
    assert info(xen, inst) is None


# -- migration between two Xen hosts -----------------------------------------------------
def migrate(xen: XenLab, xen_peer: XenLab, inst: Instance, live: bool) -> tuple[str, str]:
    """Ganeti's sequence (cmdlib's TLMigrateInstance) up to the finalize calls:
    MigrationInfo on the source, AcceptInstance on the target, MigrateInstance, then
    GetMigrationStatus polled on the source until it is no longer active. The migration
    info and the final status ("failed" too if MigrateInstance raised: it does when the
    migration fails within its first seconds, and Ganeti then recovers the same way)."""
    target = PeerLink.address(2)
    migration_info = xen.call(PVM, "MigrationInfo", inst.rpc)
    xen_peer.call(PVM, "AcceptInstance", inst.rpc, migration_info, target)
    started = time.monotonic()
    try:
        xen.call(PVM, "MigrateInstance", "cluster.tier6.test", inst.rpc, target, live)
    except NodeError as err:
        log.info("%s migration to xendom1 failed at once: %s", "live" if live else
                 "non-live", str(err)[:300])
        return migration_info, "failed"
    status = "active"
    while status == "active" and time.monotonic() - started < MIGRATION_WAIT:
        time.sleep(2)
        status = xen.call(PVM, "GetMigrationStatus", inst.rpc)["data"]["status"]
    log.info("%s migration to xendom1: %s after %.0f s", "live" if live else "non-live",
             status, time.monotonic() - started)
    return migration_info, status


def test_pv_migration_to_a_second_xen_host(xen: XenLab, xen_peer: XenLab, ganeti: Any,
                                           instances: list[Instance]) -> None:
    """xendom0 to xendom1 (``PeerLink``: 10.79.0.2): libvirt's peer-to-peer migration over
    ``xen+ssh://``, the guest's memory over ``tcp://10.79.0.2:<migration_port>``.

    A live migration of a PV guest needs Xen's log-dirty mode, which for PV guests is
    shadow paging, and Debian 12's Xen 4.17 is built without it (CONFIG_SHADOW_PAGING is
    not set; ``xl info`` has no "shadow" in virt_caps): there it must fail the way
    Ganeti recovers from, the guest still running on the source. A non-live migration
    (the guest paused while its memory is copied) needs no log-dirty, and moves it."""
    inst, _ = started_pv(xen, ganeti, instances, "pv-move.tier6.test")
    # The disk at the same path on the target, as Ganeti's shared file storage has it.
    xen_peer.sh(f"mkdir -p {DISK_DIR} && rm -f {xen_peer.console_path(inst.name)} && "
                + " && ".join(f"truncate -s 64M {d.logical_id[1]}" for d in inst.disks))
    shadow = "shadow" in re.search(r"^virt_caps\s*:(.*)$", xl(xen, "info"), re.M).group(1)
    source_id = info(xen, inst)[1]
    try:
        migration_info, status = migrate(xen, xen_peer, inst, live=True)
        if not shadow:
            assert status == "failed", status
            xen_peer.call(PVM, "FinalizeMigrationDst", inst.rpc, migration_info, False)
            xen.call(PVM, "FinalizeMigrationSource", inst.rpc, False, True)
            assert info(xen, inst)[1] == source_id  # the same domain, still running
            assert info(xen_peer, inst) is None
            assert inst.name not in xen_peer.call(PVM, "ListInstances", None)
            migration_info, status = migrate(xen, xen_peer, inst, live=False)
        assert status == "completed", status
        xen_peer.call(PVM, "FinalizeMigrationDst", inst.rpc, migration_info, True)
        xen.call(PVM, "FinalizeMigrationSource", inst.rpc, True, shadow)

        assert inst.name not in xen.call(PVM, "ListInstances", None)
        assert info(xen, inst) is None
        assert inst.name not in xen.sh("virsh -c xen:///system list --all --name")
        assert inst.name in xen_peer.call(PVM, "ListInstances", None)
        row = info(xen_peer, inst)
        assert row is not None and row[2:4] == [256, 1], row
        # The guest lives on over there: its console answers a typed command.
        node = ganeti[1].Node(name="xendom1", uuid=_uuid("node", "xendom1"), ndparams={})
        group = ganeti[1].NodeGroup(name="default", uuid=_uuid("group", "default"),
                                    ndparams={}, members=[node.uuid])
        console = xen_peer.call(PVM, "GetInstanceConsole", inst.rpc, Instance.wire(node),
                                Instance.wire(group), inst.obj.hvparams,
                                inst.obj.beparams)["data"]
        out = xen_peer.console_session(console["command"], "echo HVL-MOVED-$((6*7))\r",
                                       "HVL-MOVED-42")
        assert "HVL-MOVED-42" in out, out[-2000:]
    finally:
        try:
            xen_peer.call(PVM, "StopInstance", inst.rpc, True)
        except NodeError:
            pass
        xen_peer.call(PVM, "CleanupInstance", inst.name)
        xen_peer.sh(f"rm -f {DISK_DIR}/*")
