"""Instance + block devices + hvparams -> libvirt domain XML (pure: no libvirt, no I/O).

The host-dependent facts (domain type, architecture, machine, emulator) come in as a
``GuestTarget`` computed by the caller from libvirt's capabilities, which keeps this
module deterministic: the same inputs give byte-identical XML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from hvlibvirt import constants
from hvlibvirt.domain_xml import devices, metadata
from hvlibvirt.errors import HypervisorError

BlockDevice = tuple[Any, str | None, str | None]  # (disk, link_name, drive_uri)


@dataclass(frozen=True)
class GuestTarget:
    """Where the domain will run, as libvirt's capabilities describe it."""

    domain_type: str           # kvm, qemu, xen, test
    arch: str = "x86_64"
    machine: str | None = None  # None: the driver's default
    emulator: str | None = None


def _memory(parent: etree._Element, tag: str, mib: int) -> None:
    etree.SubElement(parent, tag, unit="MiB").text = str(int(mib))


def _os(root: etree._Element, hvparams: Mapping[str, Any], target: GuestTarget) -> None:
    os_elem = etree.SubElement(root, "os")
    type_elem = etree.SubElement(os_elem, "type", arch=target.arch)
    if target.machine:
        type_elem.set("machine", target.machine)
    type_elem.text = "hvm"
    kernel = hvparams.get(constants.HV_KERNEL_PATH)
    if not kernel:
        etree.SubElement(os_elem, "boot", dev="hd")
        return
    etree.SubElement(os_elem, "kernel").text = kernel
    if hvparams.get(constants.HV_INITRD_PATH):
        etree.SubElement(os_elem, "initrd").text = hvparams[constants.HV_INITRD_PATH]
    args = []
    if hvparams.get(constants.HV_ROOT_PATH):
        args.append(f"root={hvparams[constants.HV_ROOT_PATH]}")
    if hvparams.get(constants.HV_KERNEL_ARGS):
        args.append(hvparams[constants.HV_KERNEL_ARGS])
    if hvparams.get(constants.HV_SERIAL_CONSOLE):
        args.append(f"console=ttyS0,{hvparams[constants.HV_SERIAL_SPEED]}")
    etree.SubElement(os_elem, "cmdline").text = " ".join(args)


def _devices(root: etree._Element, instance: Any, block_devices: Sequence[BlockDevice],
             hvparams: Mapping[str, Any], target: GuestTarget
             ) -> list[tuple[str, str, str]]:
    devs = etree.SubElement(root, "devices")
    if target.emulator:
        etree.SubElement(devs, "emulator").text = target.emulator
    reservations = hvparams.get(constants.HV_KVM_PCI_RESERVATIONS,
                                constants.QEMU_DEFAULT_PCI_RESERVATIONS)
    used = {devices.BALLOON_SLOT}
    scsi = hvparams.get(constants.HV_DISK_TYPE) in constants.HT_SCSI_DEVICE_TYPES
    if scsi:
        used.add(devices.SCSI_CONTROLLER_SLOT)
    slots = devices.free_pci_slots(used, reservations)
    identity = []

    def next_slot(what: str) -> int:
        try:
            return next(slots)
        except StopIteration:
            raise HypervisorError(
                f"No free PCI slot for {what} (kvm_pci_reservations={reservations})") from None

    for index, (disk, link, uri) in enumerate(block_devices):
        on_pci = not scsi and hvparams[constants.HV_DISK_TYPE] == constants.HT_DISK_PARAVIRTUAL
        elem = devices.disk(disk, link, uri, index, hvparams,
                            slot=next_slot(f"disk {index}") if on_pci else None,
                            scsi_unit=index if scsi else None)
        devs.append(elem)
        identity.append(("disk", disk.uuid, elem.find("alias").get("name")))
    if scsi:
        devs.append(devices.scsi_controller(hvparams[constants.HV_KVM_SCSI_CONTROLLER_TYPE]))
    for index, nic in enumerate(getattr(instance, "nics", None) or []):
        elem = devices.nic(nic, hvparams, next_slot(f"NIC {index}"))
        devs.append(elem)
        identity.append(("nic", nic.uuid, elem.find("alias").get("name")))
    if hvparams.get(constants.HV_SERIAL_CONSOLE):
        devs.extend(devices.serial_console())
    devs.append(devices.memballoon())
    return identity


def build_domain(instance: Any, block_devices: Sequence[BlockDevice],
                 hvparams: Mapping[str, Any], target: GuestTarget,
                 startup_memory: int) -> etree._Element:
    """Return the ``<domain>`` tree for ``instance``; memory values are MiB."""
    beparams = getattr(instance, "beparams", None) or {}
    try:
        maxmem = int(beparams["maxmem"])
        vcpus = int(beparams["vcpus"])
    except (KeyError, TypeError, ValueError) as err:
        raise HypervisorError(
            f"Instance {instance.name}: beparams need integer maxmem and vcpus ({err})") from err
    root = etree.Element("domain", type=target.domain_type)
    etree.SubElement(root, "name").text = instance.name
    etree.SubElement(root, "uuid").text = instance.uuid
    meta_elem = etree.SubElement(root, "metadata")
    _memory(root, "memory", maxmem)
    _memory(root, "currentMemory", min(startup_memory, maxmem))
    etree.SubElement(root, "vcpu", placement="static").text = str(vcpus)
    _os(root, hvparams, target)
    features = etree.SubElement(root, "features")
    if hvparams.get(constants.HV_ACPI, True):
        etree.SubElement(features, "acpi")
    localtime = hvparams.get(constants.HV_USE_LOCALTIME)
    etree.SubElement(root, "clock", offset="localtime" if localtime else "utc")
    etree.SubElement(root, "on_poweroff").text = "destroy"
    exit_on_reboot = hvparams.get(constants.HV_REBOOT_BEHAVIOR) == constants.INSTANCE_REBOOT_EXIT
    etree.SubElement(root, "on_reboot").text = "destroy" if exit_on_reboot else "restart"
    etree.SubElement(root, "on_crash").text = "destroy"
    identity = _devices(root, instance, block_devices, hvparams, target)
    meta_elem.append(metadata.build(metadata.InstanceMetadata(
        instance_uuid=instance.uuid, hypervisor=getattr(instance, "hypervisor", ""),
        hvparams=dict(hvparams), devices=identity)))
    return root


def to_string(root: etree._Element) -> str:
    """Serialise deterministically (stable attribute order, two-space indent)."""
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"
