"""A bootable ISO of the lab guest: isolinux on an El Torito (no-emulation) CD holding the
lab kernel and initramfs, for booting a guest from its cdrom the way an installer ISO is.

Built with Debian's ``xorriso`` and ``isolinux``/``syslinux-common`` (scripts/setup.sh
installs them) and cached beside the guest image, keyed by everything that goes into it.
The image has no isohybrid MBR on purpose: it boots from a CD-ROM drive only, not as a
hard disk, so a test booting it proves the firmware saw a CD-ROM.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from lab.guest import GuestImage, _locked, _run

log = logging.getLogger(__name__)

ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
XORRISO = "xorriso"
KEEP_ISOS = 3
# isolinux reads this; PROMPT 0 boots the default label at once.
ISOLINUX_CFG = """SERIAL 0 {speed}
PROMPT 0
TIMEOUT 1
DEFAULT hvl
LABEL hvl
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND {cmdline}
"""


def missing_iso_tools() -> list[str]:
    """What the ISO build lacks on this machine ([] if nothing)."""
    missing = []
    if shutil.which(XORRISO) is None:
        missing.append("xorriso (package xorriso)")
    if not ISOLINUX_BIN.is_file():
        missing.append(f"{ISOLINUX_BIN} (package isolinux)")
    if not LDLINUX_C32.is_file():
        missing.append(f"{LDLINUX_C32} (package syslinux-common)")
    return missing


def _key(image: GuestImage, config: str) -> str:
    h = hashlib.sha256()
    for part in (image.kernel_version, image.initrd.name, config):
        h.update(part.encode() + b"\0")
    for path in (image.kernel, image.initrd, ISOLINUX_BIN, LDLINUX_C32):
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:12]


def _prune(cache_dir: Path, keep: Path) -> None:
    """Keep the newest few ISOs; other sessions may still boot older ones."""
    olds = sorted((p for p in cache_dir.glob("boot-*.iso") if p != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for path in olds[KEEP_ISOS - 1:]:
        path.unlink(missing_ok=True)


def build_boot_iso(image: GuestImage, cache_dir: Path, cmdline: str, serial_speed: int) -> Path:
    """The ISO booting ``image`` with kernel ``cmdline`` (isolinux on ttyS0 at
    ``serial_speed``), built into ``cache_dir`` unless a matching one is there."""
    config = ISOLINUX_CFG.format(speed=serial_speed, cmdline=cmdline)
    iso = cache_dir / f"boot-{image.kernel_version}-{_key(image, config)}.iso"
    with _locked(cache_dir / ".iso.lock"):
        if iso.exists():
            return iso
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache_dir) as work:
            root = Path(work) / "root"
            (root / "isolinux").mkdir(parents=True)
            (root / "boot").mkdir()
            shutil.copyfile(ISOLINUX_BIN, root / "isolinux" / "isolinux.bin")
            shutil.copyfile(LDLINUX_C32, root / "isolinux" / "ldlinux.c32")
            (root / "isolinux" / "isolinux.cfg").write_text(config)
            shutil.copyfile(image.kernel, root / "boot" / "vmlinuz")
            shutil.copyfile(image.initrd, root / "boot" / "initrd.img")
            tmp_iso = Path(work) / "out.iso"
            # -boot-info-table: isolinux needs the El Torito boot info patched into it.
            _run([XORRISO, "-as", "mkisofs", "-quiet", "-o", str(tmp_iso), "-V", "HVLBOOT",
                  "-R", "-J", "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
                  "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(root)])
            os.replace(tmp_iso, iso)
        log.info("built %s (%d KiB) in %.1fs", iso.name, iso.stat().st_size // 1024,
                 time.monotonic() - t0)
        _prune(cache_dir, iso)
    return iso
