"""KVM through libvirt's QEMU driver: the parameter table and KVM's own rules.

The table has all 65 of Ganeti's KVM hvparams with Ganeti's checks; the cross-parameter
rules Ganeti applies on the master are in ``CheckParameterSyntax`` and the node-side
rules in ``ValidateParameters``.
"""

from __future__ import annotations

import ipaddress
import pwd
from collections.abc import Mapping
from typing import Any, ClassVar

import psutil
from lxml import etree

from hvlibvirt import connection, constants as C, params as P
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.domain_xml import GuestTarget
from hvlibvirt.errors import HypervisorError

# SPICE options that only make sense with spice_bind set (Ganeti's rule).
_SPICE_ADDITIONAL_PARAMS = (
    C.HV_KVM_SPICE_IP_VERSION, C.HV_KVM_SPICE_PASSWORD_FILE,
    C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR, C.HV_KVM_SPICE_JPEG_IMG_COMPR,
    C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR, C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION,
    C.HV_KVM_SPICE_USE_TLS,
)


def _ip_version(value: str) -> int | None:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


class KVMHypervisor(BaseHypervisor):
    """Ganeti's ``kvm`` hypervisor on libvirt's QEMU driver."""

    HV_NAME = C.HT_KVM
    URI_ENV = "HVLIBVIRT_KVM_URI"
    DEFAULT_URI = "qemu:///system"
    CAN_MIGRATE = True

    PARAMETERS: ClassVar[dict[str, P.Check]] = {
        C.HV_KVM_PATH: P.REQ_FILE_CHECK,
        C.HV_KERNEL_PATH: P.OPT_FILE_CHECK,
        C.HV_INITRD_PATH: P.OPT_FILE_CHECK,
        C.HV_ROOT_PATH: P.NO_CHECK,
        C.HV_KERNEL_ARGS: P.NO_CHECK,
        C.HV_ACPI: P.NO_CHECK,
        C.HV_SERIAL_CONSOLE: P.NO_CHECK,
        C.HV_SERIAL_SPEED: P.NO_CHECK,  # checked with serial_console below
        C.HV_VNC_BIND_ADDRESS: P.NO_CHECK,  # checked on the node
        C.HV_VNC_TLS: P.NO_CHECK,
        C.HV_VNC_X509: P.OPT_DIR_CHECK,
        C.HV_VNC_X509_VERIFY: P.NO_CHECK,
        C.HV_VNC_PASSWORD_FILE: P.OPT_FILE_CHECK,
        C.HV_KVM_SPICE_BIND: P.NO_CHECK,  # checked below and on the node
        C.HV_KVM_SPICE_IP_VERSION: (
            False, lambda v: v == C.IFACE_NO_IP_VERSION_SPECIFIED or v in C.VALID_IP_VERSIONS,
            "The SPICE IP version should be 4 or 6", None, None),
        C.HV_KVM_SPICE_PASSWORD_FILE: P.OPT_FILE_CHECK,
        C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR:
            P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSLESS_IMG_COMPR_OPTIONS),
        C.HV_KVM_SPICE_JPEG_IMG_COMPR:
            P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSY_IMG_COMPR_OPTIONS),
        C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR:
            P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSY_IMG_COMPR_OPTIONS),
        C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION:
            P.param_in_set(False, C.HT_KVM_SPICE_VALID_VIDEO_STREAM_DETECTION_OPTIONS),
        C.HV_KVM_SPICE_AUDIO_COMPR: P.NO_CHECK,
        C.HV_KVM_SPICE_USE_TLS: P.NO_CHECK,
        C.HV_KVM_SPICE_TLS_CIPHERS: P.NO_CHECK,
        C.HV_KVM_SPICE_USE_VDAGENT: P.NO_CHECK,
        C.HV_KVM_FLOPPY_IMAGE_PATH: P.OPT_FILE_CHECK,
        C.HV_CDROM_IMAGE_PATH: P.OPT_FILE_OR_URL_CHECK,
        C.HV_KVM_CDROM2_IMAGE_PATH: P.OPT_FILE_OR_URL_CHECK,
        C.HV_BOOT_ORDER: P.param_in_set(True, C.HT_KVM_VALID_BO_TYPES),
        C.HV_NIC_TYPE: P.param_in_set(True, C.HT_KVM_VALID_NIC_TYPES),
        C.HV_DISK_TYPE: P.param_in_set(True, C.HT_KVM_VALID_DISK_TYPES),
        C.HV_KVM_SCSI_CONTROLLER_TYPE:
            P.param_in_set(True, C.HT_KVM_VALID_SCSI_CONTROLLER_TYPES),
        C.HV_DISK_DISCARD: P.param_in_set(False, C.HT_VALID_DISCARD_TYPES),
        C.HV_KVM_CDROM_DISK_TYPE: P.param_in_set(False, C.HT_KVM_VALID_DISK_TYPES),
        C.HV_USB_MOUSE: P.param_in_set(False, C.HT_KVM_VALID_MOUSE_TYPES),
        C.HV_KEYMAP: P.NO_CHECK,
        C.HV_MIGRATION_PORT: P.REQ_NET_PORT_CHECK,
        C.HV_MIGRATION_BANDWIDTH: P.REQ_NONNEGATIVE_INT_CHECK,
        C.HV_MIGRATION_DOWNTIME: P.REQ_NONNEGATIVE_INT_CHECK,
        C.HV_MIGRATION_MODE: P.MIGRATION_MODE_CHECK,
        C.HV_USE_GUEST_AGENT: P.NO_CHECK,
        C.HV_USE_LOCALTIME: P.NO_CHECK,
        C.HV_DISK_CACHE: P.param_in_set(True, C.HT_VALID_CACHE_TYPES),
        C.HV_KVM_DISK_AIO: P.param_in_set(False, C.HT_KVM_VALID_AIO_TYPES),
        C.HV_SECURITY_MODEL: P.param_in_set(True, C.HT_KVM_VALID_SM_TYPES),
        C.HV_SECURITY_DOMAIN: P.NO_CHECK,  # checked below and on the node
        C.HV_KVM_FLAG: P.param_in_set(False, C.HT_KVM_FLAG_VALUES),
        C.HV_VHOST_NET: P.NO_CHECK,
        C.HV_VIRTIO_NET_QUEUES: P.OPT_VIRTIO_NET_QUEUES_CHECK,
        C.HV_KVM_USE_CHROOT: P.NO_CHECK,
        C.HV_KVM_USER_SHUTDOWN: P.NO_CHECK,
        C.HV_MEM_PATH: P.OPT_DIR_CHECK,
        C.HV_REBOOT_BEHAVIOR: P.param_in_set(True, C.REBOOT_BEHAVIORS),
        C.HV_CPU_MASK: P.OPT_MULTI_CPU_MASK_CHECK,
        C.HV_CPU_TYPE: P.NO_CHECK,
        C.HV_CPU_CORES: P.OPT_NONNEGATIVE_INT_CHECK,
        C.HV_CPU_THREADS: P.OPT_NONNEGATIVE_INT_CHECK,
        C.HV_CPU_SOCKETS: P.OPT_NONNEGATIVE_INT_CHECK,
        C.HV_SOUNDHW: P.NO_CHECK,
        C.HV_USB_DEVICES: P.NO_CHECK,
        C.HV_VGA: P.NO_CHECK,
        C.HV_KVM_EXTRA: P.NO_CHECK,
        C.HV_KVM_MACHINE_VERSION: P.NO_CHECK,
        C.HV_KVM_MIGRATION_CAPS: P.NO_CHECK,
        C.HV_KVM_PCI_RESERVATIONS: P.int_range_check(
            False, 0, C.QEMU_PCI_SLOTS, "The number of PCI slots managed by QEMU"),
        C.HV_VNET_HDR: P.NO_CHECK,
    }

    @staticmethod
    def VersionsSafeForMigration(src: Any, target: Any) -> bool:  # noqa: N802
        """Like Ganeti's KVM: any QEMU versions may migrate (the machine type in the
        domain XML pins the guest ABI; libvirt refuses what the target cannot run)."""
        return True

    # -- parameters --------------------------------------------------------------
    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Per-parameter checks, then KVM's cross-parameter rules."""
        super().CheckParameterSyntax(hvparams)
        hvp = hvparams
        if hvp[C.HV_BOOT_ORDER] == C.HT_BO_CDROM and not hvp[C.HV_CDROM_IMAGE_PATH]:
            raise HypervisorError("Parameter 'boot_order' is cdrom but 'cdrom_image_path' "
                                  "is not set: cannot boot from cdrom without an ISO path")
        if hvp[C.HV_KERNEL_PATH] and not hvp[C.HV_ROOT_PATH]:
            raise HypervisorError("Parameter 'root_path' must be set when 'kernel_path' is"
                                  " (the kernel needs a root partition)")
        model, domain = hvp[C.HV_SECURITY_MODEL], hvp[C.HV_SECURITY_DOMAIN]
        if model == C.HT_SM_USER and not domain:
            raise HypervisorError("Parameter 'security_domain' (the user to run the "
                                  "instance as) must be set when security_model is 'user'")
        if model in (C.HT_SM_NONE, C.HT_SM_POOL) and domain:
            raise HypervisorError(f"Parameter 'security_domain' must be empty when "
                                  f"security_model is {model!r}")
        if hvp[C.HV_SERIAL_CONSOLE] and hvp[C.HV_SERIAL_SPEED] not in C.VALID_SERIAL_SPEEDS:
            raise HypervisorError(
                f"Parameter 'serial_speed' is invalid ({hvp[C.HV_SERIAL_SPEED]!r}); must be one"
                f" of: {', '.join(map(str, C.VALID_SERIAL_SPEEDS))}")
        if hvp[C.HV_VNC_X509_VERIFY] and not hvp[C.HV_VNC_X509]:
            raise HypervisorError("Parameter 'vnc_x509_path' must be set when "
                                  "'vnc_x509_verify' is")
        cls._check_spice(hvp)
        if hvp[C.HV_KVM_DISK_AIO] == "native" and hvp[C.HV_DISK_CACHE] != "none":
            raise HypervisorError("Parameter 'disk_cache' must be 'none' when 'disk_aio' is"
                                  " 'native'")

    @staticmethod
    def _check_spice(hvp: Mapping[str, Any]) -> None:
        bind, version = hvp[C.HV_KVM_SPICE_BIND], hvp[C.HV_KVM_SPICE_IP_VERSION]
        if not bind:
            for name in _SPICE_ADDITIONAL_PARAMS:
                if hvp[name]:
                    raise HypervisorError(f"Parameter '{name}' requires 'spice_bind' to be set")
            return
        found = _ip_version(bind)
        if version != C.IFACE_NO_IP_VERSION_SPECIFIED and found not in (None, version):
            raise HypervisorError(f"Parameter 'spice_bind' is an IPv{found} address "
                                  f"({bind}) but 'spice_ip_version' is {version}")

    @classmethod
    def ValidateParameters(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Node-side checks: files exist, users exist, bind addresses are usable here."""
        super().ValidateParameters(hvparams)
        hvp = hvparams
        if hvp[C.HV_SECURITY_MODEL] == C.HT_SM_USER:
            try:
                pwd.getpwnam(hvp[C.HV_SECURITY_DOMAIN])
            except KeyError:
                raise HypervisorError(f"Parameter 'security_domain': unknown user "
                                      f"{hvp[C.HV_SECURITY_DOMAIN]!r}") from None
        vnc, spice = hvp[C.HV_VNC_BIND_ADDRESS], hvp[C.HV_KVM_SPICE_BIND]
        if vnc and spice:
            raise HypervisorError("Parameters 'vnc_bind_address' and 'spice_bind' cannot "
                                  "both be set: an instance has either VNC or SPICE")
        interfaces = psutil.net_if_addrs()
        if vnc and not (_ip_version(vnc) or vnc in interfaces or P.is_norm_abs_path(vnc)):
            raise HypervisorError(f"Parameter 'vnc_bind_address' ({vnc!r}) is neither an IP "
                                  "address, a network interface of this node nor an "
                                  "absolute path")
        if spice and not (_ip_version(spice) or spice in interfaces):
            raise HypervisorError(f"Parameter 'spice_bind' ({spice!r}) is neither an IP "
                                  "address nor a network interface of this node")

    # -- placement -----------------------------------------------------------------
    def _guest_target(self, hvparams: Mapping[str, Any]) -> GuestTarget:
        """Pick domain type, arch and emulator from the host's capabilities.

        kvm_flag 'enabled' needs KVM, 'disabled' means TCG (type='qemu'), empty takes
        KVM when the host offers it, else TCG. A driver that offers neither (libvirt's
        test driver) gets its own domain type.
        """
        with connection.libvirt_errors("read the host capabilities"):
            caps = etree.fromstring(self._conn().getCapabilities().encode())
        arches = {}
        for guest in caps.iterfind("guest"):
            if guest.findtext("os_type") != "hvm":
                continue
            arch = guest.find("arch")
            arches[arch.get("name")] = [d.get("type") for d in arch.iterfind("domain")]
        if not arches:
            raise HypervisorError(f"libvirt at {self.uri} offers no hvm guests")
        arch = "x86_64" if "x86_64" in arches else sorted(arches)[0]
        offered = arches[arch]
        flag = hvparams.get(C.HV_KVM_FLAG)
        if flag == C.HT_KVM_ENABLED:
            wanted = ["kvm"]
        elif flag == C.HT_KVM_DISABLED:
            wanted = ["qemu"]
        else:
            wanted = ["kvm", "qemu"]
        for domain_type in wanted:
            if domain_type in offered:
                return GuestTarget(domain_type=domain_type, arch=arch,
                                   machine=hvparams.get(C.HV_KVM_MACHINE_VERSION) or None,
                                   emulator=hvparams[C.HV_KVM_PATH])
        if not flag and "kvm" not in offered and "qemu" not in offered and offered:
            return GuestTarget(domain_type=offered[0], arch=arch)
        raise HypervisorError(f"Parameter 'kvm_flag' is {flag!r} but libvirt at {self.uri} "
                              f"offers only domain types {offered} for {arch}")
