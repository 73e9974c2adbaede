"""Instance + block devices + hvparams + startup options -> libvirt domain XML.

Pure: no libvirt calls and no I/O. The same inputs give byte-identical XML. Each device
kind has its own module (disks, nics, graphics, cpu, channels, controllers); this one
assembles the domain and owns the top-level elements and the device layout.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, param_values
from hvlibvirt.domain_xml import (addresses, channels, controllers, cpu, disks, graphics,
                                  identity, inputs, metadata, nics, pcie)
from hvlibvirt.domain_xml.inputs import BlockDevice
from hvlibvirt.domain_xml.options import StartupOptions
from hvlibvirt.errors import HypervisorError

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def _os(root: etree._Element, hvparams: Mapping[str, Any], options: StartupOptions) -> None:
    os_elem = etree.SubElement(root, "os")
    target = options.target
    type_elem = etree.SubElement(os_elem, "type", arch=target.arch)
    if target.machine:
        type_elem.set("machine", target.machine)
    type_elem.text = "hvm"
    kernel = hvparams[C.HV_KERNEL_PATH]
    if not kernel:
        return  # booting from devices: per-device <boot order>, see _boot_device
    etree.SubElement(os_elem, "kernel").text = identity.absolute_path(kernel, "kernel_path")
    if hvparams[C.HV_INITRD_PATH]:
        etree.SubElement(os_elem, "initrd").text = identity.absolute_path(
            hvparams[C.HV_INITRD_PATH], "initrd_path")
    args = []
    if hvparams[C.HV_ROOT_PATH]:
        args.append("root=" + identity.plain_text(hvparams[C.HV_ROOT_PATH], "root_path"))
    if hvparams[C.HV_KERNEL_ARGS]:
        args.append(identity.plain_text(hvparams[C.HV_KERNEL_ARGS], "kernel_args"))
    if hvparams[C.HV_SERIAL_CONSOLE]:
        args.append(f"console=ttyS0,{hvparams[C.HV_SERIAL_SPEED]}")
    etree.SubElement(os_elem, "cmdline").text = " ".join(args)


def _memory_backing(root: etree._Element, hvparams: Mapping[str, Any]) -> None:
    if hvparams[C.HV_MEM_PATH]:
        # libvirt backs guest RAM with the hugetlbfs mount it is configured with and
        # preallocates it, as Ganeti's -mem-path/-mem-prealloc does.
        backing = etree.SubElement(root, "memoryBacking")
        etree.SubElement(backing, "hugepages")
        etree.SubElement(backing, "allocation", mode="immediate")


class _Layout:
    """Guest device names and bus positions handed out while devices are added."""

    def __init__(self, hvparams: Mapping[str, Any]) -> None:
        reservations = hvparams[C.HV_KVM_PCI_RESERVATIONS]
        self.pci = addresses.PciAllocator(reservations, used=addresses.PLATFORM_SLOTS)
        self.ports = pcie.RootPorts(reservations) if disks.on_q35(hvparams) else None
        self.scsi_model = addresses.SCSI_MODELS[hvparams[C.HV_KVM_SCSI_CONTROLLER_TYPE]]
        self.names: dict[str, int] = {}
        self.positions: dict[str, int] = {}

    def target(self, prefix: str) -> str:
        index = self.names.get(prefix, 0)
        self.names[prefix] = index + 1
        return identity.target_name(prefix, index)

    def pci_device(self, elem: etree._Element, what: str) -> None:
        """A disk's or NIC's PCI address: behind a root port of its own on q35 (where
        it can be hot-removed), else the next free slot of bus 0."""
        if self.ports is not None:
            pcie.behind(elem, self.ports.take(what))
        else:
            addresses.pci(elem, self.pci.take(what))

    def place(self, elem: etree._Element, bus: str, what: str,
              pci_slot: int | None = None) -> None:
        """Give a disk-like element its address on ``bus``."""
        position = self.positions.get(bus, 0)
        self.positions[bus] = position + 1
        if bus == "virtio" and pci_slot is not None:
            addresses.pci(elem, pci_slot)
        elif bus == "virtio":
            self.pci_device(elem, what)
        elif bus == "scsi":
            addresses.scsi_drive(elem, self.scsi_model, position, what)
        elif bus == "ide":
            addresses.ide_drive(elem, position, what)
        elif bus == disks.SATA:
            addresses.sata_drive(elem, position, what)


def _boot(elem: etree._Element | None, order: int) -> None:
    if elem is not None:
        boot = etree.Element("boot", order=str(order))
        elem.insert(elem.index(elem.find("target")) + 1 if elem.find("target") is not None
                    else len(elem), boot)


def _storage(devs: etree._Element, block_devices: Sequence[BlockDevice],
             hvparams: Mapping[str, Any], layout: _Layout
             ) -> tuple[dict[str, etree._Element], list[tuple[str, str, str]]]:
    """Disks, cdroms and the floppy. Returns the first device of each boot kind and the
    (kind, uuid, alias) of each instance disk."""
    first: dict[str, etree._Element] = {}
    ids = []

    def add_cdrom(number: int, param: str, kind: str) -> None:
        _, cd_bus, cd_prefix = disks.CDROM_KINDS[kind]
        elem = disks.cdrom(number, hvparams[param], kind, layout.target(cd_prefix))
        layout.place(elem, cd_bus, param, pci_slot=addresses.CDROM_SLOTS[number - 1])
        devs.append(elem)
        if number == 1:
            first[C.HT_BO_CDROM] = elem

    cdroms = [(number, param, disks.cdrom_type(number, hvparams))
              for number, param in disks.CDROM_PARAMS if hvparams[param]]
    # Ganeti's command line has the cdroms' -drive options before the disks', and QEMU
    # numbers IDE drives in that order: IDE cdroms take the first IDE units (hda...),
    # on q35 the first AHCI ports.
    on_ide = [cd for cd in cdroms if disks.CDROM_KINDS[cd[2]][1] in ("ide", disks.SATA)]
    for cd in on_ide:
        add_cdrom(*cd)
    _, bus, prefix = disks.disk_kind(hvparams)
    for index, (disk_obj, link_name, drive_uri) in enumerate(
            inputs.block_devices(block_devices)):
        elem = disks.disk(disk_obj, link_name, drive_uri, index, hvparams, layout.target(prefix))
        layout.place(elem, bus, f"disk {index}")
        devs.append(elem)
        first.setdefault(C.HT_BO_DISK, elem)
        ids.append(("disk", disk_obj.uuid, elem.find("alias").get("name")))
    for cd in cdroms:
        if cd not in on_ide:
            add_cdrom(*cd)
    if hvparams[C.HV_KVM_FLOPPY_IMAGE_PATH]:
        elem = disks.floppy(hvparams[C.HV_KVM_FLOPPY_IMAGE_PATH])
        devs.append(elem)
        first[C.HT_BO_FLOPPY] = elem
        if layout.ports is not None:  # q35 has no floppy controller built in
            devs.append(controllers.fdc())
    if "scsi" in layout.positions:
        devs.append(controllers.scsi(layout.scsi_model))
    return first, ids


def _devices(root: etree._Element, instance: Any, block_devices: Sequence[BlockDevice],
             hvparams: Mapping[str, Any], options: StartupOptions
             ) -> list[tuple[str, str, str]]:
    devs = etree.SubElement(root, "devices")
    if options.target.emulator:
        etree.SubElement(devs, "emulator").text = identity.absolute_path(
            options.target.emulator, "kvm_path")
    layout = _Layout(hvparams)
    first, identity_list = _storage(devs, block_devices, hvparams, layout)
    for index, nic in enumerate(inputs.nic_list(instance)):
        elem = nics.interface(nic, index, hvparams, options.linux_bridge_vlans)
        layout.pci_device(elem, f"NIC {index}")
        devs.append(elem)
        first.setdefault(C.HT_BO_NETWORK, elem)
        identity_list.append(("nic", nic.uuid, elem.find("alias").get("name")))
    if not hvparams[C.HV_KERNEL_PATH]:
        # libvirt boots strictly (only the devices given an order); hv_kvm's QEMU does
        # not, so a failed network, cdrom or floppy boot goes on to the first disk there.
        kind = hvparams[C.HV_BOOT_ORDER]
        _boot(first.get(kind), 1)
        if kind != C.HT_BO_DISK:
            _boot(first.get(C.HT_BO_DISK), 2)

    if layout.ports is not None:
        devs.extend(layout.ports.elements(options.pcie_hotplug_ports))
        devs.extend(controllers.q35_usb())
        devs.append(controllers.sata())
    else:
        devs.append(controllers.usb())
    has_vnc, has_spice = options.vnc_listen is not None, options.spice_listen is not None
    devs.extend(graphics.inputs(hvparams, has_vnc))
    if has_vnc:
        devs.append(graphics.vnc(instance, hvparams, options))
    if has_spice:
        devs.append(graphics.spice(instance, hvparams, options))
    devs.append(graphics.video(hvparams, has_spice))
    devs.extend(graphics.sound(hvparams, has_spice))
    agent = hvparams[C.HV_USE_GUEST_AGENT]
    vdagent = has_spice and hvparams[C.HV_KVM_SPICE_USE_VDAGENT]
    if agent or vdagent:
        devs.append(controllers.virtio_serial())
    if hvparams[C.HV_SERIAL_CONSOLE]:
        devs.extend(channels.serial_console(
            identity.absolute_path(options.serial_log, "serial log")
            if options.serial_log else None))
    if agent:
        devs.append(channels.guest_agent())
    if vdagent:
        devs.append(channels.spice_agent())
    balloon = etree.SubElement(devs, "memballoon", model="virtio")
    # libvirt refreshes the balloon size from the guest on this period, which keeps
    # virDomainGetInfo's memory figure current without asking QEMU on every call.
    etree.SubElement(balloon, "stats", period="5")
    addresses.pci(balloon, addresses.BALLOON_SLOT)
    return identity_list


def _seclabel(root: etree._Element, hvparams: Mapping[str, Any],
              options: StartupOptions) -> None:
    if hvparams[C.HV_SECURITY_MODEL] != C.HT_SM_USER:
        return  # 'none': QEMU runs as libvirt's configured user, as Ganeti's does as root
    if not options.security_label:
        raise HypervisorError("security_model is 'user' but the security_domain user "
                              f"{hvparams[C.HV_SECURITY_DOMAIN]!r} was not resolved")
    label = etree.SubElement(root, "seclabel", type="static", model="dac", relabel="yes")
    etree.SubElement(label, "label").text = options.security_label


def _qemu_commandline(root: etree._Element, hvparams: Mapping[str, Any]) -> None:
    extra = hvparams[C.HV_KVM_EXTRA]
    if not extra:
        return
    try:
        args = param_values.kvm_extra_args(extra)
    except ValueError as err:
        raise HypervisorError(f"Invalid kvm_extra {extra!r}: {err}") from None
    cmdline = etree.SubElement(root, f"{{{QEMU_NS}}}commandline")
    for arg in args:
        etree.SubElement(cmdline, f"{{{QEMU_NS}}}arg",
                         value=identity.plain_text(arg, "kvm_extra"))


def domain_head(instance: Any, options: StartupOptions,
                nsmap: Mapping[str, str] | None = None
                ) -> tuple[etree._Element, etree._Element, int]:
    """``<domain>`` with name, uuid, an empty ``<metadata>`` (filled by
    ``finish_metadata``), memory and vCPU count: what every hypervisor's domain starts
    with. Returns (root, metadata element, vcpus)."""
    name = identity.instance_name(getattr(instance, "name", None))
    uuid = identity.instance_uuid(getattr(instance, "uuid", None))
    maxmem, vcpus = inputs.beparam(instance, "maxmem"), inputs.beparam(instance, "vcpus")
    root = etree.Element("domain", type=options.target.domain_type, nsmap=nsmap)
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "uuid").text = uuid
    meta_elem = etree.SubElement(root, "metadata")
    etree.SubElement(root, "memory", unit="MiB").text = str(maxmem)
    etree.SubElement(root, "currentMemory", unit="MiB").text = str(
        min(max(int(options.startup_memory), 1), maxmem))
    return root, meta_elem, vcpus


def lifecycle(root: etree._Element, hvparams: Mapping[str, Any], on_crash: str) -> None:
    """``<on_poweroff>`` destroy (a guest's own power-off is read from libvirt's shutoff
    reason, not from a preserved domain), ``<on_reboot>`` from reboot_behavior."""
    etree.SubElement(root, "on_poweroff").text = "destroy"
    on_reboot = ("destroy" if hvparams[C.HV_REBOOT_BEHAVIOR] == C.INSTANCE_REBOOT_EXIT
                 else "restart")
    etree.SubElement(root, "on_reboot").text = on_reboot
    etree.SubElement(root, "on_crash").text = on_crash


def finish_metadata(meta_elem: etree._Element, instance: Any, hypervisor: str,
                    hvparams: Mapping[str, Any], device_ids: list[tuple[str, str, str]]
                    ) -> None:
    meta_elem.append(metadata.build(metadata.InstanceMetadata(
        instance_uuid=instance.uuid, hypervisor=hypervisor, hvparams=dict(hvparams),
        devices=device_ids)))


def build_domain(instance: Any, block_devices: Sequence[BlockDevice],
                 hvparams: Mapping[str, Any], options: StartupOptions) -> etree._Element:
    """The ``<domain>`` tree for ``instance`` with ``hvparams`` (a full KVM dict)."""
    nsmap = {"qemu": QEMU_NS} if hvparams[C.HV_KVM_EXTRA] else None
    root, meta_elem, vcpus = domain_head(instance, options, nsmap)
    _memory_backing(root, hvparams)
    cpu.vcpu(root, vcpus)
    tune = cpu.cputune(hvparams, vcpus)
    if tune is not None:
        root.append(tune)
    _os(root, hvparams, options)
    features = etree.SubElement(root, "features")
    if hvparams[C.HV_ACPI]:
        etree.SubElement(features, "acpi")
    cpu_elem = cpu.cpu(hvparams, vcpus)
    if cpu_elem is not None:
        root.append(cpu_elem)
    etree.SubElement(root, "clock",
                     offset="localtime" if hvparams[C.HV_USE_LOCALTIME] else "utc")
    lifecycle(root, hvparams, on_crash="destroy")
    device_ids = _devices(root, instance, block_devices, hvparams, options)
    _seclabel(root, hvparams, options)
    _qemu_commandline(root, hvparams)
    finish_metadata(meta_elem, instance, C.HT_KVM, hvparams, device_ids)
    return root


def to_string(root: etree._Element) -> str:
    """Serialise deterministically (two-space indent, trailing newline) a tree the
    builders made (libxml2's own indentation: they add no whitespace of their own)."""
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def redacted(root: etree._Element) -> etree._Element:
    """A copy without graphics passwords, for logs and error messages."""
    clean = copy.deepcopy(root)
    for graphics_elem in clean.iter("graphics"):
        if "passwd" in graphics_elem.attrib:
            graphics_elem.set("passwd", "***")
    return clean
