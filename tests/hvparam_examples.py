"""Per hvparam, hvparam overrides under which it must change the domain XML.

The tests that tie each XML-mapped row of the hvparam tables to the builders
(test_hvparams_table.py, test_xen.py) render with and without these, and
test_properties.py starts its hostile values from them. XML-mapped rows without an
entry have no value that changes the XML (each test lists them with the reason).
"""

from __future__ import annotations

from typing import Any

from hvlibvirt import constants as C

Examples = dict[str, dict[str, Any]]

_SPICE = {C.HV_KVM_SPICE_BIND: "192.0.2.10"}
_VNC = {C.HV_VNC_BIND_ADDRESS: "192.0.2.10"}
_DEVICE_BOOT = {C.HV_KERNEL_PATH: ""}

KVM: Examples = {
    C.HV_KVM_PATH: {C.HV_KVM_PATH: "/usr/bin/qemu-system-x86_64"},
    C.HV_KERNEL_PATH: {C.HV_KERNEL_PATH: "/boot/vmlinuz-other"},
    C.HV_INITRD_PATH: {C.HV_INITRD_PATH: "/boot/initrd.img"},
    C.HV_ROOT_PATH: {C.HV_ROOT_PATH: "/dev/vda2"},
    C.HV_KERNEL_ARGS: {C.HV_KERNEL_ARGS: "ro quiet"},
    C.HV_BOOT_ORDER: {**_DEVICE_BOOT, C.HV_BOOT_ORDER: C.HT_BO_NETWORK},
    C.HV_ACPI: {C.HV_ACPI: False},
    C.HV_KVM_MACHINE_VERSION: {C.HV_KVM_MACHINE_VERSION: "pc-i440fx-7.2"},
    C.HV_KVM_FLAG: {C.HV_KVM_FLAG: C.HT_KVM_DISABLED},
    C.HV_REBOOT_BEHAVIOR: {C.HV_REBOOT_BEHAVIOR: C.INSTANCE_REBOOT_EXIT},
    C.HV_USE_LOCALTIME: {C.HV_USE_LOCALTIME: True},
    C.HV_CDROM_IMAGE_PATH: {C.HV_CDROM_IMAGE_PATH: "/srv/iso/install.iso"},
    C.HV_KVM_CDROM2_IMAGE_PATH: {C.HV_KVM_CDROM2_IMAGE_PATH: "https://mirror.example/tools.iso"},
    C.HV_KVM_CDROM_DISK_TYPE: {C.HV_CDROM_IMAGE_PATH: "/srv/iso/install.iso",
                               C.HV_KVM_CDROM_DISK_TYPE: C.HT_DISK_IDE},
    C.HV_KVM_FLOPPY_IMAGE_PATH: {C.HV_KVM_FLOPPY_IMAGE_PATH: "/srv/floppy.img"},
    C.HV_CPU_TYPE: {C.HV_CPU_TYPE: "Nehalem,+aes,-x2apic"},
    C.HV_CPU_CORES: {C.HV_CPU_CORES: 1},
    C.HV_CPU_THREADS: {C.HV_CPU_THREADS: 1},
    C.HV_CPU_SOCKETS: {C.HV_CPU_SOCKETS: 1},
    C.HV_CPU_MASK: {C.HV_CPU_MASK: "0"},
    C.HV_MEM_PATH: {C.HV_MEM_PATH: "/dev/hugepages"},
    C.HV_DISK_TYPE: {C.HV_DISK_TYPE: "scsi-hd"},
    C.HV_KVM_SCSI_CONTROLLER_TYPE: {C.HV_DISK_TYPE: "scsi-hd",
                                    C.HV_KVM_SCSI_CONTROLLER_TYPE: "virtio-scsi-pci"},
    C.HV_DISK_CACHE: {C.HV_DISK_CACHE: "writethrough"},
    C.HV_KVM_DISK_AIO: {C.HV_KVM_DISK_AIO: "native", C.HV_DISK_CACHE: "none"},
    C.HV_DISK_DISCARD: {C.HV_DISK_DISCARD: "unmap"},
    C.HV_KVM_PCI_RESERVATIONS: {C.HV_KVM_PCI_RESERVATIONS: 16},
    C.HV_NIC_TYPE: {C.HV_NIC_TYPE: "e1000"},
    C.HV_VHOST_NET: {C.HV_VHOST_NET: True},
    C.HV_VIRTIO_NET_QUEUES: {C.HV_VIRTIO_NET_QUEUES: 4},
    C.HV_VNC_BIND_ADDRESS: _VNC,
    C.HV_VNC_PASSWORD_FILE: {**_VNC, C.HV_VNC_PASSWORD_FILE: "/etc/vnc.pw"},
    C.HV_KEYMAP: {**_VNC, C.HV_KEYMAP: "de"},
    C.HV_USB_MOUSE: {C.HV_USB_MOUSE: "mouse"},
    C.HV_USB_DEVICES: {C.HV_USB_DEVICES: "keyboard,host:046d:c52b"},
    C.HV_VGA: {C.HV_VGA: "cirrus"},
    C.HV_SOUNDHW: {C.HV_SOUNDHW: "hda"},
    C.HV_KVM_SPICE_BIND: _SPICE,
    C.HV_KVM_SPICE_PASSWORD_FILE: {**_SPICE, C.HV_KVM_SPICE_PASSWORD_FILE: "/etc/spice.pw"},
    C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR: {**_SPICE, C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR: "quic"},
    C.HV_KVM_SPICE_JPEG_IMG_COMPR: {**_SPICE, C.HV_KVM_SPICE_JPEG_IMG_COMPR: "never"},
    C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR: {**_SPICE, C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR: "always"},
    C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION: {**_SPICE,
                                               C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION:
                                               "filter"},
    C.HV_KVM_SPICE_AUDIO_COMPR: {**_SPICE, C.HV_KVM_SPICE_AUDIO_COMPR: False},
    C.HV_KVM_SPICE_USE_TLS: {**_SPICE, C.HV_KVM_SPICE_USE_TLS: True},
    C.HV_KVM_SPICE_USE_VDAGENT: {**_SPICE, C.HV_KVM_SPICE_USE_VDAGENT: False},
    C.HV_SERIAL_CONSOLE: {C.HV_SERIAL_CONSOLE: False},
    C.HV_SERIAL_SPEED: {C.HV_SERIAL_SPEED: 115200},
    C.HV_USE_GUEST_AGENT: {C.HV_USE_GUEST_AGENT: True},
    C.HV_SECURITY_MODEL: {C.HV_SECURITY_MODEL: C.HT_SM_USER, C.HV_SECURITY_DOMAIN: "nobody"},
    C.HV_SECURITY_DOMAIN: {C.HV_SECURITY_MODEL: C.HT_SM_USER, C.HV_SECURITY_DOMAIN: "daemon"},
    C.HV_KVM_EXTRA: {C.HV_KVM_EXTRA: "-global kvm-pit.lost_tick_policy=delay"},
}

# What Xen PVM and HVM share.
_XEN: Examples = {
    C.HV_BLOCKDEV_PREFIX: {C.HV_BLOCKDEV_PREFIX: "xvd"},
    C.HV_REBOOT_BEHAVIOR: {C.HV_REBOOT_BEHAVIOR: C.INSTANCE_REBOOT_EXIT},
    C.HV_CPU_MASK: {C.HV_CPU_MASK: "0-1"},
    C.HV_CPU_WEIGHT: {C.HV_CPU_WEIGHT: 512},
    C.HV_VIF_SCRIPT: {C.HV_VIF_SCRIPT: "/etc/xen/scripts/vif-ganeti"},
}

XEN_PVM: Examples = {
    C.HV_USE_BOOTLOADER: {C.HV_USE_BOOTLOADER: True, C.HV_BOOTLOADER_PATH: "/usr/bin/pygrub"},
    C.HV_BOOTLOADER_PATH: {C.HV_USE_BOOTLOADER: True,
                           C.HV_BOOTLOADER_PATH: "/usr/lib/xen/bin/pygrub"},
    C.HV_BOOTLOADER_ARGS: {C.HV_USE_BOOTLOADER: True, C.HV_BOOTLOADER_PATH: "/usr/bin/pygrub",
                           C.HV_BOOTLOADER_ARGS: "-q"},
    C.HV_KERNEL_PATH: {C.HV_KERNEL_PATH: "/boot/vmlinuz-6.1-xen"},
    C.HV_INITRD_PATH: {C.HV_INITRD_PATH: "/boot/initrd-6.1-xen"},
    C.HV_ROOT_PATH: {C.HV_ROOT_PATH: "/dev/xvda2"},
    C.HV_KERNEL_ARGS: {C.HV_KERNEL_ARGS: "ro quiet"},
    **_XEN,
}

XEN_HVM: Examples = {
    C.HV_ACPI: {C.HV_ACPI: False},
    C.HV_BOOT_ORDER: {C.HV_BOOT_ORDER: "nc"},
    C.HV_CDROM_IMAGE_PATH: {C.HV_CDROM_IMAGE_PATH: "/srv/iso/install.iso"},
    C.HV_DISK_TYPE: {C.HV_DISK_TYPE: "ioemu"},
    C.HV_NIC_TYPE: {C.HV_NIC_TYPE: "e1000"},
    C.HV_VNC_BIND_ADDRESS: {C.HV_VNC_BIND_ADDRESS: "127.0.0.1"},
    C.HV_KERNEL_PATH: {C.HV_KERNEL_PATH: "/usr/lib/xen-4.17/boot/hvmloader"},
    C.HV_DEVICE_MODEL: {C.HV_DEVICE_MODEL: "/usr/lib/xen/bin/qemu-system-i386"},
    C.HV_USE_LOCALTIME: {C.HV_USE_LOCALTIME: True},
    C.HV_PASSTHROUGH: {C.HV_PASSTHROUGH: "0000:03:00.0;04:00.1,permissive=1"},
    C.HV_XEN_CPUID: {C.HV_XEN_CPUID: "host,sse3=0,aes=1"},
    C.HV_SOUNDHW: {C.HV_SOUNDHW: "hda"},
    **_XEN,
}

#: hypervisor name -> its examples
BY_HYPERVISOR: dict[str, Examples] = {C.HT_KVM: KVM, C.HT_XEN_PVM: XEN_PVM,
                                      C.HT_XEN_HVM: XEN_HVM}
