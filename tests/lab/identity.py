"""What a lab guest reads of its machine, for comparing two QEMUs' device models (the
handover's identity check, issue 22 part 2).

The probe is the lab initramfs with an /init of its own appended (the kernel unpacks
concatenated archives, a later file replacing an earlier one): it loads the lab's
modules, writes what the guest reads (PCI functions and their config space, CPUs and
topology, disks, NICs, virtio features, memory, DMI, ACPI tables, I/O ports, the memory
map, input devices, UARTs) to its first disk at ``FACTS_OFFSET`` and waits. The
disk, not the serial console, carries the facts: a machine without a serial port is
checked too, and nothing has to be typed.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from lab import iso
from lab.guest import BUSYBOX, GuestImage, _copy_module

FACTS_OFFSET = 48 * 1024 * 1024  # bytes into the first disk (the disk is larger)
DISK_BYTES = 64 * 1024 * 1024
FW_CFG_HASHED = 1024 * 1024  # bytes: larger firmware configuration entries by size only
ISOHYBRID_MBR = iso.ISOLINUX_BIN.parent / "isohdpfx.bin"  # package isolinux
BEGIN, END = "HVL-FACTS-BEGIN", "HVL-FACTS-END"
# Sections whose lines are compared as a set (a line only one guest has is the fact).
LINE_SECTIONS = frozenset({"ioports", "iomem", "input", "serial", "cmdline", "pnp"})

PROBE_INIT = r"""#!/bin/sh
# hvlibvirt identity probe: what the guest reads of its machine, onto its first disk.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# ata_piix too (the lab guest loads it only when asked): IDE disks and QEMU's empty CD-ROM
for m in $(cat /etc/hvl-modules) ata_piix; do modprobe "$m" 2>/dev/null; done
# found through ACPI only (this kernel lacks FW_CFG_SYSFS_CMDLINE): none without ACPI
insmod /probe/qemu_fw_cfg.ko 2>/dev/null
# libata probes both IDE channels before sda appears: seconds, a minute on a loaded host
i=0
while [ ! -b /dev/vda ] && [ ! -b /dev/sda ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
out=/dev/vda; [ -b $out ] || out=/dev/sda  # virtio or IDE: the first disk either way
# IDE disks appear one by one as libata scans: until the list holds still
n=-1; while [ "$n" != "$(ls /sys/block | wc -l)" ]; do n=$(ls /sys/block | wc -l); sleep 0.5; done
sec() { echo "### $1"; }
{
echo HVL-FACTS-BEGIN
sec cpuinfo
grep -v -E '^(bogomips|cpu MHz)' /proc/cpuinfo
sec cpu
for f in online possible present; do echo "$f $(cat /sys/devices/system/cpu/$f)"; done
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  for f in $d/topology/*; do echo "${d##*/}/${f##*/} $(cat $f)"; done
done
sec memory
grep MemTotal /proc/meminfo
sec pci
for d in /sys/bus/pci/devices/*; do
  n=${d##*/}
  for a in vendor device subsystem_vendor subsystem_device class revision irq; do
    echo "$n/$a $(cat $d/$a)"
  done
  echo "$n/resource $(tr '\n' ' ' <$d/resource)"
  echo "$n/config $(od -An -v -tx1 $d/config | tr -d ' \n')"
done
sec block
for d in /sys/block/*; do
  n=${d##*/}
  echo "$n/size $(cat $d/size)"
  echo "$n/path $(readlink $d)"
  echo "$n/mq $(ls $d/mq 2>/dev/null | wc -l)"
  for a in logical_block_size physical_block_size write_cache rotational \
      discard_max_bytes discard_granularity max_hw_sectors_kb; do
    echo "$n/$a $(cat $d/queue/$a)"
  done
done
sec net
for d in /sys/class/net/*; do
  n=${d##*/}
  for a in address mtu type; do echo "$n/$a $(cat $d/$a)"; done
  echo "$n/path $(readlink $d)"
  echo "$n/queues $(ls $d/queues | tr '\n' ' ')"
  [ -e $d/device/driver ] && echo "$n/driver $(basename $(readlink $d/device/driver))"
done
sec virtio
for d in /sys/bus/virtio/devices/*; do
  n=${d##*/}
  for a in vendor device features; do echo "$n/$a $(cat $d/$a)"; done
done
sec dmi
for f in /sys/class/dmi/id/*; do
  [ -f "$f" ] && [ "${f##*/}" != uevent ] && echo "${f##*/} $(cat $f)"
done
sec acpi
for f in /sys/firmware/acpi/tables/*; do
  [ -f "$f" ] && echo "${f##*/} $(md5sum <$f | cut -d' ' -f1)"
done
# the DSDT's bytes differ by device order (see AT_RESET_KEYS): its devices, by path,
# and the resources of each ISA device, by its id, must not
sec acpidev
for d in /sys/bus/acpi/devices/*; do
  [ -f $d/path ] && echo "$(cat $d/path) $(cat $d/hid 2>/dev/null) $(cat $d/status 2>/dev/null)"
done
sec pnp
for d in /sys/bus/pnp/devices/*; do
  [ -f $d/id ] && echo "$(cat $d/id | tr '\n' ' ')$(tr '\n' ' ' <$d/resources)"
done
sec fw_cfg
# a large entry by its size only: QEMU 10 hands the direct-boot kernel over as
# etc/boot/kernel (~12 MB), which the guest reads a byte per I/O port access (minutes
# under TCG)
for d in /sys/firmware/qemu_fw_cfg/by_key/*; do
  [ -f $d/name ] || continue
  size=$(cat $d/size)
  sum=unread
  [ "$size" -le __FW_CFG_HASHED__ ] && sum=$(md5sum <$d/raw | cut -d' ' -f1)
  echo "$(cat $d/name) $size $sum"
  if [ "$(cat $d/name)" = bootorder ]; then echo "bootorder:text $(tr '\0\n' '  ' <$d/raw)"; fi
done
sec ioports
cat /proc/ioports
sec iomem
grep -v Kernel /proc/iomem
sec input
grep -E '^[NP]:' /proc/bus/input/devices
sec serial
sed -e 's/ tx:.*//' /proc/tty/driver/serial
sec cmdline
cat /proc/cmdline
echo HVL-FACTS-END
} >/tmp/facts 2>&1
dd if=/tmp/facts of=$out bs=512 seek=$((__OFFSET__ / 512)) 2>/dev/null
sync
echo HVL-FACTS-WRITTEN >/dev/ttyS0 2>/dev/null
# stay up: the host reads QEMU's side too, then ends the machine
while :; do sleep 60; done
""".replace("__OFFSET__", str(FACTS_OFFSET)).replace("__FW_CFG_HASHED__", str(FW_CFG_HASHED))


def _fw_cfg_module(image: GuestImage, into: Path) -> None:
    """qemu_fw_cfg from the lab kernel's package (not in the lab initramfs): the guest
    reads the firmware configuration QEMU hands SeaBIOS through it."""
    kdir = image.kernel.parents[1]  # the cache's kernel/<version>/vmlinuz
    deb = kdir / json.loads((kdir / "kernel.json").read_text())["deb"]
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                             check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp, "--wildcards", "*/qemu_fw_cfg.ko*"],
                       input=tar, capture_output=True, check=True)
        found = next(Path(tmp).rglob("qemu_fw_cfg.ko*"))
        _copy_module(found, into)


def probe_initrd(image: GuestImage, dest: Path) -> Path:
    """The lab initramfs with the probe's /init (and /probe) appended, written to
    ``dest``."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        init = Path(tmp, "init")
        init.write_text(PROBE_INIT)
        init.chmod(0o755)
        (Path(tmp) / "probe").mkdir()
        _fw_cfg_module(image, Path(tmp) / "probe")
        cpio = subprocess.run([str(BUSYBOX), "cpio", "-o", "-H", "newc"], cwd=tmp,
                              input=b"init\nprobe\nprobe/qemu_fw_cfg.ko\n",
                              capture_output=True, check=True).stdout
    dest.write_bytes(image.initrd.read_bytes() + gzip.compress(cpio, mtime=0))
    return dest


def boot_disk(image: GuestImage, initrd: Path, dest: Path) -> Path:
    """A disk the firmware boots the probe from (kernel_path empty): the lab's isolinux
    image made hybrid (an MBR that boots it as a hard disk), grown to DISK_BYTES."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as work:
        root = Path(work)
        (root / "isolinux").mkdir()
        (root / "boot").mkdir()
        shutil.copyfile(iso.ISOLINUX_BIN, root / "isolinux" / "isolinux.bin")
        shutil.copyfile(iso.LDLINUX_C32, root / "isolinux" / "ldlinux.c32")
        (root / "isolinux" / "isolinux.cfg").write_text(
            iso.ISOLINUX_CFG.format(speed=115200, cmdline=image.cmdline))
        shutil.copyfile(image.kernel, root / "boot" / "vmlinuz")
        shutil.copyfile(initrd, root / "boot" / "initrd.img")
        subprocess.run([iso.XORRISO, "-as", "mkisofs", "-quiet", "-o", str(dest),
                        "-isohybrid-mbr", str(ISOHYBRID_MBR), "-b", "isolinux/isolinux.bin",
                        "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                        "-boot-info-table", str(root)], capture_output=True, check=True)
    assert dest.stat().st_size < FACTS_OFFSET, "the boot image overlaps the facts"
    with open(dest, "r+b") as f:
        f.truncate(DISK_BYTES)
    return dest


def new_disk(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(DISK_BYTES)
    return path


def read_raw(disk: Path) -> str | None:
    """The probe's output on ``disk``, None until it is complete."""
    with open(disk, "rb") as f:
        f.seek(FACTS_OFFSET)
        data = f.read(1024 * 1024).split(b"\0", 1)[0].decode(errors="replace")
    if not data.startswith(BEGIN) or END not in data:
        return None
    return data


def wait_raw(disk: Path, timeout: float, alive: Callable[[], bool]) -> str:
    """Wait for the probe's output on ``disk`` while the machine runs."""
    deadline = time.monotonic() + timeout
    while True:
        raw = read_raw(disk)
        if raw is not None:
            return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"no identity facts on {disk} within {timeout:.0f}s")
        if not alive():
            raw = read_raw(disk)
            if raw is not None:
                return raw
            raise AssertionError(f"the machine of {disk} ended without writing its facts")
        time.sleep(0.2)


def parse(raw: str) -> dict[str, str]:
    """``section.key -> value``; a line of a LINE_SECTIONS section is its own key."""
    facts: dict[str, str] = {}
    section, cpu = "", ""
    for line in raw.split(END, 1)[0].splitlines()[1:]:
        if line.startswith("### "):
            section = line[4:]
            continue
        if section == "cpuinfo":
            name, _, value = (part.strip() for part in line.partition(":"))
            if name == "processor":
                cpu = value
            if name:
                facts[f"cpuinfo.{cpu}.{name}"] = value
        elif section in LINE_SECTIONS:
            facts[f"{section}: {line.strip()}"] = "present"
        else:
            key, _, value = line.partition(" ")
            facts[f"{section}.{key}"] = value
    return facts


def usb_facts(info_usb: str) -> dict[str, str]:
    """QEMU's ``info usb`` as facts: the lab kernel has no USB host driver, so the USB
    pointer is read from QEMU's side (its port and product as the guest would see
    them; the ID is only QEMU's name for the device)."""
    facts = {}
    for line in info_usb.splitlines():
        device, _, rest = line.strip().partition(", ")
        if device.startswith("Device "):
            facts[f"usb.{device[7:]}"] = re.sub(r", ID: .*$", "", rest)
    return facts


# Facts SeaBIOS makes anew from QEMU's configuration at every reset, which differ
# however the domain is written: libvirt always passes -boot strict=on and lists the
# first disk (fw_cfg's bootorder gets it and "HALT"), and, with -nodefaults, creates
# the ISA serial and parallel ports by -device after the machine's own ISA devices
# (another device order in the DSDT); SeaBIOS then keeps a few pages fewer at the top
# of low memory (e820, MemTotal). A handed-over guest keeps the source's until its
# next reset (the e820 map it booted with, the ACPI tables SeaBIOS copied into its
# RAM); at a reset the machine is hvlibvirt's anyway, as after a restart.
AT_RESET_KEYS = frozenset({"acpi.DSDT", "fw_cfg.bootorder", "fw_cfg.bootorder:text",
                           "fw_cfg.etc/acpi/tables"})
_E820_TOP = re.compile(r"^iomem: [0-9a-f]+-[0-9a-f]+ : (System RAM|Reserved)$")
# Option ROM images the kernel recognises in the ROM area: SeaBIOS deploys them anew at
# every reset, and what it leaves there varies between boots of one and the same QEMU
# (its driver threads allocate from that area while the ROMs run; docs/handover.md).
_OPTION_ROM = re.compile(r"^iomem: 000[c-e][0-9a-f]{4}-000[c-e][0-9a-f]{4} : Adapter ROM$")
AT_RESET_MEMORY_KIB = 256  # SeaBIOS's high table zone is at most this big


def _kib(value: str | None) -> int:
    return int((value or "0 kB").split()[0])


def at_reset_only(key: str, source: str | None, target: str | None) -> bool:
    """Whether a difference is one of those only SeaBIOS makes, at a reset."""
    if key in AT_RESET_KEYS or _E820_TOP.match(key) or _OPTION_ROM.match(key):
        return True
    return key == "memory.MemTotal:" and \
        abs(_kib(source) - _kib(target)) <= AT_RESET_MEMORY_KIB


def differences(source: Mapping[str, str], target: Mapping[str, str]
                ) -> tuple[list[str], list[str]]:
    """(each fact the two guests read differently, named; those only at a reset)."""
    missing = "(absent)"
    found: tuple[list[str], list[str]] = ([], [])
    for key in sorted(set(source) | set(target)):
        if source.get(key) != target.get(key):
            found[at_reset_only(key, source.get(key), target.get(key))].append(
                f"{key}: hv_kvm's QEMU {source.get(key, missing)!r}, libvirt's "
                f"{target.get(key, missing)!r}")
    return found

