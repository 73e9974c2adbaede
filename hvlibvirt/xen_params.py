"""The Xen hvparam tables: Ganeti's 18 xen-pvm and 25 xen-hvm parameters.

Same shape as ``kvm_params``: each row holds Ganeti's five-tuple check, default and value
type, what the parameter becomes in the libxl domain XML (or at runtime), and which
values libvirt's libxl driver cannot honour and why. The Xen classes' parameters,
``tables.HVC_DEFAULTS`` and ``docs/hvparams.md`` derive from these tables.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from hvlibvirt import constants as C, param_values as V, params as P
from hvlibvirt.params import HvParam

_BLOCKDEV_PREFIXES = ("xvd", "sd", "hd")  # docs/misc/vbd-interface in Xen's tree
_HVMLOADER = "hvmloader"


def is_ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


_error_of = P.error_of


def _weight_check(upper: int) -> P.Check:
    return (False, lambda v: 0 < v < upper, f"invalid weight (must be 1-{upper - 1})",
            None, None)


_XEN_CMD = HvParam(P.param_in_set(True, C.KNOWN_XEN_COMMANDS), default="xm",
                   runtime="accepted and ignored: libvirt's libxl driver replaces both "
                           "toolstacks (xm and xl); gone in Ganeti 3.1",
                   valid="KNOWN_XEN_COMMANDS", since={(3, 1): P.Since(removed=True)})
_MIGRATION_PORT = HvParam(P.REQ_NET_PORT_CHECK, default=8002,
                          runtime="migration data goes to tcp://<target>:<port> (libvirt's "
                                  "migration URI parameter)")


def _migration_mode(default: str) -> HvParam:
    return HvParam(P.MIGRATION_MODE_CHECK, default=default,
                   runtime="live -> VIR_MIGRATE_LIVE (libxl copies memory while the guest "
                           "runs); non-live pauses the guest first")


_REBOOT_BEHAVIOR = HvParam(P.param_in_set(True, C.REBOOT_BEHAVIORS),
                           default=C.INSTANCE_REBOOT_ALLOWED,
                           xml="<on_reboot>: reboot -> restart, exit -> destroy")
_CPU_MASK = HvParam(P.OPT_MULTI_CPU_MASK_CHECK, default=C.CPU_PINNING_ALL,
                    xml="<cputune><vcpupin> for every vCPU (libxl reads per-vCPU pins only): "
                        "one mask pins all vCPUs to it, one mask per vCPU pins each, 'all' "
                        "leaves a vCPU unpinned (a mask list must have one entry per "
                        "vCPU: checked at start, when vcpus is known). " +
                        P.CPU_MASK_BOUNDS)
_CPU_CAP = HvParam(P.OPT_NONNEGATIVE_INT_CHECK, default=0,
                   runtime="0: no cap. Otherwise setSchedulerParameters({'cap': N}) on the "
                           "running domain after every start and incoming migration (libxl "
                           "has no XML for it)")


def _blockdev(default: str) -> HvParam:
    return HvParam(P.NO_CHECK, default=default,
                   xml="<disk><target dev='<prefix><letter>'> (at most 26 disks, like "
                       "Ganeti)",
                   **P.refused("anything but xvd, sd or hd",
                               "Xen's virtual block device protocol names disks xvd*, "
                               "sd* or hd* only (libvirt refuses other names)",
                               lambda v: v not in _BLOCKDEV_PREFIXES))


_VIF_SCRIPT = HvParam(P.OPT_FILE_CHECK, default="",
                      xml="<interface><script path=...> on every NIC (libxl runs it on the "
                          "node for the vif)")


def _weight(upper: int) -> HvParam:
    return HvParam(_weight_check(upper), default=256,
                   xml="<cputune><shares> (libxl's credit scheduler weight)",
                   **P.refused("1", "libvirt's <shares> starts at 2 (use 2: the credit "
                               "scheduler's default weight is 256)", lambda v: v == 1))


XEN_PVM_PARAMS: dict[str, HvParam] = {
    C.HV_USE_BOOTLOADER: HvParam(P.NO_CHECK, default=False,
                                 xml="true: <bootloader> + <bootloader_args> and no "
                                     "<os><kernel>; false: direct kernel boot"),
    C.HV_BOOTLOADER_PATH: HvParam(P.OPT_FILE_CHECK, default=C.XEN_BOOTLOADER,
                                  xml="<bootloader> (with use_bootloader)"),
    C.HV_BOOTLOADER_ARGS: HvParam(P.NO_CHECK, default="",
                                  xml="<bootloader_args> (with use_bootloader)"),
    C.HV_KERNEL_PATH: HvParam(P.REQ_FILE_CHECK, default=C.XEN_KERNEL,
                              xml="<os><kernel> (without use_bootloader)"),
    C.HV_INITRD_PATH: HvParam(P.OPT_FILE_CHECK, default=C.XEN_INITRD,
                              xml="<os><initrd> (without use_bootloader)"),
    C.HV_ROOT_PATH: HvParam(P.NO_CHECK, default="/dev/xvda1", vtype=C.VTYPE_MAYBE_STRING,
                            xml="'root=<path>' first in <os><cmdline> (as xl joins root and "
                                "extra)"),
    C.HV_KERNEL_ARGS: HvParam(P.NO_CHECK, default="ro", xml="<os><cmdline> after root="),
    C.HV_MIGRATION_PORT: _MIGRATION_PORT,
    C.HV_MIGRATION_MODE: _migration_mode(C.HT_MIGRATION_LIVE),
    C.HV_BLOCKDEV_PREFIX: _blockdev("sd"),
    C.HV_REBOOT_BEHAVIOR: _REBOOT_BEHAVIOR,
    C.HV_CPU_MASK: _CPU_MASK,
    C.HV_CPU_CAP: _CPU_CAP,
    C.HV_CPU_WEIGHT: _weight(65536),
    C.HV_VIF_SCRIPT: _VIF_SCRIPT,
    C.HV_XEN_CMD: _XEN_CMD,
    C.HV_XEN_CPUID: HvParam(P.NO_CHECK, default="", **P.refused(
        "any non-empty value", "libvirt applies CPUID policies to HVM and PVH guests only",
        bool)),
    C.HV_SOUNDHW: HvParam(P.NO_CHECK, default="", **P.refused(
        "any non-empty value", "paravirtual guests have no emulated sound card (libxl "
        "passes sound to HVM guests only)", bool)),
}


def _refuse_hvm_kernel(value: str, _hvp: Mapping[str, Any]) -> str | None:
    if os.path.basename(value) == _HVMLOADER:
        return None
    return ("libxl always boots HVM guests with its own hvmloader; libvirt passes no "
            "other firmware path (only OVMF)")


XEN_HVM_PARAMS: dict[str, HvParam] = {
    C.HV_ACPI: HvParam(P.NO_CHECK, default=True,
                       xml="<features><acpi/> (needed for the guest to power itself off, "
                           "i.e. user shutdown)"),
    C.HV_BOOT_ORDER: HvParam(
        (True, lambda v: isinstance(v, str) and bool(v) and not v.strip("acdn"),
         "Invalid boot order specified, must be one or more of [acdn]", None, None),
        default="cd",
        xml="<os><boot dev=...> in order: a -> fd, c -> hd, d -> cdrom, n -> network"),
    C.HV_CDROM_IMAGE_PATH: HvParam(P.OPT_FILE_CHECK, default="",
                                   xml="read-only <disk device='cdrom'> hdc on IDE"),
    C.HV_DISK_TYPE: HvParam(
        P.param_in_set(True, C.HT_HVM_VALID_DISK_TYPES), default=C.HT_DISK_PARAVIRTUAL,
        xml="<disk><target bus=...>: paravirtual -> xen (hot-pluggable), ioemu -> ide; the "
            "guest names still come from blockdev_prefix"),
    C.HV_NIC_TYPE: HvParam(P.param_in_set(True, C.HT_HVM_VALID_NIC_TYPES), default="rtl8139",
                           xml="<interface><model type=...>: paravirtual -> netfront, "
                               "others as named (emulated NIC plus its PV twin)"),
    C.HV_PAE: HvParam(P.NO_CHECK, default=True, xml="<features><pae/>",
                      **P.refused("false", "libxl forces PAE on for x86_64 HVM guests",
                                  lambda v: v is False)),
    C.HV_VNC_BIND_ADDRESS: HvParam(
        (False, is_ipv4, "VNC bind address is not a valid IP address", None, None),
        default="0.0.0.0",
        xml="<graphics type='vnc'> listening on this address, port network_port "
            "(none when empty)"),
    C.HV_KERNEL_PATH: HvParam(P.REQ_FILE_CHECK, default="/usr/lib/xen/boot/hvmloader",
                              xml="<os><loader type='rom'> (as libvirt's xl importer writes "
                                  "it; libxl loads its own hvmloader, so any path ending in "
                                  "/hvmloader is accepted, e.g. Debian's "
                                  "/usr/lib/xen-<version>/boot/hvmloader)",
                              refuse=_refuse_hvm_kernel,
                              refused="paths not ending in /hvmloader: libxl boots HVM "
                                      "guests with its own hvmloader"),
    C.HV_DEVICE_MODEL: HvParam(P.REQ_FILE_CHECK, default="/usr/lib/xen/bin/qemu-dm",
                               xml="<devices><emulator>"),
    C.HV_VNC_PASSWORD_FILE: HvParam(P.REQ_FILE_CHECK, default=C.VNC_PASSWORD_FILE,
                                    xml="<graphics passwd=...> from the file's single line "
                                        "(read on the node at start, first 8 characters as "
                                        "VNC uses them; never logged; an empty file is "
                                        "no password, as Ganeti's Xen writes it)"),
    C.HV_MIGRATION_PORT: _MIGRATION_PORT,
    C.HV_MIGRATION_MODE: _migration_mode(C.HT_MIGRATION_NONLIVE),
    C.HV_USE_LOCALTIME: HvParam(P.NO_CHECK, default=False,
                                xml="<clock offset='localtime|utc'/>"),
    C.HV_BLOCKDEV_PREFIX: _blockdev("hd"),
    C.HV_PASSTHROUGH: HvParam(
        P.NO_CHECK, default="",
        xml="one <hostdev type='pci' managed='no'> per ';'-separated [DDDD:]BB:DD.F "
            "(permissive=1 -> <source writeFiltering='no'>); libvirt then refuses migration",
        refuse=lambda v, _hvp: _error_of(V.pci_devices, v),
        refused="entries that are not [DDDD:]BB:DD.F[,permissive=0|1]: libvirt has no "
                "other xl PCI options"),
    C.HV_REBOOT_BEHAVIOR: _REBOOT_BEHAVIOR,
    C.HV_CPU_MASK: _CPU_MASK,
    C.HV_CPU_CAP: HvParam(P.NO_CHECK, default=0, runtime=_CPU_CAP.runtime,
                          **P.refused("negative values", "a cap is a non-negative percentage",
                                      lambda v: v < 0)),
    C.HV_CPU_WEIGHT: _weight(65535),
    C.HV_VIF_TYPE: HvParam(P.param_in_set(False, C.HT_HVM_VALID_VIF_TYPES), default="ioemu",
                           runtime="none: Ganeti's xl config reads it only when nic_type is "
                                   "empty, which nic_type's (required) check never allows; "
                                   "accepted for compatibility"),
    C.HV_VIF_SCRIPT: _VIF_SCRIPT,
    C.HV_VIRIDIAN: HvParam(P.NO_CHECK, default=False, **P.refused(
        "true", "libvirt's libxl driver does not pass <viridian/> (Hyper-V enlightenments) "
        "to Xen", lambda v: v is True)),
    C.HV_XEN_CMD: _XEN_CMD,
    C.HV_XEN_CPUID: HvParam(
        P.NO_CHECK, default="",
        xml="<cpu mode='host-passthrough'> with <feature policy='require|disable'> per "
            "xl 'host,<flag>=1|0' entry (libxl names translated to libvirt's)",
        refuse=lambda v, _hvp: _error_of(V.xen_cpuid_flags, v),
        refused="anything but xl's 'host,<flag>=0|1,...' form: the xend list form and the "
                "x/k/s bit values have no libvirt equivalent"),
    C.HV_SOUNDHW: HvParam(P.NO_CHECK, default="",
                          xml="<sound model=...>: hda -> ich6, ac97, es1370, sb16",
                          refuse=lambda v, _hvp: _error_of(V.xen_sound_model, v),
                          refused="other models: libxl passes only these to the device "
                                  "model"),
}


# -- cross-parameter rules (Ganeti's, checked after the rows' refusals) ----------------
XEN_PVM_RULES: tuple[P.Rule, ...] = (V.bootloader_problem,)
XEN_HVM_RULES: tuple[P.Rule, ...] = ()
