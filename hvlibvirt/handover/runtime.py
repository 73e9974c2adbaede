"""hv_kvm's serialized runtime: what Ganeti's KVM hypervisor hands a migration target.

Ganeti's KVM hypervisor answers ``MigrationInfo`` with the runtime it saved when it
started the instance: a JSON list ``[kvm command line, NICs, hvparams, disks]``. The
command line is the part it built from the instance (memory, vCPUs, machine, kernel,
consoles, ...); what it adds when it executes QEMU (NICs on their taps, disk drives,
QMP sockets) is derived again from the NICs and disks (each with its ``hvinfo``: the
QEMU driver, id and PCI slot it used, hot-added devices included) and the hvparams.

This module only reads: it recognises the format, checks its shape and splits the
command line into options. What the options mean is ``model``'s business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvlibvirt.errors import HypervisorError

# QEMU options hv_kvm emits that take a value; every other option it emits is a flag.
VALUE_OPTIONS = frozenset({
    "-name", "-m", "-smp", "-pidfile", "-soundhw", "-device", "-D", "-machine", "-M",
    "-boot", "-drive", "-kernel", "-initrd", "-append", "-mem-path", "-monitor",
    "-serial", "-usbdevice", "-vnc", "-spice", "-display", "-rtc", "-chroot", "-cpu",
    "-vga", "-uuid", "-chardev", "-object", "-k", "-runas", "-netdev", "-net", "-qmp",
    "-incoming", "-balloon", "-global", "-parallel",
})
FLAG_OPTIONS = frozenset({
    "-daemonize", "-no-acpi", "-no-reboot", "-S", "-usb", "-mem-prealloc", "-nographic",
    "-enable-kvm", "-disable-kvm", "-localtime", "-no-hpet", "-no-shutdown",
})


@dataclass(frozen=True)
class Device:
    """A disk or NIC as hv_kvm serialized it (Ganeti's object as a dict)."""

    kind: str                      # "disk" or "nic"
    index: int                     # position in the runtime's list
    fields: Mapping[str, Any]      # Ganeti's ToDict() of the object
    link: str | None = None        # disks: the node's link to the block device
    uri: str | None = None         # disks: the userspace URI, if any

    @property
    def uuid(self) -> str:
        return str(self.fields.get("uuid", ""))

    @property
    def hvinfo(self) -> Mapping[str, Any]:
        hvinfo = self.fields.get("hvinfo") or {}
        if not isinstance(hvinfo, Mapping):
            raise HypervisorError(f"hv_kvm runtime: {self.kind} {self.index} has a "
                                  f"malformed hvinfo {hvinfo!r}")
        return hvinfo

    @property
    def pci_slot(self) -> int | None:
        """The PCI slot hv_kvm put the device at, None when it did not choose one."""
        if self.hvinfo.get("bus") != "pci.0" or "addr" not in self.hvinfo:
            return None
        try:
            return int(str(self.hvinfo["addr"]), 16)
        except ValueError:
            raise HypervisorError(f"hv_kvm runtime: {self.kind} {self.index} has a "
                                  f"malformed PCI address {self.hvinfo['addr']!r}") from None


@dataclass(frozen=True)
class Option:
    """One command-line option: ``-smp`` with value ``2,cores=2``; value None for flags."""

    name: str
    value: str | None = None

    def properties(self) -> tuple[str, dict[str, str]]:
        """QEMU's ``head,key=value,...`` split: ``("virtio-balloon", {})``; a bare
        ``key`` (no '=') maps to ''."""
        head, *rest = (self.value or "").split(",")
        props: dict[str, str] = {}
        for item in rest:
            key, _, val = item.partition("=")
            props[key] = val
        return head, props


@dataclass(frozen=True)
class KvmRuntime:
    """hv_kvm's runtime, parsed."""

    kvm_path: str
    options: tuple[Option, ...]
    nics: tuple[Device, ...]
    hvparams: Mapping[str, Any]
    disks: tuple[Device, ...]
    raw: str = field(default="", repr=False)

    def all(self, name: str) -> list[Option]:
        return [opt for opt in self.options if opt.name == name]

    def value(self, name: str) -> str | None:
        """The value of a single-valued option (its last occurrence, as QEMU takes
        it), None when absent."""
        found = self.all(name)
        return found[-1].value if found else None

    def has(self, name: str) -> bool:
        return any(opt.name == name for opt in self.options)


def looks_like_hv_kvm(info: Any) -> bool:
    """Whether ``info`` (MigrationInfo's answer) is hv_kvm's runtime rather than
    hvlibvirt's domain XML: a JSON list whose first item is a command line."""
    if isinstance(info, bytes):
        try:
            info = info.decode()
        except UnicodeDecodeError:
            return False
    if not isinstance(info, str) or not info.lstrip().startswith("["):
        return False
    try:
        data = json.loads(info)
    except ValueError:
        return False
    return (isinstance(data, list) and len(data) >= 3 and isinstance(data[0], list)
            and bool(data[0]) and isinstance(data[0][0], str)
            # hv_kvm puts some numbers in as they are (-m's memory size)
            and all(isinstance(arg, (str, int)) and not isinstance(arg, bool)
                    for arg in data[0])
            and isinstance(data[1], list) and isinstance(data[2], dict))


def parse(info: str | bytes) -> KvmRuntime:
    """Parse hv_kvm's runtime; HypervisorError naming what is malformed."""
    if isinstance(info, bytes):
        info = info.decode(errors="replace")
    if not looks_like_hv_kvm(info):
        raise HypervisorError("Migration info is not a runtime of Ganeti's KVM hypervisor")
    data = json.loads(info)
    argv, nics, hvparams = [str(arg) for arg in data[0]], data[1], data[2]
    disks = data[3] if len(data) >= 4 else []
    if not isinstance(disks, list):
        raise HypervisorError("hv_kvm runtime: the disks are not a list")
    return KvmRuntime(kvm_path=argv[0], options=tuple(split_options(argv[1:])),
                      nics=tuple(_nic(i, nic, hvparams) for i, nic in enumerate(nics)),
                      hvparams=dict(hvparams),
                      disks=tuple(_disk(i, entry, hvparams) for i, entry in enumerate(disks)),
                      raw=info)


def split_options(args: Sequence[str]) -> list[Option]:
    """Pair each option with its value; refuse what hv_kvm never emits (kvm_extra can
    add anything: it is refused by name before this, see ``model``)."""
    options, i = [], 0
    while i < len(args):
        name = args[i]
        if name in FLAG_OPTIONS:
            options.append(Option(name))
            i += 1
        elif name in VALUE_OPTIONS:
            if i + 1 >= len(args):
                raise HypervisorError(f"hv_kvm runtime: option {name} lacks its value")
            options.append(Option(name, args[i + 1]))
            i += 2
        else:
            raise HypervisorError(f"hv_kvm runtime: unknown QEMU option {name!r} in the "
                                  "command line (cannot reproduce it under libvirt)")
    return options


def _upgraded_hvinfo(kind: str, fields: dict[str, Any], hvparams: Mapping[str, Any]
                     ) -> None:
    """Runtimes of Ganeti before 2.16 recorded a bare ``pci`` slot for paravirtual
    devices; hv_kvm reads them as this hvinfo (the same device at the same slot)."""
    if "hvinfo" in fields or "pci" not in fields:
        return
    param = "disk_type" if kind == "disk" else "nic_type"
    paravirtual = hvparams.get(param) == "paravirtual"
    driver = ("virtio-blk-pci" if kind == "disk" else "virtio-net-pci") if paravirtual \
        else str(hvparams.get(param))
    fields["hvinfo"] = {"driver": driver, "bus": "pci.0",
                        "id": f"hot{kind}-{str(fields.get('uuid', '')).split('-')[0]}"
                              f"-pci-{fields['pci']}",
                        "addr": hex(int(fields["pci"]))}
    del fields["pci"]


def _nic(index: int, nic: Any, hvparams: Mapping[str, Any]) -> Device:
    if not isinstance(nic, dict):
        raise HypervisorError(f"hv_kvm runtime: NIC {index} is not an object")
    fields = dict(nic)
    _upgraded_hvinfo("nic", fields, hvparams)
    return Device("nic", index, fields)


def _disk(index: int, entry: Any, hvparams: Mapping[str, Any]) -> Device:
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], dict)):
        raise HypervisorError(f"hv_kvm runtime: disk {index} is not a (disk, link, uri) "
                              "triple")
    fields = dict(entry[0])
    _upgraded_hvinfo("disk", fields, hvparams)
    return Device("disk", index, fields, link=entry[1], uri=entry[2])
