"""Tier 6's guest: the lab's Debian cloud kernel (PV, PVH and PVHVM capable, hvc_xen
built in) with a busybox initramfs for Xen, and an isolinux ISO of the same for HVM,
which boots through hvmloader and SeaBIOS like any HVM guest.

The /init reports on the console (hvc0 for PV, ttyS0 for HVM; the kernel's
``console=`` decides):

* ``HVL-DEV blk=xvda,... net=eth0,... mem=<MemTotal kB>`` at boot and on every change
  (polled every 0.5 s: the nested guest has little CPU to spare);
* ``HVL-READY hv=xen guest_type=PV|HVM uptime=<s>`` once the front-end drivers loaded;
* ``HVL-XEN-POWEROFF`` / ``HVL-XEN-REBOOT`` when Xen's toolstack asks it to (the kernel
  runs /sbin/poweroff or /sbin/reboot), then it does so at once.

After HVL-READY a shell runs on the console.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.guest import (BUSYBOX, GuestImage, _ensure_kernel, _locked, _module_closure,
                       _newc_archive, fill_initramfs, unpack_modules)
from lab.iso import build_boot_iso

log = logging.getLogger(__name__)

# Where dom0 keeps the guest (the paths Ganeti's hvparams name).
GUEST_DIR = Path("/var/lib/hvl-xen")
DOM0_KERNEL = GUEST_DIR / "vmlinuz"
DOM0_INITRD = GUEST_DIR / "initrd.img"
DOM0_ISO = GUEST_DIR / "boot.iso"
MODULES = ("xen_blkfront", "xen_netfront")
PV_ARGS = "console=hvc0 quiet panic=-1"
HVM_ARGS = "console=ttyS0 quiet panic=-1"
SERIAL_SPEED = 115200

INIT_SCRIPT = r"""#!/bin/sh
# hvlibvirt tier 6 guest /init (busybox): reports state on the Xen console.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
for m in $(cat /etc/hvl-modules); do modprobe "$m" 2>/dev/null || echo "HVL-MODPROBE-FAILED $m"; done
devstate() {
  blk=""; net=""
  for d in /sys/block/*; do [ -e "$d" ] && blk="$blk${blk:+,}${d##*/}"; done
  for d in /sys/class/net/*; do [ -e "$d" ] && net="$net${net:+,}${d##*/}"; done
  echo "blk=$blk net=$net mem=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
}
old=$(devstate)
echo "HVL-DEV $old"
(
  while :; do
    new=$(devstate)
    if [ "$new" != "$old" ]; then echo "HVL-DEV $new"; old=$new; fi
    sleep 0.5
  done
) &
echo "HVL-READY hv=$(cat /sys/hypervisor/type) guest_type=$(cat /sys/hypervisor/guest_type) uptime=$(cut -d' ' -f1 /proc/uptime)"
while :; do
  setsid cttyhack sh -l || sleep 1
done
"""
# The kernel runs these when the toolstack writes control/shutdown in xenstore.
POWER_SCRIPT = """#!/bin/sh
echo "HVL-XEN-{word}" >/dev/console
exec /bin/{cmd} -f
"""


@dataclass(frozen=True)
class XenGuest:
    """The guest's files in the test cache (copied into dom0 at the DOM0_* paths)."""

    kernel: Path
    initrd: Path
    iso: Path
    kernel_version: str


def _key(version: str) -> str:
    h = hashlib.sha256()
    st = BUSYBOX.stat()
    for part in (version, INIT_SCRIPT, POWER_SCRIPT, ",".join(MODULES),
                 f"{st.st_size}:{st.st_mtime_ns}"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def _build_initrd(deb: Path, version: str, out: Path, work: Path) -> None:
    tree, root = work / "deb", work / "root"
    mod_src = unpack_modules(deb, version, tree)
    files, _ = _module_closure(mod_src, MODULES, ())
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    fill_initramfs(root, mod_src, version, files, MODULES)
    scripts = {root / "init": INIT_SCRIPT,
               root / "sbin/poweroff": POWER_SCRIPT.format(word="POWEROFF", cmd="poweroff"),
               root / "sbin/reboot": POWER_SCRIPT.format(word="REBOOT", cmd="reboot")}
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    out.write_bytes(_newc_archive(root))


def build_xen_guest(cache_dir: Path) -> XenGuest:
    """The guest kernel, its Xen initramfs and the HVM boot ISO, built when missing."""
    vmlinuz, version, deb = _ensure_kernel(cache_dir / "kernel")
    base = cache_dir / "xen"
    base.mkdir(parents=True, exist_ok=True)
    initrd = base / f"guest-initrd-{version}-{_key(version)}.img"
    with _locked(base / ".guest.lock"):
        if not initrd.exists():
            with tempfile.TemporaryDirectory(dir=base) as work:
                tmp = Path(work) / "initrd.img"
                _build_initrd(deb, version, tmp, Path(work))
                tmp.replace(initrd)
            log.info("built %s", initrd.name)
    iso = build_boot_iso(GuestImage(kernel=vmlinuz, initrd=initrd, kernel_version=version),
                         base, HVM_ARGS, SERIAL_SPEED)
    return XenGuest(kernel=vmlinuz, initrd=initrd, iso=iso, kernel_version=version)
