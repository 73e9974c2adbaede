"""Instance + block devices + Xen hvparams + startup options -> libxl domain XML.

Pure, like ``builder``: the same inputs give byte-identical XML. The element kinds live
in the shared modules (``disks.xen_disk``, ``nics.xen_interface``, ``cpu.xen_cputune``,
``graphics.xen_vnc``, ``hostdevs``...); this module lays out a paravirtual (``xenpv``)
or fully virtualized (``xenfv``) guest the way libvirt's own libxl fixtures do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, param_values
from hvlibvirt.domain_xml import (channels, cpu, disks, graphics, hostdevs, identity,
                                  inputs, nics)
from hvlibvirt.domain_xml.builder import domain_head, finish_metadata, lifecycle
from hvlibvirt.domain_xml.inputs import BlockDevice
from hvlibvirt.domain_xml.options import StartupOptions
from hvlibvirt.errors import HypervisorError

PV_MACHINE = "xenpv"
HVM_MACHINE = "xenfv"
MAX_DISKS = 26  # one letter each, as Ganeti's xl config names them
# Ganeti's HVM boot_order letters (xl's) -> libvirt boot devices.
BOOT_DEVICES = {"a": "fd", "c": "hd", "d": "cdrom", "n": "network"}


def _cmdline(hvparams: Mapping[str, Any]) -> str:
    """xl joins ``root`` and ``extra`` as 'root=<root> <extra>' (so does libvirt's xl
    importer), and Ganeti always writes extra."""
    args = []
    if hvparams[C.HV_ROOT_PATH]:
        args.append("root=" + identity.plain_text(hvparams[C.HV_ROOT_PATH], "root_path"))
    if hvparams[C.HV_KERNEL_ARGS]:
        args.append(identity.plain_text(hvparams[C.HV_KERNEL_ARGS], "kernel_args"))
    return " ".join(args)


def _pv_os(root: etree._Element, hvparams: Mapping[str, Any], options: StartupOptions
           ) -> None:
    if hvparams[C.HV_USE_BOOTLOADER]:
        if (problem := param_values.bootloader_problem(hvparams)):
            raise HypervisorError(problem)
        etree.SubElement(root, "bootloader").text = identity.absolute_path(
            hvparams[C.HV_BOOTLOADER_PATH], "bootloader_path")
        if hvparams[C.HV_BOOTLOADER_ARGS]:
            etree.SubElement(root, "bootloader_args").text = identity.plain_text(
                hvparams[C.HV_BOOTLOADER_ARGS], "bootloader_args")
    os_elem = etree.SubElement(root, "os")
    etree.SubElement(os_elem, "type", arch=options.target.arch,
                     machine=options.target.machine or PV_MACHINE).text = "linux"
    if not hvparams[C.HV_USE_BOOTLOADER]:
        etree.SubElement(os_elem, "kernel").text = identity.absolute_path(
            hvparams[C.HV_KERNEL_PATH], "kernel_path")
        if hvparams[C.HV_INITRD_PATH]:
            etree.SubElement(os_elem, "initrd").text = identity.absolute_path(
                hvparams[C.HV_INITRD_PATH], "initrd_path")
    cmdline = _cmdline(hvparams)
    if cmdline:
        etree.SubElement(os_elem, "cmdline").text = cmdline


def _hvm_os(root: etree._Element, hvparams: Mapping[str, Any], options: StartupOptions
            ) -> None:
    os_elem = etree.SubElement(root, "os")
    etree.SubElement(os_elem, "type", arch=options.target.arch,
                     machine=options.target.machine or HVM_MACHINE).text = "hvm"
    # What libvirt's xl importer makes of kernel=<hvmloader>; libxl loads its own.
    etree.SubElement(os_elem, "loader", type="rom").text = identity.absolute_path(
        hvparams[C.HV_KERNEL_PATH], "kernel_path")
    order = hvparams[C.HV_BOOT_ORDER]
    if not order or order.strip("acdn"):
        raise HypervisorError(f"Invalid boot_order {order!r}: one or more of a, c, d, n")
    for letter in dict.fromkeys(order):  # libvirt refuses a device named twice
        etree.SubElement(os_elem, "boot", dev=BOOT_DEVICES[letter])


def _hvm_features(root: etree._Element, hvparams: Mapping[str, Any]) -> None:
    features = etree.SubElement(root, "features")
    if hvparams[C.HV_ACPI]:
        etree.SubElement(features, "acpi")
    etree.SubElement(features, "apic")  # Ganeti's xl config always sets apic=1
    if hvparams[C.HV_PAE]:
        etree.SubElement(features, "pae")


def disk_names(prefix: str, taken: set[str]) -> list[str]:
    """Free guest disk names <prefix>a..<prefix>z, in order."""
    return [n for n in (prefix + chr(ord("a") + i) for i in range(MAX_DISKS))
            if n not in taken]


def _disk_targets(prefix: str, count: int, reserved: set[str]) -> list[str]:
    """Guest names for ``count`` disks, skipping ``reserved`` (the HVM cdrom's hdc)."""
    names = disk_names(prefix, reserved)
    if count > len(names):
        raise HypervisorError(f"Too many disks: {count} (Xen guests take at most "
                              f"{len(names)} with blockdev_prefix {prefix!r})")
    return names[:count]


def _storage(devs: etree._Element, block_devices: Sequence[BlockDevice],
             hvparams: Mapping[str, Any], hvm: bool) -> list[tuple[str, str, str]]:
    prefix = identity.plain_text(hvparams[C.HV_BLOCKDEV_PREFIX], "blockdev_prefix")
    if not prefix:
        raise HypervisorError("Invalid blockdev_prefix '': Xen disks need a name prefix "
                              "(xvd, sd or hd)")
    cdrom = hvm and hvparams[C.HV_CDROM_IMAGE_PATH]
    bus = "xen" if not hvm or hvparams[C.HV_DISK_TYPE] == C.HT_DISK_PARAVIRTUAL else "ide"
    entries = inputs.block_devices(block_devices)
    targets = _disk_targets(prefix, len(entries), {disks.XEN_CDROM_TARGET} if cdrom else set())
    ids = []
    for index, (disk_obj, link_name, _drive_uri) in enumerate(entries):
        elem = disks.xen_disk(disk_obj, link_name, index, targets[index], bus)
        devs.append(elem)
        ids.append(("disk", disk_obj.uuid, elem.find("alias").get("name")))
    if cdrom:
        devs.append(disks.xen_cdrom(hvparams[C.HV_CDROM_IMAGE_PATH]))
    return ids


def build_xen_domain(instance: Any, block_devices: Sequence[BlockDevice],
                     hvparams: Mapping[str, Any], options: StartupOptions, hvm: bool
                     ) -> etree._Element:
    """The ``<domain type='xen'>`` tree: PV (``hvm=False``, a full xen-pvm hvparams dict)
    or HVM (``hvm=True``, a full xen-hvm dict)."""
    root, meta_elem, vcpus = domain_head(instance, options)
    cpu.vcpu(root, vcpus)
    root.append(cpu.xen_cputune(hvparams, vcpus))
    if hvm:
        _hvm_os(root, hvparams, options)
        _hvm_features(root, hvparams)
        cpuid = cpu.xen_cpuid(hvparams[C.HV_XEN_CPUID])
        if cpuid is not None:
            root.append(cpuid)
    else:
        _pv_os(root, hvparams, options)
    etree.SubElement(root, "clock", offset="localtime"
                     if hvm and hvparams[C.HV_USE_LOCALTIME] else "utc")
    lifecycle(root, hvparams, on_crash="restart")  # Ganeti's xl config: on_crash=restart

    devs = etree.SubElement(root, "devices")
    if hvm:
        etree.SubElement(devs, "emulator").text = identity.absolute_path(
            hvparams[C.HV_DEVICE_MODEL], "device_model")
    device_ids = _storage(devs, block_devices, hvparams, hvm)
    model = nics.xen_model(hvparams, hvm)
    for index, nic in enumerate(inputs.nic_list(instance)):
        elem = nics.xen_interface(nic, index, model, hvparams[C.HV_VIF_SCRIPT] or None)
        devs.append(elem)
        device_ids.append(("nic", nic.uuid, elem.find("alias").get("name")))
    if hvm:
        devs.extend(channels.serial_console())
        devs.extend(graphics.xen_hvm_inputs())
        if options.vnc_listen is not None:
            devs.append(graphics.xen_vnc(instance, hvparams, options))
        devs.append(graphics.xen_video())
        sound = graphics.xen_sound(hvparams[C.HV_SOUNDHW])
        if sound is not None:
            devs.append(sound)
        devs.extend(hostdevs.pci_hostdevs(hvparams[C.HV_PASSTHROUGH]))
    else:
        devs.append(channels.xen_console())
    etree.SubElement(devs, "memballoon", model="xen")
    finish_metadata(meta_elem, instance, C.HT_XEN_HVM if hvm else C.HT_XEN_PVM,
                    hvparams, device_ids)
    return root
