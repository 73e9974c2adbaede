"""The KVM hvparam table: all 65 of Ganeti's KVM parameters, and KVM's migration
capabilities.

Each row holds Ganeti's five-tuple check, default and value type (3.0's, and what later
versions changed), what the parameter becomes in the domain XML (or at runtime), and
which values libvirt cannot honour and why. ``KVMHypervisor``'s ``PARAMETERS``,
``DEFAULTS`` and ``TYPES``, ``tables.HVC_DEFAULTS`` and ``HVS_PARAMETER_TYPES`` and
``docs/hvparams.md`` derive from it, so adding an hvparam means one row here and the code
in the builder that reads it. The refusals ask ``param_values``, never a builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hvlibvirt import constants as C, param_values as V, params as P
from hvlibvirt.params import HvParam

#: Ganeti's migration capability names (QEMU's) -> (the libvirt migration flag, by its
#: name in libvirt-python, and the compression method it takes, if any). The only list:
#: ``migration`` turns it into flags, the docs and the refusal read it.
MIGRATION_CAPS: dict[str, tuple[str, str | None]] = {
    "xbzrle": ("VIR_MIGRATE_COMPRESSED", "xbzrle"),
    "auto-converge": ("VIR_MIGRATE_AUTO_CONVERGE", None),
    "rdma-pin-all": ("VIR_MIGRATE_RDMA_PIN_ALL", None),
    "x-rdma-pin-all": ("VIR_MIGRATE_RDMA_PIN_ALL", None),
    "postcopy-ram": ("VIR_MIGRATE_POSTCOPY", None),
    "x-postcopy-ram": ("VIR_MIGRATE_POSTCOPY", None),
    "multifd": ("VIR_MIGRATE_PARALLEL", None),
    "x-multifd": ("VIR_MIGRATE_PARALLEL", None),
    "compress": ("VIR_MIGRATE_COMPRESSED", "mt"),
    "zero-copy-send": ("VIR_MIGRATE_ZEROCOPY", None),
}
#: the capabilities that ask for post-copy (Ganeti switches to it during the migration)
POSTCOPY_CAPS = frozenset(cap for cap, (flag, _) in MIGRATION_CAPS.items()
                          if flag == "VIR_MIGRATE_POSTCOPY")


_refused = P.refused
_error_of = P.error_of
_NO_VNET_HDR_SWITCH = ("libvirt always opens the taps of virtio NICs with the virtio-net "
                       "header and has no switch for it")


def _refuse_cdrom_type(_value: Any, hvp: Mapping[str, Any]) -> str | None:
    """Why a configured cdrom cannot go where its disk type says (the one booted from is
    on IDE regardless); also disk_type's, which decides when cdrom_disk_type is empty."""
    for number, param in V.CDROM_PARAMS:
        if hvp[param] and (reason := _error_of(V.cdrom_type, number, hvp)):
            return reason
    return None


def _refuse_disk_type(value: str, hvp: Mapping[str, Any]) -> str | None:
    if value in V.REFUSED_DISK_TYPES:
        return V.REFUSED_DISK_TYPES[value]
    return None if hvp[C.HV_KVM_CDROM_DISK_TYPE] else _refuse_cdrom_type(value, hvp)


def _refuse_migration_caps(value: str, _hvp: Mapping[str, Any]) -> str | None:
    unknown = [c for c in value.split(":") if c not in MIGRATION_CAPS]
    if unknown:
        return (f"unknown migration capabilities {unknown}; libvirt expresses only "
                f"{', '.join(sorted(MIGRATION_CAPS))}")
    return None


def _refuse_kvm_extra(value: str, _hvp: Mapping[str, Any]) -> str | None:
    try:
        V.kvm_extra_args(value)
    except ValueError as err:
        return f"it does not split into arguments: {err}"
    return None


_SPICE_CIPHERS = "HIGH:-DES:-3DES:-EXPORT:-DH"  # Ganeti's default, the only one honoured
_URL_RULES = ("A URL needs a host name, IPv4 or [IPv6] address and a port (if any) in "
              "1-65535, and must not carry user:password@ (hvparams are kept in the domain's "
              "metadata, which libvirt's read-only socket shows)")
_HOST_WIDE_TLS = ("libvirt sets VNC TLS for every domain of a host, in qemu.conf; honoured "
                  "when this node's qemu.conf {} (checked on the node, before every start)")

KVM_PARAMS: dict[str, HvParam] = {
    # -- emulator, machine, boot --------------------------------------------------------
    C.HV_KVM_PATH: HvParam(P.REQ_FILE_CHECK, default=C.KVM_PATH, xml="<devices><emulator>"),
    C.HV_KERNEL_PATH: HvParam(
        P.OPT_FILE_CHECK, default=C.KVM_KERNEL,
        xml="<os><kernel> (direct kernel boot; per-device boot order is then not used)"),
    C.HV_INITRD_PATH: HvParam(P.OPT_FILE_CHECK, default="",
                              xml="<os><initrd> (with kernel_path)"),
    C.HV_ROOT_PATH: HvParam(P.NO_CHECK, default="/dev/vda1", vtype=C.VTYPE_MAYBE_STRING,
                            xml="root=... in <os><cmdline> (with kernel_path)"),
    C.HV_KERNEL_ARGS: HvParam(P.NO_CHECK, default="ro", xml="<os><cmdline> (with kernel_path)"),
    C.HV_BOOT_ORDER: HvParam(
        P.param_in_set(True, C.HT_KVM_VALID_BO_TYPES), default=C.HT_BO_DISK,
        xml="<boot order='1'/> on the first disk, on cdrom 1 (an IDE CD-ROM then, as Ganeti's "
            "-boot d puts it on if=ide), on the floppy or on the first NIC, and for those three "
            "<boot order='2'/> on the first disk (not with kernel_path). libvirt boots "
            "strictly (-boot strict=on), so a failed cdrom, floppy or network boot goes on to "
            "the disk as after Ganeti's -boot d/a/n; one that fails from the disk halts, where "
            "Ganeti's -boot c falls back to the other devices"),
    C.HV_ACPI: HvParam(P.NO_CHECK, default=True,
                       xml="<features><acpi/> (also: soft stop is an ACPI power-button press; "
                           "without ACPI a stop is a hard stop)"),
    C.HV_KVM_MACHINE_VERSION: HvParam(
        P.NO_CHECK, default="",
        xml="<os><type machine=...> (empty: libvirt's default, 'pc' on x86_64). q35 or "
            "pc-q35-X: PCI Express, every disk and NIC behind a pcie-root-port of its own, "
            "pcie_hotplug_ports (hvlibvirt.conf) free ports for hot-adds, ICH9 USB, IDE as "
            "SATA on the built-in AHCI controller, the floppy on an ISA floppy controller"),
    C.HV_KVM_FLAG: HvParam(P.param_in_set(False, C.HT_KVM_FLAG_VALUES), default="",
                           xml="<domain type=...>: enabled -> kvm, disabled -> qemu (TCG), "
                               "empty -> kvm when the host offers it, else qemu"),
    C.HV_REBOOT_BEHAVIOR: HvParam(P.param_in_set(True, C.REBOOT_BEHAVIORS),
                                  default=C.INSTANCE_REBOOT_ALLOWED,
                                  xml="<on_reboot>: reboot -> restart, exit -> destroy"),
    C.HV_USE_LOCALTIME: HvParam(P.NO_CHECK, default=False,
                                xml="<clock offset='localtime|utc'/>"),
    # -- removable media ---------------------------------------------------------------
    C.HV_CDROM_IMAGE_PATH: HvParam(
        P.OPT_FILE_OR_URL_CHECK, default="",
        xml="read-only <disk>, alias ua-cdrom1, file or http/https/ftp/ftps network source: "
            "with boot_order=cdrom (no kernel_path) an IDE CD-ROM at hda (on q35 a SATA CD-ROM"
            " at sda) whatever cdrom_disk_type says, as Ganeti does; else on cdrom_disk_type's"
            " bus (device cdrom; a read-only virtio disk at PCI slot 7 for paravirtual). "
            + _URL_RULES),
    C.HV_KVM_CDROM2_IMAGE_PATH: HvParam(
        P.OPT_FILE_OR_URL_CHECK, default="",
        xml="second cdrom, alias ua-cdrom2, on cdrom_disk_type's bus even when cdrom 1 boots "
            "(virtio: PCI slot 8); never bootable. " + _URL_RULES),
    C.HV_KVM_CDROM_DISK_TYPE: HvParam(
        P.param_in_set(False, C.HT_KVM_VALID_DISK_TYPES), default="",
        xml="bus of the cdroms: ide, virtio (paravirtual), scsi (scsi-cd/scsi-hd); empty "
            "-> disk_type; not the cdrom booted from, always IDE. IDE cdroms take the first "
            "IDE units and IDE disks follow them, as QEMU numbers Ganeti's -drive options. "
            "On q35 (no IDE controller) ide means SATA: the ports of the built-in AHCI "
            "controller, where QEMU puts Ganeti's if=ide drives there",
        refuse=_refuse_cdrom_type,
        refused="other disk types when a cdrom is configured: libvirt has no cdrom device "
                "on those buses"),
    C.HV_KVM_FLOPPY_IMAGE_PATH: HvParam(
        P.OPT_FILE_CHECK, default="",
        xml="<disk device='floppy'> on the fdc (drive A), alias ua-floppy1. On q35, which has "
            "no built-in floppy controller, with an explicit <controller type='fdc'>: QEMU's "
            "isa-fdc on the ICH9 LPC's ISA bus, which SeaBIOS boots from"),
    # -- CPU and memory ----------------------------------------------------------------
    C.HV_CPU_TYPE: HvParam(
        P.NO_CHECK, default="",
        xml="<cpu>: host -> host-passthrough; model[,+flag,-flag,flag=on|off] -> custom model "
            "and features",
        refuse=lambda v, _hvp: None if v == V.CPU_HOST else _error_of(V.cpu_model, v),
        refused="values that are not host or model[,+flag,-flag,flag=on|off]: libvirt has no "
                "way to pass other -cpu properties"),
    C.HV_CPU_CORES: HvParam(P.OPT_NONNEGATIVE_INT_CHECK, default=0,
                            xml="<cpu><topology cores=...> (missing counts are derived; the "
                                "product must equal vcpus)"),
    C.HV_CPU_THREADS: HvParam(P.OPT_NONNEGATIVE_INT_CHECK, default=0,
                              xml="<cpu><topology threads=...>"),
    C.HV_CPU_SOCKETS: HvParam(P.OPT_NONNEGATIVE_INT_CHECK, default=0,
                              xml="<cpu><topology sockets=...>"),
    C.HV_CPU_MASK: HvParam(P.OPT_MULTI_CPU_MASK_CHECK, default=C.CPU_PINNING_ALL,
                           xml="<cputune>: one mask -> <vcpupin> for every vCPU plus "
                               "<emulatorpin>; one mask per vCPU -> <vcpupin> each (all: "
                               "unpinned). " + P.CPU_MASK_BOUNDS),
    C.HV_MEM_PATH: HvParam(P.OPT_DIR_CHECK, default="",
                           xml="<memoryBacking><hugepages/><allocation mode='immediate'/>: "
                               "the directory must be the hugetlbfs mount libvirt is "
                               "configured with (checked on the node)"),
    # -- disks -------------------------------------------------------------------------
    C.HV_DISK_TYPE: HvParam(
        P.param_in_set(True, C.HT_KVM_VALID_DISK_TYPES), default=C.HT_DISK_PARAVIRTUAL,
        xml="<target bus=...>: paravirtual -> virtio (PCI), ide -> ide (sata on q35), "
            "scsi-hd -> scsi disk, scsi-cd -> scsi cdrom, scsi-block -> device='lun'",
        refuse=_refuse_disk_type,
        refused="; ".join(f"{k}: {why}" for k, why in sorted(V.REFUSED_DISK_TYPES.items()))
                + "; scsi-block with a cdrom and an empty cdrom_disk_type: libvirt has no "
                  "cdrom device on it"),
    C.HV_KVM_SCSI_CONTROLLER_TYPE: HvParam(
        P.param_in_set(True, C.HT_KVM_VALID_SCSI_CONTROLLER_TYPES), default="lsi",
        xml="<controller type='scsi' model=...>: lsi -> lsilogic, megasas -> lsisas1078, "
            "virtio-scsi-pci -> virtio-scsi, dc390 (only when a SCSI device exists)"),
    C.HV_DISK_CACHE: HvParam(
        P.param_in_set(True, C.HT_VALID_CACHE_TYPES), default="default",
        xml="<driver cache=...> (default: libvirt's, i.e. writeback; shared-storage templates "
            "other than rbd always get none)"),
    C.HV_KVM_DISK_AIO: HvParam(
        P.param_in_set(False, C.HT_KVM_VALID_AIO_TYPES), default="threads",
        xml="<driver io=...> on kernel-space disks (io_uring from Ganeti 3.1 on)",
        valid="HT_KVM_VALID_AIO_TYPES",
        since={(3, 1): P.Since(values=(*C.HT_KVM_VALID_AIO_TYPES, C.HT_KVM_AIO_IO_URING))}),
    C.HV_DISK_DISCARD: HvParam(
        P.param_in_set(False, C.HT_VALID_DISCARD_TYPES), default="default",
        xml="<driver discard=...> (default: left out)", valid="HT_VALID_DISCARD_TYPES",
        since={(3, 1): P.Since(default="ignore", values=("ignore", "unmap"))}),
    C.HV_KVM_PCI_RESERVATIONS: HvParam(
        P.int_range_check(False, 0, C.QEMU_PCI_SLOTS, "The number of PCI slots managed by QEMU"),
        default=C.QEMU_DEFAULT_PCI_RESERVATIONS,
        xml="disks and NICs take explicit PCI slots from the first free one at or after "
            "this number; platform devices sit at fixed slots 1-8"),
    # -- NICs --------------------------------------------------------------------------
    C.HV_NIC_TYPE: HvParam(
        P.param_in_set(True, C.HT_KVM_VALID_NIC_TYPES), default=C.HT_NIC_PARAVIRTUAL,
        xml="<model type=...>: paravirtual -> virtio, other QEMU models as named",
        **_refused("ne2k_isa", "an ISA card; libvirt gives every NIC model a PCI address, "
                   "which QEMU rejects for it", lambda v: v == "ne2k_isa")),
    C.HV_VHOST_NET: HvParam(P.NO_CHECK, default=False,
                            xml="<driver name='vhost'> (false: name='qemu') on virtio NICs",
                            since={(3, 1): P.Since(default=True)}),
    C.HV_VIRTIO_NET_QUEUES: HvParam(P.OPT_VIRTIO_NET_QUEUES_CHECK, default=1,
                                    xml="<driver queues=N> on virtio NICs (N > 1)"),
    C.HV_VNET_HDR: HvParam(
        P.NO_CHECK, default=True,
        xml="always on for virtio NICs, never for emulated ones (libvirt's choice; Ganeti "
            "also uses it for paravirtual NICs only)",
        refuse=lambda v, hvp: (_NO_VNET_HDR_SWITCH if v is False
                               and hvp[C.HV_NIC_TYPE] == C.HT_NIC_PARAVIRTUAL else None),
        refused=f"false with nic_type paravirtual: {_NO_VNET_HDR_SWITCH}"),
    # -- graphics and input -----------------------------------------------------------
    C.HV_VNC_BIND_ADDRESS: HvParam(
        P.NO_CHECK, default="",
        xml="<graphics type='vnc' port=network_port autoport='no'> with <listen "
            "type='address'> (an IP, or an interface resolved to its IPv4 address on the "
            "node) or <listen type='socket'> (an absolute directory: <dir>/<instance>.vnc)"),
    C.HV_VNC_TLS: HvParam(P.NO_CHECK, default=False,
                          runtime=_HOST_WIDE_TLS.format("sets vnc_tls = 1")),
    C.HV_VNC_X509: HvParam(P.OPT_DIR_CHECK, default="", runtime=_HOST_WIDE_TLS.format(
        "reads the certificates from this directory (vnc_tls_x509_cert_dir, else "
        "default_tls_x509_cert_dir)")),
    C.HV_VNC_X509_VERIFY: HvParam(P.NO_CHECK, default=False, runtime=_HOST_WIDE_TLS.format(
        "has the same vnc_tls_x509_verify (else default_tls_x509_verify)")),
    C.HV_VNC_PASSWORD_FILE: HvParam(P.OPT_FILE_CHECK, default="",
                                    xml="<graphics passwd=...> read from the file at start "
                                        "(never logged)"),
    C.HV_KEYMAP: HvParam(P.NO_CHECK, default="", xml="<graphics keymap=...>"),
    C.HV_USB_MOUSE: HvParam(P.param_in_set(False, C.HT_KVM_VALID_MOUSE_TYPES), default="",
                            xml="<input type='mouse|tablet' bus='usb'/> (tablet with VNC when "
                                "empty)"),
    C.HV_USB_DEVICES: HvParam(
        P.NO_CHECK, default="",
        xml="comma-separated: tablet/mouse/keyboard -> <input bus='usb'>, host:VVVV:PPPP or "
            "host:BUS.ADDR -> <hostdev type='usb'>",
        refuse=lambda v, _hvp: _error_of(V.usb_devices, v),
        refused="other entries: they have no libvirt device element"),
    C.HV_VGA: HvParam(
        P.NO_CHECK, default="",
        xml="<video><model type=...> (std -> vga, vmware -> vmvga, cirrus, qxl, virtio, bochs,"
            " none; empty: qxl with SPICE, else vga, with or without VNC, the card Ganeti's "
            "QEMU has by default)",
        refuse=lambda v, _hvp: _error_of(V.video_model, v),
        refused="other models: libvirt has no video model for them"),
    C.HV_SOUNDHW: HvParam(
        P.NO_CHECK, default="",
        xml="<sound model=...> (hda -> ich6, ich9, ac97, es1370, sb16, pcspk, usb) with an "
            "<audio> backend (spice or none)",
        refuse=lambda v, _hvp: _error_of(V.sound_model, v),
        refused="other models (adlib, gus, cs4231a, all): libvirt has no sound model for "
                "them"),
    # -- SPICE -------------------------------------------------------------------------
    C.HV_KVM_SPICE_BIND: HvParam(
        P.NO_CHECK, default="",
        xml="<graphics type='spice' port=network_port autoport='no'> with <listen "
            "type='address'> (an IP, or an interface resolved on the node)"),
    C.HV_KVM_SPICE_IP_VERSION: HvParam(
        (False, lambda v: v == C.IFACE_NO_IP_VERSION_SPECIFIED or v in C.VALID_IP_VERSIONS,
         "The SPICE IP version should be 4 or 6", None, None),
        default=C.IFACE_NO_IP_VERSION_SPECIFIED,
        runtime="picks the address family when spice_bind is an interface name"),
    C.HV_KVM_SPICE_PASSWORD_FILE: HvParam(
        P.OPT_FILE_CHECK, default="",
        xml="<graphics passwd=...> read from the file at start (never logged); no password "
            "disables ticketing"),
    C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR: HvParam(
        P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSLESS_IMG_COMPR_OPTIONS), default="",
        xml="<image compression=...>"),
    C.HV_KVM_SPICE_JPEG_IMG_COMPR: HvParam(
        P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSY_IMG_COMPR_OPTIONS), default="",
        xml="<jpeg compression=...>"),
    C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR: HvParam(
        P.param_in_set(False, C.HT_KVM_SPICE_VALID_LOSSY_IMG_COMPR_OPTIONS), default="",
        xml="<zlib compression=...>"),
    C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION: HvParam(
        P.param_in_set(False, C.HT_KVM_SPICE_VALID_VIDEO_STREAM_DETECTION_OPTIONS), default="",
        xml="<streaming mode=...>"),
    C.HV_KVM_SPICE_AUDIO_COMPR: HvParam(P.NO_CHECK, default=True,
                                        xml="<playback compression='on|off'/>"),
    C.HV_KVM_SPICE_USE_TLS: HvParam(
        P.NO_CHECK, default=False,
        xml="tlsPort=network_port defaultMode='secure' and no plaintext port (certificates: "
            "qemu.conf spice_tls_x509_cert_dir)"),
    C.HV_KVM_SPICE_TLS_CIPHERS: HvParam(
        P.NO_CHECK, default=_SPICE_CIPHERS,
        refuse=lambda v, _hvp: None if v == _SPICE_CIPHERS else "libvirt has no per-domain "
        "(or qemu.conf) SPICE cipher setting; QEMU's default list applies",
        refused="anything but Ganeti's default: libvirt has no per-domain or qemu.conf SPICE "
                "cipher setting"),
    C.HV_KVM_SPICE_USE_VDAGENT: HvParam(
        P.NO_CHECK, default=True,
        xml="<channel type='spicevmc'> (com.redhat.spice.0) and <mouse mode='client'>; false:"
            " <mouse mode='server'>"),
    # -- serial console and guest agent ------------------------------------------------
    C.HV_SERIAL_CONSOLE: HvParam(
        P.NO_CHECK, default=True,
        xml="<serial type='pty'> + <console> (reached with virsh console); "
            "console=ttyS0,<speed> on the kernel command line"),
    C.HV_SERIAL_SPEED: HvParam(P.NO_CHECK, default=38400,
                               xml="console=ttyS0,<speed> on the kernel command line (an "
                                   "emulated UART has no speed)"),
    C.HV_USE_GUEST_AGENT: HvParam(P.NO_CHECK, default=False,
                                  xml="<channel type='unix'> (org.qemu.guest_agent.0) on a "
                                      "virtio-serial controller"),
    # -- migration ---------------------------------------------------------------------
    C.HV_MIGRATION_PORT: HvParam(P.REQ_NET_PORT_CHECK, default=8102,
                                 runtime="the migration data stream goes to "
                                         "tcp://<target>:<port> (VIR_MIGRATE_PARAM_URI)"),
    C.HV_MIGRATION_BANDWIDTH: HvParam(P.REQ_NONNEGATIVE_INT_CHECK, default=32,
                                      runtime="MiB/s limit "
                                              "(VIR_MIGRATE_PARAM_BANDWIDTH[_POSTCOPY])"),
    C.HV_MIGRATION_DOWNTIME: HvParam(P.REQ_NONNEGATIVE_INT_CHECK, default=30,
                                     runtime="virDomainMigrateSetMaxDowntime (ms)"),
    C.HV_MIGRATION_MODE: HvParam(P.MIGRATION_MODE_CHECK, default=C.HT_MIGRATION_LIVE,
                                 runtime="VIR_MIGRATE_LIVE or not"),
    C.HV_KVM_MIGRATION_CAPS: HvParam(
        P.NO_CHECK, default="",
        runtime="':'-separated capabilities mapped to libvirt migration flags: " + ", ".join(
            f"{cap} -> {flag}" + (f" (method {method})" if method else "")
            for cap, (flag, method) in MIGRATION_CAPS.items()),
        refuse=_refuse_migration_caps,
        refused="other capabilities (such as zero-blocks): libvirt has no migration flag for "
                "them"),
    # -- isolation, shutdown, passthrough ----------------------------------------------
    C.HV_SECURITY_MODEL: HvParam(
        P.param_in_set(True, C.HT_KVM_VALID_SM_TYPES), default=C.HT_SM_NONE,
        xml="user -> <seclabel type='static' model='dac'><label>+uid:+gid</label>; none -> "
            "libvirt's configured user",
        **_refused("pool", "allocating uids from Ganeti's uid pool is not implemented; use "
                   "'user' with security_domain, or 'none'", lambda v: v == C.HT_SM_POOL)),
    C.HV_SECURITY_DOMAIN: HvParam(P.NO_CHECK, default="",
                                  xml="the user of the DAC <seclabel> (resolved to uid:gid on "
                                      "the node)"),
    C.HV_KVM_USE_CHROOT: HvParam(
        P.NO_CHECK, default=False,
        runtime="true: QEMU's confinement is the private mount namespace (own /dev, no view "
                "of other domains' devices) libvirt starts every domain in, plus the host's "
                "security driver (AppArmor/SELinux) where enabled; honoured when this node's "
                "qemu.conf keeps namespaces = [\"mount\"] (libvirt's default; checked on the "
                "node)"),
    C.HV_KVM_USER_SHUTDOWN: HvParam(P.NO_CHECK, default=False,
                                    runtime="a poweroff from inside the guest is reported as "
                                            "SHUTDOWN until CleanupInstance"),
    C.HV_KVM_EXTRA: HvParam(P.NO_CHECK, default="",
                            xml="<qemu:commandline><qemu:arg> per shell word (libvirt marks "
                                "such domains tainted)",
                            refuse=_refuse_kvm_extra,
                            refused="strings that do not split into shell words"),
}


# -- KVM's cross-parameter rules (Ganeti's, checked after the rows' refusals) --------------
# SPICE options that only make sense with spice_bind set (Ganeti's rule).
_SPICE_ADDITIONAL_PARAMS = (
    C.HV_KVM_SPICE_IP_VERSION, C.HV_KVM_SPICE_PASSWORD_FILE,
    C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR, C.HV_KVM_SPICE_JPEG_IMG_COMPR,
    C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR, C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION,
    C.HV_KVM_SPICE_USE_TLS,
)


def cdrom_boot_needs_an_image(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_BOOT_ORDER] == C.HT_BO_CDROM and not hvp[C.HV_CDROM_IMAGE_PATH]:
        return ("Parameter 'boot_order' is cdrom but 'cdrom_image_path' is not set: cannot "
                "boot from cdrom without an ISO path")
    return None


def kernel_needs_a_root(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_KERNEL_PATH] and not hvp[C.HV_ROOT_PATH]:
        return ("Parameter 'root_path' must be set when 'kernel_path' is (the kernel needs a "
                "root partition)")
    return None


def security_domain_fits_the_model(hvp: Mapping[str, Any]) -> str | None:
    model, domain = hvp[C.HV_SECURITY_MODEL], hvp[C.HV_SECURITY_DOMAIN]
    if model == C.HT_SM_USER and not domain:
        return ("Parameter 'security_domain' (the user to run the instance as) must be set "
                "when security_model is 'user'")
    if model in (C.HT_SM_NONE, C.HT_SM_POOL) and domain:
        return f"Parameter 'security_domain' must be empty when security_model is {model!r}"
    return None


def serial_speed_is_standard(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_SERIAL_CONSOLE] and hvp[C.HV_SERIAL_SPEED] not in C.VALID_SERIAL_SPEEDS:
        return (f"Parameter 'serial_speed' is invalid ({hvp[C.HV_SERIAL_SPEED]!r}); must be "
                f"one of: {', '.join(map(str, C.VALID_SERIAL_SPEEDS))}")
    return None


def vnc_verify_needs_certificates(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_VNC_X509_VERIFY] and not hvp[C.HV_VNC_X509]:
        return "Parameter 'vnc_x509_path' must be set when 'vnc_x509_verify' is"
    return None


def spice_options_need_a_bind(hvp: Mapping[str, Any]) -> str | None:
    bind, version = hvp[C.HV_KVM_SPICE_BIND], hvp[C.HV_KVM_SPICE_IP_VERSION]
    if not bind:
        for name in _SPICE_ADDITIONAL_PARAMS:
            if hvp[name]:
                return f"Parameter '{name}' requires 'spice_bind' to be set"
        return None
    found = V.ip_version_of(bind)
    if version != C.IFACE_NO_IP_VERSION_SPECIFIED and found not in (None, version):
        return (f"Parameter 'spice_bind' is an IPv{found} address ({bind}) but "
                f"'spice_ip_version' is {version}")
    return None


def host_cpu_needs_kvm(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_CPU_TYPE] == V.CPU_HOST and hvp[C.HV_KVM_FLAG] == C.HT_KVM_DISABLED:
        return "Parameter 'cpu_type' is 'host', which needs KVM, but 'kvm_flag' is disabled"
    return None


def native_aio_needs_no_cache(hvp: Mapping[str, Any]) -> str | None:
    if hvp[C.HV_KVM_DISK_AIO] == "native" and hvp[C.HV_DISK_CACHE] != "none":
        return "Parameter 'disk_cache' must be 'none' when 'disk_aio' is 'native'"
    return None


#: in the order CheckParameterSyntax applies them (the first broken one is reported)
KVM_RULES: tuple[P.Rule, ...] = (
    cdrom_boot_needs_an_image, kernel_needs_a_root, security_domain_fits_the_model,
    serial_speed_is_standard, vnc_verify_needs_certificates, spice_options_need_a_bind,
    host_cpu_needs_kvm, native_aio_needs_no_cache)
