"""The hvparam combinations the handover's identity check boots (tests/test_real_identity.py)
and the coverage rules tests/test_identity_coverage.py holds them to.

Each case varies several hvparams at once, so that few boots cover every value the
translator (hvlibvirt.handover.model) accepts. Values are overrides of the source
Ganeti's defaults; the lab's own (kernel, initrd, TCG) come from the test. The source
is the Ganeti the Debian release carries (``platform_ganeti``); Ganeti 3.1 (Debian 13)
boots the cases with the changes of ``GANETI_CHANGES``, each with why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hvlibvirt import constants as C
from hvlibvirt.kvm_params import KVM_PARAMS

VNC = "127.0.0.1"


@dataclass(frozen=True)
class Case:
    """One machine booted twice: from hv_kvm's command line and from the translation."""

    name: str
    hvparams: Mapping[str, Any] = field(default_factory=dict)
    vcpus: int = 1
    disks: int = 1
    nics: int = 1


CASES = (
    Case("virtio-2cpu-vnc", {
        C.HV_NIC_TYPE: "paravirtual", C.HV_CPU_CORES: 2, C.HV_DISK_CACHE: "writeback",
        C.HV_KVM_DISK_AIO: "threads", C.HV_DISK_DISCARD: "unmap", C.HV_VHOST_NET: False,
        C.HV_VIRTIO_NET_QUEUES: 2, C.HV_VNC_BIND_ADDRESS: VNC, C.HV_USB_MOUSE: "",
        C.HV_VGA: "", C.HV_ACPI: True, C.HV_SERIAL_CONSOLE: True,
        C.HV_KVM_MACHINE_VERSION: "", C.HV_KVM_FLAG: "", C.HV_USE_LOCALTIME: False,
        C.HV_REBOOT_BEHAVIOR: "reboot", C.HV_KVM_MIGRATION_CAPS: "xbzrle",
        C.HV_VNET_HDR: True}, vcpus=2, disks=2, nics=2),
    Case("virtio-bare", {
        C.HV_NIC_TYPE: "paravirtual", C.HV_DISK_CACHE: "none", C.HV_KVM_DISK_AIO: "native",
        C.HV_DISK_DISCARD: "ignore", C.HV_VHOST_NET: False, C.HV_VIRTIO_NET_QUEUES: 1,
        C.HV_VNC_BIND_ADDRESS: "", C.HV_USB_MOUSE: "mouse", C.HV_VGA: "none",
        C.HV_ACPI: False, C.HV_SERIAL_CONSOLE: False,
        C.HV_KVM_MACHINE_VERSION: "pc-i440fx-5.2", C.HV_KVM_FLAG: "disabled",
        C.HV_USE_LOCALTIME: True, C.HV_REBOOT_BEHAVIOR: "exit",
        C.HV_KVM_MIGRATION_CAPS: "auto-converge", C.HV_KVM_PCI_RESERVATIONS: 16}),
    Case("e1000-threads", {
        C.HV_NIC_TYPE: "e1000", C.HV_CPU_THREADS: 2, C.HV_KVM_MACHINE_VERSION: "pc",
        C.HV_DISK_CACHE: "writethrough", C.HV_DISK_DISCARD: "default",
        C.HV_USB_MOUSE: "tablet", C.HV_VGA: "std", C.HV_VNC_BIND_ADDRESS: VNC,
        C.HV_KEYMAP: "de", C.HV_VNET_HDR: False,
        C.HV_KVM_MIGRATION_CAPS: "xbzrle:auto-converge"}, vcpus=2),
    Case("rtl8139-sockets", {
        C.HV_NIC_TYPE: "rtl8139", C.HV_CPU_SOCKETS: 2,
        C.HV_KVM_MACHINE_VERSION: "pc-i440fx-5.2", C.HV_DISK_CACHE: "default",
        C.HV_KVM_DISK_AIO: "native", C.HV_VNC_BIND_ADDRESS: VNC, C.HV_USB_MOUSE: "mouse"},
        vcpus=2),
    Case("ne2k_pci-explicit-topology", {
        C.HV_NIC_TYPE: "ne2k_pci", C.HV_CPU_CORES: 1, C.HV_CPU_THREADS: 1,
        C.HV_CPU_SOCKETS: 1, C.HV_KVM_MACHINE_VERSION: "pc-i440fx-7.2", C.HV_VGA: "none",
        C.HV_VNC_BIND_ADDRESS: VNC}),
    Case("i82551-no-acpi", {
        C.HV_NIC_TYPE: "i82551", C.HV_KVM_MACHINE_VERSION: "pc-i440fx-6.2",
        C.HV_ACPI: False, C.HV_KVM_PCI_RESERVATIONS: 8}),
    Case("i82557b-2cpu", {C.HV_NIC_TYPE: "i82557b", C.HV_SERIAL_CONSOLE: False}, vcpus=2),
    Case("i82559er-ide-localtime", {
        C.HV_NIC_TYPE: "i82559er", C.HV_DISK_TYPE: "ide", C.HV_USE_LOCALTIME: True,
        C.HV_VGA: "std"}, disks=2),
    Case("virtio-firmware-boot", {
        C.HV_KERNEL_PATH: "", C.HV_BOOT_ORDER: "disk", C.HV_NIC_TYPE: "paravirtual",
        C.HV_VNC_BIND_ADDRESS: VNC}),
    Case("pcnet-old-machine-2cpu", {
        C.HV_NIC_TYPE: "pcnet", C.HV_KVM_MACHINE_VERSION: "pc-i440fx-5.2",
        C.HV_KVM_FLAG: "disabled"}, vcpus=2, nics=2),
)

# The Ganeti whose hv_kvm makes the source, by Debian release: the one the release carries.
GANETI_BY_DEBIAN = {"12": "3.0", "13": "3.1"}

# Values a case boots under Ganeti 3.0 that the Ganeti of another release cannot start,
# replaced there: {ganeti: {case: (overrides, why)}}.
GANETI_CHANGES: dict[str, dict[str, tuple[Mapping[str, Any], str]]] = {
    "3.1": {
        "e1000-threads": (
            {C.HV_DISK_DISCARD: "ignore"},
            "Ganeti 3.1 has no disk_discard 'default' (its -blockdev passes the value to "
            "QEMU, which refuses it); 'ignore' is 3.1's default"),
        "virtio-2cpu-vnc": (
            {C.HV_KVM_DISK_AIO: C.HT_KVM_AIO_IO_URING},
            "io_uring exists from Ganeti 3.1 on (3.0 refuses the value): booted where 3.1's "
            "hv_kvm is the source"),
        "rtl8139-sockets": (
            {C.HV_KVM_DISK_AIO: "threads"},
            "Ganeti 3.1's -blockdev opens the disk without O_DIRECT for disk_cache default, "
            "and QEMU refuses aio=native there ('requires cache.direct=on'): hv_kvm cannot "
            "start it (virtio-bare boots native with disk_cache none)"),
    },
}


def platform_ganeti(os_release: Path = Path("/etc/os-release")) -> str:
    """The Ganeti version whose hv_kvm makes the source on this Debian release."""
    fields = dict(line.split("=", 1) for line in os_release.read_text().splitlines()
                  if "=" in line)
    release = fields.get("VERSION_ID", "").strip('"')
    if release not in GANETI_BY_DEBIAN:
        raise RuntimeError(f"no source Ganeti known for Debian {release or '(unknown)'}")
    return GANETI_BY_DEBIAN[release]


def cases(ganeti: str) -> tuple[Case, ...]:
    """CASES as the given Ganeti boots them (GANETI_CHANGES applied)."""
    changes = GANETI_CHANGES.get(ganeti, {})
    return tuple(replace(case, hvparams={**case.hvparams, **changes[case.name][0]})
                 if case.name in changes else case for case in CASES)


# hvparams with a finite set of values: Ganeti's choices, and the booleans.
CHOICES: dict[str, tuple[Any, ...]] = {
    C.HV_NIC_TYPE: C.HT_KVM_VALID_NIC_TYPES,
    C.HV_DISK_TYPE: C.HT_KVM_VALID_DISK_TYPES,
    C.HV_DISK_CACHE: C.HT_VALID_CACHE_TYPES,
    C.HV_KVM_DISK_AIO: (*C.HT_KVM_VALID_AIO_TYPES, C.HT_KVM_AIO_IO_URING),
    C.HV_DISK_DISCARD: C.HT_VALID_DISCARD_TYPES,
    C.HV_USB_MOUSE: ("", *C.HT_KVM_VALID_MOUSE_TYPES),
    C.HV_VGA: ("", "std", "cirrus", "vmware", "qxl", "virtio", "bochs", "none"),
    C.HV_KVM_FLAG: ("", *C.HT_KVM_FLAG_VALUES),
    C.HV_REBOOT_BEHAVIOR: C.REBOOT_BEHAVIORS,
    C.HV_BOOT_ORDER: C.HT_KVM_VALID_BO_TYPES,
    C.HV_SECURITY_MODEL: C.HT_KVM_VALID_SM_TYPES,
    C.HV_KVM_MIGRATION_CAPS: ("", "xbzrle", "auto-converge", "postcopy-ram", "multifd"),
    **{param: (False, True) for param in (
        C.HV_ACPI, C.HV_USE_LOCALTIME, C.HV_SERIAL_CONSOLE, C.HV_VHOST_NET, C.HV_VNET_HDR,
        C.HV_KVM_USE_CHROOT, C.HV_USE_GUEST_AGENT, C.HV_VNC_TLS)},
}


def _machine(value: str) -> str:
    if value in ("", "pc"):
        return value or "(default)"
    major, minor = value.rsplit("-", 1)[-1].split(".")
    return "pc before 6.2" if (int(major), int(minor)) < (6, 2) else "pc from 6.2"


# Open-valued parameters, by the classes of value that shape the device model differently.
SHAPES = {
    C.HV_KVM_MACHINE_VERSION: _machine,
    C.HV_CPU_CORES: bool, C.HV_CPU_THREADS: bool, C.HV_CPU_SOCKETS: bool,
    C.HV_VNC_BIND_ADDRESS: bool,
    C.HV_VIRTIO_NET_QUEUES: lambda n: n > 1,
    C.HV_KVM_PCI_RESERVATIONS: lambda n: n == C.QEMU_DEFAULT_PCI_RESERVATIONS,
    C.HV_KERNEL_PATH: bool,  # direct kernel boot or the firmware's boot_order
}
SHAPE_CLASSES = {
    C.HV_KVM_MACHINE_VERSION: {"(default)", "pc", "pc before 6.2", "pc from 6.2"},
    C.HV_KERNEL_PATH: {True, False},
}

# Accepted values no case boots, and why (the coverage test keeps this list honest).
NOT_BOOTED: dict[tuple[str, Any], str] = {
    (C.HV_KVM_FLAG, "enabled"): "this lab's /dev/kvm (kvm_pvm) cannot run the guest kernel",
    (C.HV_SECURITY_MODEL, "user"): "whom QEMU runs as: nothing the guest can read",
    (C.HV_VHOST_NET, True): "the lab's host kernel has no vhost-net; the NIC's backend in "
                            "the host, the same virtio device to the guest",
    **{(C.HV_BOOT_ORDER, value): "without its image hv_kvm emits no -boot, as for disk"
       for value in (C.HT_BO_CDROM, C.HT_BO_FLOPPY)},
    (C.HV_BOOT_ORDER, C.HT_BO_NETWORK): "libvirt boots strictly: after a failed network "
                                        "boot it halts where hv_kvm's QEMU tries the disk, "
                                        "so no probe runs (a reset-time difference)",
}


def effective(case: Case, lab: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hvparams the case's instance has: Ganeti 3.0's defaults, the lab's, the case's."""
    hvp = {param: row.default for param, row in KVM_PARAMS.items()}
    hvp.update(lab or {C.HV_KERNEL_PATH: "/lab/vmlinuz"})
    hvp.update(case.hvparams)
    return hvp


def covered() -> set[tuple[str, Any]]:
    """(hvparam, value or shape class) the cases boot, on one release or the other (CI
    runs both)."""
    found = set()
    for case in [case for ganeti in GANETI_BY_DEBIAN.values() for case in cases(ganeti)]:
        hvp = effective(case)
        # the firmware's boot order means nothing to a direct kernel boot
        found |= {(param, hvp[param]) for param in CHOICES
                  if not (param == C.HV_BOOT_ORDER and hvp[C.HV_KERNEL_PATH])}
        found |= {(param, shape(hvp[param])) for param, shape in SHAPES.items()}
        found |= {("vcpus", case.vcpus), ("disks", case.disks), ("nics", case.nics)}
    return found
