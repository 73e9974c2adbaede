"""The steps of a hotplug on a running domain, each confirmed and reversible.

libvirt owns the QEMU monitor (or libxl); these own the rest:

* every attach is confirmed by reading the live XML back, and undone if any later step
  (the persistent definition, our metadata) fails - nothing is half-applied; what
  libvirtd's death leaves half-done (no undo can reach it then) ``settle`` finishes at
  the next hot-add, hot-remove or hot-modify;
* a removal waits for libvirt's DEVICE_REMOVED event (registered before the request),
  with a bounded timeout. A guest that never releases the device leaves it "pending" in
  our metadata: a later removal does not send the request again (QEMU refuses one that
  is in progress) but waits for the guest again, and the device's slot stays taken.

The caller holds the instance's hotplug lock (``flow``).
"""

from __future__ import annotations

import logging

import libvirt
from lxml import etree

from hvlibvirt import instance_metadata
from hvlibvirt.domain_xml import parser
from hvlibvirt.domain_xml.parser import LiveDomain
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.events import DomainEventWaiter

log = logging.getLogger(__name__)

_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def live_state(dom: libvirt.virDomain) -> tuple[etree._Element, LiveDomain]:
    """The live domain XML, as a tree and as parsed facts."""
    try:
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as err:
        raise HotplugError(f"Failed to read the live XML of {dom.name()}: {err}") from err
    root = parser.parse_tree(xml)
    return root, parser.domain_facts(root)


def is_double_use(err: libvirt.libvirtError) -> bool:
    """Whether libvirt refused an address another device took meanwhile."""
    return "double use" in (err.get_error_message() or "").lower()


def attach(dom: libvirt.virDomain, elem: etree._Element, what: str) -> None:
    """Attach ``elem`` live, confirm it, then add it to the persistent definition.

    Raises ``libvirt.libvirtError`` for a refused live attach (the caller may retry
    with another address) and HotplugError for anything after it, whatever failed
    (libvirt included), having undone the live attach.
    """
    xml = etree.tostring(elem, encoding="unicode")
    alias = elem.find("alias").get("name")
    dom.attachDeviceFlags(xml, _LIVE)
    try:
        _root, live = live_state(dom)
        if alias not in live.devices:
            raise HotplugError(f"{what}: libvirt accepted the device but it is not in the "
                               "live domain")
        expected = elem.find("address")
        landed = live.devices[alias].address
        # On q35 the slot is always 0: the bus (the root port) says where it went.
        if expected is not None and any(landed.get(key, expected.get(key)) != expected.get(key)
                                        for key in ("bus", "slot")):
            raise HotplugError(f"{what}: the device landed at another PCI slot than "
                               f"{expected.get('bus')}:{expected.get('slot')}")
        if dom.isPersistent():
            try:
                dom.attachDeviceFlags(xml, _CONFIG)
            except libvirt.libvirtError as err:
                raise HotplugError(f"{what}: the persistent definition refused the device: "
                                   f"{err.get_error_message()}") from err
    except (HypervisorError, libvirt.libvirtError) as err:
        undone = detach_now(dom, alias)
        if isinstance(err, HotplugError) and undone:
            raise
        if isinstance(err, HotplugError):
            message = str(err)
        else:
            reason = err.get_error_message() if isinstance(err, libvirt.libvirtError) else err
            message = f"{what}: {reason}"
        if not undone:
            message += ("; taking it back out failed too, so the running instance may keep "
                        "it until it stops")
        raise HotplugError(message) from err


def detach(dom: libvirt.virDomain, alias: str, flags: int) -> None:
    """Detach the device carrying ``alias`` from the live (``_LIVE``) or persistent
    (``_CONFIG``) definition. Drivers without detach-by-alias (libxl) get the device's
    own XML, which they match by target or MAC."""
    try:
        dom.detachDeviceAlias(alias, flags)
        return
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if flags == _CONFIG else 0)
    elem = parser.device(parser.parse_tree(xml), alias)
    if elem is None:
        raise libvirt.libvirtError(f"no device with alias {alias}")
    dom.detachDeviceFlags(etree.tostring(elem, encoding="unicode"), flags)


def detach_now(dom: libvirt.virDomain, alias: str) -> bool:
    """Best-effort rollback of a device the guest has not started using; False when it
    failed. Asked twice, as ``unrecord`` asks: the device is live only, in neither the
    definition nor our metadata, so nothing would take it away later."""
    for _attempt in range(2):
        try:
            detach(dom, alias, _LIVE)
            return True
        except libvirt.libvirtError as err:
            reason = err
    log.warning("Rolling back %s on %s failed: %s", alias, dom.name(), reason)
    return False


def remove(dom: libvirt.virDomain, alias: str, timeout: float,
           what: str) -> None:
    """Unplug ``alias`` and wait until the guest has released it (DEVICE_REMOVED).

    Raises HotplugError when the guest does not release it within ``timeout``; the
    device is then recorded as pending.
    """
    meta = instance_metadata.read(dom)
    pending = meta is not None and alias in meta.pending_unplug
    with DomainEventWaiter(dom, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                           lambda details: details[0] == alias) as removed:
        if not pending:
            try:
                detach(dom, alias, _LIVE)
            except libvirt.libvirtError as err:
                if alias in live_state(dom)[1].devices:
                    raise HotplugError(f"{what}: libvirt refused the removal: "
                                       f"{err.get_error_message()}") from err
        # libvirt's call returns once QEMU reports the device gone or after its own
        # short wait; the event (or its absence from the live XML) is the confirmation.
        gone = alias not in live_state(dom)[1].devices or removed.wait(timeout) is not None
    if not gone and alias not in live_state(dom)[1].devices:
        gone = True  # removed between the wait and this check
    if not gone:
        if not pending and meta is not None:
            instance_metadata.mark_unplug_pending(dom, alias)
        raise HotplugError(f"{what}: the guest did not release the device within "
                           f"{timeout:.0f}s; its removal stays pending (the instance keeps "
                           "running, and the device's slot stays taken until the guest lets "
                           "it go)")
    forget(dom, alias)


def forget(dom: libvirt.virDomain, alias: str) -> None:
    """Drop a removed device from the persistent definition, then from our metadata.
    While the definition still has it, the record stays (and HotplugError is raised):
    the record is what makes ``settle`` try again."""
    if dom.isPersistent():
        try:
            detach(dom, alias, _CONFIG)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_DEVICE_MISSING and parser.device(
                    parser.parse_tree(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)),
                    alias) is not None:
                raise HotplugError(f"Removing {alias} from the definition of {dom.name()} "
                                   f"failed: {err.get_error_message()}") from err
    instance_metadata.drop_device(dom, alias)


def settle(dom: libvirt.virDomain, root: etree._Element, live: LiveDomain) -> None:
    """Finish what earlier hotplugs left undone, so that each device of our metadata is
    in the live XML, the persistent definition and the metadata, or in none of them
    (the first step of every hot-add, hot-remove and hot-modify, under the lock):

    * not live any more: a removal the guest completed after we stopped waiting (a
      pending one), or while libvirtd was down under the removal -> forgotten;
    * live but not in the persistent definition: an add interrupted after its live
      attach (libvirtd died; adds are recorded before they are attached, see
      ``record``) -> added to the definition. Ganeti keeps a device whose hot-add failed
      in its configuration, so the guest keeps it too.
    """
    if live.meta is None:
        return
    known = [alias for _kind, _uuid, alias in live.meta.devices]
    try:
        for alias in known:
            if alias not in live.devices:
                log.info("%s: %s was removed after all", dom.name(), alias)
                forget(dom, alias)
        if not dom.isPersistent():
            return
        defined = parser.aliases(parser.parse_tree(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        for alias in known:
            elem = parser.device(root, alias)
            if elem is not None and alias not in defined:
                log.info("%s: completing the interrupted hot-add of %s", dom.name(), alias)
                dom.attachDeviceFlags(etree.tostring(elem, encoding="unicode"), _CONFIG)
    except (libvirt.libvirtError, HypervisorError) as err:
        if isinstance(err, HotplugError):
            raise
        reason = err.get_error_message() if isinstance(err, libvirt.libvirtError) else err
        raise HotplugError(f"Failed to settle the devices of {dom.name()}: {reason}"
                           ) from err


def record(dom: libvirt.virDomain, kind: str, dev_uuid: str, alias: str,
           index: int | None = None) -> None:
    """Record a device in our metadata, last or at ``index`` of the device order, before
    it is attached: the metadata is the only place that keeps the device's full uuid,
    which ``settle`` needs to complete an add libvirtd's death interrupted."""
    instance_metadata.record_device(dom, kind, dev_uuid, alias, index)


def unrecord(dom: libvirt.virDomain, alias: str) -> None:
    """Drop the record of a device whose hot-add failed, as far as libvirtd still answers
    (if it died, the next hotplug call settles the device). ``attach`` never leaves a
    failed device in the persistent definition, so there is nothing to detach there.
    Asked twice: dropping is idempotent, and a record left behind disagrees with the
    live domain until the next hotplug call."""
    for _attempt in range(2):
        try:
            instance_metadata.drop_device(dom, alias)
            return
        except (HypervisorError, libvirt.libvirtError) as err:
            reason = err
    log.warning("Forgetting %s on %s failed: %s", alias, dom.name(), reason)


def update(dom: libvirt.virDomain, new: etree._Element, what: str) -> bool:
    """Apply ``new`` to the device carrying its alias in place (live and persistent, or
    neither); False if the driver cannot change that live (the caller replaces it)."""
    try:
        dom.updateDeviceFlags(etree.tostring(new, encoding="unicode"), _LIVE | _CONFIG)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
            return False
        raise HotplugError(f"{what}: libvirt refused the change: "
                           f"{err.get_error_message()}") from err
    return True


def replace(dom: libvirt.virDomain, kind: str, dev_uuid: str, new: etree._Element,
            timeout: float, what: str) -> None:
    """Swap the device carrying ``new``'s alias for ``new``, as Ganeti's KVM modifies a
    NIC: a confirmed removal, then a recorded and confirmed add. Should the add fail,
    the old device goes back as the persistent definition holds it (same alias and
    address); the HotplugError then says whether it did."""
    alias = new.find("alias").get("name")
    old = _defined_element(dom, alias)
    meta = instance_metadata.read(dom)
    index = next((i for i, d in enumerate(meta.devices) if d[2] == alias), None) \
        if meta is not None else None
    remove(dom, alias, timeout, what)
    try:
        _add(dom, kind, dev_uuid, new, index, what)
    except HotplugError as err:
        if old is None:
            raise HotplugError(f"{err}; the old device was not in the persistent "
                               "definition, so the instance runs without it") from err
        try:
            _add(dom, kind, dev_uuid, old, index, f"{what} (putting the old device back)")
        except HotplugError as back:
            raise HotplugError(f"{err}; putting the old device back failed too ({back}): "
                               "the instance runs without it") from err
        raise HotplugError(f"{err}; the old device is back as it was") from err


def _defined_element(dom: libvirt.virDomain, alias: str) -> etree._Element | None:
    """The device carrying ``alias`` as the persistent definition holds it (no live-only
    parts such as the tap name libvirt generated)."""
    try:
        if not dom.isPersistent():
            return None
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError as err:
        raise HotplugError(f"Failed to read the definition of {dom.name()}: "
                           f"{err.get_error_message()}") from err
    return parser.device(parser.parse_tree(xml), alias)


def _add(dom: libvirt.virDomain, kind: str, dev_uuid: str, elem: etree._Element,
         index: int | None, what: str) -> None:
    """Record (at ``index``), then attach ``elem`` (see ``record``); the record goes if
    the attach fails."""
    alias = elem.find("alias").get("name")
    record(dom, kind, dev_uuid, alias, index)
    try:
        attach(dom, elem, what)
    except libvirt.libvirtError as err:
        unrecord(dom, alias)
        raise HotplugError(f"{what}: libvirt refused the device: "
                           f"{err.get_error_message()}") from err
    except HypervisorError as err:
        unrecord(dom, alias)
        if isinstance(err, HotplugError):
            raise
        raise HotplugError(str(err)) from err


def settled_device(dom: libvirt.virDomain, root: etree._Element, live: LiveDomain,
                   alias: str, what: str) -> etree._Element:
    """``settle``, then the live element of the device a modify changes (HotplugError
    if the instance has none: ``what`` names it)."""
    settle(dom, root, live)
    found = parser.device(root, alias)
    if found is None:
        raise HotplugError(f"Cannot find {what} in instance {dom.name()}")
    return found
