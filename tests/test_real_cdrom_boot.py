"""Tier 3: an instance boots from a cdrom the way Ganeti's hv_kvm boots it.

With ``boot_order=cdrom`` and no ``kernel_path``, Ganeti puts the ISO on an IDE CD-ROM
(``-drive ...,media=cdrom,if=ide -boot d``) whatever ``cdrom_disk_type`` says, so the
BIOS boots it El Torito-style. The ISO here (tests/lab/iso.py) has no hard-disk boot
record: it boots only from a CD-ROM drive, so reaching the guest's ready line proves
SeaBIOS saw one, first in the boot order, while ``cdrom_disk_type`` asks for virtio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from hvlibvirt import constants as C
from lab import unavailable
from lab.guest import GuestImage, default_cache_dir
from lab.instances import BOOT, READY, Running
from lab.iso import build_boot_iso, missing_iso_tools

pytestmark = [pytest.mark.tier3, pytest.mark.real]

SERIAL_SPEED = 115200
# What the lab's direct kernel boot gets from its hvparams (root_path, kernel_args,
# serial console at serial_speed), so the guest sees the same command line either way.
CMDLINE = f"root=/dev/vda quiet panic=-1 console=ttyS0,{SERIAL_SPEED}"


@pytest.fixture(scope="module")
def boot_iso(guest_image: GuestImage) -> Path:
    missing = missing_iso_tools()
    if missing:
        unavailable("cannot build the boot ISO, missing (scripts/setup.sh installs them): "
                    + ", ".join(missing))
    return build_boot_iso(guest_image, default_cache_dir(), CMDLINE, SERIAL_SPEED)


def test_boot_order_cdrom_boots_the_iso_from_an_ide_cdrom(
        boot: Callable[..., Running], boot_iso: Path) -> None:
    t0 = time.monotonic()
    run = boot("cdrom-boot", kernel_path="", initrd_path="", boot_order=C.HT_BO_CDROM,
               cdrom_image_path=str(boot_iso), cdrom_disk_type=C.HT_DISK_PARAVIRTUAL,
               serial_speed=SERIAL_SPEED, vga="", nics=0)  # Ganeti's hardware: a VGA card
    run.serial.wait(READY, BOOT)
    booted = time.monotonic() - t0
    dev = run.serial.last_dev()
    assert "vda" in dev["blk"], dev  # the instance disk is still there, on virtio

    root = etree.fromstring(run.dom.XMLDesc(0))
    assert root.find("os/kernel") is None
    (cdrom,) = root.findall("devices/disk[@device='cdrom']")
    assert cdrom.find("target").get("bus") == "ide"
    assert cdrom.find("source").get("file") == str(boot_iso)
    # the ISO first, then the instance disk (hv_kvm's -boot d falls back to it)
    booting = sorted(root.iterfind("devices/*[boot]"), key=lambda d: d.find("boot").get("order"))
    assert [d.find("alias").get("name")[:8] for d in booting] == ["ua-cdrom", "ua-disk-"]
    assert cdrom.find("boot").get("order") == "1"
    print(f"booted from the ISO to {READY} in {booted:.1f} s")
