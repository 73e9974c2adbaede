"""Our metadata on a libvirt domain: every read, and each change by its name.

The element itself (its XML, ``InstanceMetadata``) is ``domain_xml.metadata``; this
module is where a live domain's copy is read and changed. A change is a read, an edit
and a write of the whole element (``virDomainSetMetadata`` has no compare-and-swap)
under the instance's ``meta`` lock, because the other processes of the node change it
too; it is made to the live and the persistent definition at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from hvlibvirt import locks
from hvlibvirt.domain_xml import metadata, parser
from hvlibvirt.domain_xml.metadata import InstanceMetadata
from hvlibvirt.errors import HotplugError, HypervisorError

__all__ = ["InstanceMetadata", "read", "carried", "mark_stop", "set_migration_target",
           "keep_hv_kvm_runtime", "set_runtime_hvparams", "record_device", "drop_device", "mark_unplug_pending"]


def _xml(dom: libvirt.virDomain, live: bool = True) -> tuple[str | None, bool]:
    """Our metadata element's XML on ``dom`` (None if it carries none), and whether the
    domain is still there (it may have gone since it was looked up or listed)."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CURRENT if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        return dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata.NAMESPACE,
                            flags), True
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None, True
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None, False
        raise HypervisorError(f"Failed to read metadata of {dom.name()}: {err}") from err


def read(dom: libvirt.virDomain, live: bool = True) -> InstanceMetadata | None:
    """Our metadata on ``dom`` (live definition, or the persistent one), None if absent
    (or the domain is gone)."""
    xml, _there = _xml(dom, live)
    return None if xml is None else metadata.from_libvirt(parser.parse_tree(xml, "metadata"))


def carried(dom: libvirt.virDomain) -> bool | None:
    """Whether ``dom`` carries our metadata, without parsing it; None if the domain is
    gone (it was listed a moment ago)."""
    xml, there = _xml(dom)
    return xml is not None if there else None


def _write(dom: libvirt.virDomain, meta: InstanceMetadata) -> None:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata.to_libvirt(meta),
                        metadata.PREFIX, metadata.NAMESPACE, flags)
    except libvirt.libvirtError as err:
        raise HypervisorError(f"Failed to update metadata of {dom.name()}: {err}") from err


def _change(dom: libvirt.virDomain, edit: Callable[[InstanceMetadata], bool]
            ) -> InstanceMetadata | None:
    """Read, ``edit`` in place (it returns whether anything changed) and write back,
    under the instance's ``meta`` lock. None if the domain carries no metadata."""
    # The URI as libvirt formats it (no round trip), so that every caller keys alike.
    try:
        uri, name = dom.connect().getURI(), dom.name()
    except libvirt.libvirtError as err:
        raise HypervisorError(f"Failed to update metadata: {err}") from err
    with locks.hold(uri, name, "meta"):
        meta = read(dom)
        if meta is not None and edit(meta):
            _write(dom, meta)
        return meta


def mark_stop(dom: libvirt.virDomain) -> None:
    """Record that hvlibvirt asked the domain to stop (so that the stop is not taken
    for the guest's own power-off, Ganeti's user shutdown)."""
    def edit(meta: InstanceMetadata) -> bool:
        changed, meta.stop_requested = not meta.stop_requested, True
        return changed

    _change(dom, edit)


def set_migration_target(dom: libvirt.virDomain, target: str | None,
                         via: str | None = None) -> None:
    """Record (None: clear) the node a migration started here goes to, and how
    (``metadata.InstanceMetadata.migration_via``)."""
    def edit(meta: InstanceMetadata) -> bool:
        changed = (meta.migration_target, meta.migration_via) != (target, via)
        meta.migration_target, meta.migration_via = target, via
        return changed

    _change(dom, edit)


def keep_hv_kvm_runtime(dom: libvirt.virDomain, runtime: str | None,
                        devices: str | None) -> None:
    """Record the hv_kvm runtime a handed-over domain was built from, with the
    fingerprint of its disks and NICs (``handover.back``); None drops them."""
    def edit(meta: InstanceMetadata) -> bool:
        changed = (meta.hv_kvm_runtime, meta.hv_kvm_devices) != (runtime, devices)
        meta.hv_kvm_runtime, meta.hv_kvm_devices = runtime, devices
        return changed

    if _change(dom, edit) is None:
        raise HypervisorError(f"{dom.name()} has no hvlibvirt metadata")


def set_runtime_hvparams(dom: libvirt.virDomain, values: Mapping[str, Any]) -> None:
    """Record hvparams changed on the running domain (its start recorded the rest)."""
    def edit(meta: InstanceMetadata) -> bool:
        meta.hvparams.update(values)
        return True

    _change(dom, edit)


def record_device(dom: libvirt.virDomain, kind: str, dev_uuid: str, alias: str,
                  index: int | None = None) -> None:
    """Record a device (Ganeti's uuid -> our alias), last or at ``index`` of the device
    order, replacing any record of the same alias."""
    def edit(meta: InstanceMetadata) -> bool:
        meta.devices = [d for d in meta.devices if d[2] != alias]
        meta.devices.insert(len(meta.devices) if index is None else index,
                            (kind, dev_uuid, alias))
        return True

    if _change(dom, edit) is None:
        raise HotplugError(f"{dom.name()} has no hvlibvirt metadata")


def drop_device(dom: libvirt.virDomain, alias: str) -> None:
    """Forget a removed device: its record and any pending removal of it."""
    def edit(meta: InstanceMetadata) -> bool:
        devices = [d for d in meta.devices if d[2] != alias]
        pending = [a for a in meta.pending_unplug if a != alias]
        changed = (devices, pending) != (meta.devices, meta.pending_unplug)
        meta.devices, meta.pending_unplug = devices, pending
        return changed

    _change(dom, edit)


def mark_unplug_pending(dom: libvirt.virDomain, alias: str) -> None:
    """Record a removal the guest has not acknowledged yet."""
    def edit(meta: InstanceMetadata) -> bool:
        if alias in meta.pending_unplug:
            return False
        meta.pending_unplug.append(alias)
        return True

    _change(dom, edit)
