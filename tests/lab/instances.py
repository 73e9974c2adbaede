"""Instances of the lab guest started through hvlibvirt itself (used by the real tier).

``boot(name, ...)`` (the ``boot`` fixture in tests/tiers/daemons.py) builds a Ganeti-shaped
instance around the lab kernel and initramfs, starts it with ``KVMHypervisor`` on the
private daemon, and reads its serial console from the log file libvirt keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from hvlibvirt import connection, constants as C
from hvlibvirt import tables
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import NIC, Disk, Instance
from lab.console import ConsoleCapture
from lab.guest import GuestImage
from lab.serial import SerialLog

BOOT = 60.0
READY = r"HVL-READY"
GANETI_REPRESS = 5.0  # seconds between StopInstance calls in Ganeti's InstanceShutdown


@dataclass(frozen=True)
class Shutdown:
    presses: int   # StopInstance calls (power-button presses) before the guest was off
    forced: bool   # whether the loop ran out and destroyed the guest


def ganeti_shutdown(hv: KVMHypervisor, inst: Instance, timeout: float) -> Shutdown:
    """Ganeti's backend.InstanceShutdown loop: StopInstance(retry=..., timeout=...),
    and while the instance still runs, sleep 5 s and call again, until ``timeout``;
    then a forced stop."""
    deadline = time.monotonic() + timeout
    presses = 0
    while True:
        hv.StopInstance(inst, retry=presses > 0, timeout=int(timeout))
        presses += 1
        if hv.GetInstanceInfo(inst.name) is None:
            return Shutdown(presses, False)
        if time.monotonic() + GANETI_REPRESS > deadline:
            hv.StopInstance(inst, force=True)
            return Shutdown(presses, True)
        time.sleep(GANETI_REPRESS)


@dataclass
class Running:
    hv: KVMHypervisor
    inst: Instance
    dom: libvirt.virDomain
    console: ConsoleCapture | None
    serial: SerialLog
    block_devices: list[tuple[Any, str | None, str | None]] = field(default_factory=list)
    workdir: Path = Path("/tmp")

    def wait_off(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.dom.isActive():
            assert time.monotonic() < deadline, f"{self.inst.name} still running"
            time.sleep(0.05)

    def new_disk(self, mib: int = 8, **fields: Any) -> tuple[Disk, tuple[str, None]]:
        """A fresh disk file and the ``extra`` HotAddDevice takes for it."""
        disk = Disk(dev_type=C.DT_FILE, size=mib, **fields)
        path = self.workdir / f"{self.inst.name}-{disk.uuid[:8]}.img"
        with open(path, "wb") as f:
            f.truncate(mib * 1024 * 1024)
        return disk, (str(path), None)


def make_instance(name: str, image: GuestImage | None, workdir: Path, *, vcpus: int = 1,
                  disks: int = 1, nics: int = 1, memory: int = 192, **hv_overrides: Any
                  ) -> tuple[Instance, list[tuple[Any, str | None, str | None]]]:
    """``image=None`` makes a guest without an OS (SeaBIOS only, booting from disk)."""
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kvm_path="/usr/bin/qemu-system-x86_64",
                    kernel_path=str(image.kernel) if image else "",
                    initrd_path=str(image.initrd) if image else "", root_path="/dev/vda",
                    kernel_args="quiet panic=-1", serial_speed=115200,
                    # No screen to look at: QEMU's VGA card (Ganeti's default, vga='')
                    # costs 1-2 s of every TCG boot here.
                    vga="none", kvm_flag=C.HT_KVM_DISABLED)
    hvparams.update(hv_overrides)
    block = []
    for index in range(disks):
        disk = Disk(dev_type=C.DT_FILE, size=32)
        path = workdir / f"{name}-{index}.img"
        with open(path, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        block.append((disk, str(path), None))
    nic_list = [NIC(mac=f"aa:00:00:7a:20:{i + 1:02x}",
                    nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
                for i in range(nics)]
    inst = Instance(name=name, hvparams=hvparams, disks_info=[b[0] for b in block],
                    nics=nic_list,
                    beparams={"maxmem": memory, "minmem": min(128, memory), "vcpus": vcpus},
                    network_port=5907)
    return inst, block


def start(hv: KVMHypervisor, name: str, image: GuestImage | None, workdir: Path, *,
          paused: bool = False, attach: bool = False, **kwargs: Any) -> Running:
    """Start a lab instance; its serial output is read from the log file virtlogd keeps
    (``hv.serial_log_dir``). ``attach`` also opens the console stream, to type on it."""
    inst, block = make_instance(name, image, workdir, **kwargs)
    hv.StartInstance(inst, block, startup_paused=paused)
    dom = connection.get(hv.uri).lookupByName(name)
    console = (ConsoleCapture(hv.uri, name, workdir / f"{name}.stream") if attach else None)
    return Running(hv, inst, dom, console, SerialLog(Path(hv.serial_log_dir) / f"{name}.serial"),
                   block, workdir)
