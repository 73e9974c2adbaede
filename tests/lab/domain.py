"""Minimal domain XML for booting the lab guest (harness smoke tests only).

The library has its own XML builder; this one exists so the harness can be tested
without it. Built with lxml so names and paths are always escaped correctly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lxml import etree

from .guest import GuestImage

# Fixed slot so tests that hot-plug devices know which PCI slots are taken.
BALLOON_PCI_SLOT = 0x06


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _pci_address(parent: etree._Element, slot: int) -> etree._Element:
    return _sub(parent, "address", type="pci", domain="0x0000", bus="0x00", slot=f"0x{slot:02x}",
                function="0x0")


def guest_domain_xml(name: str, image: GuestImage, serial_log_path: Path | str, memory_mib: int = 128, *,
                     vcpus: int = 1, domain_type: str = "qemu", extra_cmdline: str = "",
                     emulator: str | None = None) -> str:
    """Domain XML that direct-boots ``image`` with its console logged to ``serial_log_path``.

    ``domain_type`` defaults to 'qemu' (TCG): /dev/kvm on the dev machine is kvm_pvm,
    which cannot run an unmodified Linux guest kernel. Machine 'pc' (i440fx) gives
    ACPI PCI hotplug on bus 0; ACPI is also what delivers the power button.
    """
    dom = etree.Element("domain", type=domain_type)
    _sub(dom, "name", name)
    _sub(dom, "memory", str(memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(vcpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", str(image.kernel))
    _sub(os_el, "initrd", str(image.initrd))
    _sub(os_el, "cmdline", f"{image.cmdline} {extra_cmdline}".strip())

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    _sub(devices, "emulator", emulator or shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(serial_log_path), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="1")
    _pci_address(balloon, BALLOON_PCI_SLOT)
    return etree.tostring(dom, encoding="unicode", pretty_print=True)
