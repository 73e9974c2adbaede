"""hv_kvm's device model as libvirt domain XML: the QEMU Ganeti's KVM hypervisor runs,
spelled out so that libvirt starts an identical one for the incoming migration stream.

libvirt always passes ``-nodefaults`` and hv_kvm never does, so every device QEMU adds
by itself is written out at the place QEMU put it: standard VGA at slot 2, the PIIX3
UHCI controller at 1.2 (``-usb``), the virtio balloon at the first free slot in the
order hv_kvm emits its devices, the ISA parallel port, an empty IDE CD-ROM (hdc) and an
empty floppy. Virtio disks and NICs sit at the slots hv_kvm recorded in their hvinfo,
IDE disks at the units QEMU gave them (which depend on the Ganeti release). The
machine type is the resolved one (the stream carries it), the CPU topology explicit
(QEMU's rules for ``-smp`` differ from libvirt's default).

The stream itself is QEMU's only check: a missing device section or RAM block fails
the restore cleanly, but some differences restore silently with a guest-visible
change (a missing empty drive, another topology, another CPU model). So this module
refuses, with a HypervisorError naming the hvparam or option, everything it cannot
reproduce exactly; it never guesses. Pure: node facts come in ``NodeFacts``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import addresses, channels, cpu, disks, identity, metadata, nics
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover.runtime import Device, KvmRuntime, Option

# Migration capabilities that work over a one-way, single stream (set on the source
# only); the others need QEMU on both sides to agree or a return path.
ONE_WAY_CAPABILITIES = frozenset({"xbzrle", "auto-converge"})
VGA_VRAM_KIB = 16384  # QEMU's standard VGA: 16 MiB of video RAM
VNC_BASE_PORT = 5900
# NIC types hv_kvm puts on the PCI bus with -device, by libvirt model name.
NIC_MODELS = {"paravirtual": "virtio", "e1000": "e1000", "rtl8139": "rtl8139",
              "ne2k_pci": "ne2k_pci", "i82551": "i82551", "i82557b": "i82557b",
              "i82559er": "i82559er", "pcnet": "pcnet"}
# disk_type -> the driver hv_kvm records in a disk's hvinfo (3.0 and 3.1 alike).
DISK_DRIVERS = {C.HT_DISK_PARAVIRTUAL: "virtio-blk-pci", C.HT_DISK_IDE: C.HT_DISK_IDE}
# The (bus, unit) QEMU gives IDE disks in order, by the Ganeti release whose hv_kvm
# started it. 3.0 passes "-drive if=ide": units in index order, QEMU's empty CD-ROM at
# index 2 unless a disk took it. 3.1 passes "-device ide-hd" without a bus: QEMU takes
# the last IDE bus with room first, and drops its default CD-ROM for such a device.
IDE_UNITS = {(3, 0): ((0, 0), (0, 1), (1, 0), (1, 1)),
             (3, 1): ((1, 0), (1, 1), (0, 0), (0, 1))}
CDROM_UNIT = (1, 0)
_MACHINE_VERSION = re.compile(r"^pc-(?:i440fx-)?(\d+)\.(\d+)")
# Ganeti's own host-side options: they shape no guest device.
_HOST_SIDE = frozenset({"-pidfile", "-D", "-daemonize", "-monitor", "-qmp", "-k"})
# hvparams whose (non-empty) value this translation cannot reproduce yet, and why.
_UNSUPPORTED = {
    C.HV_KVM_EXTRA: "arbitrary QEMU options cannot be matched by a libvirt domain",
    C.HV_MEM_PATH: "hugepage-backed memory is not translated",
    C.HV_KVM_SPICE_BIND: "SPICE is not translated",
    C.HV_SOUNDHW: "sound devices are not translated",
    C.HV_USE_GUEST_AGENT: "the guest agent's virtio-serial device is not translated",
    C.HV_CPU_TYPE: "the guest's CPU model and flags cannot be proven identical",
    C.HV_USB_DEVICES: "extra USB devices are not translated",
    C.HV_CDROM_IMAGE_PATH: "CD-ROM images are not translated",
    C.HV_KVM_CDROM2_IMAGE_PATH: "CD-ROM images are not translated",
    C.HV_KVM_FLOPPY_IMAGE_PATH: "floppy images are not translated",
    C.HV_KVM_USE_CHROOT: "QEMU's chroot has no libvirt equivalent",
    C.HV_VNC_TLS: "VNC with TLS is not translated",
    C.HV_VNC_X509: "VNC with x509 is not translated",
}


@dataclass(frozen=True)
class NodeFacts:
    """What the target node contributes (the caller asks libvirt and the files)."""

    # alias -> canonical machine type, as the target's QEMU resolves it (pc -> pc-i440fx-7.2)
    machine_aliases: Mapping[str, str] = field(default_factory=dict)
    serial_log: str | None = None
    vnc_password: str | None = field(default=None, repr=False)
    security_label: str | None = None  # "+uid:+gid" for security_model user
    linux_bridge_vlans: bool = True
    # The Ganeti the node runs: its hv_kvm started the source, as Ganeti's own
    # AcceptInstance assumes of a runtime (a cluster runs one version).
    ganeti: tuple[int, int] = (3, 0)


def effective_hvparams(runtime: KvmRuntime, conf: Mapping[str, Any]) -> dict[str, Any]:
    """hv_kvm's ``up_hvp``: the hvparams the instance started with, filled in with the
    configured ones for parameters newer than its start."""
    merged = dict(conf)
    merged.update(runtime.hvparams)
    return merged


def problems(runtime: KvmRuntime, instance: Any) -> list[str]:
    """What in this runtime cannot be reproduced exactly (empty: translatable)."""
    hvp = effective_hvparams(runtime, getattr(instance, "hvparams", {}) or {})
    conf = getattr(instance, "hvparams", {}) or {}
    found = []
    for param, why in _UNSUPPORTED.items():
        if hvp.get(param):
            found.append(f"{param} ({hvp[param]!r}): {why}")
    for cap in [c for c in str(conf.get(C.HV_KVM_MIGRATION_CAPS) or "").split(":") if c]:
        if cap not in ONE_WAY_CAPABILITIES:
            found.append(f"{C.HV_KVM_MIGRATION_CAPS}: capability {cap!r} needs QEMU's "
                         "return path or a multi-stream target; only "
                         f"{', '.join(sorted(ONE_WAY_CAPABILITIES))} can be handed over")
    model = conf.get(C.HV_SECURITY_MODEL) or C.HT_SM_NONE
    if model not in (C.HT_SM_NONE, C.HT_SM_USER):
        found.append(f"{C.HV_SECURITY_MODEL} ({model!r}): no libvirt security label maps "
                     "a uid pool")
    disk_type = hvp.get(C.HV_DISK_TYPE)
    if disk_type not in DISK_DRIVERS:
        found.append(f"{C.HV_DISK_TYPE} ({disk_type!r}): only paravirtual and IDE disks "
                     "are translated")
    elif disk_type == C.HT_DISK_IDE and len(runtime.disks) > len(IDE_UNITS[(3, 0)]):
        found.append(f"{C.HV_DISK_TYPE} 'ide' with {len(runtime.disks)} disks: the IDE "
                     f"bus has {len(IDE_UNITS[(3, 0)])} units")
    if hvp.get(C.HV_NIC_TYPE) not in NIC_MODELS:
        found.append(f"{C.HV_NIC_TYPE} ({hvp.get(C.HV_NIC_TYPE)!r}): not a PCI NIC "
                     "hv_kvm places")
    if hvp.get(C.HV_NIC_TYPE) == C.HT_NIC_PARAVIRTUAL and runtime.nics \
            and not hvp.get(C.HV_VNET_HDR, True):
        found.append(f"{C.HV_VNET_HDR} (False): libvirt always opens virtio taps with "
                     "vnet headers, which changes the NIC's offload features")
    if hvp.get(C.HV_VGA) not in ("", None, "std", "none"):
        found.append(f"{C.HV_VGA} ({hvp.get(C.HV_VGA)!r}): only the standard VGA is "
                     "translated")
    if hvp.get(C.HV_USB_MOUSE) not in ("", None, "mouse", "tablet"):
        found.append(f"{C.HV_USB_MOUSE} ({hvp.get(C.HV_USB_MOUSE)!r}): not a USB pointer "
                     "libvirt models")
    return found


def _smp(value: str, machine: str) -> tuple[int, int, int, int]:
    """(cpus, sockets, cores, threads) as QEMU 7.2 computes them for ``-smp value`` on
    ``machine``: omitted counts are derived, preferring cores from machine types 6.2
    on and sockets before."""
    head, *rest = value.split(",")
    counts = {"cpus": head}
    for item in rest:
        key, _, val = item.partition("=")
        if key not in ("cores", "threads", "sockets"):
            raise HypervisorError(f"-smp {value!r}: {key!r} is not translated")
        counts[key] = val
    try:
        cpus, sockets, cores, threads = (int(counts.get(k) or 0) for k in
                                         ("cpus", "sockets", "cores", "threads"))
    except ValueError:
        raise HypervisorError(f"-smp {value!r}: not numbers") from None
    match = _MACHINE_VERSION.match(machine)
    if not match:
        raise HypervisorError(f"machine type {machine!r}: its -smp rules are not known")
    prefer_sockets = (int(match.group(1)), int(match.group(2))) < (6, 2)
    maxcpus = cpus
    if maxcpus == 0:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
        maxcpus = sockets * cores * threads
    elif prefer_sockets:
        if sockets == 0:
            cores, threads = cores or 1, threads or 1
            sockets = maxcpus // (cores * threads)
        elif cores == 0:
            threads = threads or 1
            cores = maxcpus // (sockets * threads)
    else:
        if cores == 0:
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = maxcpus // (cores * threads)
    if threads == 0:
        threads = maxcpus // (sockets * cores)
    cpus = cpus or maxcpus
    if sockets * cores * threads != maxcpus or not cpus:
        raise HypervisorError(f"-smp {value!r}: QEMU would refuse this topology")
    return cpus, sockets, cores, threads


def _vnc(value: str) -> tuple[str, int, bool]:
    """(listen address, TCP port, password) of hv_kvm's ``-vnc`` value."""
    where, *flags = value.split(",")
    unknown = [f for f in flags if f != "password"]
    if unknown:
        raise HypervisorError(f"-vnc {value!r}: {', '.join(unknown)} not translated")
    if where.startswith("unix:"):
        raise HypervisorError(f"-vnc {value!r}: a VNC socket is not translated")
    host, sep, display = where.rpartition(":")
    if not sep or not display.isdigit():
        raise HypervisorError(f"-vnc {value!r}: not ADDRESS:DISPLAY")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise HypervisorError(f"-vnc {value!r}: {host!r} is not an IP address") from None
    return host, VNC_BASE_PORT + int(display), "password" in flags


@dataclass(slots=True)  # the option tables set fields by name: a misspelt one raises
class _Parsed:
    """The command line's meaning."""

    memory: int = 0
    smp: str = "1"
    machine: str = ""
    accel: str | None = None       # from -machine accel= / -enable-kvm / -disable-kvm
    acpi: bool = True
    no_reboot: bool = False
    paused: bool = False
    boot: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    serial: bool = False
    usb: bool = False
    pointer: str | None = None     # usb tablet or mouse
    vnc: tuple[str, int, bool] | None = None
    localtime: bool = False
    vga: str = "std"
    uuid: str | None = None
    name: str | None = None
    balloon: bool = False


# hv_kvm's options that set a field of _Parsed: to their value; to a constant (flags);
# to what one of a few accepted values means (any other value is refused).
_VALUE_OPTIONS = {"-name": "name", "-smp": "smp", "-kernel": "kernel", "-initrd": "initrd",
                  "-append": "append", "-uuid": "uuid"}
_FLAG_OPTIONS: dict[str, tuple[str, object]] = {
    "-enable-kvm": ("accel", "kvm"), "-disable-kvm": ("accel", "qemu"),
    "-no-acpi": ("acpi", False), "-no-reboot": ("no_reboot", True), "-S": ("paused", True),
    "-usb": ("usb", True)}
_CHOICE_OPTIONS: dict[str, tuple[str, Mapping[str, object]]] = {
    # Ganeti 3.0 writes "-boot d", 3.1 "-boot order=d": QEMU reads both alike (not strict)
    "-boot": ("boot", {form + value: value for value in ("c", "n", "d", "a")
                       for form in ("", "order=")}),
    "-rtc": ("localtime", {"base=localtime": True}),
    "-vga": ("vga", {"std": "std", "none": "none"})}


def _read_options(options: Sequence[Option]) -> _Parsed:
    p = _Parsed()
    for opt in options:
        value = opt.value or ""
        if opt.name in _HOST_SIDE or opt.name == "-nographic" \
                or opt.name == "-display" and value == "none":
            continue
        if opt.name in _VALUE_OPTIONS:
            setattr(p, _VALUE_OPTIONS[opt.name], value)
        elif opt.name in _FLAG_OPTIONS:
            setattr(p, *_FLAG_OPTIONS[opt.name])
        elif opt.name in _CHOICE_OPTIONS:
            attr, choices = _CHOICE_OPTIONS[opt.name]
            if value not in choices:
                raise HypervisorError(f"{opt.name} {value!r}: not translated")
            setattr(p, attr, choices[value])
        elif opt.name == "-m":
            if not value.isdigit():
                raise HypervisorError(f"-m {value!r}: not a size in MiB")
            p.memory = int(value)
        elif opt.name in ("-machine", "-M"):
            head, props = opt.properties()
            for key, val in props.items():
                if key == "accel" and val in ("kvm", "tcg"):
                    p.accel = "kvm" if val == "kvm" else "qemu"
                elif key == "acpi" and val in ("on", "off"):
                    # Ganeti 3.1's acpi=false where QEMU (>= 9) has no -no-acpi
                    p.acpi = val == "on"
                else:
                    raise HypervisorError(f"-machine {value!r}: {key} not translated")
            p.machine = head
        elif opt.name == "-serial":
            if value == "none":
                p.serial = False
            elif value.startswith("unix:"):
                p.serial = True
            else:
                raise HypervisorError(f"-serial {value!r}: not translated")
        elif opt.name == "-usbdevice":
            if value not in ("tablet", "mouse") or p.pointer:
                raise HypervisorError(f"-usbdevice {value!r}: not translated")
            p.pointer = value
        elif opt.name == "-vnc":
            p.vnc = None if value == "none" else _vnc(value)
        elif opt.name == "-device":
            head, props = opt.properties()
            if head != "virtio-balloon" or props or p.balloon:
                raise HypervisorError(f"-device {value!r}: not translated")
            p.balloon = True
        else:
            raise HypervisorError(f"option {opt.name} {value!r}: not translated")
    return p


def _domain_type(runtime: KvmRuntime, parsed: _Parsed) -> str:
    """kvm or qemu (TCG), as the source's QEMU chose: the accelerator it was told, else
    QEMU's own default, which prefers KVM only when its program name ends in "kvm"."""
    if parsed.accel:
        return parsed.accel
    return "kvm" if runtime.kvm_path.endswith("kvm") else "qemu"


def _pci_slots(runtime: KvmRuntime, parsed: _Parsed, pci_disks: bool
               ) -> tuple[int | None, dict[str, int]]:
    """The balloon's slot (QEMU's first free one when hv_kvm's -device options are
    created, before any disk or NIC) and each PCI disk's and NIC's recorded slot (an
    IDE disk's hvinfo holds a slot hv_kvm reserved but QEMU never used)."""
    taken = {addresses.HOST_BRIDGE_SLOT, addresses.PIIX3_SLOT}
    if parsed.vga != "none":
        taken.add(addresses.VIDEO_SLOT)
    balloon = None
    if parsed.balloon:
        balloon = min(s for s in range(32) if s not in taken)
        taken.add(balloon)
    slots: dict[str, int] = {}
    for dev in (*(runtime.disks if pci_disks else ()), *runtime.nics):
        slot = dev.pci_slot
        what = f"{dev.kind} {dev.index} ({dev.uuid})"
        if slot is None:
            raise HypervisorError(f"{what}: hv_kvm recorded no PCI slot for it")
        if slot in taken or not 0 < slot < 32:
            raise HypervisorError(f"{what}: PCI slot {slot:#x} collides with a device QEMU "
                                  "placed itself")
        taken.add(slot)
        slots[f"{dev.kind}-{dev.index}"] = slot
    return balloon, slots


def _ide_units(ganeti: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """(bus, unit) of the IDE disks in order, as that Ganeti's hv_kvm has QEMU place them."""
    return IDE_UNITS[(3, 0) if ganeti < (3, 1) else (3, 1)]


def _disk(dev: Device, hvp: Mapping[str, Any], slot: int | None,
          ganeti: tuple[int, int]) -> etree._Element:
    """A disk at its PCI slot (virtio), or at the IDE unit of its index (no slot)."""
    fields = dev.fields
    what = f"disk {dev.index}"
    if fields.get("mode", C.DISK_RDWR) != C.DISK_RDWR:
        raise HypervisorError(f"{what}: hv_kvm runs only read-write disks")
    driver = dev.hvinfo.get("driver")
    if driver != DISK_DRIVERS[hvp[C.HV_DISK_TYPE]]:
        raise HypervisorError(f"{what}: driver {driver!r} is not what disk_type "
                              f"{hvp[C.HV_DISK_TYPE]!r} gives")
    disk_obj = SimpleNamespace(uuid=fields.get("uuid"), dev_type=fields.get("dev_type"),
                               mode=fields.get("mode", C.DISK_RDWR),
                               params=fields.get("params") or {})
    if slot is None:
        bus, unit = _ide_units(ganeti)[dev.index]
        target = identity.target_name("hd", 2 * bus + unit)
    else:
        target = identity.target_name("vd", dev.index)
    elem = disks.disk(disk_obj, dev.link, dev.uri, dev.index, hvp, target)
    if hvp.get(C.HV_KVM_DISK_AIO) == "native":
        # hv_kvm pairs native AIO with cache=none whatever disk_cache says
        elem.find("driver").set("cache", "none")
    if slot is None:
        addresses.drive(elem, bus=bus, target=0, unit=unit)
    else:
        addresses.pci(elem, slot)
    return elem


def _nic(dev: Device, hvp: Mapping[str, Any], slot: int, facts: NodeFacts) -> etree._Element:
    fields = dev.fields
    nic_type = hvp[C.HV_NIC_TYPE]
    driver = dev.hvinfo.get("driver")
    expected = "virtio-net-pci" if nic_type == C.HT_NIC_PARAVIRTUAL else nic_type
    if driver != expected:
        raise HypervisorError(f"NIC {dev.index}: driver {driver!r} is not what nic_type "
                              f"{nic_type!r} gives")
    nic_obj = SimpleNamespace(uuid=fields.get("uuid"), mac=fields.get("mac"),
                              nicparams=fields.get("nicparams") or {},
                              name=fields.get("name"), ip=fields.get("ip"),
                              network=fields.get("network"))
    elem = nics.interface(nic_obj, dev.index, hvp, facts.linux_bridge_vlans)
    if not hvp.get(C.HV_VHOST_NET):
        # hv_kvm turns virtio_net_queues into a multiqueue NIC only together with vhost
        # (3.0 and 3.1): without it the guest has one queue pair, whatever queues says
        driver = elem.find("driver")
        if driver is not None:
            driver.attrib.pop("queues", None)
    addresses.pci(elem, slot)
    return elem


def _has_default_cdrom(ide_disks: int, ganeti: tuple[int, int]) -> bool:
    """Whether QEMU added its empty CD-ROM beside hv_kvm's IDE disks: unless a disk took
    its unit (3.0) or any IDE disk came by -device (3.1)."""
    if ganeti < (3, 1):
        return CDROM_UNIT not in _ide_units(ganeti)[:ide_disks]
    return ide_disks == 0


def build(runtime: KvmRuntime, instance: Any, facts: NodeFacts) -> etree._Element:
    """The ``<domain>`` reproducing hv_kvm's QEMU, with hvlibvirt's metadata; raise
    HypervisorError listing everything that cannot be reproduced."""
    name = identity.instance_name(getattr(instance, "name", None))
    uuid = identity.instance_uuid(getattr(instance, "uuid", None))
    found = problems(runtime, instance)
    if found:
        raise HypervisorError(f"Cannot take over instance {name} from Ganeti's KVM: "
                              + "; ".join(found))
    try:
        return _build(runtime, instance, facts, name, uuid)
    except HypervisorError as err:
        raise HypervisorError(f"Cannot take over instance {name} from Ganeti's KVM: "
                              f"{err}") from None


def _build(runtime: KvmRuntime, instance: Any, facts: NodeFacts, name: str, uuid: str
           ) -> etree._Element:
    hvp = effective_hvparams(runtime, instance.hvparams)
    p = _read_options(runtime.options)
    if p.name != name:
        raise HypervisorError(f"the runtime is instance {p.name!r}'s")
    if (p.uuid or "").lower() != uuid.lower():
        raise HypervisorError(f"the runtime's -uuid {p.uuid!r} is not the instance's")
    if not p.memory or not p.machine or not p.usb:
        raise HypervisorError("the command line lacks -m, -machine or -usb")
    machine = facts.machine_aliases.get(p.machine, p.machine)
    if addresses.is_q35(machine) or not _MACHINE_VERSION.match(machine):
        raise HypervisorError(f"machine type {machine!r}: only i440fx ('pc') machines "
                              "are translated")
    vcpus, sockets, cores, threads = _smp(p.smp, machine)
    pci_disks = hvp[C.HV_DISK_TYPE] == C.HT_DISK_PARAVIRTUAL
    balloon_slot, slots = _pci_slots(runtime, p, pci_disks)

    root = etree.Element("domain", type=_domain_type(runtime, p))
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "uuid").text = uuid
    meta_elem = etree.SubElement(root, "metadata")
    etree.SubElement(root, "memory", unit="MiB").text = str(p.memory)
    etree.SubElement(root, "currentMemory", unit="MiB").text = str(p.memory)
    cpu.vcpu(root, vcpus)
    tune = cpu.cputune(hvp, vcpus)
    if tune is not None:
        root.append(tune)
    os_elem = etree.SubElement(root, "os")
    etree.SubElement(os_elem, "type", arch="x86_64", machine=machine).text = "hvm"
    if p.kernel:
        etree.SubElement(os_elem, "kernel").text = identity.absolute_path(p.kernel, "-kernel")
        if p.initrd:
            etree.SubElement(os_elem, "initrd").text = identity.absolute_path(p.initrd,
                                                                              "-initrd")
        if p.append is not None:
            etree.SubElement(os_elem, "cmdline").text = identity.plain_text(p.append,
                                                                            "-append")
    elif p.boot:
        # hv_kvm's -boot is not strict: after the device it names, the disk boots.
        for dev in dict.fromkeys(({"c": "hd", "n": "network", "d": "cdrom", "a": "fd"}[p.boot],
                                  "hd")):
            etree.SubElement(os_elem, "boot", dev=dev)
    features = etree.SubElement(root, "features")
    if p.acpi:
        etree.SubElement(features, "acpi")
    cpu_elem = etree.SubElement(root, "cpu")
    etree.SubElement(cpu_elem, "topology", sockets=str(sockets), dies="1",
                     cores=str(cores), threads=str(threads))
    etree.SubElement(root, "clock", offset="localtime" if p.localtime else "utc")
    etree.SubElement(root, "on_poweroff").text = "destroy"
    etree.SubElement(root, "on_reboot").text = "destroy" if p.no_reboot else "restart"
    etree.SubElement(root, "on_crash").text = "destroy"

    devs = etree.SubElement(root, "devices")
    ids: list[tuple[str, str, str]] = []
    for dev in runtime.disks:
        elem = _disk(dev, hvp, slots[f"disk-{dev.index}"] if pci_disks else None,
                     facts.ganeti)
        devs.append(elem)
        ids.append(("disk", dev.uuid, elem.find("alias").get("name")))
    # QEMU's default drives: an empty CD-ROM on the secondary IDE master, an empty floppy
    if _has_default_cdrom(len(runtime.disks) if not pci_disks else 0, facts.ganeti):
        cdrom = etree.SubElement(devs, "disk", type="file", device="cdrom")
        etree.SubElement(cdrom, "driver", name="qemu", type="raw")
        etree.SubElement(cdrom, "target", dev="hdc", bus="ide")
        etree.SubElement(cdrom, "readonly")
        addresses.drive(cdrom, bus=CDROM_UNIT[0], target=0, unit=CDROM_UNIT[1])
    floppy = etree.SubElement(devs, "disk", type="file", device="floppy")
    etree.SubElement(floppy, "driver", name="qemu", type="raw")
    etree.SubElement(floppy, "target", dev="fda", bus="fdc")
    addresses.drive(floppy, bus=0, target=0, unit=0)
    usb = etree.SubElement(devs, "controller", type="usb", index="0", model="piix3-uhci")
    addresses.pci(usb, addresses.PIIX3_SLOT, addresses.USB_FUNCTION)
    etree.SubElement(devs, "controller", type="pci", index="0", model="pci-root")
    ide = etree.SubElement(devs, "controller", type="ide", index="0")
    addresses.pci(ide, addresses.PIIX3_SLOT, 1)
    etree.SubElement(devs, "controller", type="fdc", index="0")
    for dev in runtime.nics:
        elem = _nic(dev, hvp, slots[f"nic-{dev.index}"], facts)
        devs.append(elem)
        ids.append(("nic", dev.uuid, elem.find("alias").get("name")))
    if p.serial:
        devs.extend(channels.serial_console(facts.serial_log))
        devs.find("serial/target").set("type", "isa-serial")
        etree.SubElement(devs.find("serial/target"), "model", name="isa-serial")
    parallel = etree.SubElement(devs, "parallel", type="null")
    etree.SubElement(parallel, "target", port="0")
    if p.pointer:
        pointer = etree.SubElement(devs, "input", type=p.pointer, bus="usb")
        etree.SubElement(pointer, "address", type="usb", bus="0", port="1")
    etree.SubElement(devs, "input", type="mouse", bus="ps2")
    etree.SubElement(devs, "input", type="keyboard", bus="ps2")
    if p.vnc:
        host, port, password = p.vnc
        graphics = etree.SubElement(devs, "graphics", type="vnc", port=str(port),
                                    autoport="no")
        keymap = instance.hvparams.get(C.HV_KEYMAP)  # hv_kvm takes the configured one
        if keymap:
            graphics.set("keymap", identity.plain_text(keymap, C.HV_KEYMAP))
        if password:
            if not facts.vnc_password:
                raise HypervisorError("VNC has a password but none was read")
            graphics.set("passwd", facts.vnc_password)
        etree.SubElement(graphics, "listen", type="address", address=host)
    video = etree.SubElement(devs, "video")
    if p.vga == "none":
        etree.SubElement(video, "model", type="none")
    else:
        etree.SubElement(video, "model", type="vga", vram=str(VGA_VRAM_KIB), heads="1",
                         primary="yes")
        addresses.pci(video, addresses.VIDEO_SLOT)
    if balloon_slot is None:
        etree.SubElement(devs, "memballoon", model="none")
    else:
        addresses.pci(etree.SubElement(devs, "memballoon", model="virtio"), balloon_slot)
    if (instance.hvparams.get(C.HV_SECURITY_MODEL) or C.HT_SM_NONE) == C.HT_SM_USER:
        if not facts.security_label:
            raise HypervisorError(f"{C.HV_SECURITY_MODEL} 'user': the security_domain "
                                  "user was not resolved")
        label = etree.SubElement(root, "seclabel", type="static", model="dac",
                                 relabel="yes")
        etree.SubElement(label, "label").text = facts.security_label
    meta_elem.append(metadata.build(metadata.InstanceMetadata(
        instance_uuid=uuid, hypervisor=C.HT_KVM, hvparams=hvp, devices=ids)))
    return root


def was_running(runtime: KvmRuntime) -> bool:
    """Whether QEMU runs the guest once the stream is in: hv_kvm's target keeps a
    runtime's ``-S`` (an instance started paused stays paused)."""
    return not runtime.has("-S")
