"""Startup options: the node-specific facts the pure builder needs besides the instance.

The caller (``kvm.py``) computes them: the domain type and emulator from libvirt's
capabilities, resolved listen addresses, passwords read from the configured files, the
uid:gid of a security domain. Keeping them out of the builder keeps it pure and the
output reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hvlibvirt.domain_xml.pcie import DEFAULT_HOTPLUG_PORTS


@dataclass(frozen=True)
class GuestTarget:
    """Where the domain will run, as libvirt's capabilities describe it."""

    domain_type: str            # kvm, qemu, xen, test
    arch: str = "x86_64"
    machine: str | None = None  # None: libvirt's default for the arch
    emulator: str | None = None


@dataclass(frozen=True)
class Listen:
    """A resolved graphics listen: an IP address, or a unix socket path."""

    address: str | None = None
    socket: str | None = None


@dataclass(frozen=True)
class StartupOptions:
    """Everything besides instance, block devices and hvparams that shapes the XML."""

    target: GuestTarget
    startup_memory: int                         # MiB, at most beparams maxmem
    vnc_listen: Listen | None = None
    spice_listen: Listen | None = None
    vnc_password: str | None = field(default=None, repr=False)
    spice_password: str | None = field(default=None, repr=False)
    security_label: str | None = None           # "+uid:+gid" for security_model=user
    # libvirt sets VLANs on Linux bridge ports only from 11.1 on (OVS ports always).
    linux_bridge_vlans: bool = True
    # A file that keeps everything the serial console printed (virtlogd writes it).
    serial_log: str | None = None
    # q35 only: empty PCIe root ports for hot-added disks and NICs (hvlibvirt.conf).
    pcie_hotplug_ports: int = DEFAULT_HOTPLUG_PORTS
