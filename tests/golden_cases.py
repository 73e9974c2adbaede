"""The golden domain-XML cases: named instance shapes with fixed identities.

Each case is a function ``(env) -> Case`` registered in ``CASES`` by name. ``Env`` holds
what differs between the golden files and a real daemon: the root directory every path
lives under (``/srv/hvl`` for the golden files, a tmp dir for defineXML), the domain type
and the emulator. Everything else (uuids, MACs, ports, passwords) is fixed, so the same
case always renders to the same bytes.

A case keeps plain field values (dicts) for the instance, its disks and NICs, so the
same values can build ``hvlibvirt.objects`` or Ganeti's own ``ganeti.objects``
(``Case.objects(module)``). ``Case.files``/``Case.dirs`` list the paths the case refers
to, for tests that must create them.

Used by tests/test_golden.py, tests/test_real_define.py and
tests/test_ganeti_objects_xml.py.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, objects as hvl_objects
from hvlibvirt import tables
from hvlibvirt.domain_xml import GuestTarget, Listen, StartupOptions, build_domain, to_string
from hvlibvirt.domain_xml.xen_builder import HVM_MACHINE, PV_MACHINE, build_xen_domain

ROOT = "/srv/hvl"
GOLDEN_EMULATOR = "/usr/bin/kvm"
_UUID_NS = uuidlib.UUID("5b0c1e52-8f6b-4f59-9a53-3c1d0f3b6a10")

VNC_PASSWORD = "vnc-pw-8"  # libvirt refuses VNC passwords longer than 8 characters
SPICE_PASSWORD = "spice-s3cret"
QEMU_LABEL = "+64055:+64055"      # Debian's libvirt-qemu uid:gid
QEMU_USER = "libvirt-qemu"


@dataclass(frozen=True)
class Env:
    """Where a case is rendered for: path root, domain type, emulator."""

    root: str = ROOT
    domain_type: str = "kvm"
    emulator: str = GOLDEN_EMULATOR


GOLDEN_ENV = Env()


@dataclass
class Case:
    name: str
    doc: str
    instance: dict[str, Any]                               # Instance fields (no nics/disks)
    disks: list[tuple[dict[str, Any], str | None, str | None]]  # (Disk fields, link, uri)
    nics: list[dict[str, Any]]                             # NIC fields
    hvparams: dict[str, Any]
    options: StartupOptions
    files: list[str] = field(default_factory=list)         # regular files the case names
    dirs: list[str] = field(default_factory=list)          # directories the case names

    def objects(self, module: ModuleType = hvl_objects) -> tuple[Any, list[tuple[Any, Any, Any]]]:
        """(instance, block_devices) built from ``module``'s Instance/Disk/NIC classes."""
        disks = [module.Disk(**dict(fields)) for fields, _, _ in self.disks]
        nics = [module.NIC(**dict(fields)) for fields in self.nics]
        inst = module.Instance(**dict(self.instance), hvparams=dict(self.hvparams), nics=nics,
                               disks=[d.uuid for d in disks], disks_info=disks)
        block = [(d, link, uri) for d, (_, link, uri) in zip(disks, self.disks, strict=True)]
        return inst, block

    @property
    def hypervisor(self) -> str:
        return self.instance["hypervisor"]

    def tree(self, inst: Any, block: list[tuple[Any, Any, Any]]) -> etree._Element:
        """The domain tree of ``inst`` with this case's hvparams and options, from the
        builder of the case's hypervisor."""
        if self.hypervisor == C.HT_KVM:
            return build_domain(inst, block, self.hvparams, self.options)
        return build_xen_domain(inst, block, self.hvparams, self.options,
                                hvm=self.hypervisor == C.HT_XEN_HVM)

    def render(self, module: ModuleType = hvl_objects) -> str:
        inst, block = self.objects(module)
        return to_string(self.tree(inst, block))


class _Shape:
    """Accumulates one case: fixed ids derived from the case name, recorded paths."""

    def __init__(self, name: str, env: Env) -> None:
        self.name = name
        self.env = env
        self.files: list[str] = []
        self.dirs: list[str] = []
        self.disks: list[tuple[dict[str, Any], str | None, str | None]] = []
        self.nics: list[dict[str, Any]] = []
        self.host = name.replace("_", "-") + ".example.com"

    def uuid(self, what: str) -> str:
        return str(uuidlib.uuid5(_UUID_NS, f"{self.name}/{what}"))

    def file(self, rel: str) -> str:
        path = f"{self.env.root}/{rel}"
        if path not in self.files:
            self.files.append(path)
        return path

    def dir(self, rel: str) -> str:
        path = f"{self.env.root}/{rel}"
        if path not in self.dirs:
            self.dirs.append(path)
        return path

    def disk(self, template: str, mode: str = C.DISK_RDWR, uri: str | None = None,
             access: str | None = None, size: int = 1024, file_driver: str = C.FD_LOOP
             ) -> None:
        index = len(self.disks)
        params = {C.LDP_ACCESS: access} if access else {}
        dev_uuid = self.uuid(f"disk{index}")
        if uri is not None:
            link = None  # userspace: Ganeti hands over the URI, no kernel-space path
        else:
            link = self.file(f"disks/{self.host}.disk{index}")
        fields = dict(uuid=dev_uuid, name=f"disk{index}", dev_type=template,
                      logical_id=_logical_id(template, dev_uuid, index, file_driver),
                      iv_name=f"disk/{index}", size=size, mode=mode, params=params)
        self.disks.append((fields, link, uri))

    def nic(self, mode: str = C.NIC_MODE_BRIDGED, link: str = "br0", vlan: str = "",
            ip: str | None = None) -> None:
        index = len(self.nics)
        digest = hashlib.sha256(f"{self.name}/nic{index}".encode()).hexdigest()
        mac = "aa:00:" + ":".join(digest[i:i + 2] for i in range(0, 8, 2))
        nicparams = {C.NIC_MODE: mode, C.NIC_LINK: link if mode != C.NIC_MODE_ROUTED else "",
                     C.NIC_VLAN: vlan}
        self.nics.append(dict(uuid=self.uuid(f"nic{index}"), name=f"nic{index}", mac=mac,
                              ip=ip, network=None, nicparams=nicparams))

    def hvparams(self, **overrides: Any) -> dict[str, Any]:
        hvp = dict(tables.HVC_DEFAULTS[C.HT_KVM])
        hvp[C.HV_KVM_PATH] = self.env.emulator
        # Device boot unless a case asks for a kernel (the default kernel path would be
        # a file nobody has).
        hvp[C.HV_KERNEL_PATH] = ""
        hvp.update(overrides)
        return hvp

    def xen_hvparams(self, hvm: bool, **overrides: Any) -> dict[str, Any]:
        """Ganeti's xen-pvm/xen-hvm defaults with the files under the case's root."""
        hvp = dict(tables.HVC_DEFAULTS[C.HT_XEN_HVM if hvm else C.HT_XEN_PVM])
        if hvm:
            hvp.update(kernel_path=self.file("xen/boot/hvmloader"),
                       device_model=self.file("xen/bin/qemu-system-i386"),
                       vnc_password_file=self.file("etc/vnc-cluster-password"))
        else:
            hvp.update(kernel_path=self.file("boot/vmlinuz-xen"))
        hvp.update(overrides)
        for param in (C.HV_KERNEL_PATH, C.HV_INITRD_PATH, C.HV_BOOTLOADER_PATH,
                      C.HV_CDROM_IMAGE_PATH, C.HV_VIF_SCRIPT):
            value = hvp.get(param)
            if value and value.startswith(self.env.root + "/"):
                self.file(value[len(self.env.root) + 1:])
        return hvp

    def build_xen(self, doc: str, hvp: dict[str, Any], *, vcpus: int = 1,
                  maxmem: int = 512, network_port: int | None = None) -> Case:
        hvm = C.HV_DEVICE_MODEL in hvp
        options = StartupOptions(
            target=GuestTarget(domain_type="xen", arch="x86_64",
                               machine=HVM_MACHINE if hvm else PV_MACHINE),
            startup_memory=maxmem,
            vnc_listen=Listen(address=hvp[C.HV_VNC_BIND_ADDRESS] or "0.0.0.0")
            if hvm else None,
            vnc_password=VNC_PASSWORD if hvm else None)
        return self._case(doc, hvp, options, C.HT_XEN_HVM if hvm else C.HT_XEN_PVM,
                          vcpus, maxmem, network_port)

    def _case(self, doc: str, hvp: dict[str, Any], options: StartupOptions,
              hypervisor: str, vcpus: int, maxmem: int, network_port: int | None) -> Case:
        instance = dict(name=self.host, uuid=self.uuid("instance"), hypervisor=hypervisor,
                        primary_node="node1.example.com", os="debootstrap+default",
                        beparams={"maxmem": maxmem, "minmem": min(256, maxmem),
                                  "vcpus": vcpus},
                        network_port=network_port,
                        disk_template=self.disks[0][0]["dev_type"] if self.disks
                        else C.DT_DISKLESS)
        return Case(self.name, doc, instance, self.disks, self.nics, hvp, options,
                    self.files, self.dirs)

    def build(self, doc: str, hvp: dict[str, Any], *, vcpus: int = 1, maxmem: int = 512,
              startup_memory: int | None = None, network_port: int | None = None) -> Case:
        vnc, spice = hvp[C.HV_VNC_BIND_ADDRESS], hvp[C.HV_KVM_SPICE_BIND]
        if vnc.startswith("/"):
            self.dir(vnc[len(self.env.root) + 1:])
        for param in (C.HV_KERNEL_PATH, C.HV_INITRD_PATH, C.HV_CDROM_IMAGE_PATH,
                      C.HV_KVM_CDROM2_IMAGE_PATH, C.HV_KVM_FLOPPY_IMAGE_PATH,
                      C.HV_VNC_PASSWORD_FILE, C.HV_KVM_SPICE_PASSWORD_FILE):
            value = hvp[param]
            if value and value.startswith(self.env.root + "/"):
                self.file(value[len(self.env.root) + 1:])
        if hvp[C.HV_MEM_PATH]:
            self.dir(hvp[C.HV_MEM_PATH][len(self.env.root) + 1:])
        options = StartupOptions(
            target=GuestTarget(domain_type=self.env.domain_type, arch="x86_64",
                               machine=hvp[C.HV_KVM_MACHINE_VERSION] or None,
                               emulator=hvp[C.HV_KVM_PATH]),
            startup_memory=startup_memory or maxmem,
            vnc_listen=(Listen(socket=f"{vnc}/{self.host}.vnc") if vnc.startswith("/")
                        else Listen(address=vnc)) if vnc else None,
            spice_listen=Listen(address=spice) if spice else None,
            vnc_password=VNC_PASSWORD if vnc and hvp[C.HV_VNC_PASSWORD_FILE] else None,
            spice_password=SPICE_PASSWORD if spice and hvp[C.HV_KVM_SPICE_PASSWORD_FILE]
            else None,
            security_label=QEMU_LABEL if hvp[C.HV_SECURITY_MODEL] == C.HT_SM_USER else None,
            linux_bridge_vlans=True)
        return self._case(doc, hvp, options, C.HT_KVM, vcpus, maxmem, network_port)


def _logical_id(template: str, dev_uuid: str, index: int, file_driver: str
                ) -> tuple[Any, ...]:
    """A Ganeti-shaped logical_id (the XML does not use it; Ganeti's FromDict does)."""
    if template == C.DT_DRBD8:
        return ("node1.example.com", "node2.example.com", 11000 + index, index, index,
                "0123456789abcdef")
    return {C.DT_PLAIN: ("xenvg", f"{dev_uuid}.disk{index}"),
            C.DT_BLOCK: ("manual", f"/dev/disk/by-id/wwn-0x5000c500{index:08x}"),
            C.DT_EXT: ("ext-provider", f"{dev_uuid}.ext.disk{index}"),
            C.DT_RBD: ("rbd", f"{dev_uuid}.rbd.disk{index}")}.get(
                template, (file_driver, f"/srv/ganeti/file-storage/{dev_uuid}/disk{index}"))


CaseFn = Callable[[Env], Case]
CASES: dict[str, CaseFn] = {}


def case(fn: Callable[[_Shape], Case]) -> Callable[[_Shape], Case]:
    CASES[fn.__name__] = lambda env, _fn=fn: _fn(_Shape(_fn.__name__, env))
    return fn


def build(name: str, env: Env = GOLDEN_ENV) -> Case:
    return CASES[name](env)


def kernel_boot(s: _Shape, **extra: Any) -> dict[str, Any]:
    return dict(kernel_path=s.file("boot/vmlinuz"), initrd_path=s.file("boot/initrd.img"),
                root_path="/dev/vda1", kernel_args="ro quiet", **extra)


# ------------------------------------------------------------------------------ boot

@case
def kernel_boot_plain(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("direct kernel boot (kernel, initrd, root, args, serial console at "
                   "115200), one plain disk, one bridged virtio NIC",
                   s.hvparams(**kernel_boot(s, serial_speed=115200)))


@case
def templates_block(s: _Shape) -> Case:
    for template in (C.DT_PLAIN, C.DT_DRBD8, C.DT_BLOCK, C.DT_EXT, C.DT_RBD):
        s.disk(template)
    s.nic()
    return s.build("block-device templates plain, drbd, blockdev, ext and kernel-space "
                   "rbd -> type='block' on virtio; disk boot",
                   s.hvparams(boot_order=C.HT_BO_DISK))


@case
def templates_file(s: _Shape) -> Case:
    s.disk(C.DT_FILE)
    s.disk(C.DT_SHARED_FILE)
    s.disk(C.DT_GLUSTER, access=C.DISK_KERNELSPACE)
    s.nic()
    return s.build("file-based templates file, sharedfile and kernel-space gluster -> "
                   "type='file'; disk_cache writeback, disk_discard unmap, disk_aio io_uring",
                   s.hvparams(disk_cache="writeback", disk_discard="unmap",
                              disk_aio="io_uring"))


@case
def templates_userspace(s: _Shape) -> Case:
    s.disk(C.DT_RBD, access=C.DISK_USERSPACE, uri="rbd:rbd/vol-7f3a")
    s.disk(C.DT_RBD, access=C.DISK_USERSPACE, uri="rbd:ganeti/vol-19c2:id=ganeti")
    s.disk(C.DT_GLUSTER, access=C.DISK_USERSPACE,
           uri="gluster://gluster1.example.com:24007/gv0/ganeti/vol-5521.0")
    s.disk(C.DT_GLUSTER, access=C.DISK_USERSPACE,
           uri="gluster://gluster2.example.com/gv1/ganeti/vol-88e0.1")
    s.nic()
    return s.build("userspace disks: rbd, rbd with id= (ceph auth secret), gluster with "
                   "and without port -> network disks", s.hvparams())


@case
def readonly_virtio(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_PLAIN, mode=C.DISK_RDONLY)
    s.disk(C.DT_FILE, mode=C.DISK_RDONLY)
    s.nic()
    return s.build("read-only virtio disks (block and file) next to a read-write one",
                   s.hvparams(disk_cache="none", disk_aio="native"))


@case
def disks_ide(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_DRBD8)
    s.nic()
    return s.build("disk_type ide: an IDE cdrom at hda, then two IDE disks (Ganeti's -drive "
                   "order: cdroms before disks)",
                   s.hvparams(disk_type=C.HT_DISK_IDE, cdrom_image_path=s.file("iso/tools.iso")))


@case
def scsi_hd_lsi(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_FILE)
    s.disk(C.DT_PLAIN, mode=C.DISK_RDONLY)
    s.nic()
    return s.build("disk_type scsi-hd on an lsi controller (SCSI id in 'unit'), one "
                   "read-only", s.hvparams(disk_type="scsi-hd", scsi_controller_type="lsi"))


@case
def scsi_hd_dc390(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_SHARED_FILE)
    s.nic()
    return s.build("disk_type scsi-hd on a dc390 (am53c974) controller",
                   s.hvparams(disk_type="scsi-hd", scsi_controller_type="dc390"))


@case
def scsi_cd_megasas(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_FILE)
    s.nic()
    return s.build("disk_type scsi-cd on a megasas controller (lsisas1078, SCSI id in "
                   "'target')", s.hvparams(disk_type="scsi-cd", scsi_controller_type="megasas"))


@case
def scsi_block_virtio_scsi(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_BLOCK)
    s.disk(C.DT_DRBD8)
    s.nic()
    return s.build("disk_type scsi-block (device='lun') on virtio-scsi, block templates",
                   s.hvparams(disk_type="scsi-block", scsi_controller_type="virtio-scsi-pci"))


@case
def scsi_hd_virtio_scsi_cdrom(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_EXT, mode=C.DISK_RDONLY)
    s.nic()
    return s.build("disk_type scsi-hd on virtio-scsi, with a scsi cdrom sharing the "
                   "controller", s.hvparams(disk_type="scsi-hd",
                                            scsi_controller_type="virtio-scsi-pci",
                                            cdrom_image_path=s.file("iso/install.iso")))


# ------------------------------------------------------------------------------ NICs

@case
def nic_modes(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    s.nic(C.NIC_MODE_BRIDGED, "br0", vlan=".100")
    s.nic(C.NIC_MODE_ROUTED)
    s.nic(C.NIC_MODE_OVS, "ovsbr0", vlan=".100:200")
    s.nic(C.NIC_MODE_OVS, "ovsbr0", vlan=":10:20")
    s.nic(C.NIC_MODE_OVS, "ovsbr1")
    return s.build("NIC modes: bridged, bridged VLAN .100, routed, openvswitch VLAN "
                   ".100:200 (native untagged + trunk), :10:20 (trunk) and without VLAN",
                   s.hvparams())


@case
def nic_vhost_multiqueue(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    s.nic(C.NIC_MODE_OVS, "ovsbr0", vlan="42")
    return s.build("virtio NICs with vhost_net and virtio_net_queues=4, 4 vCPUs",
                   s.hvparams(vhost_net=True, virtio_net_queues=4), vcpus=4)


@case
def nic_rtl8139(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    s.nic(C.NIC_MODE_ROUTED)
    return s.build("nic_type rtl8139 (bridged and routed)", s.hvparams(nic_type="rtl8139"))


@case
def nic_pcnet(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    return s.build("nic_type pcnet", s.hvparams(nic_type="pcnet"))


# ------------------------------------------------------------------------------ graphics

@case
def vnc_ip_password_keymap(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("VNC on an IP with password and keymap, default tablet, nic_type e1000",
                   s.hvparams(vnc_bind_address="192.0.2.10",
                              vnc_password_file=s.file("vnc.pw"), keymap="de",
                              nic_type="e1000"),
                   network_port=5901)


@case
def vnc_unix_socket(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("VNC on a unix socket in a directory, vga std, usb_mouse mouse",
                   s.hvparams(vnc_bind_address=s.dir("vnc"), vga="std", usb_mouse="mouse"),
                   network_port=5902)


@case
def spice_full_tls(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("SPICE with TLS, password, every compression/streaming option, vdagent,"
                   " sound through SPICE, nic_type i82557b",
                   s.hvparams(spice_bind="192.0.2.20", spice_ip_version=4,
                              spice_password_file=s.file("spice.pw"),
                              spice_image_compression="auto_glz",
                              spice_jpeg_wan_compression="auto",
                              spice_zlib_glz_wan_compression="always",
                              spice_streaming_video="filter",
                              spice_playback_compression=False, spice_use_tls=True,
                              spice_use_vdagent=True, keymap="en-us", soundhw="hda",
                              nic_type="i82557b"),
                   network_port=5903)


@case
def spice_no_vdagent(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("SPICE without TLS, password or vdagent (server mouse), vga virtio, "
                   "nic_type i82559er",
                   s.hvparams(spice_bind="192.0.2.21", spice_use_vdagent=False, vga="virtio",
                              nic_type="i82559er"),
                   network_port=5904)


# ------------------------------------------------------------------------------ boot devices

@case
def boot_cdrom_local_ide(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("boot from a local ISO on IDE (cdrom_disk_type ide) plus an IDE cdrom2",
                   s.hvparams(boot_order=C.HT_BO_CDROM,
                              cdrom_image_path=s.file("iso/install.iso"),
                              cdrom2_image_path=s.file("iso/drivers.iso"),
                              cdrom_disk_type=C.HT_DISK_IDE))


@case
def boot_cdrom_https_scsi(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("boot from an https ISO: on IDE whatever cdrom_disk_type (scsi-cd) says;"
                   " an https cdrom2 with port and query on scsi-cd (lsi controller)",
                   s.hvparams(boot_order=C.HT_BO_CDROM,
                              cdrom_image_path="https://mirror.example.com/debian/netinst.iso",
                              cdrom2_image_path="https://mirror.example.com:8443/tools.iso?v=2",
                              cdrom_disk_type="scsi-cd"))


@case
def boot_cdrom_default(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("boot from a cdrom with Ganeti's default disk types (paravirtual): an IDE "
                   "CD-ROM first in the boot order, the disk on virtio",
                   s.hvparams(boot_order=C.HT_BO_CDROM,
                              cdrom_image_path=s.file("iso/install.iso")))


@case
def boot_cdrom_ide_disks_virtio_cdrom2(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("boot from a cdrom with disk_type ide and cdrom_disk_type paravirtual: "
                   "the boot cdrom at hda, the IDE disks after it, cdrom2 a virtio disk",
                   s.hvparams(boot_order=C.HT_BO_CDROM, disk_type=C.HT_DISK_IDE,
                              cdrom_disk_type=C.HT_DISK_PARAVIRTUAL,
                              cdrom_image_path=s.file("iso/install.iso"),
                              cdrom2_image_path=s.file("iso/drivers.iso")))


@case
def cdrom_paravirtual(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("cdrom_disk_type paravirtual: both cdroms as read-only virtio disks at "
                   "their fixed slots; disk boot",
                   s.hvparams(cdrom_image_path=s.file("iso/install.iso"),
                              cdrom2_image_path=s.file("iso/drivers.iso"),
                              cdrom_disk_type=C.HT_DISK_PARAVIRTUAL))


@case
def boot_floppy(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("boot from a floppy image, nic_type ne2k_pci",
                   s.hvparams(boot_order=C.HT_BO_FLOPPY,
                              floppy_image_path=s.file("floppy/boot.img"),
                              nic_type="ne2k_pci"))


@case
def boot_network(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    s.nic(C.NIC_MODE_ROUTED)
    return s.build("network boot from the first NIC, nic_type i82551",
                   s.hvparams(boot_order=C.HT_BO_NETWORK, nic_type="i82551"))


# ------------------------------------------------------------------------------ CPU, memory

@case
def cpu_pin_single_host(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("cpu_mask 0-1 (every vCPU and the emulator), cpu_type host, 2 vCPUs",
                   s.hvparams(cpu_mask="0-1", cpu_type="host"), vcpus=2)


@case
def cpu_pin_multi_model_topology(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("cpu_mask per vCPU with 'all', cpu_type model with +/- features, "
                   "topology 2 sockets x 1 core x 2 threads",
                   s.hvparams(cpu_mask="0:all:1,3:2-3", cpu_type="Nehalem,+aes,-x2apic",
                              cpu_sockets=2, cpu_cores=1, cpu_threads=2), vcpus=4)


@case
def cpu_topology_cores(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("topology with sockets only (cores derived), cpu_type qemu64 with "
                   "flag=on/off features",
                   s.hvparams(cpu_type="qemu64,ssse3=on,svm=off", cpu_sockets=2), vcpus=4)


@case
def security_user_hugepages(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("security_model user (DAC label +64055:+64055), mem_path hugepages, "
                   "ballooned start (startup memory below maxmem)",
                   s.hvparams(security_model=C.HT_SM_USER, security_domain=QEMU_USER,
                              mem_path=s.dir("hugepages")),
                   maxmem=1024, startup_memory=768)


# ------------------------------------------------------------------------------ platform

@case
def platform_options(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("use_localtime, acpi off, reboot_behavior exit, use_guest_agent, soundhw"
                   " hda without SPICE, usb_mouse tablet, usb_devices keyboard + host "
                   "device, vga cirrus, no serial console",
                   s.hvparams(**kernel_boot(s), use_localtime=True, acpi=False,
                              reboot_behavior=C.INSTANCE_REBOOT_EXIT, use_guest_agent=True,
                              soundhw="hda", usb_mouse="tablet",
                              usb_devices="keyboard,host:046d:c52b", vga="cirrus",
                              serial_console=False))


@case
def kvm_extra_machine(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("kvm_extra as qemu:commandline arguments, machine_version "
                   "pc-i440fx-7.2, user_shutdown and migration params (runtime only)",
                   s.hvparams(kvm_extra="-global kvm-pit.lost_tick_policy=delay -no-hpet",
                              machine_version="pc-i440fx-7.2", user_shutdown=True,
                              migration_caps="xbzrle:auto-converge", migration_downtime=100))


@case
def pci_reservations_zero(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_FILE)
    s.nic()
    s.nic(C.NIC_MODE_ROUTED)
    return s.build("kvm_pci_reservations 0: disks and NICs from the first slot after the "
                   "platform range, with guest agent and sound taking their fixed slots",
                   s.hvparams(kvm_pci_reservations=0, use_guest_agent=True, soundhw="ac97",
                              disk_type="scsi-hd", scsi_controller_type="virtio-scsi-pci",
                              nic_type="e1000"))


@case
def pci_reservations_twenty(s: _Shape) -> Case:
    for template in (C.DT_PLAIN, C.DT_PLAIN, C.DT_DRBD8, C.DT_FILE):
        s.disk(template)
    s.nic()
    s.nic(C.NIC_MODE_OVS, "ovsbr0")
    s.nic(C.NIC_MODE_ROUTED)
    return s.build("kvm_pci_reservations 20: 4 disks and 3 NICs in slots 20-26",
                   s.hvparams(kvm_pci_reservations=20))


@case
def diskless_minimal(s: _Shape) -> Case:
    return s.build("no disks, no NICs, no graphics: the smallest domain (kernel boot)",
                   s.hvparams(**kernel_boot(s)), maxmem=128)




# ------------------------------------------------------------------------------ q35

@case
def q35_virtio(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_DRBD8)
    s.nic()
    s.nic(C.NIC_MODE_ROUTED)
    return s.build("machine_version pc-q35-7.2: pcie-root, each disk and NIC behind a "
                   "pcie-root-port of its own (ports 1-4 at slot 12, functions 0-3), four "
                   "free ports for hotplug, ICH9 USB at slot 0x1d, AHCI at 0x1f.2; VNC with "
                   "a tablet, guest agent, sound at their fixed pcie.0 slots",
                   s.hvparams(machine_version="pc-q35-7.2", vnc_bind_address="127.0.0.1",
                              use_guest_agent=True, soundhw="hda"), network_port=11021)


@case
def q35_many_ports(s: _Shape) -> Case:
    for template in (C.DT_PLAIN, C.DT_PLAIN, C.DT_FILE, C.DT_RBD):
        s.disk(template)
    for link in ("br0", "br1", "br2"):
        s.nic(link=link)
    return s.build("machine_version q35, 4 disks and 3 e1000 NICs: 7 device ports and 4 "
                   "free ones fill slot 20 (multifunction) and start slot 21; kernel boot",
                   s.hvparams(**kernel_boot(s), machine_version="q35", nic_type="e1000",
                              kvm_pci_reservations=20))


@case
def q35_cdrom_boot(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("q35 booting from cdrom: the boot cdrom a SATA CD-ROM on AHCI port 0 "
                   "(q35 has no IDE), cdrom2 a virtio disk at its fixed pcie.0 slot",
                   s.hvparams(machine_version="pc-q35-7.2", boot_order=C.HT_BO_CDROM,
                              cdrom_disk_type=C.HT_DISK_PARAVIRTUAL,
                              cdrom_image_path=s.file("iso/install.iso"),
                              cdrom2_image_path=s.file("iso/drivers.iso")))


@case
def q35_ide_disks(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_FILE)
    s.nic()
    return s.build("q35 with disk_type ide: the cdrom and the disks on AHCI ports 0-2 "
                   "(where QEMU puts -drive if=ide on q35), the NIC behind a root port",
                   s.hvparams(machine_version="pc-q35-7.2", disk_type=C.HT_DISK_IDE,
                              cdrom_image_path=s.file("iso/tools.iso")))


@case
def q35_floppy(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build("q35 booting from a floppy image: drive A of an explicit fdc controller "
                   "(QEMU's isa-fdc: q35 has no floppy controller built in)",
                   s.hvparams(machine_version="pc-q35-7.2", boot_order=C.HT_BO_FLOPPY,
                              floppy_image_path=s.file("floppy/boot.img")))


@case
def q35_scsi(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_PLAIN, mode=C.DISK_RDONLY)
    s.nic()
    return s.build("q35 with disk_type scsi-hd on virtio-scsi (controller at its pcie.0 "
                   "slot) and cdrom_disk_type ide: a SATA cdrom (sda), SCSI disks sdb, sdc",
                   s.hvparams(machine_version="pc-q35-7.2", disk_type="scsi-hd",
                              scsi_controller_type="virtio-scsi-pci",
                              cdrom_disk_type=C.HT_DISK_IDE,
                              cdrom_image_path=s.file("iso/tools.iso")))


# ------------------------------------------------------------------------- Xen (libxl)

@case
def xen_pv_kernel(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic()
    return s.build_xen("Xen PV, direct kernel boot (kernel, initrd, root, args), one plain "
                       "disk as sda, one bridged netfront vif",
                       s.xen_hvparams(False, initrd_path=s.file("boot/initrd-xen"),
                                      root_path="/dev/sda1", kernel_args="ro console=hvc0"))


@case
def xen_pv_bootloader(s: _Shape) -> Case:
    s.disk(C.DT_DRBD8)
    s.nic()
    return s.build_xen("Xen PV booted by pygrub with bootloader_args (no kernel), a drbd "
                       "disk, a vif with vif_script", s.xen_hvparams(
                           False, use_bootloader=True,
                           bootloader_path=s.file("xen/bin/pygrub"), bootloader_args="-q",
                           vif_script=s.file("xen/scripts/vif-ganeti")), vcpus=2)


@case
def xen_pv_templates_block(s: _Shape) -> Case:
    for template in (C.DT_PLAIN, C.DT_DRBD8, C.DT_BLOCK, C.DT_EXT, C.DT_RBD):
        s.disk(template)
    s.disk(C.DT_PLAIN, mode=C.DISK_RDONLY)
    s.nic()
    return s.build_xen("Xen PV, block templates plain, drbd, blockdev, ext, kernel-space "
                       "rbd and a read-only disk -> blkback (driver phy), prefix xvd",
                       s.xen_hvparams(False, blockdev_prefix="xvd"))


@case
def xen_pv_templates_file(s: _Shape) -> Case:
    s.disk(C.DT_FILE, file_driver=C.FD_LOOP)
    s.disk(C.DT_SHARED_FILE, file_driver=C.FD_BLKTAP)
    s.disk(C.DT_GLUSTER, access=C.DISK_KERNELSPACE, file_driver=C.FD_BLKTAP2)
    s.nic()
    return s.build_xen("Xen PV, file-based templates with the loop, blktap and blktap2 "
                       "file drivers -> driver file, tap, tap2", s.xen_hvparams(False))


@case
def xen_pv_nic_modes(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0", ip="192.0.2.10")
    s.nic(C.NIC_MODE_ROUTED, ip="192.0.2.11")
    s.nic(C.NIC_MODE_OVS, "ovs0", vlan=".100")
    s.nic(C.NIC_MODE_OVS, "ovs1", vlan=":10:20")
    return s.build_xen("Xen PV NICs: bridged with an IP, routed (ethernet, IP for the "
                       "script), openvswitch access VLAN and trunk; all with vif_script",
                       s.xen_hvparams(False, vif_script=s.file("xen/scripts/vif-ganeti")))


@case
def xen_pv_pinning(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    return s.build_xen("Xen PV, one CPU mask per vCPU ('all' leaves vCPU 2 unpinned), "
                       "cpu_weight 512, reboot_behavior exit",
                       s.xen_hvparams(False, cpu_mask="0:1-3:all:2", cpu_weight=512,
                                      reboot_behavior=C.INSTANCE_REBOOT_EXIT), vcpus=4)


@case
def xen_hvm_disk_boot(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.disk(C.DT_DRBD8)
    s.nic()
    return s.build_xen("Xen HVM booting from disk (boot_order c), paravirtual disks on "
                       "the xen bus named hda/hdb, rtl8139, VNC at network_port with the "
                       "cluster password, every CPU pinned to 0-1",
                       s.xen_hvparams(True, boot_order="c", cpu_mask="0-1"),
                       vcpus=2, maxmem=1024, network_port=11017)


@case
def xen_hvm_cdrom_boot(s: _Shape) -> Case:
    for _ in range(3):
        s.disk(C.DT_PLAIN)
    s.nic()
    return s.build_xen("Xen HVM booting from cdrom then disk (boot_order dc): the cdrom "
                       "at hdc, three ioemu (IDE) disks skipping hdc, e1000, localtime",
                       s.xen_hvparams(True, boot_order="dc", disk_type="ioemu",
                                      cdrom_image_path=s.file("iso/install.iso"),
                                      nic_type="e1000", use_localtime=True),
                       network_port=11018)


@case
def xen_hvm_devices(s: _Shape) -> Case:
    s.disk(C.DT_FILE)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    s.nic(C.NIC_MODE_OVS, "ovs0", vlan=".42")
    return s.build_xen("Xen HVM with VNC on 127.0.0.1, sound (hda), two PCI devices "
                       "passed through (one permissive), cpuid flags, netfront NICs "
                       "(nic_type paravirtual)",
                       s.xen_hvparams(True, vnc_bind_address="127.0.0.1", soundhw="hda",
                                      pci_pass="0000:03:00.0;04:00.1,permissive=1",
                                      cpuid="host,sse3=0,aes=1", nic_type="paravirtual",
                                      cpu_weight=1024),
                       vcpus=2, network_port=11019)


@case
def xen_hvm_netboot(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_BRIDGED, "br0")
    return s.build_xen("Xen HVM network boot first (boot_order nc), ne2k_pci, no ACPI, "
                       "no network_port (VNC port picked by libvirt)",
                       s.xen_hvparams(True, boot_order="nc", nic_type="ne2k_pci",
                                      acpi=False))


@case
def xen_hvm_routed(s: _Shape) -> Case:
    s.disk(C.DT_PLAIN)
    s.nic(C.NIC_MODE_ROUTED, ip="198.51.100.7")
    return s.build_xen("Xen HVM with a routed ne2k_isa NIC (ethernet, IP for the vif "
                       "script), reboot_behavior exit",
                       s.xen_hvparams(True, nic_type="ne2k_isa",
                                      reboot_behavior=C.INSTANCE_REBOOT_EXIT),
                       network_port=11020)


NAMES = sorted(CASES)
KVM_NAMES = [n for n in NAMES if not n.startswith("xen_")]
XEN_NAMES = [n for n in NAMES if n.startswith("xen_")]
