"""What hvparam values mean: the vocabularies libvirt can express and the parsers of
structured values, for the hvparam tables' refusals and the XML builders alike.

A refusal asks here whether a value can be expressed and the builder that expresses it
reads the same answer, so the two cannot drift apart and the tables never call a
builder. Pure: no lxml, no libvirt, no I/O. Parsers raise HypervisorError with the
message a refusal shows.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping
from typing import Any, Final

from hvlibvirt import constants as C
from hvlibvirt.errors import HypervisorError


def ip_version_of(value: str) -> int | None:
    """4 or 6 for an IP address, None for anything else (an interface name)."""
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


# -- machine, disks and cdroms (KVM) ------------------------------------------------------
def is_q35(machine: str | None) -> bool:
    """Whether the machine type (machine_version: q35, pc-q35-X) is a q35 (PCI Express)."""
    return "q35" in (machine or "")


def on_q35(hvparams: Mapping[str, Any]) -> bool:
    """Whether KVM hvparams ask for a q35 machine."""
    return is_q35(hvparams[C.HV_KVM_MACHINE_VERSION])


# Disk types libvirt cannot express on x86, with the reason CheckParameterSyntax gives.
REFUSED_DISK_TYPES: Final = {
    "mtd": "QEMU's legacy -drive if=mtd has no libvirt equivalent and no x86 device",
    "pflash": "pflash is firmware flash, not a disk bus; libvirt models it as <loader>",
    "sd": "SD card buses do not exist on x86 'pc' machines",
    "scsi": "the legacy -drive if=scsi interface is gone from QEMU; use scsi-hd",
    "scsi-generic": "libvirt passes SCSI devices through as scsi-block (disk_type=scsi-block)"
                    " or as a host adapter <hostdev>, which a Ganeti disk path cannot name",
}
# q35 has no IDE controller: QEMU puts Ganeti's -drive if=ide on the ports of its
# built-in AHCI controller, and libvirt refuses the ide bus there.
SATA: Final = "sata"
# The kind of a cdrom (see cdrom_type) -> (device, bus, prefix).
# libvirt refuses device='cdrom' on virtio, so a virtio cdrom is a read-only virtio disk.
CDROM_KINDS: Final = {
    C.HT_DISK_PARAVIRTUAL: ("disk", "virtio", "vd"),
    C.HT_DISK_IDE: ("cdrom", "ide", "hd"),
    "scsi-cd": ("cdrom", "scsi", "sd"),
    "scsi-hd": ("cdrom", "scsi", "sd"),
    SATA: ("cdrom", SATA, "sd"),  # what ide means on q35
}
CDROM_PARAMS: Final = ((1, C.HV_CDROM_IMAGE_PATH), (2, C.HV_KVM_CDROM2_IMAGE_PATH))


def boots_from_cdrom(hvparams: Mapping[str, Any]) -> bool:
    """Whether the firmware boots the instance from cdrom 1 (boot_order, no kernel_path)."""
    return not hvparams[C.HV_KERNEL_PATH] and hvparams[C.HV_BOOT_ORDER] == C.HT_BO_CDROM


def cdrom_type(number: int, hvparams: Mapping[str, Any]) -> str:
    """The disk type cdrom ``number`` goes on (a key of CDROM_KINDS): IDE for the cdrom
    the instance boots from, else cdrom_disk_type (disk_type when that is empty), as
    Ganeti does; SATA where that is IDE on q35. HypervisorError when that type has no
    cdrom device."""
    ide = SATA if on_q35(hvparams) else C.HT_DISK_IDE
    if number == 1 and boots_from_cdrom(hvparams):
        # A BIOS boots an ISO El Torito-style from an ATAPI drive only; Ganeti's
        # -boot d puts that cdrom on if=ide whatever cdrom_disk_type says.
        return ide
    kind = hvparams[C.HV_KVM_CDROM_DISK_TYPE] or hvparams[C.HV_DISK_TYPE]
    if kind == C.HT_DISK_IDE:
        return ide
    if kind not in CDROM_KINDS or kind == SATA:
        source = ("cdrom_disk_type" if hvparams[C.HV_KVM_CDROM_DISK_TYPE] else
                  "disk_type, as cdrom_disk_type is empty")
        raise HypervisorError(f"{CDROM_PARAMS[number - 1][1]} would be on {kind!r} (from "
                              f"{source}), which has no cdrom device; cdroms use ide, "
                              "paravirtual (a read-only virtio disk), scsi-cd or scsi-hd")
    return kind


# -- CPU -------------------------------------------------------------------------------
CPU_HOST: Final = "host"  # cpu_type for host-passthrough
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_FEATURE = re.compile(r"^([+-]?)([A-Za-z0-9_.-]+)(?:=(on|off|true|false))?\Z")


def cpu_model(spec: str) -> tuple[str, list[tuple[str, bool]]]:
    """A custom cpu_type ``model[,+flag,-flag,flag=on|off]`` -> (model, [(flag, on)])."""
    model, *features = spec.split(",")
    if not _MODEL.match(model):
        raise HypervisorError(f"Invalid cpu_type {spec!r}: bad model name {model!r}")
    flags = []
    for feature in features:
        m = _FEATURE.match(feature)
        if m is None or (m.group(1) and m.group(3)):
            raise HypervisorError(f"Invalid cpu_type {spec!r}: cannot express {feature!r} "
                                  "(use +flag, -flag or flag=on|off)")
        flags.append((m.group(2), not (m.group(1) == "-" or m.group(3) in ("off", "false"))))
    return model, flags


# xl (libxl) CPUID flag names that libvirt spells differently; libvirt translates them
# back when it builds the libxl configuration.
_LIBXL_TO_LIBVIRT_FLAGS = {
    "cmpxchg16": "cx16", "cntxid": "cid", "dscpl": "ds_cpl", "pclmulqdq": "pclmuldq",
    "sse3": "pni", "htt": "ht", "psn": "pn", "clfsh": "clflush", "sysenter": "sep",
    "cmpxchg8": "cx8", "nodeid": "nodeid_msr", "altmovcr8": "cr8legacy",
    "lahfsahf": "lahf_lm", "cmplegacy": "cmp_legacy", "ffxsr": "fxsr_opt",
    "page1gb": "pdpe1gb", "ibrsb": "spec-ctrl",
}
_XL_FLAG = re.compile(r"^([a-z0-9_.-]+)=([01])\Z")


def xen_cpuid_flags(value: str) -> list[tuple[str, bool]]:
    """Ganeti's xen ``cpuid`` in xl's form ``host,<flag>=0|1,...`` -> [(libvirt feature
    name, required)]."""
    host, *flags = [part.strip() for part in value.split(",")]
    if host != "host":
        raise HypervisorError(f"Invalid cpuid {value!r}: only xl's 'host,<flag>=0|1,...' "
                              "form can be expressed in libvirt")
    features = []
    for flag in flags:
        m = _XL_FLAG.match(flag)
        if m is None:
            raise HypervisorError(f"Invalid cpuid {value!r}: cannot express {flag!r} (use "
                                  "<flag>=0 or <flag>=1)")
        features.append((_LIBXL_TO_LIBVIRT_FLAGS.get(m.group(1), m.group(1)),
                         m.group(2) == "1"))
    return features


# -- graphics, input, sound ------------------------------------------------------------
# Ganeti/QEMU -vga names -> libvirt video models (libvirt names accepted as they are).
VIDEO_MODELS: Final = {"std": "vga", "vga": "vga", "cirrus": "cirrus", "vmware": "vmvga",
                       "vmvga": "vmvga", "qxl": "qxl", "virtio": "virtio", "bochs": "bochs",
                       "none": "none"}
# QEMU -soundhw / -audio model names -> libvirt sound models.
SOUND_MODELS: Final = {"hda": "ich6", "ich6": "ich6", "intel-hda": "ich6", "ich9": "ich9",
                       "ac97": "ac97", "es1370": "es1370", "sb16": "sb16", "pcspk": "pcspk",
                       "usb": "usb", "usb-audio": "usb"}
# xl's soundhw names -> libvirt sound models; libxl passes the first one to its device
# model (and turns ich6 back into hda).
XEN_SOUND_MODELS: Final = {"hda": "ich6", "ac97": "ac97", "es1370": "es1370", "sb16": "sb16"}


def _model(models: Mapping[str, str], name: str, what: str) -> str:
    try:
        return models[name]
    except KeyError:
        raise HypervisorError(f"Invalid {what} {name!r}; one of: "
                              f"{', '.join(sorted(models))}") from None


def video_model(name: str) -> str:
    """vga -> libvirt's video model."""
    return _model(VIDEO_MODELS, name, "vga")


def sound_model(name: str) -> str:
    """KVM's soundhw -> libvirt's sound model."""
    return _model(SOUND_MODELS, name, "soundhw")


def xen_sound_model(name: str) -> str:
    """Xen's soundhw -> libvirt's sound model (the ones libxl takes)."""
    return _model(XEN_SOUND_MODELS, name, "soundhw")


USB_INPUTS: Final = frozenset({"tablet", "mouse", "keyboard"})
_USB_HOST_ID = re.compile(r"^host:([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\Z")
_USB_HOST_ADDR = re.compile(r"^host:(\d+)\.(\d+)\Z")
#: one usb_devices entry: ("input", type), ("id", vendor, product) or
#: ("address", bus, device)
UsbDevice = tuple[str, ...]


def usb_devices(value: str) -> list[UsbDevice]:
    """usb_devices, comma-separated: input devices and host devices to pass through."""
    devices: list[UsbDevice] = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        if item in USB_INPUTS:
            devices.append(("input", item))
        elif (m := _USB_HOST_ID.match(item)):
            devices.append(("id", m.group(1).lower(), m.group(2).lower()))
        elif (m := _USB_HOST_ADDR.match(item)):
            devices.append(("address", m.group(1), m.group(2)))
        else:
            raise HypervisorError(f"Invalid usb_devices entry {item!r} (expected tablet, "
                                  "mouse, keyboard, host:VVVV:PPPP or host:BUS.ADDR)")
    return devices


# -- PCI passthrough (Xen) -----------------------------------------------------------------
# xl's PCI BDF: [DDDD:]BB:DD.F, optionally followed by ,permissive=0|1
_BDF = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])\Z")
_PCI_OPTION = re.compile(r"^permissive=([01])\Z")
#: one pci_pass entry: (domain, bus, slot, function) in lower-case hex, and permissive
PciDevice = tuple[str, str, str, str, bool]


def pci_devices(value: str) -> list[PciDevice]:
    """Ganeti's ``pci_pass`` (``;``-separated xl PCI specs) -> one PciDevice each."""
    devices = []
    for spec in (s.strip() for s in (value or "").split(";")):
        if not spec:
            continue
        bdf, *options = [part.strip() for part in spec.split(",")]
        m = _BDF.match(bdf)
        if m is None:
            raise HypervisorError(f"Invalid pci_pass entry {spec!r}: expected "
                                  "[DDDD:]BB:DD.F")
        permissive = False
        for option in options:
            opt = _PCI_OPTION.match(option)
            if opt is None:
                raise HypervisorError(f"Invalid pci_pass entry {spec!r}: libvirt expresses "
                                      "only permissive=0|1 of xl's PCI options")
            permissive = opt.group(1) == "1"
        devices.append(((m.group(1) or "0000").lower(), m.group(2).lower(),
                        m.group(3).lower(), m.group(4), permissive))
    return devices


# -- passed through as they are ----------------------------------------------------------
def kvm_extra_args(value: str) -> list[str]:
    """kvm_extra as QEMU arguments, split like a shell; ValueError when it does not split."""
    return shlex.split(value)


def bootloader_problem(hvparams: Mapping[str, Any]) -> str | None:
    """Why Xen PVM's bootloader settings cannot boot (Ganeti's rule), or None."""
    if hvparams[C.HV_USE_BOOTLOADER] and not hvparams[C.HV_BOOTLOADER_PATH]:
        return "Parameter 'bootloader_path' must be set when 'use_bootloader' is true"
    return None
