"""The hotplug flow, the same for every hypervisor:

lock -> target -> settle -> element -> record -> attach -> confirm

* **lock**: one hotplug at a time per instance on this node, across threads and
  processes (noded runs each RPC in its own process; slots, disk targets and our
  metadata are read from the domain, then written; ``hvlibvirt.locks``);
* **target**: the running domain, read once (its live XML says whether it is ours and
  runs), and the hvparams it was started with, which decide the device kinds; the
  hypervisor's refusal rules are asked here;
* **settle**: what an interrupted earlier hotplug left is completed or undone;
* **element**: the hypervisor's factory makes the device element, placed;
* **record**, **attach**, **confirm** (``steps``): the device goes into our metadata
  first, so that an attach libvirtd's death interrupts can be completed, then live,
  confirmed in the live XML, then into the persistent definition; a failure undoes it.

A removal waits for the guest to release the device; a modify the driver cannot
apply in place is a removal and an add at the same place (``steps.replace``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt
from lxml import etree

from hvlibvirt import constants as C, locks
from hvlibvirt.domain_xml import parser
from hvlibvirt.domain_xml.identity import device_alias
from hvlibvirt.domain_xml.parser import LiveDomain
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.host import Host
from hvlibvirt.hotplug import steps

log = logging.getLogger(__name__)

#: seconds the guest gets to release a hot-removed device
HOTPLUG_TIMEOUT = 10.0
# Tries of a hot-add whose address another process took meanwhile.
SLOT_RETRIES = 3


@dataclass
class Target:
    """The running domain a hotplug changes, as one read of its live XML found it."""

    dom: libvirt.virDomain
    root: etree._Element
    live: LiveDomain
    hvparams: dict[str, Any]  # the instance's, those in force at start over them


@dataclass
class NewDevice:
    """A device element to hot-add, and a controller to hot-add before it (or None)."""

    elem: etree._Element
    controller: etree._Element | None = None


class Devices(Protocol):
    """What a hypervisor gives the flow: its refusal rules and its element factory."""

    def refusal(self, target: Target, action: str, dev_type: str) -> str | None:
        """Why ``action`` on a ``dev_type`` cannot be done on this domain, or None."""

    def element(self, target: Target, dev_type: str, device: Any, extra: Any, seq: int,
                what: str) -> NewDevice:
        """The element of a device to hot-add, at its place in this domain."""

    def replacement(self, target: Target, old: etree._Element, device: Any, seq: int,
                    what: str) -> etree._Element:
        """The element of a changed NIC to take ``old``'s place (HotplugError if this
        hypervisor cannot replace it)."""

    def in_place(self, old: etree._Element, new: etree._Element) -> bool:
        """Whether the driver may apply ``new`` to ``old`` in place."""

    def where(self, target: Target, alias: str, elem: etree._Element) -> dict[str, str]:
        """What a removal reports of the device it removes (Ganeti's hvinfo)."""


@contextmanager
def instance_lock(uri: str, name: str) -> Iterator[None]:
    """Serialise hotplug operations on one instance: across the threads and the
    processes of this node (see ``hvlibvirt.locks``)."""
    with locks.hold(uri, name, "hotplug", HotplugError):
        yield


class Flow:
    """Hot-add, hot-remove and hot-modify of one hypervisor's devices (``devices``) on
    the domains of ``host``."""

    def __init__(self, devices: Devices, host: Host, timeout: float = HOTPLUG_TIMEOUT) -> None:
        self._devices, self._host, self._timeout = devices, host, timeout

    def target(self, instance: Any, action: str, dev_type: str) -> Target:
        """The running domain, its live XML and facts, and the hvparams in force."""
        name = getattr(instance, "name", None)
        if dev_type not in C.HOTPLUG_ALL_TARGETS:
            raise HotplugError(f"Cannot hotplug a {dev_type!r}: only disks and NICs")
        if action not in C.HOTPLUG_ALL_ACTIONS:
            raise HotplugError(f"Unknown hotplug action {action!r}")
        dom = self._host.lookup(name) if isinstance(name, str) and name else None
        if dom is None:
            raise HotplugError(f"Instance {name} is not running")
        # One read: the live XML says whether the domain is ours (our metadata) and runs
        # (a live id); no separate ownership and state round trips.
        root, live = steps.live_state(dom)
        if live.meta is None or root.get("id", "-1") == "-1":
            raise HotplugError(f"Instance {name} is not running")
        # The device kinds are the ones the domain was started with (Ganeti's rule).
        hvp = dict(instance.hvparams)
        hvp.update({k: v for k, v in live.meta.hvparams.items() if k in hvp})
        return Target(dom, root, live, hvp)

    def checked(self, instance: Any, action: str, dev_type: str) -> Target:
        """``target``, refused by the hypervisor's rules (VerifyHotplugSupport)."""
        target = self.target(instance, action, dev_type)
        reason = self._devices.refusal(target, action, dev_type)
        if reason:
            raise HotplugError(reason)
        return target

    def add(self, instance: Any, dev_type: str, device: Any, extra: Any, seq: int) -> None:
        """Hot-add ``device``: recorded, attached, confirmed, defined; undone on failure."""
        what = f"hot-add of {dev_type} {getattr(device, 'uuid', '?')}"
        self._host.conn(events=True)  # DEVICE_REMOVED, should a controller be undone
        with instance_lock(self._host.uri, instance.name):
            alias = _alias(dev_type, device, None)
            for attempt in range(SLOT_RETRIES):
                target = self.checked(instance, C.HOTPLUG_ACTION_ADD, dev_type)
                dom = target.dom
                steps.settle(dom, target.root, target.live)
                if alias in target.live.devices:
                    meta = target.live.meta
                    pending = meta is not None and alias in meta.pending_unplug
                    raise HotplugError(f"{what}: already attached"
                                       + (" (its removal is still pending)" if pending else ""))
                added = None
                try:
                    new = self._devices.element(target, dev_type, device, extra, seq, what)
                    if new.controller is not None:
                        steps.attach(dom, new.controller,
                                     f"{what} (its {_controller_name(new.controller)})")
                        added = new.controller
                    # Recorded first: if libvirtd dies after the live attach, the next
                    # hotplug call completes the add from the record (steps.settle).
                    steps.record(dom, dev_type, device.uuid, alias)
                    steps.attach(dom, new.elem, what)
                except libvirt.libvirtError as err:
                    self._undo_controller(dom, added)
                    steps.unrecord(dom, alias)
                    if steps.is_double_use(err) and attempt + 1 < SLOT_RETRIES:
                        continue  # another process took the address: compute again
                    raise HotplugError(f"{what}: libvirt refused the device: "
                                       f"{err.get_error_message()}") from err
                except HypervisorError as err:
                    self._undo_controller(dom, added)
                    steps.unrecord(dom, alias)
                    raise HotplugError(str(err)) from err
                return

    def remove(self, instance: Any, dev_type: str, device: Any, extra: Any, seq: int
               ) -> dict[str, str]:
        """Hot-remove ``device``, confirmed by the guest; returns where it was."""
        what = f"hot-remove of {dev_type} {getattr(device, 'uuid', '?')}"
        self._host.conn(events=True)  # DEVICE_REMOVED
        with instance_lock(self._host.uri, instance.name):
            target = self.checked(instance, C.HOTPLUG_ACTION_REMOVE, dev_type)
            alias = _alias(dev_type, device, None)
            steps.settle(target.dom, target.root, target.live)
            elem = parser.device(target.root, alias)
            if elem is None:
                meta = target.live.meta
                if meta is not None and alias in (d[2] for d in meta.devices):
                    # Its removal was under way when libvirtd died, and it completed:
                    # settle forgot it; the removal asked for is done.
                    return {"alias": alias}
                raise HotplugError(f"Cannot find {dev_type} with UUID {device.uuid} in "
                                   f"instance {instance.name}")
            where = self._devices.where(target, alias, elem)
            steps.remove(target.dom, alias, self._timeout, what)
            return where

    def modify(self, instance: Any, dev_type: str, device: Any, extra: Any, seq: int) -> None:
        """Change a NIC: in place where the driver can, else replaced at its place (a
        confirmed removal and an add, the old NIC put back should the add fail)."""
        what = f"hot-modify of {dev_type} {getattr(device, 'uuid', '?')}"
        self._host.conn(events=True)  # DEVICE_REMOVED, should the NIC be replaced
        with instance_lock(self._host.uri, instance.name):
            target = self.checked(instance, C.HOTPLUG_ACTION_MODIFY, dev_type)
            alias = _alias(dev_type, device, what)
            old = steps.settled_device(target.dom, target.root, target.live, alias,
                                       f"NIC with UUID {device.uuid}")
            try:
                new = self._devices.replacement(target, old, device, seq, what)
            except HotplugError:
                raise
            except HypervisorError as err:
                raise HotplugError(f"{what}: {err}") from None
            if self._devices.in_place(old, new) and steps.update(target.dom, new, what):
                return
            # A replacement adds a device: refused before the old one goes, if it must be.
            reason = self._devices.refusal(target, C.HOTPLUG_ACTION_ADD, dev_type)
            if reason:
                raise HotplugError(f"{what} needs the NIC removed and added again: {reason}")
            steps.replace(target.dom, dev_type, device.uuid, new, self._timeout, what)

    def _undo_controller(self, dom: libvirt.virDomain, controller: etree._Element | None
                         ) -> None:
        if controller is None:
            return
        try:
            steps.remove(dom, controller.find("alias").get("name"), self._timeout,
                         f"undoing the {_controller_name(controller)}")
        except (HypervisorError, libvirt.libvirtError) as err:  # the add's error is raised
            log.warning("%s: %s", dom.name(), err)


def _alias(dev_type: str, device: Any, what: str | None) -> str:
    """The alias of ``device`` (HotplugError, prefixed with ``what`` if given)."""
    try:
        return device_alias(dev_type, getattr(device, "uuid", None))
    except HypervisorError as err:
        raise HotplugError(f"{what}: {err}" if what else str(err)) from None


def _controller_name(elem: etree._Element) -> str:
    return f"{elem.get('type', '').upper()} controller"
