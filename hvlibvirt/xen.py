"""Xen PVM and HVM through libvirt's libxl driver: parameter tables and Xen rules.

``xen_cmd`` (xm or xl) is accepted for compatibility with Ganeti's configuration and
otherwise ignored: libvirt's libxl driver replaces both toolstacks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hvlibvirt import constants as C, params as P
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.errors import HypervisorError


def _is_ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


class XenHypervisor(BaseHypervisor):
    """What Xen PVM and HVM share."""

    URI_ENV = "HVLIBVIRT_XEN_URI"
    DEFAULT_URI = "xen:///system"
    MIGRATION_URI_TEMPLATE = "xen+ssh://{target}/system"
    CAN_MIGRATE = True

    @staticmethod
    def VersionsSafeForMigration(src: Sequence[int], target: Sequence[int]) -> bool:  # noqa: N802
        """Same version, or the same major with the minor unchanged or one newer."""
        src, target = tuple(src), tuple(target)
        if src == target:
            return True
        if len(src) < 2 or len(target) < 2:
            return False
        return src[0] == target[0] and target[1] - src[1] in (0, 1)

    def _build_domain(self, instance: Any, block_devices: Sequence[Any],
                      startup_memory: int) -> Any:
        # The libxl domain XML (PV kernel/bootloader, HVM, xenbus disks) is its own
        # builder and is not written yet; refuse rather than emit KVM XML for Xen.
        raise HypervisorError(f"{self.HV_NAME}: starting Xen domains is not implemented yet")


class XenPvmHypervisor(XenHypervisor):
    """Ganeti's ``xen-pvm`` hypervisor (paravirtualized guests)."""

    HV_NAME = C.HT_XEN_PVM
    PARAMETERS: ClassVar[dict[str, P.Check]] = {
        C.HV_USE_BOOTLOADER: P.NO_CHECK,
        C.HV_BOOTLOADER_PATH: P.OPT_FILE_CHECK,
        C.HV_BOOTLOADER_ARGS: P.NO_CHECK,
        C.HV_KERNEL_PATH: P.REQ_FILE_CHECK,
        C.HV_INITRD_PATH: P.OPT_FILE_CHECK,
        C.HV_ROOT_PATH: P.NO_CHECK,
        C.HV_KERNEL_ARGS: P.NO_CHECK,
        C.HV_MIGRATION_PORT: P.REQ_NET_PORT_CHECK,
        C.HV_MIGRATION_MODE: P.MIGRATION_MODE_CHECK,
        C.HV_BLOCKDEV_PREFIX: P.NO_CHECK,
        C.HV_REBOOT_BEHAVIOR: P.param_in_set(True, C.REBOOT_BEHAVIORS),
        C.HV_CPU_MASK: P.OPT_MULTI_CPU_MASK_CHECK,
        C.HV_CPU_CAP: P.OPT_NONNEGATIVE_INT_CHECK,
        C.HV_CPU_WEIGHT: (False, lambda v: 0 < v < 65536, "invalid weight (must be 1-65535)",
                          None, None),
        C.HV_VIF_SCRIPT: P.OPT_FILE_CHECK,
        C.HV_XEN_CMD: P.param_in_set(True, C.KNOWN_XEN_COMMANDS),
        C.HV_XEN_CPUID: P.NO_CHECK,
        C.HV_SOUNDHW: P.NO_CHECK,
    }

    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        super().CheckParameterSyntax(hvparams)
        if hvparams[C.HV_USE_BOOTLOADER] and not hvparams[C.HV_BOOTLOADER_PATH]:
            raise HypervisorError("Parameter 'bootloader_path' must be set when "
                                  "'use_bootloader' is true")


class XenHvmHypervisor(XenHypervisor):
    """Ganeti's ``xen-hvm`` hypervisor (fully virtualized guests)."""

    HV_NAME = C.HT_XEN_HVM
    PARAMETERS: ClassVar[dict[str, P.Check]] = {
        C.HV_ACPI: P.NO_CHECK,
        C.HV_BOOT_ORDER: (True, lambda v: isinstance(v, str) and bool(v)
                          and not v.strip("acdn"),
                          "Invalid boot order specified, must be one or more of [acdn]",
                          None, None),
        C.HV_CDROM_IMAGE_PATH: P.OPT_FILE_CHECK,
        C.HV_DISK_TYPE: P.param_in_set(True, C.HT_HVM_VALID_DISK_TYPES),
        C.HV_NIC_TYPE: P.param_in_set(True, C.HT_HVM_VALID_NIC_TYPES),
        C.HV_PAE: P.NO_CHECK,
        C.HV_VNC_BIND_ADDRESS: (False, _is_ipv4, "VNC bind address is not a valid IP address",
                                None, None),
        C.HV_KERNEL_PATH: P.REQ_FILE_CHECK,
        C.HV_DEVICE_MODEL: P.REQ_FILE_CHECK,
        C.HV_VNC_PASSWORD_FILE: P.REQ_FILE_CHECK,
        C.HV_MIGRATION_PORT: P.REQ_NET_PORT_CHECK,
        C.HV_MIGRATION_MODE: P.MIGRATION_MODE_CHECK,
        C.HV_USE_LOCALTIME: P.NO_CHECK,
        C.HV_BLOCKDEV_PREFIX: P.NO_CHECK,
        C.HV_PASSTHROUGH: P.NO_CHECK,
        C.HV_REBOOT_BEHAVIOR: P.param_in_set(True, C.REBOOT_BEHAVIORS),
        C.HV_CPU_MASK: P.OPT_MULTI_CPU_MASK_CHECK,
        C.HV_CPU_CAP: P.NO_CHECK,
        C.HV_CPU_WEIGHT: (False, lambda v: 0 < v < 65535, "invalid weight (must be 1-65534)",
                          None, None),
        C.HV_VIF_TYPE: P.param_in_set(False, C.HT_HVM_VALID_VIF_TYPES),
        C.HV_VIF_SCRIPT: P.OPT_FILE_CHECK,
        C.HV_VIRIDIAN: P.NO_CHECK,
        C.HV_XEN_CMD: P.param_in_set(True, C.KNOWN_XEN_COMMANDS),
        C.HV_XEN_CPUID: P.NO_CHECK,
        C.HV_SOUNDHW: P.NO_CHECK,
    }
