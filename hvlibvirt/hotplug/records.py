"""Our metadata as hotplug changes it: one function per operation.

Each write is one locked read-modify-write (``domains.update_metadata``): other
processes of the node write the same element, and a write replaces all of it.
"""

from __future__ import annotations

import libvirt

from hvlibvirt import domains


def read(dom: libvirt.virDomain) -> domains.InstanceMetadata | None:
    """Our metadata of the running ``dom``, None if it has none."""
    return domains.read_metadata(dom)


def record_device(dom: libvirt.virDomain, kind: str, dev_uuid: str, alias: str,
                  index: int | None = None) -> bool:
    """Record a device (live and persistent), last or at ``index`` of the device order;
    False if ``dom`` has no metadata to record it in."""
    def add(meta: domains.InstanceMetadata) -> bool:
        meta.devices = [d for d in meta.devices if d[2] != alias]
        meta.devices.insert(len(meta.devices) if index is None else index,
                            (kind, dev_uuid, alias))
        return True

    return domains.update_metadata(dom, add) is not None


def forget_device(dom: libvirt.virDomain, alias: str) -> None:
    """Drop a device from the record, and from the pending removals."""
    def drop(meta: domains.InstanceMetadata) -> bool:
        devices = [d for d in meta.devices if d[2] != alias]
        pending = [a for a in meta.pending_unplug if a != alias]
        changed = (devices, pending) != (meta.devices, meta.pending_unplug)
        meta.devices, meta.pending_unplug = devices, pending
        return changed

    domains.update_metadata(dom, drop)


def mark_removal_pending(dom: libvirt.virDomain, alias: str) -> None:
    """Note that the guest has not released ``alias`` yet (its removal is pending)."""
    def add(meta: domains.InstanceMetadata) -> bool:
        if alias in meta.pending_unplug:
            return False
        meta.pending_unplug.append(alias)
        return True

    domains.update_metadata(dom, add)
