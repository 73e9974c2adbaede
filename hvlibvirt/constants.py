"""Names and values shared with Ganeti.

Everything here mirrors a Ganeti 3.0 constant of the same name (``ganeti.constants``),
so code written against Ganeti reads the same against hvlibvirt. ``HVC_DEFAULTS`` for
our three hypervisors equals Ganeti 3.0's, key for key and value for value; a test
checks it against Ganeti's own module when that is available. It and
``HVS_PARAMETER_TYPES`` derive from the hvparam tables' rows, which also say what later
Ganeti versions changed (``since``); inside Ganeti the running Ganeti's own values are
followed (``hvlibvirt.ganeti.facts``).
"""

from __future__ import annotations

from typing import Final

# -- hypervisors ---------------------------------------------------------------
HT_KVM: Final = "kvm"
HT_XEN_PVM: Final = "xen-pvm"
HT_XEN_HVM: Final = "xen-hvm"
HYPER_TYPES: Final = frozenset({HT_KVM, HT_XEN_PVM, HT_XEN_HVM})

# -- hvparam names (Ganeti's constant names) ------------------------------------
HV_ACPI: Final = "acpi"
HV_BLOCKDEV_PREFIX: Final = "blockdev_prefix"
HV_BOOT_ORDER: Final = "boot_order"
HV_BOOTLOADER_ARGS: Final = "bootloader_args"
HV_BOOTLOADER_PATH: Final = "bootloader_path"
HV_CDROM_IMAGE_PATH: Final = "cdrom_image_path"
HV_CPU_CAP: Final = "cpu_cap"
HV_CPU_CORES: Final = "cpu_cores"
HV_CPU_MASK: Final = "cpu_mask"
HV_CPU_SOCKETS: Final = "cpu_sockets"
HV_CPU_THREADS: Final = "cpu_threads"
HV_CPU_TYPE: Final = "cpu_type"
HV_CPU_WEIGHT: Final = "cpu_weight"
HV_DEVICE_MODEL: Final = "device_model"
HV_DISK_CACHE: Final = "disk_cache"
HV_DISK_DISCARD: Final = "disk_discard"
HV_DISK_TYPE: Final = "disk_type"
HV_INITRD_PATH: Final = "initrd_path"
HV_KERNEL_ARGS: Final = "kernel_args"
HV_KERNEL_PATH: Final = "kernel_path"
HV_KEYMAP: Final = "keymap"
HV_KVM_CDROM2_IMAGE_PATH: Final = "cdrom2_image_path"
HV_KVM_CDROM_DISK_TYPE: Final = "cdrom_disk_type"
HV_KVM_DISK_AIO: Final = "disk_aio"
HV_KVM_EXTRA: Final = "kvm_extra"
HV_KVM_FLAG: Final = "kvm_flag"
HV_KVM_FLOPPY_IMAGE_PATH: Final = "floppy_image_path"
HV_KVM_MACHINE_VERSION: Final = "machine_version"
HV_KVM_MIGRATION_CAPS: Final = "migration_caps"
HV_KVM_PATH: Final = "kvm_path"
HV_KVM_PCI_RESERVATIONS: Final = "kvm_pci_reservations"
HV_KVM_SCSI_CONTROLLER_TYPE: Final = "scsi_controller_type"
HV_KVM_SPICE_AUDIO_COMPR: Final = "spice_playback_compression"
HV_KVM_SPICE_BIND: Final = "spice_bind"
HV_KVM_SPICE_IP_VERSION: Final = "spice_ip_version"
HV_KVM_SPICE_JPEG_IMG_COMPR: Final = "spice_jpeg_wan_compression"
HV_KVM_SPICE_LOSSLESS_IMG_COMPR: Final = "spice_image_compression"
HV_KVM_SPICE_PASSWORD_FILE: Final = "spice_password_file"
HV_KVM_SPICE_STREAMING_VIDEO_DETECTION: Final = "spice_streaming_video"
HV_KVM_SPICE_TLS_CIPHERS: Final = "spice_tls_ciphers"
HV_KVM_SPICE_USE_TLS: Final = "spice_use_tls"
HV_KVM_SPICE_USE_VDAGENT: Final = "spice_use_vdagent"
HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR: Final = "spice_zlib_glz_wan_compression"
HV_KVM_USE_CHROOT: Final = "use_chroot"
HV_KVM_USER_SHUTDOWN: Final = "user_shutdown"
HV_MEM_PATH: Final = "mem_path"
HV_MIGRATION_BANDWIDTH: Final = "migration_bandwidth"
HV_MIGRATION_DOWNTIME: Final = "migration_downtime"
HV_MIGRATION_MODE: Final = "migration_mode"
HV_MIGRATION_PORT: Final = "migration_port"
HV_NIC_TYPE: Final = "nic_type"
HV_PAE: Final = "pae"
HV_PASSTHROUGH: Final = "pci_pass"
HV_REBOOT_BEHAVIOR: Final = "reboot_behavior"
HV_ROOT_PATH: Final = "root_path"
HV_SECURITY_DOMAIN: Final = "security_domain"
HV_SECURITY_MODEL: Final = "security_model"
HV_SERIAL_CONSOLE: Final = "serial_console"
HV_SERIAL_SPEED: Final = "serial_speed"
HV_SOUNDHW: Final = "soundhw"
HV_USB_DEVICES: Final = "usb_devices"
HV_USB_MOUSE: Final = "usb_mouse"
HV_USE_BOOTLOADER: Final = "use_bootloader"
HV_USE_GUEST_AGENT: Final = "use_guest_agent"
HV_USE_LOCALTIME: Final = "use_localtime"
HV_VGA: Final = "vga"
HV_VHOST_NET: Final = "vhost_net"
HV_VIF_SCRIPT: Final = "vif_script"
HV_VIF_TYPE: Final = "vif_type"
HV_VIRIDIAN: Final = "viridian"
HV_VIRTIO_NET_QUEUES: Final = "virtio_net_queues"
HV_VNC_BIND_ADDRESS: Final = "vnc_bind_address"
HV_VNC_PASSWORD_FILE: Final = "vnc_password_file"
HV_VNC_TLS: Final = "vnc_tls"
HV_VNC_X509: Final = "vnc_x509_path"
HV_VNC_X509_VERIFY: Final = "vnc_x509_verify"
HV_VNET_HDR: Final = "vnet_hdr"
HV_XEN_CMD: Final = "xen_cmd"
HV_XEN_CPUID: Final = "cpuid"

# -- hvparam value types (Ganeti's VType names) ---------------------------------
VTYPE_BOOL: Final = "bool"
VTYPE_INT: Final = "int"
VTYPE_STRING: Final = "string"
VTYPE_MAYBE_STRING: Final = "maybe-string"

# -- value sets ------------------------------------------------------------------
HT_BO_CDROM: Final = "cdrom"
HT_BO_DISK: Final = "disk"
HT_BO_FLOPPY: Final = "floppy"
HT_BO_NETWORK: Final = "network"
HT_KVM_VALID_BO_TYPES: Final = (HT_BO_CDROM, HT_BO_DISK, HT_BO_FLOPPY, HT_BO_NETWORK)

HT_NIC_PARAVIRTUAL: Final = "paravirtual"
HT_KVM_VALID_NIC_TYPES: Final = ("e1000", "i82551", "i82557b", "i82559er", "ne2k_isa",
                                 "ne2k_pci", HT_NIC_PARAVIRTUAL, "pcnet", "rtl8139")
HT_DISK_PARAVIRTUAL: Final = "paravirtual"
HT_DISK_IDE: Final = "ide"
HT_DISK_IOEMU: Final = "ioemu"
HT_SCSI_DEVICE_TYPES: Final = ("scsi-block", "scsi-cd", "scsi-generic", "scsi-hd")
HT_KVM_VALID_DISK_TYPES: Final = (HT_DISK_IDE, "mtd", HT_DISK_PARAVIRTUAL, "pflash", "scsi",
                                  *HT_SCSI_DEVICE_TYPES, "sd")
# Ganeti 3.0 accepts lsi, megasas and virtio-scsi-pci; later Ganeti adds dc390, which
# libvirt also supports, so we accept it too.
HT_KVM_VALID_SCSI_CONTROLLER_TYPES: Final = ("lsi", "megasas", "virtio-scsi-pci", "dc390")
HT_VALID_DISCARD_TYPES: Final = ("default", "ignore", "unmap")
HT_VALID_CACHE_TYPES: Final = ("default", "none", "writeback", "writethrough")
HT_KVM_VALID_AIO_TYPES: Final = ("threads", "native")
HT_KVM_AIO_IO_URING: Final = "io_uring"  # valid from Ganeti 3.1 on
HT_KVM_VALID_MOUSE_TYPES: Final = ("mouse", "tablet")
HT_SM_NONE: Final = "none"
HT_SM_USER: Final = "user"
HT_SM_POOL: Final = "pool"
HT_KVM_VALID_SM_TYPES: Final = (HT_SM_NONE, HT_SM_USER, HT_SM_POOL)
HT_KVM_ENABLED: Final = "enabled"
HT_KVM_DISABLED: Final = "disabled"
HT_KVM_FLAG_VALUES: Final = (HT_KVM_ENABLED, HT_KVM_DISABLED)
HT_KVM_SPICE_VALID_LOSSLESS_IMG_COMPR_OPTIONS: Final = ("auto_glz", "auto_lz", "quic", "glz",
                                                        "lz", "off")
HT_KVM_SPICE_VALID_LOSSY_IMG_COMPR_OPTIONS: Final = ("auto", "never", "always")
HT_KVM_SPICE_VALID_VIDEO_STREAM_DETECTION_OPTIONS: Final = ("all", "filter", "off")
HT_HVM_VALID_DISK_TYPES: Final = (HT_DISK_PARAVIRTUAL, HT_DISK_IOEMU)
HT_HVM_VALID_NIC_TYPES: Final = ("e1000", "ne2k_isa", "ne2k_pci", HT_NIC_PARAVIRTUAL, "rtl8139")
HT_HVM_VALID_VIF_TYPES: Final = ("ioemu", "vif")
KNOWN_XEN_COMMANDS: Final = ("xl", "xm")

INSTANCE_REBOOT_ALLOWED: Final = "reboot"
INSTANCE_REBOOT_EXIT: Final = "exit"
REBOOT_BEHAVIORS: Final = (INSTANCE_REBOOT_ALLOWED, INSTANCE_REBOOT_EXIT)

HT_MIGRATION_LIVE: Final = "live"
HT_MIGRATION_NONLIVE: Final = "non-live"
HT_MIGRATION_MODES: Final = (HT_MIGRATION_LIVE, HT_MIGRATION_NONLIVE)

VALID_SERIAL_SPEEDS: Final = (75, 110, 300, 600, 1200, 1800, 2400, 4800, 9600, 14400, 19200,
                              28800, 38400, 57600, 115200, 230400, 345600, 460800)
IFACE_NO_IP_VERSION_SPECIFIED: Final = 0
VALID_IP_VERSIONS: Final = (4, 6)
QEMU_PCI_SLOTS: Final = 32
QEMU_DEFAULT_PCI_RESERVATIONS: Final = 12
MAX_VIRTIO_NET_QUEUES: Final = 32
VNC_BASE_PORT: Final = 5900

# The highest host CPU number + 1 a cpu_mask may name: libvirt's cpuset limit
# (VIR_DOMAIN_CPUMASK_LEN), above Linux's own NR_CPUS ceiling (8192 on x86_64).
MAX_HOST_CPUS: Final = 16384
# libvirt's vCPU ceiling (QEMU/KVM's and Xen's are lower and reported by libvirt); also
# the most entries a per-vCPU cpu_mask can usefully have.
MAX_VCPUS: Final = 4096

CPU_PINNING_SEP: Final = ":"
CPU_PINNING_ALL: Final = "all"
CPU_PINNING_ALL_VAL: Final = -1
CPU_PINNING_OFF: Final = (CPU_PINNING_ALL_VAL,)

# -- instance states (Ganeti's hv_base.HvInstanceState) ---------------------------
HV_STATE_RUNNING: Final = 0
HV_STATE_SHUTDOWN: Final = 1

# -- migration -------------------------------------------------------------------
HV_MIGRATION_ACTIVE: Final = "active"
HV_MIGRATION_CANCELLED: Final = "cancelled"
HV_MIGRATION_COMPLETED: Final = "completed"
HV_MIGRATION_FAILED: Final = "failed"
HV_KVM_MIGRATION_POSTCOPY_ACTIVE: Final = "postcopy-active"
HV_MIGRATION_VALID_STATUSES: Final = frozenset({HV_MIGRATION_ACTIVE, HV_MIGRATION_CANCELLED,
                                                HV_MIGRATION_COMPLETED, HV_MIGRATION_FAILED})
HV_MIGRATION_FAILED_STATUSES: Final = frozenset({HV_MIGRATION_FAILED, HV_MIGRATION_CANCELLED})
HV_KVM_MIGRATION_VALID_STATUSES: Final = HV_MIGRATION_VALID_STATUSES | {
    HV_KVM_MIGRATION_POSTCOPY_ACTIVE}
HV_KVM_MIGRATION_ACTIVE_STATUSES: Final = frozenset({HV_MIGRATION_ACTIVE,
                                                     HV_KVM_MIGRATION_POSTCOPY_ACTIVE})

# -- hotplug ---------------------------------------------------------------------
HOTPLUG_TARGET_DISK: Final = "disk"
HOTPLUG_TARGET_NIC: Final = "nic"
HOTPLUG_ALL_TARGETS: Final = frozenset({HOTPLUG_TARGET_DISK, HOTPLUG_TARGET_NIC})
HOTPLUG_ACTION_ADD: Final = "hotadd"
HOTPLUG_ACTION_REMOVE: Final = "hotremove"
HOTPLUG_ACTION_MODIFY: Final = "hotmod"
HOTPLUG_ALL_ACTIONS: Final = frozenset({HOTPLUG_ACTION_ADD, HOTPLUG_ACTION_REMOVE,
                                        HOTPLUG_ACTION_MODIFY})

# -- disks -----------------------------------------------------------------------
DT_DISKLESS: Final = "diskless"
DT_PLAIN: Final = "plain"
DT_DRBD8: Final = "drbd"
DT_FILE: Final = "file"
DT_SHARED_FILE: Final = "sharedfile"
DT_BLOCK: Final = "blockdev"
DT_RBD: Final = "rbd"
DT_EXT: Final = "ext"
DT_GLUSTER: Final = "gluster"
DISK_TEMPLATES: Final = frozenset({DT_DISKLESS, DT_PLAIN, DT_DRBD8, DT_FILE, DT_SHARED_FILE,
                                   DT_BLOCK, DT_RBD, DT_EXT, DT_GLUSTER})
DTS_FILEBASED: Final = frozenset({DT_FILE, DT_SHARED_FILE, DT_GLUSTER})
# File drivers of file-based disks (the first item of their logical_id).
FD_LOOP: Final = "loop"
FD_BLKTAP: Final = "blktap"
FD_BLKTAP2: Final = "blktap2"
DTS_EXT_MIRROR: Final = frozenset({DT_DISKLESS, DT_BLOCK, DT_EXT, DT_SHARED_FILE, DT_RBD,
                                   DT_GLUSTER})
DISK_RDWR: Final = "rw"
DISK_RDONLY: Final = "ro"
DISK_ACCESS_SET: Final = frozenset({DISK_RDWR, DISK_RDONLY})
LDP_ACCESS: Final = "access"
DISK_KERNELSPACE: Final = "kernelspace"
DISK_USERSPACE: Final = "userspace"

# -- NICs ------------------------------------------------------------------------
NIC_MODE: Final = "mode"
NIC_LINK: Final = "link"
NIC_VLAN: Final = "vlan"
NIC_MODE_BRIDGED: Final = "bridged"
NIC_MODE_ROUTED: Final = "routed"
NIC_MODE_OVS: Final = "openvswitch"
NIC_MODE_POOL: Final = "pool"
NIC_MODE_EXT: Final = "ext"
NIC_VALID_MODES: Final = frozenset({NIC_MODE_BRIDGED, NIC_MODE_ROUTED, NIC_MODE_OVS,
                                    NIC_MODE_POOL, NIC_MODE_EXT})

# -- consoles --------------------------------------------------------------------
CONS_SSH: Final = "ssh"
CONS_VNC: Final = "vnc"
CONS_SPICE: Final = "spice"
CONS_MESSAGE: Final = "msg"
CONS_ALL: Final = frozenset({CONS_SSH, CONS_VNC, CONS_SPICE, CONS_MESSAGE})

# -- node info -------------------------------------------------------------------
HV_NODEINFO_KEY_VERSION: Final = "hv_version"

# -- build-time paths Ganeti bakes into its defaults --------------------------------
KVM_PATH: Final = "/usr/bin/kvm"
KVM_KERNEL: Final = "/boot/vmlinuz-3-kvmU"
XEN_KERNEL: Final = "/boot/vmlinuz-3-xenU"
XEN_INITRD: Final = ""
XEN_BOOTLOADER: Final = ""
VNC_PASSWORD_FILE: Final = "/etc/ganeti/vnc-cluster-password"

# -- defaults and value types: HVC_DEFAULTS and HVS_PARAMETER_TYPES are
# ``hvlibvirt.tables``', derived from the rows of the hvparam tables.


# Cluster-wide hvparams (Ganeti strips them from instance-level hvparams).
HVC_GLOBALS: Final = frozenset({HV_MIGRATION_PORT, HV_MIGRATION_BANDWIDTH,
                                HV_MIGRATION_MODE, HV_XEN_CMD})
