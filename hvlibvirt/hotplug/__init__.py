"""Hotplug of disks and NICs on a running domain: one flow for every hypervisor.

``flow`` holds the procedure (lock -> target -> settle -> element -> record -> attach ->
confirm), ``steps`` its confirmed, reversible libvirt steps (their metadata changes are
``instance_metadata``'s named operations). A hypervisor supplies only its refusal rules and its element factory:
``kvm`` (PCI slots, q35 root ports, SCSI) and ``xen`` (libxl's PV disks and vifs).
See docs/hotplug.md.
"""

from hvlibvirt.hotplug.flow import HOTPLUG_TIMEOUT, Flow

__all__ = ["HOTPLUG_TIMEOUT", "Flow"]
